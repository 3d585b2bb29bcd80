"""The UE simulator's SIP user agent and SDP (pure), read back with the P-CSCF's own SIP parser,
registrar and SDP model."""

from __future__ import annotations

import datetime
import itertools

import pytest

import certs
from lab.ue import (
    LocalUeError,
    MediaAction,
    MediaPlan,
    RemoteUeError,
    UserAgent,
    answer_setup,
    build_sdp,
    media_actions,
    streams_of,
)
from pcscf.sdp import SessionDescription
from pcscf.sip import Request, Response, media_mechanisms, parse_datagram
from pcscf.sip.registrar import Flow, read_register

NOW = datetime.datetime.now(datetime.UTC)
FP = certs.generate("ue", now=NOW).fingerprint()


def _ids(prefix: str) -> object:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):04d}"


def _ua(name: str, port: int, **kw: object) -> UserAgent:
    return UserAgent(
        f"sip:{name}@ims.test",
        "127.0.0.1",
        port,
        ("127.0.0.1", 5060),
        new_id=_ids(name),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _wire(message: Request | Response) -> Request | Response:
    parsed = parse_datagram(message.serialise())
    assert isinstance(parsed, Request | Response)
    return parsed


def test_register_carries_the_media_mechanisms() -> None:
    ua = _ua("alice", 5090)
    request = _wire(ua.register())
    assert isinstance(request, Request) and request.method == "REGISTER"
    assert request.uri == "sip:ims.test"
    assert media_mechanisms(request.get_all("security-client")) == {"msrp-tls", "bfcp-tls"}
    pending = read_register(request, Flow("udp", "127.0.0.1", 5090), "tok")
    assert pending.aor == "sip:alice@ims.test" and pending.expires == 600
    assert pending.mechanisms == {"msrp-tls", "bfcp-tls"}
    again = ua.register(expires=0)
    assert again.cseq == (2, "REGISTER") and again.call_id == request.call_id


def test_register_without_the_indication_knob() -> None:
    request = _wire(_ua("mallory", 5091, mechanisms=()).register())
    assert request.get("security-client") is None
    assert read_register(request, Flow("udp", "127.0.0.1", 1), "t").mechanisms == frozenset()


def test_registered_reads_security_server() -> None:
    ua = _ua("alice", 5090)
    ok = Response((("Security-Server", "msrp-tls;mediasec, bfcp-tls;mediasec"),), b"", 200, "OK")
    assert ua.registered(ok) and ua.network_mechanisms == {"msrp-tls", "bfcp-tls"}
    assert not ua.registered(Response((), b"", 403, "Forbidden"))


def test_offer_sdp_parses_and_reads_back() -> None:
    plan = MediaPlan("192.0.2.10", FP, 7394, "jshA7we", bfcp_port=50000, conference_id=4321)
    sdp = build_sdp(plan)
    parsed = SessionDescription.parse(sdp)
    assert parsed.serialise() == sdp
    assert [(m.media, m.port, m.proto) for m in parsed.media] == [
        ("message", 7394, "TCP/TLS/MSRP"),
        ("application", 50000, "TCP/TLS/BFCP"),
    ]
    msrp_stream, bfcp_stream = streams_of(sdp, from_offerer=True)
    assert msrp_stream.fingerprints == (FP,) and bfcp_stream.fingerprints == (FP,)
    assert msrp_stream.e2ae == bfcp_stream.e2ae == "requested"
    assert msrp_stream.path == ("msrps://192.0.2.10:7394/jshA7we;tcp",)
    assert msrp_stream.setup == "active" and msrp_stream.our_role == "passive"
    assert (bfcp_stream.conference_id, bfcp_stream.user_id, bfcp_stream.floor_ids) == (
        4321,
        1,
        (1,),
    )
    assert msrp_stream.tls and msrp_stream.host == "192.0.2.10"


def test_plain_and_no_request_variants() -> None:
    plain = build_sdp(MediaPlan("192.0.2.10", FP, 7394, tls=False))
    (stream,) = streams_of(plain, from_offerer=True)
    assert stream.proto == "TCP/MSRP" and stream.fingerprints == () and stream.e2ae is None
    assert stream.path == ("msrp://192.0.2.10:7394/s1;tcp",)
    no_request = build_sdp(MediaPlan("2001:db8::1", FP, 7394, e2ae=False))
    (stream,) = streams_of(no_request, from_offerer=True)
    assert stream.e2ae is None and stream.fingerprints == (FP,) and stream.host == "2001:db8::1"


@pytest.mark.parametrize(
    ("offered", "answer"),
    [("active", "passive"), ("passive", "active"), ("actpass", "active"), ("holdconn", "passive")],
)
def test_answer_setup(offered: str, answer: str) -> None:
    assert answer_setup(offered) == answer


def test_default_setup_when_absent() -> None:
    sdp = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
    sdp += b"m=message 9 TCP/MSRP *\r\nm=audio 4000 RTP/AVP 0\r\n"
    (from_offer,) = streams_of(sdp, from_offerer=True)
    assert from_offer.setup == "active"
    (from_answer,) = streams_of(sdp, from_offerer=False)
    assert from_answer.setup == "passive"
    with pytest.raises(RemoteUeError):
        streams_of(b"v=0\r\nm=message x\r\n", from_offerer=True)


def test_call_flow_between_two_user_agents_through_a_record_routing_proxy() -> None:
    alice, bob = _ua("alice", 5090), _ua("bob", 5092)
    offer = build_sdp(MediaPlan("127.0.0.1", FP, 7394, bfcp_port=50000))
    invite, caller_dialog = alice.invite("sip:bob@ims.test", offer)
    invite = _wire(invite)
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert invite.get("route") == "<sip:127.0.0.1:5060;lr>"
    assert invite.body == offer and invite.content_type == "application/sdp"
    # the proxy record-routes (two entries, as the P-CSCF does) and drops its Route
    kept = [h for h in invite.headers if h[0].lower() != "route"]
    record_routes = [
        ("Record-Route", "<sip:10.0.0.1;lr;e2ae=orig>"),
        ("Record-Route", "<sip:10.0.0.2;lr;e2ae=orig>"),
    ]
    proxied = invite.evolve(headers=(*kept, *record_routes))
    answer_sdp = build_sdp(MediaPlan("127.0.0.1", FP, 7400, setup="passive"))
    response, callee_dialog = bob.answer(proxied, answer_sdp)
    response = _wire(response)
    assert isinstance(response, Response) and response.status == 200
    assert response.to.tag == callee_dialog.local_tag and response.body == answer_sdp
    assert [str(a) for a in response.addresses("record-route")] == [
        "<sip:10.0.0.1;lr;e2ae=orig>",
        "<sip:10.0.0.2;lr;e2ae=orig>",
    ]
    dialog = alice.invite_answered(response)
    assert dialog is caller_dialog and dialog.state == "confirmed"
    assert dialog.remote_sdp == answer_sdp
    assert dialog.route_set == ("<sip:10.0.0.2;lr;e2ae=orig>", "<sip:10.0.0.1;lr;e2ae=orig>")
    ack = _wire(alice.ack(dialog))
    assert isinstance(ack, Request) and ack.cseq == (1, "ACK")
    assert ack.uri == "sip:bob@127.0.0.1:5092;transport=udp"
    assert ack.to.tag == callee_dialog.local_tag and ack.from_.tag == dialog.local_tag
    assert [str(a) for a in ack.addresses("route")] == list(dialog.route_set)
    bye = _wire(alice.bye(dialog))
    assert isinstance(bye, Request) and bye.cseq == (2, "BYE") and dialog.state == "terminated"
    ok = _wire(bob.respond(bye))
    assert isinstance(ok, Response) and ok.status == 200 and ok.to.tag == callee_dialog.local_tag
    assert callee_dialog.state == "terminated"
    # a BYE for a call the UE does not know
    stray = bye.evolve(
        headers=tuple((k, "other@x" if k.lower() == "call-id" else v) for k, v in bye.headers)
    )
    assert bob.respond(stray).status == 481


def test_errors() -> None:
    alice = _ua("alice", 5090)
    _, dialog = alice.invite("sip:bob@ims.test", b"")
    with pytest.raises(LocalUeError):
        alice.ack(dialog)
    busy = Response(
        (
            ("Via", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKx"),
            ("From", f"<sip:alice@ims.test>;tag={dialog.local_tag}"),
            ("To", "<sip:bob@ims.test>;tag=b1"),
            ("Call-ID", dialog.call_id),
            ("CSeq", "1 INVITE"),
        ),
        b"",
        486,
        "Busy Here",
    )
    assert alice.invite_answered(busy).state == "terminated"
    with pytest.raises(RemoteUeError):
        alice.invite_answered(busy.evolve(headers=(("Call-ID", "nope"),)))


def test_media_actions_from_an_e2ae_answer() -> None:
    agw = certs.generate("agw", now=NOW).fingerprint()
    own = MediaPlan("192.0.2.10", FP, 7394, "jshA7we", bfcp_port=50000)
    answer = (
        "v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
        "m=message 40001 TCP/TLS/MSRP *\r\n"
        "a=path:msrp://203.0.113.50:12763/kjhd37s2s20w2a;tcp\r\n"
        f"a=setup:passive\r\n{agw.attribute()}\r\na=3ge2ae:applied\r\n"
        "m=application 40021 TCP/TLS/BFCP *\r\na=floorctrl:s-only\r\na=confid:9\r\n"
        f"a=userid:4\r\na=floorid:2 mstrm:1\r\na=setup:active\r\n{agw.attribute()}\r\n"
        "m=message 0 TCP/TLS/MSRP *\r\n"
    ).encode()
    msrp_action, bfcp_action = media_actions(answer, from_offerer=False, own=own)
    assert msrp_action == MediaAction(
        "message",
        "connect",
        "198.51.100.1",
        40001,
        True,
        (agw,),
        True,
        ("msrp://203.0.113.50:12763/kjhd37s2s20w2a;tcp",),
    )
    assert bfcp_action.action == "listen" and bfcp_action.port == 50000
    assert (bfcp_action.conference_id, bfcp_action.user_id, bfcp_action.floor_ids) == (9, 4, (2,))
    assert not bfcp_action.e2ae_applied and bfcp_action.pinned == (agw,)
    stripped = answer.replace(agw.attribute().encode(), b"a=x-none")
    with pytest.raises(RemoteUeError, match="fingerprint"):
        media_actions(stripped, from_offerer=False, own=own)
