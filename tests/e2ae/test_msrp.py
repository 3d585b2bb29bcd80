"""MSRP framing (RFC 4975) and the endpoint session helper, without a reactor."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ae.msrp import (
    ByteRange,
    LocalMsrpError,
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    MsrpParser,
    MsrpSession,
    PeerError,
    RemoteMsrpError,
    ReportReceived,
    Request,
    Response,
    parse_frames,
)

ALICE = "msrp://atlanta.example.com:7654/jshA7weztas;tcp"
BOB = "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"

# RFC 4975 section 4 (with the Byte-Range matching the 23-octet body).
RFC_SEND = (
    b"MSRP a786hjs2 SEND\r\n"
    b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"Message-ID: 87652491\r\n"
    b"Byte-Range: 1-23/23\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hey Bob, are you there?\r\n"
    b"-------a786hjs2$\r\n"
)
RFC_200 = (
    b"MSRP a786hjs2 200 OK\r\n"
    b"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"-------a786hjs2$\r\n"
)
RFC_REPORT = (
    b"MSRP dkei38sd REPORT\r\n"
    b"To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n"
    b"From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n"
    b"Message-ID: 12339sdqwer\r\n"
    b"Byte-Range: 1-106/106\r\n"
    b"Status: 000 200 OK\r\n"
    b"-------dkei38sd$\r\n"
)


def test_rfc_examples_parse_and_reserialise_byte_for_byte() -> None:
    frames = parse_frames(RFC_SEND + RFC_200 + RFC_REPORT)
    send, ok, report = frames
    assert isinstance(send, Request) and isinstance(ok, Response) and isinstance(report, Request)
    assert send.method == "SEND" and send.transaction_id == "a786hjs2"
    assert send.to_path == (BOB,) and send.from_path == (ALICE,)
    assert send.message_id == "87652491" and send.byte_range == ByteRange(1, 23, 23)
    assert send.content_type == "text/plain" and send.body == b"Hey Bob, are you there?"
    assert send.flag == "$" and send.failure_report == "yes" and not send.success_report
    assert ok.status == 200 and ok.comment == "OK"
    assert report.status is not None and report.status.code == 200
    assert report.byte_range == ByteRange(1, 106, 106)
    assert b"".join(f.to_bytes() for f in frames) == RFC_SEND + RFC_200 + RFC_REPORT


@given(st.lists(st.integers(min_value=0, max_value=len(RFC_SEND + RFC_200)), max_size=12))
def test_arbitrary_splits_give_the_same_frames(cuts: list[int]) -> None:
    data = RFC_SEND + RFC_200
    points = sorted({0, len(data), *cuts})
    parser = MsrpParser()
    frames = []
    for a, b in itertools.pairwise(points):
        parser.feed(data[a:b])
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    assert frames == parse_frames(data)
    assert parser.buffered == 0


_ident = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}\Z")
_sid = st.from_regex(r"\A[A-Za-z0-9]{1,20}\Z")
_uri = st.builds(
    lambda s, h, p, sid: f"{s}://{h}:{p}/{sid};tcp",
    st.sampled_from(["msrp", "msrps"]),
    st.sampled_from(["192.0.2.10", "ue.example", "[2001:db8::1]"]),
    st.integers(1, 65535),
    _sid,
)
_path = st.lists(_uri, min_size=1, max_size=3).map(tuple)
_bodies = st.one_of(
    st.binary(max_size=300),
    # bodies that contain end-line look-alikes
    st.lists(st.sampled_from([b"\r\n", b"-------", b"abcd", b"$", b"+", b"#", b"x"])).map(b"".join),
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    tid = draw(_ident)
    body = draw(_bodies)
    if b"\r\n-------" + tid.encode() in body:
        body = body.replace(b"\r\n-------", b"\r\n------ ")
    flag = draw(st.sampled_from(["$", "+", "#"]))
    start = draw(st.integers(1, 10_000))
    end = start + len(body) - 1
    total = end if flag == "$" else draw(st.one_of(st.none(), st.integers(end, end + 1000)))
    rng = ByteRange(start, end, total)
    headers = [("Message-ID", draw(_ident)), ("Byte-Range", str(rng))]
    if draw(st.booleans()):
        headers.append(("Success-Report", draw(st.sampled_from(["yes", "no"]))))
    if draw(st.booleans()):
        headers.append(("Failure-Report", draw(st.sampled_from(["yes", "no", "partial"]))))
    if draw(st.booleans()):
        headers.append(
            ("X-Extension", draw(st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True)))
        )
    ctype = draw(st.sampled_from(["text/plain", "message/cpim", "application/octet-stream"]))
    return Request(
        tid,
        "SEND",
        draw(_path),
        draw(_path),
        tuple(headers),
        ctype if body or draw(st.booleans()) else None,
        body,
        flag,  # type: ignore[arg-type]
    )


@st.composite
def responses(draw: st.DrawFn) -> Response:
    return Response(
        draw(_ident),
        draw(st.sampled_from([200, 400, 403, 408, 413, 415, 481, 501, 506])),
        draw(_path),
        draw(_path),
        draw(st.one_of(st.none(), st.from_regex(r"\A[ -~]{0,30}\Z"))),
    )


@settings(max_examples=200)
@given(st.lists(st.one_of(requests(), responses()), min_size=1, max_size=5), st.data())
def test_round_trip_any_frames_any_split(
    frames: list[Request | Response], data: st.DataObject
) -> None:
    wire = b"".join(f.to_bytes() for f in frames)
    cut = data.draw(st.integers(0, len(wire)))
    parser = MsrpParser()
    got = []
    for part in (wire[:cut], wire[cut:]):
        parser.feed(part)
        while (frame := parser.next_frame()) is not None:
            got.append(frame)
    assert got == frames


def _err(data: bytes) -> RemoteMsrpError:
    with pytest.raises(RemoteMsrpError) as info:
        parse_frames(data)
    return info.value


@pytest.mark.parametrize(
    ("data", "where", "recoverable"),
    [
        (b"HTTP/1.1 200 OK\r\n", "start line", False),
        (b"MSRP ab SEND\r\n", "start line", False),
        (b"MSRP abcd send\r\n", "start line", False),
        (RFC_200.replace(b"-------a786hjs2$", b"-------zzzzzzzz$"), "end line", False),
        (RFC_SEND.replace(b"To-Path", b"X-Path"), "headers", True),
        (RFC_SEND.replace(b"Message-ID: 87652491\r\n", b""), "headers", True),
        (RFC_SEND.replace(b"Byte-Range: 1-23/23", b"Byte-Range: 1-22/23"), "Byte-Range", True),
        (RFC_SEND.replace(b"Byte-Range: 1-23/23", b"Byte-Range: one"), "headers", True),
        (RFC_SEND.replace(b"Content-Type: text/plain\r\n", b""), "headers", True),
        (RFC_SEND.replace(b"Message-ID: 87652491", b"Message-ID 87652491"), "headers", True),
        (RFC_SEND.replace(b"msrp://biloxi", b"http://biloxi"), "To-Path", True),
        (RFC_SEND.replace(b"-------a786hjs2$\r\n", b"-------a786hjs2$xx"), "end line", False),
        (RFC_200.replace(b"a786hjs2$", b"a786hjs2+"), "end line", True),
        (RFC_REPORT.replace(b"Status: 000 200 OK", b"Status: 200 OK"), "headers", True),
    ],
)
def test_malformed_frames_say_what_and_where(data: bytes, where: str, recoverable: bool) -> None:
    err = _err(data)
    assert err.where == where, err
    assert err.recoverable is recoverable
    assert "malformed MSRP" in str(err)


def test_recoverable_error_skips_only_the_bad_frame() -> None:
    bad = RFC_SEND.replace(b"Message-ID: 87652491\r\n", b"")
    parser = MsrpParser()
    parser.feed(bad + RFC_200)
    with pytest.raises(RemoteMsrpError) as info:
        parser.next_frame()
    assert info.value.transaction_id == "a786hjs2"
    assert isinstance(parser.next_frame(), Response)


def test_unrecoverable_error_sticks() -> None:
    parser = MsrpParser()
    parser.feed(b"GARBAGE\r\n" + RFC_200)
    for _ in range(2):
        with pytest.raises(RemoteMsrpError):
            parser.next_frame()


def test_limits() -> None:
    parser = MsrpParser(max_header_bytes=100)
    parser.feed(RFC_SEND)
    with pytest.raises(RemoteMsrpError, match="headers exceed 100 bytes"):
        parser.next_frame()
    parser = MsrpParser(max_body_bytes=10)
    parser.feed(RFC_SEND)
    with pytest.raises(RemoteMsrpError, match="exceeds 10 bytes"):
        parser.next_frame()
    parser = MsrpParser(max_body_bytes=10)
    parser.feed(RFC_SEND[:-30] + b"x" * 100)
    with pytest.raises(RemoteMsrpError, match="exceeds 10 bytes"):
        parser.next_frame()


def test_building_invalid_frames_is_a_local_error() -> None:
    with pytest.raises(LocalMsrpError):
        Request("a786hjs2", "SEND", (BOB,), (ALICE,), (), None, b"body")
    with pytest.raises(LocalMsrpError):
        Request("a786hjs2", "SEND", (BOB,), (ALICE,), (("Message-ID", "x"),))
    with pytest.raises(LocalMsrpError, match="end line"):
        Request(
            "a786hjs2",
            "SEND",
            (BOB,),
            (ALICE,),
            (("Message-ID", "abcd1234"),),
            "text/plain",
            b"x\r\n-------a786hjs2$\r\n",
        )
    with pytest.raises(LocalMsrpError):
        Response("a786hjs2", 2000, (BOB,), (ALICE,))


# -- session ---------------------------------------------------------------------------------


def _pair(**kw: object) -> tuple[MsrpSession, MsrpSession]:
    a = MsrpSession(ALICE, (BOB,), **kw)  # type: ignore[arg-type]
    b = MsrpSession(BOB, (ALICE,), **kw)  # type: ignore[arg-type]
    return a, b


def _deliver(src: MsrpSession, dst: MsrpSession, step: int = 0) -> list[object]:
    data = src.data_to_send()
    if not step:
        return list(dst.receive_data(data))
    events: list[object] = []
    for i in range(0, len(data), step):
        events.extend(dst.receive_data(data[i : i + step]))
    return events


@given(st.binary(max_size=5000), st.integers(1, 700), st.integers(1, 97))
@settings(max_examples=60)
def test_chunked_message_reassembles(body: bytes, chunk: int, step: int) -> None:
    a, b = _pair(chunk_size=chunk)
    mid = a.send_message(body, "application/octet-stream", success_report=True)
    events = _deliver(a, b, step)
    if body:
        assert events == [
            MessageReceived(mid, "application/octet-stream", body, (ALICE,)),
        ]
    else:
        assert events == []  # an empty SEND only binds the connection
    back = _deliver(b, a)
    assert MessageDelivered(mid) in back
    reports = [e for e in back if isinstance(e, ReportReceived)]
    if body:
        assert len(reports) == 1
        assert reports[0].byte_range == ByteRange(1, len(body), len(body))
    assert a.outstanding == 0


def test_chunks_carry_byte_ranges_and_flags() -> None:
    a, _ = _pair(chunk_size=4)
    a.send_message(b"0123456789")
    frames = parse_frames(a.data_to_send())
    assert [f.flag for f in frames if isinstance(f, Request)] == ["+", "+", "$"]
    assert [str(f.byte_range) for f in frames if isinstance(f, Request)] == [
        "1-4/10",
        "5-8/10",
        "9-10/10",
    ]


def test_abort_and_failure_report_no() -> None:
    _a, b = _pair()
    first = Request(
        "tid00001",
        "SEND",
        (BOB,),
        (ALICE,),
        (("Message-ID", "msg00001"), ("Byte-Range", "1-3/10")),
        "text/plain",
        b"abc",
        "+",
    )
    aborted = Request(
        "tid00002",
        "SEND",
        (BOB,),
        (ALICE,),
        (("Message-ID", "msg00001"), ("Byte-Range", "4-*/10"), ("Failure-Report", "no")),
        "text/plain",
        b"de",
        "#",
    )
    events = b.receive_data(first.to_bytes() + aborted.to_bytes())
    assert events == [MessageAborted("msg00001", 5, "interrupted by the sender")]
    replies = parse_frames(b.data_to_send())
    assert [(r.transaction_id, r.status) for r in replies if isinstance(r, Response)] == [
        ("tid00001", 200)
    ]
    assert replies[0].to_path == (ALICE,) and replies[0].from_path == (BOB,)


def test_wrong_session_is_481_and_unknown_method_501() -> None:
    _a, b = _pair()
    other = MsrpSession(ALICE, ("msrp://biloxi.example.com:12763/othersession;tcp",))
    other.send_message(b"hi")
    assert b.receive_data(other.data_to_send()) == []
    nice = Request("tid00003", "NICKNAME", (BOB,), (ALICE,))
    assert b.receive_data(nice.to_bytes()) == []
    codes = [r.status for r in parse_frames(b.data_to_send()) if isinstance(r, Response)]
    assert codes == [481, 501]


def test_error_response_fails_the_message() -> None:
    a, b = _pair(max_message_bytes=10)
    mid = a.send_message(b"x" * 30, chunk_size=8)
    events = _deliver(a, b)
    assert events == [MessageAborted(mid, 8, "message larger than 10 bytes")]
    back = _deliver(b, a)
    assert back == [MessageFailed(mid, 413, "Message Too Large")]


def test_malformed_request_in_session_gets_400_and_session_goes_on() -> None:
    a, b = _pair()
    bad = RFC_SEND.replace(b"Message-ID: 87652491\r\n", b"")
    bad = bad.replace(b"kjhd37s2s20w2a", b"kjhd37s2s20w2a")
    mid = a.send_message(b"after the bad one")
    events = b.receive_data(bad + a.data_to_send())
    assert isinstance(events[0], PeerError) and events[0].error.where == "headers"
    assert isinstance(events[1], MessageReceived) and events[1].message_id == mid
    codes = [r.status for r in parse_frames(b.data_to_send()) if isinstance(r, Response)]
    assert codes == [400, 200]


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.integers(0, len(RFC_SEND) - 1), st.binary(min_size=1, max_size=4)).map(
            lambda cut: RFC_SEND[: cut[0]] + cut[1] + RFC_SEND[cut[0] + len(cut[1]) :]
        ),
    )
)
def test_any_bytes_give_frames_or_remote_errors_only(data: bytes) -> None:
    session = MsrpSession(BOB, (ALICE,))
    try:
        events = session.receive_data(data)
    except RemoteMsrpError:
        return
    for event in events:
        assert isinstance(
            event, MessageReceived | MessageAborted | MessageDelivered | MessageFailed | PeerError
        ) or isinstance(event, ReportReceived)
    session.data_to_send()
