"""Errors of the control layer: commands, the audit journal, load control and actuation."""

from __future__ import annotations

from gateway.errors import GatewayError


class ControlError(GatewayError):
    """Root of the control layer's errors."""
