"""IqConnection, the sans-IO transaction rules of an Iq link: no reactor, time is a number."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iq import codec, profile, samples, tpkt
from iq.codec import Message, TransactionPending, TransactionReply, TransactionRequest
from iq.connection import (
    DuplicateRequest,
    Event,
    IqConnection,
    LateReplyReceived,
    LateWindowClosed,
    MessageRefused,
    PeerErrorReceived,
    PendingReceived,
    ReplyEncodingFailed,
    ReplyReceived,
    RequestReceived,
    StreamBroken,
    TransactionTimedOut,
    UnknownPendingReceived,
    UnknownReplyReceived,
    WrongMid,
)
from iq.errors import LinkLost, LocalIqError, Overloaded

ACTIONS = profile.encode_request(profile.ServiceChangeRequest("register"))
REPLY_ACTIONS = profile.encode_reply(
    profile.ServiceChangeRequest("register"), profile.ServiceChangeReply()
)


def _bytes(*transactions: Any, mid: str = "<peer>") -> bytes:
    return tpkt.frame(codec.encode(Message(mid, tuple(transactions))))


def _events(conn: IqConnection) -> list[Event]:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def _decode(packets: list[bytes]) -> list[Message]:
    return [codec.decode(p) for p in tpkt.TpktDecoder().feed(b"".join(packets))]


def _huge_actions() -> tuple[codec.Action, ...]:
    """2,000 streams: far more than one TPKT packet (65,531 bytes) can carry."""
    step = samples.originating()[0]
    assert isinstance(step.request, profile.ReserveRequest)
    (stream,) = step.request.streams
    streams = tuple(attrs.evolve(stream, stream=n) for n in range(1, 2001))
    return profile.encode_request(profile.ReserveRequest(step.request.call_id, streams))


def test_a_request_times_out_exactly_at_its_deadline() -> None:
    conn = IqConnection("<me>")
    sent = conn.send_request(ACTIONS, 10.0, timeout=2.0, what="test")
    (message,) = _decode([sent.data])
    assert message.mid == "<me>"
    assert message.transactions == (TransactionRequest(sent.transaction_id, ACTIONS),)
    assert conn.pending_count == 1 and conn.timers() == 12.0
    conn.on_timer(11.9)
    assert _events(conn) == [] and conn.pending_count == 1
    conn.on_timer(12.0)
    assert _events(conn) == [TransactionTimedOut(sent.transaction_id, "test", 2.0)]
    assert conn.pending_count == 0 and conn.timers() is None


def test_pending_restarts_the_deadline() -> None:
    conn = IqConnection("<me>")
    sent = conn.send_request(ACTIONS, 0.0, timeout=2.0)
    conn.receive_data(_bytes(TransactionPending(sent.transaction_id)), 1.9)
    assert _events(conn) == [PendingReceived(sent.transaction_id, 3.9)]
    assert conn.timers() == 3.9
    conn.on_timer(3.8)
    assert _events(conn) == []
    conn.on_timer(3.9)
    assert _events(conn) == [TransactionTimedOut(sent.transaction_id, "", 2.0)]
    # a Pending for what is no longer pending is dropped
    conn.receive_data(_bytes(TransactionPending(sent.transaction_id)), 4.0)
    assert _events(conn) == [UnknownPendingReceived(sent.transaction_id)]


def test_a_reply_ends_the_transaction() -> None:
    conn = IqConnection("<me>")
    sent = conn.send_request(ACTIONS, 0.0, timeout=2.0, what="ServiceChange")
    reply = TransactionReply(sent.transaction_id, REPLY_ACTIONS)
    conn.receive_data(_bytes(reply), 1.0)
    assert _events(conn) == [ReplyReceived(reply, "ServiceChange")]
    assert conn.pending_count == 0 and conn.timers() is None
    conn.receive_data(_bytes(reply), 1.5)  # a second copy
    assert _events(conn) == [UnknownReplyReceived(reply)]


def test_a_late_reply_is_told_apart_within_its_window_and_ignored() -> None:
    conn = IqConnection("<me>")
    sent = conn.send_request(ACTIONS, 0.0, timeout=1.0, what="Reserve", late_window=120.0)
    conn.on_timer(1.0)
    assert _events(conn) == [TransactionTimedOut(sent.transaction_id, "Reserve", 1.0)]
    assert conn.pending_count == 0 and conn.timers() == 121.0
    late = TransactionReply(sent.transaction_id, REPLY_ACTIONS)
    conn.receive_data(_bytes(late), 5.0)
    assert _events(conn) == [LateReplyReceived(late, "Reserve")]
    assert conn.pending_count == 0 and conn.packets_to_send() == []
    conn.receive_data(_bytes(late), 6.0)  # only once
    assert _events(conn) == [UnknownReplyReceived(late)]


def test_the_late_window_closes() -> None:
    conn = IqConnection("<me>")
    sent = conn.send_request(ACTIONS, 0.0, timeout=1.0, late_window=10.0)
    conn.on_timer(1.0)
    _events(conn)
    conn.on_timer(11.0)
    assert _events(conn) == [LateWindowClosed(sent.transaction_id)]
    assert conn.timers() is None
    late = TransactionReply(sent.transaction_id, REPLY_ACTIONS)
    conn.receive_data(_bytes(late), 12.0)
    assert _events(conn) == [UnknownReplyReceived(late)]


def test_without_a_late_window_a_late_reply_is_unknown() -> None:
    conn = IqConnection("<me>")
    sent = conn.send_request(ACTIONS, 0.0, timeout=1.0)
    conn.on_timer(1.0)
    _events(conn)
    assert conn.timers() is None
    late = TransactionReply(sent.transaction_id, REPLY_ACTIONS)
    conn.receive_data(_bytes(late), 2.0)
    assert _events(conn) == [UnknownReplyReceived(late)]


def test_timeouts_come_in_deadline_order() -> None:
    conn = IqConnection("<me>")
    slow = conn.send_request(ACTIONS, 0.0, timeout=3.0, what="slow")
    fast = conn.send_request(ACTIONS, 0.0, timeout=1.0, what="fast")
    conn.on_timer(5.0)
    assert [(e.transaction_id, e.what) for e in _events(conn)] == [  # type: ignore[union-attr]
        (fast.transaction_id, "fast"),
        (slow.transaction_id, "slow"),
    ]


def test_the_pending_limit_refuses_at_once_and_records_nothing() -> None:
    conn = IqConnection("<me>", peer="127.0.0.1:2944", max_pending=2)
    first = conn.send_request(ACTIONS, 0.0, timeout=5.0)
    conn.send_request(ACTIONS, 0.0, timeout=5.0)
    with pytest.raises(Overloaded, match=r"2 Iq requests to 127\.0\.0\.1:2944 already pending"):
        conn.send_request(ACTIONS, 1.0, timeout=1.0)
    assert conn.pending_count == 2 and conn.timers() == 5.0
    conn.receive_data(_bytes(TransactionReply(first.transaction_id, REPLY_ACTIONS)), 2.0)
    _events(conn)
    assert conn.send_request(ACTIONS, 2.0, timeout=5.0).transaction_id == 3


def test_an_unbounded_request_a_release_is_not_refused_by_the_pending_limit() -> None:
    conn = IqConnection("<me>", peer="127.0.0.1:2944", max_pending=1)
    conn.send_request(ACTIONS, 0.0, timeout=5.0)
    with pytest.raises(Overloaded):
        conn.send_request(ACTIONS, 0.0, timeout=5.0)
    freed = conn.send_request(ACTIONS, 0.0, timeout=5.0, bounded=False)
    assert conn.pending_count == 2
    conn.receive_data(_bytes(TransactionReply(freed.transaction_id, REPLY_ACTIONS)), 1.0)
    assert [type(e).__name__ for e in _events(conn)] == ["ReplyReceived"]
    # still one bounded request pending: the next bounded one is refused, as before
    with pytest.raises(Overloaded):
        conn.send_request(ACTIONS, 1.0, timeout=5.0)


def test_a_request_that_cannot_be_encoded_leaves_nothing_behind() -> None:
    conn = IqConnection("<me>")
    with pytest.raises(LocalIqError, match="TPKT maximum"):
        conn.send_request(_huge_actions(), 0.0, timeout=5.0, late_window=120.0)
    assert conn.pending_count == 0
    assert conn.timers() is None
    assert conn.packets_to_send() == [] and _events(conn) == []
    conn.on_timer(1000.0)
    assert _events(conn) == []
    # the connection is still fine for the next request
    sent = conn.send_request(ACTIONS, 0.0, timeout=5.0)
    assert conn.pending_count == 1 and sent.data


def test_a_reply_that_cannot_be_encoded_becomes_a_500() -> None:
    conn = IqConnection("<me>")
    conn.receive_data(_bytes(TransactionRequest(4, ACTIONS)), 0.0)
    (received,) = _events(conn)
    assert isinstance(received, RequestReceived)
    packet = conn.send_reply(TransactionReply(4, _huge_actions()), 0.1)
    (event,) = _events(conn)
    assert isinstance(event, ReplyEncodingFailed) and event.transaction_id == 4
    (message,) = _decode([packet])
    (reply,) = message.transactions
    assert isinstance(reply, TransactionReply) and reply.error is not None
    assert reply.error.code == 500
    # the 500 is what a duplicate gets
    conn.receive_data(_bytes(TransactionRequest(4, ACTIONS)), 0.2)
    assert _events(conn) == [DuplicateRequest(4, in_progress=False)]
    assert conn.packets_to_send() == [packet]


def test_a_duplicate_request_gets_pending_then_the_cached_reply() -> None:
    conn = IqConnection("<me>")
    request = TransactionRequest(5, ACTIONS)
    conn.receive_data(_bytes(request), 0.0)
    assert _events(conn) == [RequestReceived(Message("<peer>", (request,)), request)]
    conn.receive_data(_bytes(request), 0.5)  # still being served: Pending
    assert _events(conn) == [DuplicateRequest(5, in_progress=True)]
    (pending,) = _decode(conn.packets_to_send())
    assert pending.transactions == (TransactionPending(5),)
    first = conn.send_reply(TransactionReply(5, REPLY_ACTIONS), 0.6)
    conn.receive_data(_bytes(request), 1.0)  # answered: the cached reply, not served again
    assert _events(conn) == [DuplicateRequest(5, in_progress=False)]
    assert conn.packets_to_send() == [first]
    conn.receive_data(_bytes(request), 31.0)  # after LONG-TIMER the id is new again
    assert _events(conn) == [RequestReceived(Message("<peer>", (request,)), request)]


def test_a_reply_sent_while_its_event_is_handled_answers_a_later_duplicate() -> None:
    # Transactions are handled one event at a time: a reply sent before the next event is
    # taken is seen by it.
    conn = IqConnection("<me>")
    request = TransactionRequest(7, ACTIONS)
    conn.receive_data(_bytes(request, request), 0.0)
    event = conn.next_event()
    assert isinstance(event, RequestReceived)
    packet = conn.send_reply(TransactionReply(7, REPLY_ACTIONS), 0.0)
    assert _events(conn) == [DuplicateRequest(7, in_progress=False)]
    assert conn.packets_to_send() == [packet]


def test_pending_goes_out_every_interval_while_a_request_is_served() -> None:
    conn = IqConnection("<me>", pending_interval=1.0)
    conn.receive_data(_bytes(TransactionRequest(6, ACTIONS)), 0.0)
    _events(conn)
    assert conn.timers() == 1.0
    conn.on_timer(1.0)
    assert conn.timers() == 2.0
    conn.on_timer(2.0)
    sent = _decode(conn.packets_to_send())
    assert [m.transactions for m in sent] == [(TransactionPending(6),)] * 2
    conn.send_reply(TransactionReply(6, REPLY_ACTIONS), 2.5)
    assert conn.timers() is None
    conn.on_timer(10.0)
    assert conn.packets_to_send() == []


def test_a_message_that_does_not_decode_is_answered_with_an_error() -> None:
    conn = IqConnection("<me>")
    conn.receive_data(tpkt.frame(b"hello"), 0.0)
    conn.receive_data(tpkt.frame(b"MEGACO/3 <p> Transaction = 3 { Context = 1 { Bogus } }"), 0.0)
    events = _events(conn)
    assert [type(e) for e in events] == [MessageRefused, MessageRefused]
    first, second = _decode(conn.packets_to_send())
    assert first.error is not None and first.error.code == 400
    (reply,) = second.transactions
    assert isinstance(reply, TransactionReply) and reply.transaction_id == 3
    assert reply.error is not None and reply.error.code == 422


def test_a_message_level_error_from_the_peer_is_reported() -> None:
    conn = IqConnection("<me>")
    error = codec.ErrorDescriptor(400, "Syntax error in message")
    conn.receive_data(tpkt.frame(codec.encode(Message("<peer>", error=error))), 0.0)
    assert _events(conn) == [PeerErrorReceived(error)]
    assert conn.packets_to_send() == []


def test_requests_under_another_mid_get_402() -> None:
    conn = IqConnection("<me>")
    conn.registered_mid = "<agw1>"
    conn.receive_data(_bytes(TransactionRequest(9, ACTIONS), mid="<agw2>"), 0.0)
    assert _events(conn) == [WrongMid("<agw2>", "<agw1>")]
    (message,) = _decode(conn.packets_to_send())
    (reply,) = message.transactions
    assert isinstance(reply, TransactionReply) and reply.transaction_id == 9
    assert reply.error is not None and reply.error.code == 402
    assert conn.peer_mid is None
    conn.receive_data(_bytes(TransactionRequest(10, ACTIONS), mid="<agw1>"), 0.0)
    assert [type(e) for e in _events(conn)] == [RequestReceived]
    assert conn.peer_mid == "<agw1>"


def test_broken_framing_ends_the_stream() -> None:
    conn = IqConnection("<me>")
    conn.receive_data(_bytes(TransactionRequest(1, ACTIONS)), 0.0)
    conn.receive_data(b"\x09\x00\x00\x10", 0.0)
    conn.receive_data(_bytes(TransactionRequest(2, ACTIONS)), 0.0)
    events = _events(conn)
    assert [type(e) for e in events] == [RequestReceived, StreamBroken]


def test_connection_lost_ends_every_pending_request() -> None:
    conn = IqConnection("<me>", peer="p:1")
    sent = [conn.send_request(ACTIONS, 0.0, timeout=10, what=f"r{i}") for i in range(3)]
    conn.receive_data(_bytes(TransactionRequest(5, ACTIONS)), 0.0)
    _events(conn)
    aborted = conn.connection_lost()
    assert [(a.transaction_id, a.what) for a in aborted] == [
        (s.transaction_id, f"r{i}") for i, s in enumerate(sent)
    ]
    assert conn.pending_count == 0 and conn.timers() is None
    with pytest.raises(LinkLost, match="p:1"):
        conn.send_request(ACTIONS, 1.0, timeout=1)
    conn.receive_data(_bytes(TransactionRequest(6, ACTIONS)), 1.0)
    assert _events(conn) == []


def _stream() -> tuple[bytes, list[int]]:
    """Requests, duplicates, replies, Pendings and garbage, as one byte stream; the ids of
    the requests the connection sent (so the replies and Pendings match)."""
    parts = [
        _bytes(TransactionRequest(1, ACTIONS)),
        _bytes(TransactionRequest(1, ACTIONS)),
        _bytes(TransactionPending(1)),
        _bytes(TransactionReply(2, REPLY_ACTIONS)),
        tpkt.frame(b"not megaco"),
        _bytes(TransactionReply(99, REPLY_ACTIONS)),
        _bytes(TransactionPending(3)),
        _bytes(TransactionRequest(2, ACTIONS), TransactionRequest(3, ACTIONS)),
        _bytes(TransactionReply(1, REPLY_ACTIONS), TransactionReply(3, REPLY_ACTIONS)),
    ]
    return b"".join(parts), [1, 2, 3]


def _run(chunks: list[bytes]) -> tuple[list[Event], list[bytes], int]:
    conn = IqConnection("<me>")
    for _ in range(3):
        conn.send_request(ACTIONS, 0.0, timeout=5.0)
    events: list[Event] = []
    packets: list[bytes] = []
    for chunk in chunks:
        conn.receive_data(chunk, 1.0)
        while (event := conn.next_event()) is not None:
            events.append(event)
            packets.extend(conn.packets_to_send())
            if isinstance(event, RequestReceived) and event.request.transaction_id == 1:
                packets.append(conn.send_reply(TransactionReply(1, REPLY_ACTIONS), 1.0))
        packets.extend(conn.packets_to_send())
    return events, packets, conn.pending_count


@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_splitting_the_stream_anywhere_gives_the_same_events(cuts: list[int]) -> None:
    data, _ = _stream()
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert b"".join(chunks) == data
    assert _run(chunks) == _run([data])


def test_the_stream_used_for_splitting_covers_the_rules() -> None:
    events, packets, pending = _run([_stream()[0]])
    kinds = {type(e) for e in events}
    assert {
        RequestReceived,
        DuplicateRequest,
        PendingReceived,
        ReplyReceived,
        MessageRefused,
        UnknownReplyReceived,
    } <= kinds
    # Every request the connection sent was answered; it answered the first request it got.
    assert pending == 0 and packets
