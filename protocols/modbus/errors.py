"""The error tree of the Modbus register map.

Which side broke the rules decides the class, as in h11:

* :class:`RegisterDecodeError` — what came back from the meter does not fit the block that was
  asked for (wrong number of registers, a value that is not a 16-bit word). A remote error: the
  gateway counts it against the meter and carries on.
* :class:`RegisterEncodeError` — a caller (normally a simulator) asked to put a value into a
  register that cannot hold it (300 000 into an int16, NaN into an integer). A local error.
* :class:`protocols.profiles.ProfileError` — the profile itself is unusable; raised at load time.

A float register that holds NaN or infinity is *not* an error: decoding yields a reading flagged
with :class:`protocols.modbus.register_map.DecodeProblem`, because one bad value must not cost the
other quantities of the same reply.
"""

from __future__ import annotations

from protocols.profiles import ProfileError

__all__ = ["ProfileError", "RegisterDecodeError", "RegisterEncodeError", "RegisterMapError"]


class RegisterMapError(Exception):
    """Base of the errors raised while planning, decoding or encoding register blocks."""


class RegisterDecodeError(RegisterMapError):
    """A meter's reply does not fit the block it answers (remote error)."""


class RegisterEncodeError(RegisterMapError, ValueError):
    """A value cannot be represented in its register (local error)."""
