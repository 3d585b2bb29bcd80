"""SIP message model, parser, serialiser and stream framing (RFC 3261 section 7)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.headers import Via, media_mechanisms, parse_mechanisms, split_list
from pcscf.sip.message import (
    MAX_MESSAGE,
    MessageError,
    Request,
    Response,
    StreamParser,
    make_request,
    make_response,
    parse_datagram,
    validate_request,
)
from pcscf.sip.uri import NameAddr, SipUri

INVITE = (
    b"INVITE sip:bob@ims.test SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKx, SIP/2.0/UDP h.test\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Doe, Alice" <sip:alice@ims.test>;tag=1928301774\r\n'
    b"t: <sip:bob@ims.test>\r\n"
    b"i: a84b4c76e66710@pc33.ims.test\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'm: "A, B" <sip:alice@192.0.2.10;transport=tcp>;expires=60, <sip:x@h>\r\n'
    b"Subject: folded\r\n  continued\r\n"
    b"c: application/sdp\r\n"
    b"l: 9\r\n"
    b"\r\n"
    b"v=0\r\ns=-\r\n"
)


def test_parse_request_compact_forms_lists_and_folding() -> None:
    msg = parse_datagram(INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:bob@ims.test")
    assert msg.call_id == "a84b4c76e66710@pc33.ims.test"
    assert msg.cseq == (314159, "INVITE")
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.vias[1].host == "[2001:db8::1]" and msg.vias[1].port == 5070
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.from_.display == '"Doe, Alice"' and msg.from_.tag == "1928301774"
    contacts = msg.addresses("Contact")
    assert len(contacts) == 2
    assert contacts[0].param("expires") == "60"
    assert contacts[0].sip_uri().transport == "tcp"
    assert msg.get("subject") == "folded continued"
    assert msg.body == b"v=0\r\ns=-\r"
    assert msg.has_sdp


def test_serialise_round_trip_keeps_headers_and_fixes_length() -> None:
    msg = parse_datagram(INVITE)
    again = parse_datagram(msg.serialise())
    assert again == msg.evolve(
        headers=(*tuple(h for h in msg.headers if h[0] != "l"), ("Content-Length", "9"))
    )


def test_parse_response() -> None:
    msg = parse_datagram(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bK1\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n\r\n"
    )
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.to.tag) == (180, "Ringing", "2")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"INVITE sip:b@x SIP/2.0\r\nVia SIP/2.0/UDP a\r\n\r\n", "Bad header line"),
        (b"INVITE sip:b@x SIP/3.0\r\n\r\n", "Unsupported version"),
        (b"INVITE sip:b@x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc", "Body shorter"),
        (b"INVITE sip:b@x SIP/2.0\r\nContent-Length: x\r\n\r\n", "Bad Content-Length"),
        (b"SIP/2.0 99 Nope\r\n\r\n", "Bad status code"),
        (b"INVITE sip:b@x SIP/2.0\r\nNo-End: yes", "No blank line"),
        (b"INVITE\r\n\r\n", "Bad request line"),
    ],
)
def test_malformed_messages_say_what_is_wrong(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_datagram(data)
    assert reason in info.value.reason


def test_too_large_datagram() -> None:
    with pytest.raises(MessageError) as info:
        parse_datagram(b"X" * (MAX_MESSAGE + 1))
    assert info.value.status == 513


def test_malformed_request_keeps_enough_to_answer() -> None:
    data = (
        b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1"
        b"\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nBroken line\r\n\r\n"
    )
    with pytest.raises(MessageError) as info:
        parse_datagram(data)
    assert info.value.partial is not None
    answer = make_response(info.value.partial, info.value.status, info.value.reason)
    assert answer.status == 400 and "Bad header line" in answer.reason


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("CSeq", "1 BYE", "does not match"),
        ("CSeq", "x INVITE", "Bad CSeq"),
        ("Via", "SIP/2.0/UDP a:1", "without branch"),
        ("Call-ID", "", "Missing Call-ID"),
        ("Max-Forwards", "many", "Bad Max-Forwards"),
    ],
)
def test_validate_request(header: str, value: str, reason: str) -> None:
    msg = parse_datagram(INVITE)
    assert isinstance(msg, Request)
    msg = msg.evolve(headers=msg.replacing(header, [value]))
    with pytest.raises(RemoteSipError) as info:
        validate_request(msg)
    assert reason in info.value.reason and info.value.status == 400


def test_stream_parser_frames_by_content_length_in_any_chunking() -> None:
    one = parse_datagram(INVITE).serialise()
    stream = b"\r\n" + one + one + b"\r\n\r\n" + one
    for size in (1, 7, 100, len(stream)):
        parser = StreamParser()
        got = []
        for i in range(0, len(stream), size):
            got += parser.feed(stream[i : i + size])
        assert len(got) == 3 and all(isinstance(m, Request) for m in got)
        assert parser.pending == 0


def test_stream_parser_without_content_length_is_fatal() -> None:
    parser = StreamParser()
    out = parser.feed(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n\r\n")
    assert len(out) == 1 and isinstance(out[0], MessageError)
    assert "Missing Content-Length" in out[0].reason
    assert parser.broken and parser.feed(b"more") == []


def test_stream_parser_oversized_message() -> None:
    parser = StreamParser(max_message=200)
    out = parser.feed(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 500\r\n\r\n")
    assert isinstance(out[0], MessageError) and out[0].status == 513


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"a, b" <sip:x@y;p=1,2>;q=1, <sip:z@w>, sip:v@u;lr'
    assert split_list(value) == ['"a, b" <sip:x@y;p=1,2>;q=1', "<sip:z@w>", "sip:v@u;lr"]


def test_security_client_mixed_mechanisms() -> None:
    values = [
        "ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=5062;port-s=5064, msrp-tls;mediasec",
        "bfcp-tls;mediasec, sdes-srtp;mediasec",
    ]
    assert [m.name for m in parse_mechanisms(values)] == [
        "ipsec-3gpp",
        "msrp-tls",
        "bfcp-tls",
        "sdes-srtp",
    ]
    assert media_mechanisms(values) == {"msrp-tls", "bfcp-tls", "sdes-srtp"}


def test_via_response_address_uses_received_and_rport() -> None:
    via = Via.parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport")
    assert via.with_received("192.0.2.7", 40000).response_address() == ("192.0.2.7", 40000)


def test_uri_and_name_addr() -> None:
    uri = SipUri.parse("sip:alice@[2001:db8::1]:5070;transport=TCP;lr?h=1")
    assert (uri.user, uri.host, uri.port, uri.transport) == ("alice", "[2001:db8::1]", 5070, "tcp")
    assert uri.address() == ("2001:db8::1", 5070)
    assert str(uri) == "sip:alice@[2001:db8::1]:5070;transport=TCP;lr?h=1"
    assert NameAddr.parse("sip:a@b;tag=x").tag == "x"
    with pytest.raises(RemoteSipError):
        SipUri.parse("mailto:a@b")


# -- property tests ------------------------------------------------------------------------
_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.", min_size=1)
_value = st.text(
    st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters=","), max_size=40
).map(str.strip)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=_token,
    headers=st.lists(st.tuples(_token, _value), max_size=10),
    body=st.binary(max_size=200),
)
def test_serialise_then_parse_is_identity(
    method: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "l")]
    msg = Request(tuple(headers), body, method.upper(), "sip:x@y")
    parsed = parse_datagram(msg.serialise())
    assert isinstance(parsed, Request)
    assert parsed.body == body
    assert parsed.headers[:-1] == tuple(headers)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_parser_only_raises_message_errors(data: bytes) -> None:
    try:
        parse_datagram(data)
    except MessageError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_stream_parser_never_raises(data: bytes, cuts: list[int]) -> None:
    parser = StreamParser()
    prefix = parse_datagram(INVITE).serialise()
    stream = prefix + data
    points = sorted({0, len(stream), *[c for c in cuts if c < len(stream)]})
    got: list[object] = []
    for a, b in itertools.pairwise(points):
        got += parser.feed(stream[a:b])
    assert isinstance(got[0], Request)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(['"a,b"', "<sip:x,y@z>", "tok", ";p=1", " "]), max_size=8))
def test_split_list_never_splits_inside_quotes_or_brackets(parts: list[str]) -> None:
    items = [p for p in ("".join(parts), "<sip:q@r>") if p.strip()]
    value = ", ".join(items)
    try:
        out = split_list(value)
    except RemoteSipError:
        return
    assert out == [i.strip() for i in items if i.strip()]


def test_make_request_for_user_agents() -> None:
    req = make_request(
        "INVITE",
        "sip:bob@ims.test",
        via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1",
        from_="<sip:alice@ims.test>;tag=1",
        to="<sip:bob@ims.test>",
        call_id="c",
        cseq=1,
        extra=[("Contact", "<sip:alice@192.0.2.10>")],
        body=b"v=0\r\n",
    )
    parsed = parse_datagram(req.serialise())
    assert isinstance(parsed, Request)
    validate_request(parsed)
    assert parsed.has_sdp and parsed.cseq == (1, "INVITE") and parsed.get("Max-Forwards") == "70"


def test_lookups_follow_the_headers_of_each_edited_message() -> None:
    request = parse_datagram(INVITE)
    assert isinstance(request, Request)
    assert (
        request.get("via")
        == request.get("v")
        == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"
    )
    edited = request.evolve(headers=request.dropping_first_value("via"))
    assert edited.top_via.host == "[2001:db8::1]"
    assert request.top_via.host == "192.0.2.10"  # the original is unchanged
    assert edited.get_all("subject") == ["folded continued"]
    assert edited.evolve(uri="sip:carol@ims.test").uri == "sip:carol@ims.test"
    looked_up, fresh = parse_datagram(INVITE), parse_datagram(INVITE)
    looked_up.get("call-id")
    assert looked_up == fresh and hash(looked_up) == hash(fresh)
    assert repr(looked_up) == repr(fresh)
    with pytest.raises(TypeError):
        request.evolve(status=200)


def test_a_value_that_failed_to_parse_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(RemoteSipError, match="sent-protocol"):
            Via.parse("SIP/3.0/UDP h.test")
        with pytest.raises(RemoteSipError, match="Unclosed"):
            NameAddr.parse("<sip:a@b", "From")
        with pytest.raises(RemoteSipError, match="Unsupported URI"):
            SipUri.parse("mailto:a@b", "Contact")
    assert Via.parse("SIP/2.0/UDP h.test;branch=z9hG4bK1") == Via.parse(
        "SIP/2.0/UDP h.test;branch=z9hG4bK1"
    )
