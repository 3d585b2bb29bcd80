"""A finished transaction's messages drop their lookups at the next call into the proxy core
(they are kept until Timer J/K/D/L only to answer retransmissions), and everything a lingering
transaction still does comes out the same."""

from __future__ import annotations

from pcscf.sip.message import Request, Response
from pcscf.sip.proxy import ProxyCore

from .test_proxy import SCSCF, _forward_first_invite, core, invite, resp_to, sends

__all__ = ["core"]  # the fixture, used by name


def _lookups(message: Request | Response) -> tuple[object, object, object]:
    return message._index, message._items, message._wire


def test_a_finished_server_transaction_sheds_at_the_next_call_and_answers_the_same(
    core: ProxyCore,
) -> None:
    sent = _forward_first_invite(core)  # the client transaction's request
    out = core.receive(SCSCF, resp_to(sent, 486), 2)
    (busy,) = sends(out, "gm")
    wire = busy.message.serialise()  # what the edge sends
    (txn,) = [t for t in core.server_txns.values() if t.request.method == "INVITE"]
    assert txn.request._index is not None  # looked up while it was handled
    # the next call in drops the lookups of both transactions' messages
    assert sends(core.tick(2.05)) == []
    assert _lookups(txn.request) == (None, None, None)
    assert _lookups(sent) == (None, None, None)
    last = txn.last
    assert last is not None
    assert last._index is None and last._items is None
    assert last._wire == wire  # kept: the response is sent again as it was
    # Timer G: the 486 again, byte for byte
    again = sends(core.tick(2.0 + 0.5), "gm")
    assert [s.message.serialise() for s in again] == [wire]
    # a retransmitted INVITE from the UE: the 486 again
    out = invite(core)
    assert [s.message.serialise() for s in sends(out)] == [wire]
    # a retransmitted 486 from the next hop: ACKed again from the shed request (rebuilt)
    acked = sends(core.receive(SCSCF, resp_to(sent, 486), 2.6), "core")
    assert [s.message.method for s in acked] == ["ACK"]  # type: ignore[union-attr]
    assert acked[0].message.get("Call-ID") == "c1"


def test_an_unanswered_transaction_keeps_its_lookups(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    core.tick(1.2)
    (txn,) = [t for t in core.server_txns.values() if t.request.method == "INVITE"]
    assert txn.request._index is not None  # still being handled: nothing shed
    wire = sent.serialise()
    assert sent._wire is wire
    out = core.tick(1.1 + 0.5)  # Timer A: the same bytes, not serialised again
    assert [s.message.serialise() for s in sends(out, "core")] == [wire]
    assert sent._wire is wire
