"""IqLinkProtocol without sockets: StringTransport and a fake clock, so time is exact."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from iq import codec, profile, samples, tpkt
from iq.codec import Message, TransactionPending, TransactionReply, TransactionRequest
from iq.errors import IqTimeout, LinkLost
from iq.link import IqLinkProtocol
from iq.transactions import FaultPlan


class Owner:
    def __init__(self) -> None:
        self.requests: list[TransactionRequest] = []
        self.answers: list[defer.Deferred[TransactionReply]] = []
        self.lost = 0

    def link_ready(self, link: IqLinkProtocol) -> None:
        pass

    def link_lost(self, link: IqLinkProtocol, reason: Failure) -> None:
        self.lost += 1

    def handle_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> defer.Deferred[TransactionReply]:
        self.requests.append(request)
        d: defer.Deferred[TransactionReply] = defer.Deferred()
        self.answers.append(d)
        return d


def _link(
    faults: FaultPlan | None = None,
) -> tuple[IqLinkProtocol, StringTransport, task.Clock, Owner]:
    clock = task.Clock()
    owner = Owner()
    link = IqLinkProtocol(owner, mid="<me>", reactor=clock, tls=None, faults=faults)
    transport = StringTransport()
    link.makeConnection(transport)
    return link, transport, clock, owner


def _sent(transport: StringTransport) -> list[Message]:
    data = transport.value()
    transport.clear()
    return [codec.decode(p) for p in tpkt.TpktDecoder().feed(data)]


def _feed(link: IqLinkProtocol, *transactions: Any) -> None:
    link.dataReceived(tpkt.frame(codec.encode(Message("<peer>", tuple(transactions)))))


ACTIONS = profile.encode_request(profile.ServiceChangeRequest("register"))


def test_timeout_is_exact_and_pending_restarts_it() -> None:
    link, transport, clock, _ = _link()
    d = link.request(ACTIONS, timeout=2.0, what="test")
    (sent,) = _sent(transport)
    tid = sent.transactions[0].transaction_id
    clock.advance(1.9)
    _feed(link, TransactionPending(tid))
    clock.advance(1.9)
    assert not d.called  # Pending restarted the 2 s
    clock.advance(0.2)
    assert d.called and isinstance(d.result, Failure) and d.result.check(IqTimeout)
    d.addErrback(lambda f: None)
    # the late reply is logged and dropped
    _feed(link, TransactionReply(tid, ACTIONS))
    assert link.pending_count == 0 and not link.closed


def test_duplicate_request_answered_from_cache_or_with_pending() -> None:
    link, transport, clock, owner = _link()
    request = TransactionRequest(5, ACTIONS)
    _feed(link, request)
    _feed(link, request)  # still in progress: Pending
    assert len(owner.requests) == 1
    (pending,) = _sent(transport)
    assert pending.transactions == (TransactionPending(5),)
    reply_actions = profile.encode_reply(
        profile.ServiceChangeRequest("register"), profile.ServiceChangeReply()
    )
    owner.answers[0].callback(TransactionReply(5, reply_actions))
    (first,) = _sent(transport)
    _feed(link, request)  # answered: the cached reply, handler not called again
    (again,) = _sent(transport)
    assert first == again and len(owner.requests) == 1
    clock.advance(31)  # after LONG-TIMER the id is new again
    _feed(link, request)
    assert len(owner.requests) == 2


def test_slow_handler_sends_pending_every_interval() -> None:
    link, transport, clock, owner = _link()
    _feed(link, TransactionRequest(6, ACTIONS))
    clock.advance(1.0)
    clock.advance(1.0)
    assert [m.transactions for m in _sent(transport)] == [(TransactionPending(6),)] * 2
    owner.answers[0].callback(TransactionReply(6, ACTIONS))
    clock.advance(5)
    assert [type(m.transactions[0]) for m in _sent(transport)] == [TransactionReply]


def test_link_loss_fails_every_pending_request_at_once() -> None:
    link, _, _, owner = _link()
    ds = [link.request(ACTIONS, timeout=10, what=f"r{i}") for i in range(3)]
    link.connectionLost(Failure(ConnectionError("gone")))
    assert owner.lost == 1
    for d in ds:
        assert isinstance(d.result, Failure) and d.result.check(LinkLost)
        d.addErrback(lambda f: None)
    refused = link.request(ACTIONS, timeout=1)
    assert isinstance(refused.result, Failure) and refused.result.check(LinkLost)
    refused.addErrback(lambda f: None)


def test_fault_delay_drop_duplicate_disconnect() -> None:
    link, transport, clock, _ = _link(FaultPlan(seed=1, delay=0.5, duplicate_rate=1.0))
    link.request(ACTIONS, timeout=10).addErrback(lambda f: None)
    assert transport.value() == b""
    clock.advance(0.5)
    assert len(_sent(transport)) == 2  # delayed, then duplicated
    link, transport, clock, _ = _link(FaultPlan(drop_rate=1.0))
    link.request(ACTIONS, timeout=10).addErrback(lambda f: None)
    assert transport.value() == b""
    link, transport, clock, _ = _link(FaultPlan(disconnect_after=2))
    link.request(ACTIONS, timeout=10).addErrback(lambda f: None)
    assert not transport.disconnecting
    link.request(ACTIONS, timeout=10).addErrback(lambda f: None)
    assert len(_sent(transport)) == 2 and transport.disconnecting


def test_garbage_gets_errors_and_link_stays() -> None:
    link, transport, _, owner = _link()
    link.dataReceived(tpkt.frame(b"hello"))
    link.dataReceived(tpkt.frame(b"MEGACO/3 <p> Transaction = 3 { Context = 1 { Bogus } }"))
    first, second = _sent(transport)
    assert first.error is not None and first.error.code == 400
    (reply,) = second.transactions
    assert isinstance(reply, TransactionReply) and reply.transaction_id == 3
    assert reply.error is not None and reply.error.code == 422
    assert not transport.disconnecting
    _feed(link, samples.registration()[0].message.transactions[0])
    assert len(owner.requests) == 1
    link.dataReceived(b"\x09\x00\x00\x10")  # broken framing: the stream cannot be resynchronised
    assert transport.disconnecting
