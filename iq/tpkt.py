"""TPKT framing (RFC 1006 section 6) of H.248 messages over TCP (H.248.1 Annex D.2).

Each message is preceded by a 4-octet header: version 3, a reserved octet 0, and the length of
the whole packet (header included) as a 16-bit big-endian integer. Pure and incremental:
:class:`TpktDecoder` takes bytes as they arrive and returns the complete payloads.
"""

from __future__ import annotations

import attrs

from iq.errors import CodecError, LocalIqError

VERSION = 3
HEADER_SIZE = 4
MAX_PAYLOAD = 0xFFFF - HEADER_SIZE


def frame(payload: bytes) -> bytes:
    """One TPKT packet carrying ``payload``."""
    if not payload:
        raise LocalIqError("empty TPKT payload")
    if len(payload) > MAX_PAYLOAD:
        raise LocalIqError(f"message of {len(payload)} bytes exceeds TPKT maximum {MAX_PAYLOAD}")
    return bytes([VERSION, 0]) + (len(payload) + HEADER_SIZE).to_bytes(2, "big") + payload


@attrs.define
class TpktDecoder:
    """Reassembles TPKT packets from a byte stream.

    A bad header raises :class:`CodecError`; the stream cannot be resynchronised after that,
    so the caller should close the connection."""

    _buffer: bytearray = attrs.field(factory=bytearray)
    _offset: int = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads completed by them, in order."""
        self._buffer += data
        out: list[bytes] = []
        buf = self._buffer
        while len(buf) - self._offset >= HEADER_SIZE:
            start = self._offset
            if buf[start] != VERSION:
                raise CodecError(
                    f"TPKT version {buf[start]} (expected {VERSION})", where=f"stream byte {start}"
                )
            length = int.from_bytes(buf[start + 2 : start + 4], "big")
            if length <= HEADER_SIZE:
                raise CodecError(f"TPKT length {length} too small", where=f"stream byte {start}")
            if len(buf) - start < length:
                break
            out.append(bytes(buf[start + HEADER_SIZE : start + length]))
            self._offset = start + length
        if self._offset:
            del buf[: self._offset]
            self._offset = 0
        return out

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return len(self._buffer)
