"""Transaction bookkeeping of an Iq link, pure: ids, at-most-once reply cache, fault plan.

Time is a parameter (``now``, seconds); nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Literal

import attrs

from iq.codec import UINT32_MAX
from iq.errors import LocalIqError

#: How long a reply stays cached for duplicates (H.248.1 section 8.2.3, LONG-TIMER).
DEFAULT_REPLY_KEEP = 30.0
#: Most replies kept at once; the oldest go first.
DEFAULT_REPLY_LIMIT = 4096


@attrs.define
class TransactionIds:
    """Transaction ids 1..2**32-1, wrapping; one counter per link end."""

    _next: int = 1

    def allocate(self) -> int:
        tid = self._next
        self._next = 1 if tid >= UINT32_MAX else tid + 1
        return tid


IN_PROGRESS: Literal["in-progress"] = "in-progress"


@attrs.define
class ReplyCache:
    """At-most-once execution of requests (H.248.1 section 8.2.3).

    :meth:`seen` tells whether a transaction id is new (``None``), still being processed
    (:data:`IN_PROGRESS`: answer ``Pending``) or answered (the cached reply bytes: send them
    again). Replies are kept ``keep`` seconds after they were sent, and at most ``limit``."""

    keep: float = DEFAULT_REPLY_KEEP
    limit: int = DEFAULT_REPLY_LIMIT
    _entries: OrderedDict[int, tuple[float, bytes | None]] = attrs.field(factory=OrderedDict)

    def seen(self, tid: int, now: float) -> bytes | Literal["in-progress"] | None:
        self._expire(now)
        entry = self._entries.get(tid)
        if entry is None:
            return None
        return IN_PROGRESS if entry[1] is None else entry[1]

    def start(self, tid: int, now: float) -> None:
        self._entries[tid] = (now, None)
        self._entries.move_to_end(tid)
        self._trim()

    def finish(self, tid: int, reply: bytes, now: float) -> None:
        self._entries[tid] = (now, reply)
        self._entries.move_to_end(tid)
        self._trim()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            tid, (stamp, reply) = next(iter(self._entries.items()))
            if reply is None or now - stamp < self.keep:
                break
            del self._entries[tid]

    def _trim(self) -> None:
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)


def _rate(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise LocalIqError(f"{attribute.name} must be between 0 and 1, got {value}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise LocalIqError(f"{attribute.name} must not be negative, got {value}")


@attrs.frozen
class FaultPlan:
    """Faults to inject on the messages a link end sends (lab emulation), reproducible by seed.

    ``delay``: seconds added before each message; ``drop_rate``: share of messages never sent;
    ``duplicate_rate``: share sent twice; ``disconnect_after``: the link is cut once this many
    messages were sent."""

    seed: int = 0
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    drop_rate: float = attrs.field(default=0.0, validator=_rate)
    duplicate_rate: float = attrs.field(default=0.0, validator=_rate)
    disconnect_after: int | None = None

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """From ``key=value,...`` (keys: seed, delay, drop, dup, disconnect-after)."""
        names = {
            "seed": "seed",
            "delay": "delay",
            "drop": "drop_rate",
            "dup": "duplicate_rate",
            "disconnect-after": "disconnect_after",
        }
        fields: dict[str, float | int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in names:
                raise LocalIqError(f"bad fault {item!r}; keys: {', '.join(names)}")
            name = names[key.strip()]
            try:
                fields[name] = int(value) if name in ("seed", "disconnect_after") else float(value)
            except ValueError:
                raise LocalIqError(f"bad fault value {item!r}") from None
        return cls(**fields)  # type: ignore[arg-type]


@attrs.frozen
class FaultDecision:
    copies: int  # 0 dropped, 1 normal, 2 duplicated
    delay: float
    disconnect: bool  # cut the link after this message


@attrs.define
class FaultInjector:
    plan: FaultPlan
    _random: random.Random = attrs.field(init=False)
    sent: int = 0

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.plan.seed)

    def next(self) -> FaultDecision:
        """The fate of the next message to send."""
        self.sent += 1
        copies = 1
        if self.plan.drop_rate and self._random.random() < self.plan.drop_rate:
            copies = 0
        elif self.plan.duplicate_rate and self._random.random() < self.plan.duplicate_rate:
            copies = 2
        limit = self.plan.disconnect_after
        return FaultDecision(copies, self.plan.delay, limit is not None and self.sent >= limit)
