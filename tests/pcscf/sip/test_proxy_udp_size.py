"""RFC 3261 18.1.1 in the proxy core: a request larger than the threshold (1300 bytes: the path
MTU is unknown) for a UDP next hop leaves over TCP to the same address with a TCP Via; when TCP
cannot reach it the request is answered 513, and a plain transport failure 503, at once."""

from __future__ import annotations

import pytest

from pcscf.sip.message import Request, Response
from pcscf.sip.proxy import (
    MAX_UDP_PAYLOAD,
    DialogEnded,
    DialogId,
    Forward,
    Log,
    Peer,
    ProxyConfig,
    ProxyCore,
    ReofferAnswered,
)
from tests.pcscf.sip.test_proxy import (
    CORE,
    GM,
    SCSCF,
    UE,
    _ids,
    invite,
    media,
    register,
    resp_to,
    sends,
)

SCSCF_TCP = Peer("core", "tcp", SCSCF.host, SCSCF.port)


def _core(**config: int) -> ProxyCore:
    ids = _ids()
    return ProxyCore(
        ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, **config), new_id=lambda: next(ids)
    )


def _forwarded(core: ProxyCore, body: bytes, call: str = "c1") -> tuple[Peer, Request]:
    out = invite(core, call=call, branch=call)
    (ask,) = media(out)
    (fwd,) = sends(core.media_result(ask.token, Forward(body), 1.1), "core")
    assert isinstance(fwd.message, Request)
    return fwd.peer, fwd.message


def _responses(out: list[object], side: str = "gm") -> list[Response]:
    return [s.message for s in sends(out, side) if isinstance(s.message, Response)]


def test_small_request_stays_on_udp() -> None:
    core = _core()
    register(core)
    peer, sent = _forwarded(core, b"v=0\r\n")
    assert peer == SCSCF
    assert sent.top_via.transport == "UDP"
    assert len(sent.serialise()) <= 1300


def test_request_over_the_threshold_goes_over_tcp_with_a_tcp_via() -> None:
    core = _core()
    register(core)
    peer, sent = _forwarded(core, b"a=x:" + b"y" * 1300 + b"\r\n")
    assert peer == SCSCF_TCP
    via = sent.top_via
    assert (via.transport, via.host, via.port) == ("TCP", *CORE)
    # no UDP retransmissions on TCP: Timer A is not armed, only the 64*T1 timeout
    out = core.tick(1.1 + 0.6)
    assert sends(out) == []
    # the response matches and reaches the UE as usual
    out = core.receive(SCSCF_TCP, resp_to(sent, 180), 1.5)
    assert [r.status for r in _responses(out)] == [180]


def test_threshold_is_a_knob_and_zero_keeps_udp() -> None:
    body = b"a=x:" + b"y" * 2000 + b"\r\n"
    core = _core(udp_tcp_threshold=4000)
    register(core)
    assert _forwarded(core, body)[0] == SCSCF
    core = _core(udp_tcp_threshold=0)
    register(core)
    assert _forwarded(core, body)[0] == SCSCF


def test_no_udp_datagram_fits_with_zero_threshold_gives_513() -> None:
    core = _core(udp_tcp_threshold=0)
    register(core)
    out = invite(core, call="huge", branch="huge")
    (ask,) = media(out)
    out = core.media_result(ask.token, Forward(b"a=x:" + b"y" * MAX_UDP_PAYLOAD), 1.1)
    assert sends(out, "core") == []
    (refused,) = [r for r in _responses(out) if r.status >= 200]
    assert refused.status == 513
    assert "fit no UDP datagram" in (refused.get("Warning") or "")
    assert any(isinstance(a, Log) and a.level == "warn" for a in out)
    assert [a.dialog for a in out if isinstance(a, DialogEnded)] == [DialogId("huge", "orig")]


def test_tcp_failure_after_the_switch_gives_513_and_ends_the_early_dialog() -> None:
    core = _core()
    register(core)
    _forwarded(core, b"a=x:" + b"y" * 1500 + b"\r\n")
    out = core.transport_failed(SCSCF_TCP, 1.3)
    (refused,) = _responses(out)
    assert refused.status == 513 and refused.reason == "Message Too Large"
    warning = refused.get("Warning") or ""
    assert "too large for UDP" in warning and "TCP to 127.0.0.9:6060 failed" in warning
    assert [a.dialog for a in out if isinstance(a, DialogEnded)] == [DialogId("c1", "orig")]
    # nothing left behind: no timer fires a 408 later
    assert _responses(core.tick(100.0)) == []


def test_plain_tcp_failure_gives_503_and_spares_other_peers() -> None:
    core = _core(udp_tcp_threshold=0)
    register(core)
    _forwarded(core, b"v=0\r\n", call="c1")
    other = Peer("core", "tcp", "127.0.0.9", 7070)
    assert core.transport_failed(other, 1.2) == []
    assert core.transport_failed(SCSCF_TCP, 1.2) == []  # c1 went over UDP
    ids = _ids()
    config = ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF_TCP, require_registration=False)
    tcp = ProxyCore(config, new_id=lambda: next(ids))
    _forwarded(tcp, b"v=0\r\n", call="c2")
    (refused,) = _responses(tcp.transport_failed(SCSCF_TCP, 1.3))
    assert refused.status == 503
    assert "transport to 127.0.0.9:6060 failed" in (refused.get("Warning") or "")


def test_a_transaction_that_has_an_answer_is_not_failed() -> None:
    core = _core()
    register(core)
    _peer, sent = _forwarded(core, b"a=x:" + b"y" * 1500 + b"\r\n")
    core.receive(SCSCF_TCP, resp_to(sent, 100), 1.2)
    assert _responses(core.transport_failed(SCSCF_TCP, 1.3)) == []


def test_reoffer_from_inside_switches_too() -> None:
    core = _core()
    register(core)
    _peer, sent = _forwarded(core, b"v=0\r\n")
    ok = resp_to(sent, 200, body=b"a", extra="Contact: <sip:bob@127.0.0.9:6060>")
    core.media_result(media(core.receive(SCSCF, ok, 2))[0].token, Forward(b"a"), 2.1)
    token, out = core.reoffer(DialogId("c1", "orig"), "core", b"a=x:" + b"y" * 1500, 10)
    (reinvite,) = sends(out)
    assert reinvite.peer == SCSCF_TCP
    assert isinstance(reinvite.message, Request) and reinvite.message.top_via.transport == "TCP"
    out = core.transport_failed(SCSCF_TCP, 10.2)
    assert [a for a in out if isinstance(a, ReofferAnswered)] == [ReofferAnswered(token, 513, b"")]


def test_threshold_bounds() -> None:
    with pytest.raises(ValueError, match="udp_tcp_threshold"):
        ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, udp_tcp_threshold=-1)
    with pytest.raises(ValueError, match="udp_tcp_threshold"):
        ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, udp_tcp_threshold=MAX_UDP_PAYLOAD + 1)
    assert UE.transport == "udp"
