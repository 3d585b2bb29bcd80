"""SIP MESSAGE (RFC 3428) through the proxy core, with a fake clock: routed like an initial
request (originating to the next hop, terminating to the registered contact), never
Record-Routed, no 100 Trying, the non-INVITE timers (E, F, K, J), responses relayed unchanged,
and the body (multipart/mixed with MIKEY and S/MIME parts, binary or base64) byte for byte."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcscf.sip.message import MessageError, Request, Response, parse_datagram
from pcscf.sip.proxy import Log, MediaRequest, Peer, ProxyConfig, ProxyCore, Send
from tests.pcscf.sip.test_proxy import (
    CORE,
    GM,
    SCSCF,
    UE,
    _answered_call,
    _ids,
    register,
    resp_to,
    sends,
)

BOUNDARY = "e2ae-boundary-42"
MULTIPART = f"multipart/mixed;boundary={BOUNDARY}"
#: A TRANSFER_INIT-like binary part (NUL, 8-bit bytes, a CRLF CRLF inside) and an S/MIME part.
MIKEY = bytes([1, 0, 7, 1, 0, 0, 0, 0xFF, 0x80, 0x0D, 0x0A, 0x0D, 0x0A, 0xFE]) + bytes(range(256))
SMIME = base64.encodebytes(b"\x30\x82\x01\x00" + bytes(range(200, 256)) * 3)
BODY = (
    f"--{BOUNDARY}\r\nContent-Type: application/mikey\r\nContent-Transfer-Encoding: binary\r\n\r\n"
).encode()
BODY += MIKEY + f"\r\n--{BOUNDARY}\r\n".encode()
BODY += b"Content-Type: application/pkcs7-mime;smime-type=enveloped-data\r\n"
BODY += b"Content-Transfer-Encoding: base64\r\n\r\n" + SMIME + f"\r\n--{BOUNDARY}--\r\n".encode()
SCSCF_TCP = Peer("core", "tcp", SCSCF.host, SCSCF.port)


@pytest.fixture
def core() -> ProxyCore:
    ids = _ids()
    return ProxyCore(ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF), new_id=lambda: next(ids))


def message(
    body: bytes = BODY,
    *,
    ue: Peer = UE,
    branch: str = "m1",
    call: str = "m1",
    content_type: str = MULTIPART,
    uri: str = "sip:bob@ims.test",
    extra: str = "",
) -> Request:
    """A MESSAGE as a UE (or, with ``ue`` a core peer and ``extra`` its Route, the core)
    sends it."""
    lines = [
        f"MESSAGE {uri} SIP/2.0",
        f"Via: SIP/2.0/{ue.transport.upper()} {ue.host}:{ue.port};branch=z9hG4bK{branch}",
        "Max-Forwards: 70",
        "From: <sip:alice@ims.test>;tag=a1",
        "To: <sip:bob@ims.test>",
        f"Call-ID: {call}",
        "CSeq: 1 MESSAGE",
        f"Content-Type: {content_type}",
    ]
    if extra:
        lines.append(extra)
    head = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
    msg = parse_datagram(head.encode() + body)
    assert isinstance(msg, Request)
    return msg


def responses(out: list[object], side: str = "gm") -> list[Response]:
    return [s.message for s in sends(out, side) if isinstance(s.message, Response)]


def requests(out: list[object], side: str = "core") -> list[Send]:
    return [s for s in sends(out, side) if isinstance(s.message, Request)]


def message_logs(out: list[object]) -> list[Log]:
    return [a for a in out if isinstance(a, Log) and a.format.startswith("MESSAGE ")]


def originate(core: ProxyCore, body: bytes = BODY, **kw: str) -> tuple[list[object], Request]:
    register(core)
    out = core.receive(UE, message(body, **kw), 1.0)
    (fwd,) = requests(out)
    assert isinstance(fwd.message, Request)
    return out, fwd.message


def test_originating_message_goes_to_the_next_hop_untouched(core: ProxyCore) -> None:
    out, sent = originate(core)
    assert sends(out, "core")[0].peer == SCSCF
    assert responses(out) == []  # no 100 Trying for a non-INVITE (RFC 4320 4.1)
    assert not any(isinstance(a, MediaRequest) for a in out)  # the body is not SDP
    assert sent.body == BODY
    assert sent.get("Content-Type") == MULTIPART
    assert sent.get_all("Record-Route") == []
    assert sent.uri == "sip:bob@ims.test"
    assert sent.get("Max-Forwards") == "69"
    assert sent.top_via.sent_by == f"{CORE[0]}:{CORE[1]}"
    # on the wire too: the serialised request ends with the body as it came
    assert sent.serialise().endswith(b"\r\n\r\n" + BODY)
    assert message_logs(out) == []  # logged once, when its final status is known


@pytest.mark.parametrize("status", [202, 200])
def test_202_and_200_are_relayed_unchanged_and_logged_once(core: ProxyCore, status: int) -> None:
    call = f"m{status}"
    out, sent = originate(core, call=call, branch=call)
    answer = resp_to(sent, status, extra="Server: core\r\nX-Note: kept")
    out = core.receive(SCSCF, answer, 1.2)
    (relayed,) = responses(out)
    assert relayed.status == status
    assert relayed.headers == answer.evolve(headers=answer.dropping_first_value("via")).headers
    assert relayed.body == answer.body
    (event,) = message_logs(out)
    assert event.level == "info"
    fields = dict(event.fields)
    assert fields["call_id"] == call
    assert fields["direction"] == "orig"
    assert fields["peer"] == str(UE)
    assert fields["next_hop"] == str(SCSCF)
    assert fields["status"] == status
    assert fields["relayed"] is True


@pytest.mark.parametrize(
    ("status", "warning"),
    [
        (415, '399 as.ims.test "multipart/mixed needs application/mikey"'),
        (488, '399 kms.ims.test "TRANSFER_INIT refused"'),
        (403, '399 as.ims.test "not a member of the group"'),
        (480, '399 scscf.ims.test "member not registered"'),
    ],
)
def test_errors_are_relayed_with_their_warning(core: ProxyCore, status: int, warning: str) -> None:
    _, sent = originate(core)
    answer = resp_to(sent, status, extra=f"Warning: {warning}")
    out = core.receive(SCSCF, answer, 1.2)
    (relayed,) = responses(out)
    assert (relayed.status, relayed.get("Warning")) == (status, warning)
    assert requests(out) == []  # no ACK for a non-INVITE
    (event,) = message_logs(out)
    assert event.fields["status"] == status


def test_unregistered_ue_gets_403_and_nothing_goes_on(core: ProxyCore) -> None:
    out = core.receive(UE, message(), 1.0)
    (refused,) = responses(out)
    assert (refused.status, refused.reason) == (403, "Forbidden (not registered)")
    assert sends(out, "core") == []
    (event,) = message_logs(out)
    assert (event.fields["status"], event.fields["relayed"], event.fields["next_hop"]) == (
        403,
        False,
        "-",
    )


def test_unregistered_ue_may_send_when_registration_is_not_required() -> None:
    config = ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, require_registration=False)
    core = ProxyCore(config)
    out = core.receive(UE, message(), 1.0)
    (fwd,) = requests(out)
    assert fwd.message.body == BODY


def test_terminating_message_goes_to_the_registered_contact(core: ProxyCore) -> None:
    path = sends(register(core))[0].message.get("Path")
    core_peer = Peer("core", "udp", "127.0.0.9", 6060)
    term = message(ue=core_peer, uri="sip:alice@192.0.2.10:40000", extra=f"Route: {path}")
    out = core.receive(core_peer, term, 1.0)
    (fwd,) = requests(out, "gm")
    assert fwd.peer == UE
    assert isinstance(fwd.message, Request)
    assert fwd.message.body == BODY
    assert fwd.message.get_all("Record-Route") == []
    assert fwd.message.get_all("Route") == []  # our Path entry was ours to remove
    assert responses(out, "core") == []
    answer = resp_to(fwd.message, 202)
    back = core.receive(UE, answer, 1.1)
    assert [(s.peer, s.message.status) for s in sends(back)] == [(core_peer, 202)]  # type: ignore[union-attr]
    (event,) = message_logs(back)
    assert (event.fields["direction"], event.fields["next_hop"]) == ("term", str(UE))


def test_terminating_message_to_nobody_gets_404(core: ProxyCore) -> None:
    register(core)
    core_peer = Peer("core", "udp", "127.0.0.9", 6060)
    out = core.receive(core_peer, message(ue=core_peer, uri="sip:nobody@ims.test"), 1.0)
    assert [(r.status, r.reason) for r in responses(out, "core")] == [
        (404, "Not Found (no registered contact)")
    ]
    assert sends(out, "gm") == []


def test_retransmissions_are_absorbed_then_get_the_last_response(core: ProxyCore) -> None:
    _, sent = originate(core)
    again = core.receive(UE, message(), 1.3)
    assert sends(again) == []  # Trying: the request is being worked on, nothing to resend
    core.receive(SCSCF, resp_to(sent, 202), 1.4)
    again = core.receive(UE, message(), 1.6)
    assert [(s.peer, s.message.status) for s in sends(again)] == [(UE, 202)]  # type: ignore[union-attr]
    assert message_logs(again) == []


def test_timer_e_retransmits_and_timer_f_answers_408(core: ProxyCore) -> None:
    _, sent = originate(core)
    start = 1.0
    expected = []
    at, interval = start, 0.5
    while at + interval < start + 32:  # Timer E: T1 doubling, at most T2 (RFC 3261 17.1.2.2)
        at += interval
        expected.append(at)
        interval = min(interval * 2, 4.0)
    times = []
    now = start
    while now < start + 32 - 0.05:
        now = round(now + 0.05, 2)
        for s in requests(core.tick(now)):
            assert s.message == sent and s.peer == SCSCF
            times.append(now)
    assert times == pytest.approx(expected, abs=0.051)
    assert [b - a for a, b in itertools.pairwise(expected)][:4] == [1, 2, 4, 4]
    out = core.tick(start + 32)  # Timer F: 64*T1
    assert [r.status for r in responses(out)] == [408]
    warn = [a for a in out if isinstance(a, Log) and a.level == "warn"]
    assert warn and warn[0].fields["method"] == "MESSAGE"
    (event,) = message_logs(out)
    assert (event.fields["status"], event.fields["relayed"]) == (408, False)
    assert core.client_txns == {}
    assert requests(core.tick(start + 40)) == []  # nothing more goes to the core
    # the UE's retransmission gets the 408 again while Timer J runs, then the entry is gone
    assert [r.status for r in responses(core.receive(UE, message(), start + 33))] == [408]
    core.tick(start + 32 + 32.01)
    assert core.server_txns == {}


def test_timer_k_absorbs_a_retransmitted_202_then_ends(core: ProxyCore) -> None:
    _, sent = originate(core)
    answer = resp_to(sent, 202)
    assert [r.status for r in responses(core.receive(SCSCF, answer, 1.2))] == [202]
    assert responses(core.receive(SCSCF, answer, 1.5)) == []  # Completed: absorbed
    assert requests(core.tick(4.0)) == []  # no Timer E after the final
    assert core.client_txns != {}
    core.tick(1.2 + 5.0 + 0.01)  # Timer K: T4 over UDP
    assert core.client_txns == {}


def test_over_tcp_no_retransmission_and_no_timer_k() -> None:
    ids = _ids()
    config = ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF_TCP, require_registration=False)
    core = ProxyCore(config, new_id=lambda: next(ids))
    ue = Peer("gm", "tcp", "192.0.2.10", 40001)
    out = core.receive(ue, message(ue=ue), 1.0)
    (fwd,) = requests(out)
    assert fwd.peer == SCSCF_TCP
    assert responses(out, "gm") == []  # no 100 over TCP either
    assert requests(core.tick(10.0)) == []  # no Timer E over TCP
    assert isinstance(fwd.message, Request)
    assert [
        r.status for r in responses(core.receive(SCSCF_TCP, resp_to(fwd.message, 202), 11.0))
    ] == [202]
    core.tick(11.0)  # Timer K is 0 over TCP
    assert core.client_txns == {}
    # Timer J runs 64*T1 whatever the transport (RFC 3261 17.2.2 has 0 for TCP; harmless)
    core.tick(11.0 + 32)
    assert core.server_txns == {}


def test_message_inside_a_dialog_follows_the_route_set(core: ProxyCore) -> None:
    _answered_call(core)
    inside = message(
        uri="sip:bob@127.0.0.9:6060",
        branch="in1",
        call="c1",
        extra="Route: <sip:127.0.0.1:5060;lr;e2ae=orig>, <sip:127.0.0.2:5070;lr;e2ae=orig>",
    )
    inside = inside.evolve(headers=inside.replacing("To", ["<sip:bob@ims.test>;tag=callee"]))
    inside = inside.evolve(headers=inside.replacing("CSeq", ["2 MESSAGE"]))
    out = core.receive(UE, inside, 3.0)
    (fwd,) = requests(out)
    assert fwd.peer == Peer("core", "udp", "127.0.0.9", 6060)
    assert isinstance(fwd.message, Request)
    assert fwd.message.body == BODY
    assert fwd.message.get_all("Route") == []
    assert not any(isinstance(a, MediaRequest) for a in out)
    back = core.receive(SCSCF, resp_to(fwd.message, 200, tag=""), 3.1)
    assert [r.status for r in responses(back)] == [200]
    (event,) = message_logs(back)
    assert (event.fields["direction"], event.fields["in_dialog"]) == ("orig", True)


def test_message_with_an_sdp_content_type_is_still_not_the_media_handlers(
    core: ProxyCore,
) -> None:
    out, sent = originate(
        core, b"v=0\r\nm=message 9 TCP/TLS/MSRP *\r\n", content_type="application/sdp"
    )
    assert not any(isinstance(a, MediaRequest) for a in out)
    assert sent.body == b"v=0\r\nm=message 9 TCP/TLS/MSRP *\r\n"


def test_a_message_over_the_udp_threshold_goes_over_tcp(core: ProxyCore) -> None:
    big = BODY + b"\x00\xff" * 600
    assert len(big) > 1300
    register(core)
    out = core.receive(UE, message(big), 1.0)
    (fwd,) = requests(out)
    assert fwd.peer == SCSCF_TCP
    assert isinstance(fwd.message, Request)
    assert fwd.message.top_via.transport == "TCP"
    assert fwd.message.body == big


def test_a_message_of_exactly_the_threshold_stays_on_udp(core: ProxyCore) -> None:
    register(core)
    probe = requests(core.receive(UE, message(b"", call="p", branch="p"), 1.0))[0].message
    size = 1300 - len(probe.serialise())
    while len(_sent_size(probe, size)) > 1300:  # Content-Length grows by digits
        size -= 1
    body = (b"\x00\x80" * size)[:size]
    out = core.receive(UE, message(body, call="q", branch="q"), 1.0)
    (fwd,) = requests(out)
    assert len(fwd.message.serialise()) == 1300
    assert fwd.peer == SCSCF
    over = core.receive(UE, message(body + b"\x00", call="r", branch="r"), 1.0)
    assert requests(over)[0].peer == SCSCF_TCP


def _sent_size(probe: Request | Response, size: int) -> bytes:
    return probe.evolve(body=b"x" * size).serialise()


def test_content_length_longer_than_the_body_gets_400(core: ProxyCore) -> None:
    raw = (
        message()
        .serialise()
        .replace(
            f"Content-Length: {len(BODY)}".encode(), f"Content-Length: {len(BODY) + 10}".encode()
        )
    )
    with pytest.raises(MessageError) as caught:
        parse_datagram(raw)
    out = core.malformed(UE, caught.value)
    (answer,) = responses(out)
    assert (answer.status, answer.reason) == (400, "Body shorter than Content-Length")
    assert answer.call_id == "m1"


def test_content_length_shorter_than_the_body_cuts_the_datagram(core: ProxyCore) -> None:
    """RFC 3261 18.3: over UDP the bytes after Content-Length are not part of the message."""
    raw = message().serialise() + b"trailing junk"
    msg = parse_datagram(raw)
    assert isinstance(msg, Request) and msg.body == BODY


def test_a_datagram_too_large_for_any_message_gets_513_and_no_reply(core: ProxyCore) -> None:
    with pytest.raises(MessageError) as caught:
        parse_datagram(message(b"\x00" * 65_600).serialise())
    assert caught.value.status == 513
    assert responses(core.malformed(UE, caught.value)) == []


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(min_size=0, max_size=1200),
    content_type=st.sampled_from(
        [MULTIPART, "application/pkcs7-mime;smime-type=enveloped-data", "application/sdp"]
    ),
)
def test_any_body_is_relayed_byte_for_byte(body: bytes, content_type: str) -> None:
    ids = _ids()
    core = ProxyCore(ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF), new_id=lambda: next(ids))
    out, sent = originate(core, body, content_type=content_type)
    assert sent.body == body
    assert not any(isinstance(a, MediaRequest) for a in out)
    wire = parse_datagram(sent.serialise())
    assert wire.body == body
