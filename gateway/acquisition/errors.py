"""Errors of the bus tasks: the line could not be used, no usable reply came, the priority lane
is full. Serial and socket errors are translated into these where they enter."""

from __future__ import annotations

from gateway.errors import GatewayError


class AcquisitionError(GatewayError):
    """Root of the acquisition layer's errors."""
