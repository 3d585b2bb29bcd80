"""The KMS's HTTP/1.1, sans I/O: the strict subset the UE-KMS interface needs (a POST with a
MIKEY message as its body, the MIKEY reply as the response body), bounded at every step.

- Requests: ``POST`` with ``Content-Length`` (no chunked bodies: 411); any other method 405;
  header block at most :attr:`HttpLimits.max_header_bytes`, body at most ``max_body`` (413).
  ``Expect: 100-continue`` is answered ``100 Continue`` before the body is read.
- Persistent connections as HTTP/1.1 has them; ``Connection: close`` (or HTTP/1.0 without
  ``keep-alive``) closes after the response. Pipelined requests are taken one at a time.
- A malformed request gets its 4xx and the connection closes: after a framing error nothing
  further on the stream can be trusted (RFC 9112 section 11.2).

Feed bytes with :meth:`HttpConnection.receive_data`; take :class:`Request`,
:class:`ContinueNeeded` and :class:`BadRequest` events from :meth:`HttpConnection.next_event`;
encode answers with :func:`response`.
"""

from __future__ import annotations

from collections import deque
from typing import TypeAlias

import attrs

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@attrs.frozen
class HttpLimits:
    max_header_bytes: int = 8192
    max_headers: int = 64
    max_body: int = 65_536


@attrs.frozen
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: The connection stays open after the response.
    keep_alive: bool

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.frozen
class ContinueNeeded:
    """The client waits for ``100 Continue`` before it sends the body: send :data:`CONTINUE`."""


@attrs.frozen
class BadRequest:
    """The request cannot be served; answer ``status`` with ``reason`` and close."""

    status: int
    reason: str


Event: TypeAlias = Request | ContinueNeeded | BadRequest

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    close: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """An HTTP/1.1 response with a Content-Length body."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    if body or status >= 200:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{k}: {v}" for k, v in extra)
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@attrs.define
class _Head:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    length: int
    keep_alive: bool


class HttpConnection:
    """One connection's requests: bytes in, events out."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._events: deque[Event] = deque()
        #: No more requests are read (a bad request, or the peer's last one).
        self.closed = False

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        self._buffer += data
        self._parse()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def _fail(self, status: int, reason: str) -> None:
        self._events.append(BadRequest(status, reason))
        self.closed = True
        self._buffer.clear()

    def _parse(self) -> None:
        while not self.closed:
            if self._head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > self.limits.max_header_bytes:
                        self._fail(431, "the request header block is too large")
                    return
                if end + 4 > self.limits.max_header_bytes:
                    self._fail(431, "the request header block is too large")
                    return
                block = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                head = self._read_head(block)
                if head is None:
                    return
                self._head = head
                expect = _header(head.headers, "expect")
                if expect is not None:
                    if expect.lower() != "100-continue":
                        self._fail(417, f"unsupported Expect: {expect[:40]}")
                        return
                    if len(self._buffer) < head.length:
                        self._events.append(ContinueNeeded())
            head = self._head
            if len(self._buffer) < head.length:
                return
            body = bytes(self._buffer[: head.length])
            del self._buffer[: head.length]
            self._head = None
            self._events.append(
                Request(head.method, head.target, head.headers, body, head.keep_alive)
            )
            if not head.keep_alive:
                self.closed = True

    def _read_head(self, block: bytes) -> _Head | None:
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            self._fail(400, "the request head is not ASCII")
            return None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            self._fail(400, "malformed request line")
            return None
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self._fail(505, f"unsupported version {version[:20]!r}")
            return None
        if not set(method) <= _TOKEN:
            self._fail(400, "malformed method")
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or not set(name) <= _TOKEN:
                self._fail(400, "malformed header line")
                return None
            headers.append((name.lower(), value.strip(" \t")))
        if len(headers) > self.limits.max_headers:
            self._fail(431, f"more than {self.limits.max_headers} header fields")
            return None
        if method != "POST":
            self._fail(405, f"{method[:20]} is not served: the KMS takes POST only")
            return None
        if _header(headers, "transfer-encoding") is not None:
            self._fail(411, "chunked bodies are not accepted: send Content-Length")
            return None
        lengths = [v for k, v in headers if k == "content-length"]
        if not lengths:
            self._fail(411, "a POST needs Content-Length")
            return None
        if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 12:
            self._fail(400, "bad Content-Length")
            return None
        length = int(lengths[0])
        if length > self.limits.max_body:
            self._fail(413, f"a body of {length} bytes is more than {self.limits.max_body}")
            return None
        connection = (_header(headers, "connection") or "").lower()
        tokens = {t.strip() for t in connection.split(",")}
        keep_alive = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
        return _Head(method, target, tuple(headers), length, keep_alive)


def _header(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


__all__ = [
    "CONTINUE",
    "BadRequest",
    "ContinueNeeded",
    "Event",
    "HttpConnection",
    "HttpLimits",
    "Request",
    "response",
]
