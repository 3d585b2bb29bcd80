"""The proxy core without a reactor: messages and time in, actions out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcscf.sip.media import DialogId, Forward, Reject
from pcscf.sip.message import Request, Response, parse_datagram
from pcscf.sip.proxy import (
    DialogEnded,
    MediaRequest,
    Peer,
    ProxyConfig,
    ProxyCore,
    ReofferAnswered,
    Send,
)

GM = ("127.0.0.1", 5060)
CORE = ("127.0.0.2", 5070)
SCSCF = Peer("core", "udp", "127.0.0.9", 6060)
UE = Peer("gm", "udp", "192.0.2.10", 40000)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=message 7394 TCP/TLS/MSRP *\r\n"
)


def _ids() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"id{n}"


@pytest.fixture
def core() -> ProxyCore:
    ids = _ids()
    return ProxyCore(ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF), new_id=lambda: next(ids))


def req(text: str, body: bytes = b"") -> Request:
    head = text.strip().replace("\n", "\r\n")
    if body:
        head += "\r\nContent-Type: application/sdp"
    msg = parse_datagram(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert isinstance(msg, Request)
    return msg


def resp_to(
    request: Request, status: int, *, tag: str = "callee", body: bytes = b"", extra: str = ""
) -> Response:
    """A response as the next hop would build it to the request we sent."""
    lines = [f"SIP/2.0 {status} X"]
    for name in ("Via", "Record-Route", "From", "Call-ID", "CSeq"):
        lines += [f"{name}: {v}" for v in request.get_all(name)]
    to = request.get("To") or ""
    lines.append(f"To: {to}" + (f";tag={tag}" if tag and "tag=" not in to and status > 100 else ""))
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(msg, Response)
    return msg


def sends(actions: list[object], side: str | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and (side is None or a.peer.side == side)]


def media(actions: list[object]) -> list[MediaRequest]:
    return [a for a in actions if isinstance(a, MediaRequest)]


def register(
    core: ProxyCore, ue: Peer = UE, user: str = "alice", expires: int = 600
) -> list[object]:
    reg = req(
        f"""REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP {ue.host}:{ue.port};branch=z9hG4bKreg{user}{expires}
Max-Forwards: 70
From: <sip:{user}@ims.test>;tag=r1
To: <sip:{user}@ims.test>
Call-ID: reg-{user}
CSeq: {expires + 1} REGISTER
Contact: <sip:{user}@{ue.host}:{ue.port}>
Expires: {expires}
Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2, msrp-tls;mediasec"""
    )
    out = core.receive(ue, reg, 0.0)
    (fwd,) = sends(out)
    assert fwd.peer == SCSCF
    sent = fwd.message
    assert isinstance(sent, Request)
    contact = f"<sip:{user}@{ue.host}:{ue.port}>;expires={expires}" if expires else ""
    ok = resp_to(sent, 200, extra=f"Contact: {contact}" if contact else "")
    return [*out, *core.receive(SCSCF, ok, 0.5)]


def invite(
    core: ProxyCore, *, body: bytes = SDP, call: str = "c1", ue: Peer = UE, branch: str = "b1"
) -> list[object]:
    msg = req(
        f"""INVITE sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP {ue.host}:{ue.port};branch=z9hG4bK{branch}
Max-Forwards: 70
Route: <sip:{GM[0]}:{GM[1]};lr>
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: {call}
CSeq: 1 INVITE
Contact: <sip:alice@{ue.host}:{ue.port}>""",
        body,
    )
    return core.receive(ue, msg, 1.0)


def test_register_adds_path_and_security_server_and_records_mechanisms(core: ProxyCore) -> None:
    out = register(core)
    fwd = sends(out)[0].message
    assert isinstance(fwd, Request)
    path = fwd.addresses("Path")[0].sip_uri()
    assert (path.host, path.port, path.param("lr")) == ("127.0.0.2", 5070, "")
    to_ue = sends(out)[1]
    assert to_ue.peer == UE
    assert to_ue.message.get("Security-Server") == "bfcp-tls;mediasec, msrp-tls;mediasec"
    (binding,) = list(core.registrar)
    assert binding.mechanisms == {"msrp-tls"}
    assert binding.flow.port == 40000
    assert binding.expires_at == 600.5


def test_401_gets_security_server_and_no_binding(core: ProxyCore) -> None:
    reg = req(
        """REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKr
From: <sip:alice@ims.test>;tag=r1
To: <sip:alice@ims.test>
Call-ID: r
CSeq: 1 REGISTER
Contact: <sip:alice@192.0.2.10:40000>
Security-Client: msrp-tls;mediasec"""
    )
    fwd = sends(core.receive(UE, reg, 0))[0].message
    assert isinstance(fwd, Request)
    out = core.receive(SCSCF, resp_to(fwd, 401), 0)
    assert "msrp-tls;mediasec" in (sends(out)[0].message.get("Security-Server") or "")
    assert len(core.registrar) == 0


def test_deregister_removes_binding(core: ProxyCore) -> None:
    register(core)
    register(core, expires=0)
    assert len(core.registrar) == 0


def test_unregistered_ue_is_refused(core: ProxyCore) -> None:
    trying, answer = sends(invite(core))
    assert isinstance(answer.message, Response)
    assert (trying.message.status, answer.message.status) == (100, 403)  # type: ignore[union-attr]
    assert answer.message.reason == "Forbidden (not registered)"


def _forward_first_invite(core: ProxyCore) -> Request:
    register(core)
    out = invite(core)
    assert [s.message.status for s in sends(out) if isinstance(s.message, Response)] == [100]
    assert sends(out, "core") == []  # waits for the media handler
    (ask,) = media(out)
    out = core.media_result(ask.token, Forward(b"rewritten"), 1.1)
    (fwd,) = sends(out, "core")
    assert isinstance(fwd.message, Request)
    return fwd.message


def test_originating_invite_waits_for_media_then_forwards(core: ProxyCore) -> None:
    register(core)
    out = invite(core)
    (ask,) = media(out)
    ctx = ask.context
    assert (ctx.direction, ctx.kind, ctx.method, ctx.initial, ctx.from_ue) == (
        "orig",
        "offer",
        "INVITE",
        True,
        True,
    )
    assert ctx.ue.mechanisms == {"msrp-tls"} and ctx.ue.registered
    assert ctx.step == "orig-offer"
    assert ask.body == SDP
    out = core.media_result(ask.token, Forward(b"rewritten"), 1.1)
    (fwd,) = sends(out)
    msg = fwd.message
    assert isinstance(msg, Request) and fwd.peer == SCSCF
    assert msg.body == b"rewritten"
    assert msg.get("Max-Forwards") == "69"
    assert msg.get("Route") is None  # our own Route entry was consumed
    rr = [a.sip_uri() for a in msg.addresses("Record-Route")]
    assert [(u.host, u.port, u.param("e2ae")) for u in rr] == [
        ("127.0.0.2", 5070, "orig"),
        ("127.0.0.1", 5060, "orig"),
    ]
    assert msg.top_via.sent_by == "127.0.0.2:5070" and msg.top_via.branch.startswith("z9hG4bK")


def test_slow_media_for_one_call_does_not_block_another(core: ProxyCore) -> None:
    register(core)
    slow = media(invite(core, call="slow", branch="s"))[0]
    fast_out = invite(core, call="fast", branch="f")
    fast = media(fast_out)[0]
    out = core.media_result(fast.token, Forward(b"fast"), 1.2)
    assert [s.message.call_id for s in sends(out, "core")] == ["fast"]
    out = core.media_result(slow.token, Forward(b"slow"), 5.0)
    assert [s.message.call_id for s in sends(out, "core")] == ["slow"]


def test_answer_in_18x_and_2xx_keep_order_and_use_cache(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    out = core.receive(SCSCF, resp_to(sent, 183, body=b"answer"), 2)
    (ask,) = media(out)
    assert (ask.context.kind, ask.context.status, ask.context.from_ue) == ("answer", 183, False)
    # the 200 arrives while the 183 is with the handler: it waits its turn
    out = core.receive(SCSCF, resp_to(sent, 200, body=b"answer"), 2.1)
    assert sends(out) == [] and media(out) == []
    out = core.media_result(ask.token, Forward(b"answer'"), 2.2)
    statuses = [(s.message.status, s.message.body) for s in sends(out, "gm")]
    assert statuses == [(183, b"answer'"), (200, b"answer'")]  # same answer: cached result


def test_rejected_offer_gets_final_response_with_warning(core: ProxyCore) -> None:
    register(core)
    ask = media(invite(core))[0]
    out = core.media_result(ask.token, Reject(488, "no AGW in service"), 1.1)
    (answer,) = sends(out)
    assert isinstance(answer.message, Response) and answer.message.status == 488
    assert '"no AGW in service"' in (answer.message.get("Warning") or "")
    assert [a.reason for a in out if isinstance(a, DialogEnded)] == [
        "offer rejected: 488 no AGW in service"
    ]
    assert sends(out, "core") == []


def test_cancel_while_media_pending(core: ProxyCore) -> None:
    register(core)
    first = invite(core)
    ask = media(first)[0]
    cancel = req(
        """CANCEL sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKb1
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: c1
CSeq: 1 CANCEL"""
    )
    out = core.receive(UE, cancel, 1.5)
    assert [(s.message.status, s.message.cseq[1]) for s in sends(out)] == [
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert any(isinstance(a, DialogEnded) for a in out)
    assert sends(core.media_result(ask.token, Forward(b"late"), 2)) == []


def test_cancel_after_forwarding_and_hop_by_hop_ack(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    core.receive(SCSCF, resp_to(sent, 180), 2)
    cancel = req(
        """CANCEL sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKb1
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: c1
CSeq: 1 CANCEL"""
    )
    out = core.receive(UE, cancel, 2.5)
    (down,) = sends(out, "core")
    assert isinstance(down.message, Request) and down.message.method == "CANCEL"
    assert down.message.top_via.branch == sent.top_via.branch
    out = core.receive(SCSCF, resp_to(sent, 487), 3)
    ack = [s.message for s in sends(out, "core")]
    assert [m.method for m in ack if isinstance(m, Request)] == ["ACK"]
    assert [s.message.status for s in sends(out, "gm")] == [487]


def test_busy_forwarded_acked_downstream_and_ack_upstream_absorbed(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    out = core.receive(SCSCF, resp_to(sent, 486), 2)
    assert [s.message.method for s in sends(out, "core")] == ["ACK"]  # type: ignore[union-attr]
    assert [s.message.status for s in sends(out, "gm")] == [486]  # type: ignore[union-attr]
    assert any(isinstance(a, DialogEnded) for a in out)
    again = core.receive(SCSCF, resp_to(sent, 486), 2.2)  # retransmitted final
    assert [s.message.method for s in sends(again)] == ["ACK"]  # type: ignore[union-attr]
    ack = req(
        """ACK sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKb1
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>;tag=callee
Call-ID: c1
CSeq: 1 ACK"""
    )
    assert sends(core.receive(UE, ack, 2.3)) == []


def test_udp_retransmission_and_timeout(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    assert core.next_deadline() is not None
    assert sends(core.tick(1.5), "core") == []
    out = core.tick(1.1 + 0.5)  # Timer A: T1 after sending
    assert [s.message for s in sends(out, "core")] == [sent]
    out = core.tick(1.1 + 0.5 + 1.0)  # then 2*T1
    assert [s.message for s in sends(out, "core")] == [sent]
    out = core.tick(1.1 + 64 * 0.5)
    assert [s.message.status for s in sends(out, "gm")] == [408]  # type: ignore[union-attr]
    # a retransmitted INVITE from the UE gets the last response again
    again = invite(core)
    assert [s.message.status for s in sends(again)] == [408]  # type: ignore[union-attr]


def test_max_forwards_and_loop(core: ProxyCore) -> None:
    register(core)
    msg = req(
        """OPTIONS sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKo
Max-Forwards: 0
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: o
CSeq: 1 OPTIONS"""
    )
    assert sends(core.receive(UE, msg, 1))[0].message.status == 483  # type: ignore[union-attr]
    msg = msg.evolve(headers=msg.replacing("Max-Forwards", ["10"]))
    (fwd,) = sends(core.receive(UE, msg, 1))
    looped = fwd.message
    assert isinstance(looped, Request)
    back = core.receive(Peer("core", "udp", "127.0.0.9", 6060), looped, 1.1)
    assert [s.message.status for s in sends(back)] == [482]  # type: ignore[union-attr]


def test_terminating_by_path_token_and_unknown_user(core: ProxyCore) -> None:
    out = register(core)
    path = sends(out)[0].message.get("Path")
    msg = req(
        f"""INVITE sip:alice@192.0.2.10:40000 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.9:6060;branch=z9hG4bKt1
Route: {path}
From: <sip:carol@ims.test>;tag=c1
To: <sip:alice@ims.test>
Call-ID: t1
CSeq: 1 INVITE
Contact: <sip:carol@127.0.0.9:6060>""",
        SDP,
    )
    out = core.receive(SCSCF, msg, 1)
    (ask,) = media(out)
    assert (ask.context.direction, ask.context.from_ue) == ("term", False)
    (fwd,) = sends(core.media_result(ask.token, Forward(SDP), 1.1), "gm")
    assert fwd.peer == UE
    unknown = msg.evolve(
        uri="sip:nobody@192.0.2.99",
        headers=msg.replacing("Via", ["SIP/2.0/UDP 127.0.0.9:6060;branch=z9hG4bKt2"]),
    )
    unknown = unknown.evolve(headers=unknown.without("Route"))
    assert [s.message.status for s in sends(core.receive(SCSCF, unknown, 1))] == [
        100,
        404,
    ]  # type: ignore[union-attr]


def test_late_offer_in_200_answer_in_ack(core: ProxyCore) -> None:
    register(core)
    out = invite(core, body=b"")
    assert media(out) == []
    (fwd,) = sends(out, "core")
    sent = fwd.message
    assert isinstance(sent, Request)
    out = core.receive(
        SCSCF, resp_to(sent, 200, body=b"offer", extra="Contact: <sip:bob@127.0.0.9:6060>"), 2
    )
    (ask,) = media(out)
    assert (ask.context.kind, ask.context.status, ask.context.step) == ("offer", 200, "term-offer")
    core.media_result(ask.token, Forward(b"offer'"), 2.1)
    ack = req(
        """ACK sip:bob@127.0.0.9:6060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKack
Route: <sip:127.0.0.1:5060;lr;e2ae=orig>, <sip:127.0.0.2:5070;lr;e2ae=orig>
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>;tag=callee
Call-ID: c1
CSeq: 1 ACK""",
        b"answer",
    )
    out = core.receive(UE, ack, 2.5)
    (ask,) = media(out)
    assert (ask.context.kind, ask.context.method, ask.context.initial) == ("answer", "ACK", True)
    assert ask.context.step == "term-answer"
    (fwd,) = sends(core.media_result(ask.token, Forward(b"answer'"), 2.6))
    assert fwd.peer == SCSCF and fwd.message.body == b"answer'"


def test_end_call_from_inside_sends_bye_both_ways(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    ok = resp_to(sent, 200, body=b"a", extra="Contact: <sip:bob@127.0.0.9:6060>")
    ask = media(core.receive(SCSCF, ok, 2))[0]
    core.media_result(ask.token, Forward(b"a"), 2.1)
    out = core.end_call(DialogId("c1", "orig"), 503, "TLS establishment timer expired", 40)
    byes = sends(out)
    assert sorted(s.peer.side for s in byes) == ["core", "gm"]
    for bye in byes:
        assert isinstance(bye.message, Request) and bye.message.method == "BYE"
        assert bye.message.get("Reason") == 'SIP;cause=503;text="TLS establishment timer expired"'
    to_ue = next(s for s in byes if s.peer.side == "gm").message
    assert to_ue.uri == "sip:alice@192.0.2.10:40000"  # type: ignore[union-attr]
    assert to_ue.from_.tag == "callee" and to_ue.to.tag == "a1"
    assert [a.dialog for a in out if isinstance(a, DialogEnded)] == [DialogId("c1", "orig")]


def test_reoffer_is_acked_by_the_proxy(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    ok = resp_to(sent, 200, body=b"a", extra="Contact: <sip:bob@127.0.0.9:6060>")
    core.media_result(media(core.receive(SCSCF, ok, 2))[0].token, Forward(b"a"), 2.1)
    token, out = core.reoffer(DialogId("c1", "orig"), "core", b"port0", 10)
    (reinvite,) = sends(out)
    msg = reinvite.message
    assert isinstance(msg, Request) and msg.method == "INVITE" and msg.body == b"port0"
    out = core.receive(SCSCF, resp_to(msg, 200, body=b"ans"), 10.1)
    assert [s.message.method for s in sends(out)] == ["ACK"]  # type: ignore[union-attr]
    assert [a for a in out if isinstance(a, ReofferAnswered)] == [
        ReofferAnswered(token, 200, b"ans")
    ]


def test_malformed_request_gets_400_that_names_the_problem(core: ProxyCore) -> None:
    msg = req(
        """INVITE sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKm
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: m
CSeq: 1 BYE"""
    )
    (answer,) = sends(core.receive(UE, msg, 1))
    assert answer.message.status == 400  # type: ignore[union-attr]
    assert "CSeq method BYE does not match INVITE" in answer.message.reason  # type: ignore[union-attr]


def _answered_call(core: ProxyCore, extra: str = "") -> tuple[Request, Response]:
    sent = _forward_first_invite(core)
    contact = "Contact: <sip:bob@127.0.0.9:6060>"
    ok = resp_to(sent, 200, body=b"a", extra=f"{contact}\r\n{extra}" if extra else contact)
    out = core.receive(SCSCF, ok, 2)
    core.media_result(media(out)[0].token, Forward(b"a'"), 2.1)
    return sent, ok


def test_2xx_retransmission_is_forwarded_not_treated_as_a_race(core: ProxyCore) -> None:
    _, ok = _answered_call(core)
    out = core.receive(SCSCF, ok, 2.6)
    assert [(s.peer, s.message.status, s.message.body) for s in sends(out)] == [  # type: ignore[union-attr]
        (UE, 200, b"a'")
    ]
    assert media(out) == []


def test_2xx_after_cancel_race_is_acked_and_the_callee_released_once(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    cancel = req(
        """CANCEL sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKb1
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: c1
CSeq: 1 CANCEL"""
    )
    core.receive(UE, cancel, 1.5)
    core.receive(SCSCF, resp_to(sent, 487), 1.6)  # caller gets 487
    ok = resp_to(sent, 200, body=b"a", extra="Contact: <sip:bob@127.0.0.9:6060>")
    first = core.receive(SCSCF, ok, 1.7)
    again = core.receive(SCSCF, ok, 1.8)
    methods = [s.message.method for s in sends(first) if isinstance(s.message, Request)]
    assert methods == ["ACK", "BYE"]
    assert [s.message.method for s in sends(again)] == ["ACK"]  # type: ignore[union-attr]
    assert sends(first, "gm") == [] and sends(again, "gm") == []


def test_in_dialog_request_from_another_ue_is_refused(core: ProxyCore) -> None:
    _answered_call(core)
    register(core, Peer("gm", "udp", "192.0.2.66", 40066), user="mallory")
    bye = req(
        """BYE sip:bob@127.0.0.9:6060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.66:40066;branch=z9hG4bKevil
Route: <sip:127.0.0.1:5060;lr;e2ae=orig>, <sip:127.0.0.2:5070;lr;e2ae=orig>
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>;tag=callee
Call-ID: c1
CSeq: 2 BYE"""
    )
    out = core.receive(Peer("gm", "udp", "192.0.2.66", 40066), bye, 3)
    assert [s.message.status for s in sends(out)] == [403]  # type: ignore[union-attr]
    assert not any(isinstance(a, DialogEnded) for a in out)
    out = core.receive(
        UE,
        bye.evolve(headers=bye.replacing("Via", ["SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKok"])),
        3,
    )
    assert [s.peer for s in sends(out)] == [Peer("core", "udp", "127.0.0.9", 6060)]
    assert any(isinstance(a, DialogEnded) for a in out)


def test_session_timer_expiry_ends_the_call(core: ProxyCore) -> None:
    _answered_call(core, "Session-Expires: 90;refresher=uac")
    assert sends(core.tick(60)) == []
    out = core.tick(2 + 90)
    assert sorted(s.message.method for s in sends(out) if isinstance(s.message, Request)) == [
        "BYE",
        "BYE",
    ]
    assert [a.reason for a in out if isinstance(a, DialogEnded)] == ["session timer expired"]


def test_proxy_require_mediasec_accepted_unknown_refused(core: ProxyCore) -> None:
    register(core)
    msg = req(
        """OPTIONS sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKpr
Proxy-Require: mediasec
Require: mediasec
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: pr
CSeq: 1 OPTIONS"""
    )
    assert [s.peer for s in sends(core.receive(UE, msg, 1))] == [SCSCF]
    msg = msg.evolve(headers=msg.replacing("Proxy-Require", ["mediasec, foo"]))
    msg = msg.evolve(
        headers=msg.replacing("Via", ["SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKpr2"])
    )
    (answer,) = sends(core.receive(UE, msg, 1))
    assert answer.message.status == 420 and answer.message.get("Unsupported") == "foo"  # type: ignore[union-attr]


def test_reregister_replaces_mechanisms(core: ProxyCore) -> None:
    register(core)
    reg = req(
        """REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKrereg
From: <sip:alice@ims.test>;tag=r1
To: <sip:alice@ims.test>
Call-ID: reg-alice
CSeq: 9 REGISTER
Contact: <sip:alice@192.0.2.10:40000>
Security-Client: bfcp-tls;mediasec, msrp-tls"""
    )
    fwd = sends(core.receive(UE, reg, 100))[0].message
    assert isinstance(fwd, Request)
    core.receive(
        SCSCF, resp_to(fwd, 200, extra="Contact: <sip:alice@192.0.2.10:40000>;expires=300"), 100
    )
    (binding,) = list(core.registrar)
    assert binding.mechanisms == {"bfcp-tls"} and binding.expires_at == 400


def test_in_dialog_request_to_a_name_gets_404_not_a_crash(core: ProxyCore) -> None:
    register(core)
    bye = req(
        """BYE sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKname
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>;tag=x
Call-ID: nocall
CSeq: 2 BYE"""
    )
    (answer,) = sends(core.receive(UE, bye, 1))
    assert answer.message.status == 404  # type: ignore[union-attr]
    assert answer.message.reason == "Not Found (no address for ims.test)"  # type: ignore[union-attr]


_HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    st.sampled_from(
        [
            "",
            "<>",
            "<sip:>",
            "sip:a@b:99999",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP [::1",
            "<sip:127.0.0.1:5060;lr>, <sip:x@[::1]:5;lr>",
            "1 INVITE",
            "4294967296 INVITE",
            '"unterminated <sip:a@b>',
            "*",
            "msrp-tls;mediasec;=x",
            "-1",
        ]
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(
        [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Route",
            "Contact",
            "Max-Forwards",
            "Security-Client",
            "Proxy-Require",
            "Expires",
            "Record-Route",
        ]
    ),
    value=_HEADER_VALUES,
    method=st.sampled_from(["INVITE", "REGISTER", "BYE", "ACK", "CANCEL", "OPTIONS"]),
    side=st.sampled_from([UE, SCSCF]),
)
def test_proxy_core_never_raises_on_odd_headers(
    core: ProxyCore, name: str, value: str, method: str, side: Peer
) -> None:
    base = req(
        f"""{method} sip:bob@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKfuzz
Max-Forwards: 70
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: fuzz
CSeq: 1 {method}
Contact: <sip:alice@192.0.2.10:40000>"""
    )
    msg = base.evolve(headers=base.replacing(name, [value]))
    try:
        msg = parse_datagram(msg.serialise())
    except Exception:
        return
    core.receive(side, msg, 1.0)
    ok = Response(msg.headers, b"", 200, "OK")
    core.receive(side, ok, 1.1)


def test_ringing_longer_than_timer_b_is_fine_and_timer_c_cancels(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    core.receive(SCSCF, resp_to(sent, 180), 2)
    assert sends(core.tick(2 + 64 * 0.5 + 1)) == []  # Timer B does not apply after a 180
    out = core.tick(2 + 180)
    (cancel,) = sends(out)
    assert cancel.message.method == "CANCEL"  # type: ignore[union-attr]
    assert "Timer C" in (cancel.message.get("Reason") or "")
    out = core.receive(SCSCF, resp_to(sent, 487), 183)
    assert [s.message.status for s in sends(out, "gm")] == [487]  # type: ignore[union-attr]


def test_ipv6_addresses_in_via_record_route_and_path() -> None:
    v6 = ProxyCore(
        ProxyConfig(
            gm=("2001:db8::1", 5060),
            core=("2001:db8::2", 5070),
            next_hop=Peer("core", "udp", "2001:db8::9", 6060),
        )
    )
    ue = Peer("gm", "udp", "2001:db8::10", 40000)
    reg = req(
        """REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP [2001:db8::10]:40000;branch=z9hG4bKv6
From: <sip:alice@ims.test>;tag=r1
To: <sip:alice@ims.test>
Call-ID: v6
CSeq: 1 REGISTER
Contact: <sip:alice@[2001:db8::10]:40000>"""
    )
    (fwd,) = sends(v6.receive(ue, reg, 0))
    sent = fwd.message
    assert isinstance(sent, Request)
    assert sent.top_via.sent_by == "[2001:db8::2]:5070"
    assert sent.addresses("Path")[0].sip_uri().address() == ("2001:db8::2", 5070)
    ok = resp_to(sent, 200, extra="Contact: <sip:alice@[2001:db8::10]:40000>;expires=60")
    (back,) = sends(v6.receive(fwd.peer, ok, 0.1))
    assert back.peer == ue and len(v6.registrar) == 1


def test_new_invite_with_same_call_id_replaces_a_pending_one(core: ProxyCore) -> None:
    register(core)
    first = media(invite(core, branch="one"))[0]
    out = invite(core, branch="two")
    second = media(out)[0]
    assert [a.reason for a in out if isinstance(a, DialogEnded)] == [
        "replaced by a new INVITE with the same Call-ID"
    ]
    assert sends(core.media_result(first.token, Forward(b"old"), 1.2), "core") == []
    (fwd,) = sends(core.media_result(second.token, Forward(b"new"), 1.3), "core")
    assert fwd.message.body == b"new"
    sent = fwd.message
    assert isinstance(sent, Request)
    out = core.receive(SCSCF, resp_to(sent, 183, body=b"ans"), 1.4)
    assert len(media(out)) == 1  # the new dialog is not left busy by the old result


def test_retransmitted_ack_is_forwarded_identically(core: ProxyCore) -> None:
    _answered_call(core)
    ack = req(
        """ACK sip:bob@127.0.0.9:6060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKack1
Route: <sip:127.0.0.1:5060;lr;e2ae=orig>, <sip:127.0.0.2:5070;lr;e2ae=orig>
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>;tag=callee
Call-ID: c1
CSeq: 1 ACK"""
    )
    (first,) = sends(core.receive(UE, ack, 3))
    (again,) = sends(core.receive(UE, ack, 3.5))
    assert first.message.serialise() == again.message.serialise()
    other = ack.evolve(
        headers=ack.replacing("Via", ["SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKack2"])
    )
    (new,) = sends(core.receive(UE, other, 4))
    assert new.message.top_via.branch != first.message.top_via.branch  # type: ignore[union-attr]
