"""The one error tree of the DL/T 645 codec.

Like h11, every error says which side broke the rules:

* :class:`RemoteProtocolError` — the bytes that came off the wire are wrong (a meter, a noisy line or a
  forged frame). The gateway counts these and moves on; it never crashes on them.
* :class:`LocalProtocolError` — our own caller asked for something the standard cannot express
  (an address with 13 digits, a value too large for its BCD field). That is a bug or bad config.

:class:`ExceptionReply` is the meter answering correctly that it refused (abnormal reply bit set); it
carries the decoded error word so the user sees *why* (``password_error``, ``no_data``...).
Nothing but a :class:`ProtocolError` subclass ever escapes the decoder.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocols.dlt645`."""


class RemoteProtocolError(ProtocolError):
    """The received bytes violate DL/T 645."""


class FrameError(RemoteProtocolError):
    """A frame is malformed: bad start/end byte, bad length, impossible field."""


class TruncatedFrame(FrameError):
    """A frame ended before the bytes its header promised; ``missing`` says what is absent."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"truncated frame: {missing}")
        self.missing = missing


class ChecksumError(FrameError):
    """The CS byte does not equal the modulo-256 sum of the frame from the first 68H."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"checksum mismatch: expected {expected:02X}, got {got:02X}")
        self.expected = expected
        self.got = got


class DataError(RemoteProtocolError):
    """The data field of a valid frame does not fit the data item's declared format."""


class UnexpectedReply(RemoteProtocolError):
    """A valid frame that does not answer the request in flight (other address, DI or function)."""


class ExceptionReply(ProtocolError):
    """The meter answered with the abnormal-reply bit set; ``errors`` names the bits of its error word."""

    def __init__(self, address: str, function: str, error_word: int, errors: tuple[str, ...]) -> None:
        names = ", ".join(errors) if errors else "unspecified"
        super().__init__(
            f"meter {address} refused {function}: error word {error_word:02X} ({names})"
        )
        self.address = address
        self.function = function
        self.error_word = error_word
        self.errors = errors


class LocalProtocolError(ProtocolError):
    """The caller asked to build something DL/T 645 cannot express."""


class TransactionError(RemoteProtocolError):
    """An exchange with a meter ended without a usable answer (or a reply broke its state machine).

    The leaves below are what :class:`~protocols.dlt645.transaction.Exchange` reports; each message is
    the one line a field engineer or the daemon's log shows, with what to check.
    """


def _tries(attempts: int) -> str:
    return f"{attempts} {'try' if attempts == 1 else 'tries'}"


class NoReply(TransactionError):
    """The addressed meter said nothing usable before the last deadline.

    Fields: ``address``, ``attempts``, ``link`` (e.g. ``2400 8E1``), ``noise_bytes`` (bytes heard that
    formed no valid frame: at a wrong baud rate or parity a meter's reply arrives as exactly that).
    """

    def __init__(self, address: str, attempts: int, link: str, *, noise_bytes: int = 0,
                 detail: str = "") -> None:
        self.address = address
        self.attempts = attempts
        self.link = link
        self.noise_bytes = noise_bytes
        noise = (f" ({noise_bytes} bytes of noise heard — check baud and parity)"
                 if noise_bytes else "")
        super().__init__(detail or f"meter {address}: no reply after {_tries(attempts)} at {link}"
                                   f"{noise} — check wiring, address and baud")


class StrayReply(NoReply):
    """No reply from the addressed meter, but other meters answered during the wait.

    On a multi-drop line a late reply of the previous meter is normal and does not end the wait; if
    nothing from *our* meter follows, the addresses heard are the best clue (a mistyped address, or
    two meters set to the same one). Fields as :class:`NoReply`, plus ``others`` (addresses heard).
    """

    def __init__(self, address: str, attempts: int, link: str, others: tuple[str, ...]) -> None:
        self.others = others
        super().__init__(address, attempts, link, detail=(
            f"meter {address}: no reply after {_tries(attempts)} at {link}, but "
            f"{', '.join(others)} answered — check the address"))


class GarbledReply(TransactionError):
    """The addressed meter answered with a frame that cannot be used (undecodable data, a reply to
    something else, follow-ups that do not join). Fields: ``address``, ``attempts``, ``link``,
    ``cause`` (the codec's error)."""

    def __init__(self, address: str, attempts: int, link: str, cause: ProtocolError) -> None:
        self.address = address
        self.attempts = attempts
        self.link = link
        self.cause = cause
        super().__init__(f"meter {address}: unusable reply after {_tries(attempts)} at {link}: "
                         f"{cause} — check baud, parity and line noise")
