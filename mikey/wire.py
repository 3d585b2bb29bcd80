"""Bounds-checked reading and the field validators the payload classes share.

Every read goes through :class:`Reader`, which raises :class:`mikey.errors.MikeyError` on a
short buffer, so no ``IndexError`` or ``struct.error`` can leave the codec.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

from mikey.constants import ErrorNo
from mikey.errors import MikeyError

E = TypeVar("E", bound=IntEnum)


class Reader:
    """A cursor over ``data``; every read is checked against the end."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = bytes(data)
        self.offset = offset

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise MikeyError(
                ErrorNo.UNSPECIFIED,
                f"{what}: needs {n} bytes, {self.remaining} left",
                offset=self.offset,
            )
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def u8(self, what: str) -> int:
        return self.uint(1, what)

    def u16(self, what: str) -> int:
        return self.uint(2, what)

    def u32(self, what: str) -> int:
        return self.uint(4, what)

    def fail(self, code: int, reason: str, offset: int | None = None) -> MikeyError:
        return MikeyError(code, reason, offset=self.offset if offset is None else offset)


def to_enum(enum: type[E], code: ErrorNo, value: int) -> E:
    """``value`` as a member of ``enum``, or MikeyError(``code``) if it is not one."""
    try:
        return enum(value)
    except ValueError:
        raise MikeyError(code, f"{value!r} is not a {enum.__name__}") from None


def uint_bits(bits: int) -> Callable[[Any, Any, int], None]:
    """An attrs validator: an int in [0, 2**bits)."""

    def check(_instance: Any, attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise MikeyError(
                ErrorNo.UNSPECIFIED, f"{attribute.name}={value!r} is not a {bits}-bit unsigned int"
            )

    return check


def max_len(limit: int) -> Callable[[Any, Any, bytes], None]:
    """An attrs validator: bytes no longer than ``limit`` (what its length field can say)."""

    def check(_instance: Any, attribute: Any, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise MikeyError(ErrorNo.UNSPECIFIED, f"{attribute.name} must be bytes")
        if len(value) > limit:
            raise MikeyError(
                ErrorNo.UNSPECIFIED, f"{attribute.name} is {len(value)} bytes, at most {limit}"
            )

    return check
