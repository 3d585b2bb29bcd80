"""The AGW end's synchronous path (IqAgent.serve_request: the reply without a Deferred, the
link's replies batched into one write) against the general one (handle_request through
maybeDeferred): same bytes on the wire, same observer calls, same log events, whatever the
handler does (answers, raises, returns a Deferred that fires now or later) and however the
requests arrive (split, joined, repeated)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from iq import codec, profile, samples, tpkt
from iq.codec import Message, TransactionPending, TransactionRequest
from iq.errors import InsufficientResources, UnknownContext
from iq.link import IqAgent, IqLinkProtocol

_STEPS = [*samples.originating(), *samples.terminating()]
_REQUESTS = [
    s.request
    for s in _STEPS
    if s.direction == "alg->agw"
    and s.reply is None
    and isinstance(
        s.request, profile.ReserveRequest | profile.ConfigureRequest | profile.ReleaseRequest
    )
]
_REPLIES = {id(s.request): s.reply for s in _STEPS if s.reply is not None}

# What the handler does with a request: answer, raise an H.248 error, fail unexpectedly,
# return a Deferred fired at once, one fired later, one failed later, or answer garbage.
_BEHAVIOURS = ["reply", "h248", "bug", "now", "later", "later_error", "garbage"]


class _Handler:
    def __init__(self, plan: list[str], clock: task.Clock) -> None:
        self.plan = plan
        self.clock = clock
        self.calls = 0

    def _serve(self, request: Any) -> Any:
        behaviour = self.plan[self.calls % len(self.plan)]
        self.calls += 1
        reply = next(
            (_REPLIES[id(r)] for r in _REQUESTS if r == request and id(r) in _REPLIES),
            None,
        )
        if reply is None:
            reply = _reply_for(request)
        if behaviour == "h248":
            raise InsufficientResources("no port", where="acc/1/1")
        if behaviour == "bug":
            raise ValueError("handler bug")
        if behaviour == "garbage":
            return profile.NotifyReply()
        if behaviour == "now":
            return defer.succeed(reply)
        if behaviour in ("later", "later_error"):
            d: defer.Deferred[Any] = defer.Deferred()
            if behaviour == "later":
                self.clock.callLater(0.5, d.callback, reply)
            else:
                self.clock.callLater(0.5, d.errback, UnknownContext("gone"))
            return d
        return reply

    reserve = configure = release = _serve


def _reply_for(request: Any) -> Any:
    if isinstance(request, profile.ReserveRequest):
        return next(s.reply for s in _STEPS if isinstance(s.reply, profile.ReserveReply))
    if isinstance(request, profile.ConfigureRequest):
        return profile.ConfigureReply(request.context)
    return profile.ReleaseReply(request.context, ())


class _General:
    """The agent seen without serve_request: the link takes its general path."""

    def __init__(self, agent: IqAgent) -> None:
        self._agent = agent

    def link_ready(self, link: IqLinkProtocol) -> None:
        self._agent.link_ready(link)

    def link_lost(self, link: IqLinkProtocol, reason: Failure) -> None:
        self._agent.link_lost(link, reason)

    def handle_request(self, link: IqLinkProtocol, message: Message, request: Any) -> Any:
        return self._agent.handle_request(link, message, request)


@contextmanager
def _captured() -> Iterator[list[tuple[object, ...]]]:
    events: list[tuple[object, ...]] = []

    def observe(event: LogEvent) -> None:
        fields = tuple(
            sorted(
                (k, repr(v))
                for k, v in event.items()
                if not k.startswith("log_") or k in ("log_format", "log_namespace", "log_level")
            )
        )
        failure = event.get("log_failure")
        events.append((fields, None if failure is None else type(failure.value).__name__))

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


def _run(
    general: bool, plan: list[str], chunks: list[bytes]
) -> tuple[bytes, list[tuple[str, str]], list[tuple[object, ...]], int]:
    clock = task.Clock()
    observed: list[tuple[str, str]] = []
    agent = IqAgent(
        _Handler(plan, clock),
        "127.0.0.1",
        reactor=clock,
        observer=lambda command, result: observed.append((command, result)),
    )
    agent._registered = True
    owner: Any = _General(agent) if general else agent
    link = IqLinkProtocol(owner, mid=samples.AGW_MID, reactor=clock, tls=None, faults=None)
    transport = StringTransport()
    # Every packet the connection handed out, in order: what the wire must carry, batched or not.
    issued: list[bytes] = []
    send_reply, packets_to_send = link.conn.send_reply, link.conn.packets_to_send

    def spy_reply(*args: Any) -> bytes:
        packet = send_reply(*args)
        issued.append(packet)
        return packet

    def spy_packets() -> list[bytes]:
        packets = packets_to_send()
        issued.extend(packets)
        return packets

    link.conn.send_reply = spy_reply  # type: ignore[method-assign]
    link.conn.packets_to_send = spy_packets  # type: ignore[method-assign]
    with _captured() as events:
        link.makeConnection(transport)
        transport.clear()
        for chunk in chunks:
            link.dataReceived(chunk)
            clock.advance(0.2)
        clock.advance(2.0)
    assert transport.value() == b"".join(issued)
    return transport.value(), observed, events, agent.handler.calls  # type: ignore[attr-defined]


def _packets(picks: list[tuple[int, int, bool]]) -> bytes:
    out = []
    for index, tid, pending in picks:
        request = _REQUESTS[index % len(_REQUESTS)]
        transactions: tuple[Any, ...] = (TransactionRequest(tid, profile.encode_request(request)),)
        if pending:
            transactions += (TransactionPending(tid + 1000),)
        out.append(tpkt.frame(codec.encode(Message(samples.ALG_MID, transactions))))
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(
    plan=st.lists(st.sampled_from(_BEHAVIOURS), min_size=1, max_size=6),
    picks=st.lists(
        st.tuples(st.integers(0, 20), st.integers(1, 6), st.booleans()), min_size=1, max_size=8
    ),
    cuts=st.lists(st.integers(1, 4000), max_size=6),
    garbage=st.booleans(),
)
def test_sync_path_matches_general_path(
    plan: list[str], picks: list[tuple[int, int, bool]], cuts: list[int], garbage: bool
) -> None:
    data = _packets(picks)
    if garbage:
        data += tpkt.frame(b"MEGACO/1 [1.2.3.4] Transaction = 77 { oops")
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points) if b > a]
    fast = _run(False, plan, chunks)
    slow = _run(True, plan, chunks)
    assert fast[0] == slow[0]  # the bytes on the wire
    assert fast[1] == slow[1]  # the observer's calls
    assert fast[2] == slow[2]  # the log events
    assert fast[3] == slow[3]


def test_the_sync_path_is_taken() -> None:
    """The agent's link serves a synchronous reply without building a Deferred."""
    calls: list[object] = []
    original = defer.maybeDeferred

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return original(*args, **kwargs)

    defer.maybeDeferred = spy  # type: ignore[assignment]
    try:
        wire, observed, _, served = _run(False, ["reply"], [_packets([(0, 5, False)])])
    finally:
        defer.maybeDeferred = original  # type: ignore[assignment]
    assert served == 1 and observed == [("reserve", "ok")] and b"Reply" in wire
    assert calls == []
