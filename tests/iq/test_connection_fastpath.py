"""IqConnection.timers(): the earliest deadline from a heap with stale entries (answered
requests, deadlines a Pending restarted) against the minimum over every pending request,
request being served and late-reply window, after every step of random traffic."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from iq import codec, profile, samples, tpkt
from iq.codec import Message, TransactionPending, TransactionReply, TransactionRequest
from iq.connection import IqConnection

_ACTIONS = profile.encode_request(profile.ServiceChangeRequest("register"))
_REPLY = samples.registration()[1].message.transactions[0]
assert isinstance(_REPLY, TransactionReply)


def _scan(conn: IqConnection) -> float | None:
    """The earliest deadline by looking at every one (the definition)."""
    deadlines = [e.deadline for e in conn._outstanding.values()]
    deadlines.extend(conn._ticks.values())
    deadlines.extend(late.until for late in conn._late.values())
    return min(deadlines, default=None)


def _bytes(*transactions: Any) -> bytes:
    return tpkt.frame(codec.encode(Message("<peer>", tuple(transactions))))


_STEP = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([0.5, 1.0, 2.0, 5.0]), st.booleans()),
    st.tuples(st.just("reply"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("pending"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("request"), st.integers(1, 40), st.booleans()),
    st.tuples(st.just("answer"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.1, 0.7, 1.5, 3.0]), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_STEP, max_size=80))
def test_timers_is_the_earliest_deadline(steps: list[tuple[str, Any, bool]]) -> None:
    conn = IqConnection("<me>", max_pending=1000)
    now = 0.0
    sent: list[int] = []
    served: list[int] = []
    for kind, value, flag in steps:
        if kind == "send":
            request = conn.send_request(
                _ACTIONS, now, timeout=value, late_window=2.0 if flag else None
            )
            sent.append(request.transaction_id)
        elif kind in ("reply", "pending") and sent:
            tid = sent[value % len(sent)]
            if kind == "reply":
                transaction: Any = TransactionReply(tid, _REPLY.actions)
            else:
                transaction = TransactionPending(tid)
            conn.receive_data(_bytes(transaction), now)
        elif kind == "request":
            conn.receive_data(_bytes(TransactionRequest(value, _ACTIONS)), now)
        elif kind == "answer" and served:
            tid = served.pop(value % len(served))
            conn.send_reply(TransactionReply(tid, _REPLY.actions), now)
        elif kind == "wait":
            now += value
            if flag:
                conn.on_timer(now)
        while (event := conn.next_event()) is not None:
            request_received = getattr(event, "request", None)
            if request_received is not None:
                served.append(request_received.transaction_id)
        conn.packets_to_send()
        assert conn.timers() == _scan(conn)
        # Stale entries stay bounded: about twice the pending requests, plus a margin.
        assert len(conn._deadlines) <= 2 * len(conn._outstanding) + 65 + 1
