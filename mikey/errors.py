"""The one error the MIKEY codec raises.

:class:`MikeyError` carries an error number of the ERR payload (RFC 3830 §6.12, with the
RFC 6043 additions in :class:`mikey.constants.ErrorNo`), so a receiver can answer a message it
cannot accept with an Error message that says why. Decoding never lets an ``IndexError`` or a
``struct.error`` escape: every short read, bad length, unknown type number and trailing byte
becomes a :class:`MikeyError`.
"""

from __future__ import annotations

from mikey.constants import ErrorNo


class MikeyError(ValueError):
    """A MIKEY message or payload that cannot be decoded or encoded.

    ``code`` is an ERR-payload error number (``ErrorNo`` or a plain int), ``reason`` says what
    was wrong and ``offset`` where in the input (-1 when not decoding)."""

    def __init__(self, code: int, reason: str, *, offset: int = -1) -> None:
        self.code = int(code)
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(f"MIKEY error {self.code} ({_name(self.code)}){where}: {reason}")


def _name(code: int) -> str:
    try:
        return ErrorNo(code).name
    except ValueError:
        return "unregistered"
