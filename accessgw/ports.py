"""Port-range allocation for terminations (pure: no sockets).

Each bind address has its own allocator. A port the allocator hands out may still turn out busy
when the edge binds it (another program holds it): the edge then marks it with
:meth:`PortAllocator.busy` and asks for the next one. When no port of the range is free the
allocator raises :class:`PortsExhausted` (H.248 510).
"""

from __future__ import annotations

import attrs

from accessgw.errors import LocalAccessGwError, PortsExhausted


@attrs.frozen
class PortRange:
    """An inclusive range of TCP ports, ``LO-HI``; ``None`` elsewhere means "ephemeral"."""

    low: int
    high: int

    def __attrs_post_init__(self) -> None:
        if not (1 <= self.low <= self.high <= 65535):
            raise LocalAccessGwError(f"bad port range {self.low}-{self.high}: need 1 <= LO <= HI")

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """Parse ``LO-HI`` (or one port ``N``)."""
        lo, sep, hi = text.strip().partition("-")
        try:
            low = int(lo)
            high = int(hi) if sep else low
        except ValueError:
            raise LocalAccessGwError(f"bad port range {text!r}: expected LO-HI") from None
        return cls(low, high)

    def __len__(self) -> int:
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@attrs.define
class PortAllocator:
    """Hands out the ports of one range on one address, round robin, never one in use."""

    address: str
    range: PortRange
    _in_use: set[int] = attrs.field(factory=set)
    _next: int = attrs.field(default=0)

    def allocate(self, *, skip: frozenset[int] = frozenset()) -> int:
        """Take a free port (not in ``skip``) or raise :class:`PortsExhausted`."""
        size = len(self.range)
        for i in range(size):
            port = self.range.low + (self._next + i) % size
            if port not in self._in_use and port not in skip:
                self._in_use.add(port)
                self._next = (port - self.range.low + 1) % size
                return port
        raise PortsExhausted(self.address, self.range.low, self.range.high)

    def free(self, port: int) -> None:
        """Give a port back (freeing a port that is not taken is a no-op)."""
        self._in_use.discard(port)
