"""The KMS's strict HTTP/1.1 subset, sans I/O: POST with Content-Length, bounded, one bad
request closes the connection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms.http import (
    BadRequest,
    ContinueNeeded,
    Event,
    HttpConnection,
    HttpLimits,
    Request,
    response,
)


def _post(body: bytes, *extra: str, version: str = "HTTP/1.1") -> bytes:
    head = [f"POST /mikey {version}", "Host: kms", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _events(data: bytes, limits: HttpLimits | None = None) -> list[Event]:
    conn = HttpConnection(limits)
    conn.receive_data(data)
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def test_one_post_and_its_body() -> None:
    (request,) = _events(_post(b"\x01\x02MIKEY", "Content-Type: application/mikey"))
    assert isinstance(request, Request)
    assert (request.method, request.target, request.body) == ("POST", "/mikey", b"\x01\x02MIKEY")
    assert request.header("Content-Type") == "application/mikey" and request.keep_alive


def test_pipelined_requests_come_one_at_a_time_and_close_ends_the_stream() -> None:
    data = _post(b"one") + _post(b"two", "Connection: close") + _post(b"three")
    events = _events(data)
    assert [e.body for e in events if isinstance(e, Request)] == [b"one", b"two"]
    assert [e.keep_alive for e in events if isinstance(e, Request)] == [True, False]


def test_http_1_0_closes_unless_keep_alive() -> None:
    (a,) = _events(_post(b"x", version="HTTP/1.0"))
    (b,) = _events(_post(b"x", "Connection: keep-alive", version="HTTP/1.0"))
    assert isinstance(a, Request) and isinstance(b, Request)
    assert not a.keep_alive and b.keep_alive


def test_expect_100_continue_before_the_body() -> None:
    conn = HttpConnection()
    whole = _post(b"body", "Expect: 100-continue")
    conn.receive_data(whole[:-4])
    assert conn.next_event() == ContinueNeeded() and conn.next_event() is None
    conn.receive_data(whole[-4:])
    event = conn.next_event()
    assert isinstance(event, Request) and event.body == b"body"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: kms\r\n\r\n", 405),
        (b"POST / HTTP/1.1\r\nHost: kms\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST / HTTP/2.0\r\nContent-Length: 0\r\n\r\n", 505),
        (b"POST /\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\n folded: x\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nNo-Colon\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nX: \xff\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nExpect: magic\r\nContent-Length: 0\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 65 + b"Content-Length: 0\r\n\r\n", 431),
    ],
)
def test_bad_requests_get_their_status_and_close(data: bytes, status: int) -> None:
    conn = HttpConnection()
    conn.receive_data(data + _post(b"after"))
    event = conn.next_event()
    assert isinstance(event, BadRequest) and event.status == status, event
    assert event.reason and conn.closed and conn.next_event() is None


def test_a_header_block_without_its_end_is_refused_once_too_large() -> None:
    conn = HttpConnection(HttpLimits(max_header_bytes=100))
    conn.receive_data(b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 10)
    assert conn.next_event() is None
    conn.receive_data(b"X: y\r\n" * 10)
    event = conn.next_event()
    assert isinstance(event, BadRequest) and event.status == 431


def test_response_framing() -> None:
    assert response(200, b"\x01", content_type="application/mikey") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/mikey\r\nContent-Length: 1\r\n\r\n\x01"
    )
    assert response(413, b"no", close=True).endswith(b"Connection: close\r\n\r\nno")


STREAM = (
    _post(b"one")
    + _post(b"two\r\n\r\n", "Expect: 100-continue")
    + _post(b"", "X-Empty:")
    + _post(b"last", "Connection: close")
    + b"ignored"
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=10))
def test_splitting_the_stream_anywhere_gives_the_same_requests(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    conn = HttpConnection()
    got: list[Event] = []
    for a, b in zip([0, *points], [*points, len(STREAM)], strict=True):
        conn.receive_data(STREAM[a:b])
        while (event := conn.next_event()) is not None:
            got.append(event)
    requests = [e for e in got if isinstance(e, Request)]
    assert [r.body for r in requests] == [b"one", b"two\r\n\r\n", b"", b"last"]
    assert not any(isinstance(e, BadRequest) for e in got)


@given(st.binary(max_size=400))
def test_any_bytes_give_events_never_an_exception(data: bytes) -> None:
    events = _events(b"POST / HTTP/1.1\r\n" + data, HttpLimits(max_header_bytes=256))
    assert all(isinstance(e, Request | BadRequest | ContinueNeeded) for e in events)
