"""MSRP (RFC 4975) framing and a small endpoint session, sans I/O.

- :class:`Request` / :class:`Response`: frozen frames with ``to_bytes()``; building one that RFC
  4975 does not allow raises :class:`LocalMsrpError`.
- :class:`MsrpParser`: incremental over a byte stream (any split), ``feed(data)`` then
  ``next_frame()`` until ``None``. A malformed frame raises :class:`RemoteMsrpError` saying what
  and where. When the frame's end could still be found (the transaction id is known), the error
  is ``recoverable``: the frame is consumed and parsing goes on with the next one; otherwise the
  stream cannot be resynchronised and the connection must be closed.
- :class:`MsrpSession`: one endpoint of an MSRP session over one connection: sends messages in
  chunks (``Byte-Range``, ``+``/``$`` end flags), reassembles received messages, answers 200 (or
  an error status) per ``Failure-Report`` and sends a ``REPORT`` when ``Success-Report: yes``.
  ``receive_data(bytes) -> events``; ``data_to_send() -> bytes``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Literal

import attrs

Flag = Literal["$", "+", "#"]
FailureReport = Literal["yes", "no", "partial"]

FLAGS: tuple[str, ...] = ("$", "+", "#")
CRLF = b"\r\n"
#: RFC 4975 section 7.1: chunks above this size SHOULD NOT be sent without interruptibility.
DEFAULT_CHUNK_SIZE = 2048
REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Message Too Large",
    415: "Unsupported Media Type",
    423: "Parameter Out Of Bounds",
    481: "No Such Session",
    501: "Not Implemented",
    506: "Session Already Bound",
}

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}$")
_METHOD = re.compile(r"^[A-Z]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9!#$%&'*+\-.^_`|~]*$")
_URI = re.compile(r"^msrps?://[^\s/]+/[^\s;/]+;tcp(;[^\s]*)?$", re.IGNORECASE)
_RANGE = re.compile(r"^([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)$")
_STATUS = re.compile(r"^000 ([0-9]{3})(?: (.*))?$")
_TEXT_OK = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")

_ORDERED = ("to-path", "from-path")


class MsrpError(Exception):
    """Root of every MSRP error."""


class LocalMsrpError(MsrpError, ValueError):
    """We were asked to build a frame or message that RFC 4975 does not allow."""

    def __init__(self, reason: str, *, where: str = "", value: object = None) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where
        self.value = value


class RemoteMsrpError(MsrpError):
    """The peer sent something that is not valid MSRP.

    ``where`` names the part of the frame (start line, a header, the end line, the body),
    ``value`` is the offending text. ``transaction_id`` is set once the start line was read;
    ``recoverable`` says the frame was skipped and the stream can go on. ``status`` is the
    response code to answer a request with (400 unless a more precise code applies).
    """

    def __init__(
        self,
        reason: str,
        *,
        where: str,
        value: object = None,
        transaction_id: str | None = None,
        recoverable: bool = False,
        status: int = 400,
        is_request: bool = True,
    ) -> None:
        shown = "" if value is None else f" ({_show(value)})"
        super().__init__(f"malformed MSRP in {where}: {reason}{shown}")
        self.reason = reason
        self.where = where
        self.value = value
        self.transaction_id = transaction_id
        self.recoverable = recoverable
        self.status = status
        self.is_request = is_request
        #: The frame's From-Path when it could be read: where an error response goes.
        self.from_path: tuple[str, ...] | None = None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# Value objects


@attrs.frozen
class ByteRange:
    """``Byte-Range: start-end/total``; ``end`` and ``total`` are ``None`` for ``*``."""

    start: int
    end: int | None
    total: int | None

    def __str__(self) -> str:
        end = "*" if self.end is None else str(self.end)
        total = "*" if self.total is None else str(self.total)
        return f"{self.start}-{end}/{total}"

    @classmethod
    def parse(cls, text: str) -> ByteRange:
        m = _RANGE.match(text)
        if m is None:
            raise ValueError("expected 'start-end/total' with decimal numbers or '*'")
        start = int(m.group(1))
        end = None if m.group(2) == "*" else int(m.group(2))
        total = None if m.group(3) == "*" else int(m.group(3))
        return cls(start, end, total)

    def problem(self) -> str | None:
        if self.start < 1:
            return "range start must be at least 1"
        if self.end is not None and self.end < self.start - 1:
            return "range end is before its start"
        if self.total is not None and self.end is not None and self.end > self.total:
            return "range end is beyond the total"
        return None


@attrs.frozen
class Status:
    """``Status: 000 <code> [comment]`` of a REPORT."""

    code: int
    comment: str | None = None

    def __str__(self) -> str:
        return f"000 {self.code}" + ("" if self.comment is None else f" {self.comment}")


Headers = tuple[tuple[str, str], ...]


def _lookup(headers: Headers, name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


def _check_path(name: str, path: tuple[str, ...]) -> str | None:
    if not path:
        return f"{name} must list at least one URI"
    for uri in path:
        if not _URI.match(uri):
            return f"{name} URI {uri!r} is not msrp[s]://authority/session-id;tcp"
    return None


def _check_headers(headers: Headers) -> str | None:
    """Syntax of the headers this module understands; returns the problem or ``None``."""
    seen: set[str] = set()
    for name, value in headers:
        lowered = name.lower()
        if not _HEADER_NAME.match(name):
            return f"header name {name!r} is not a token"
        if not _TEXT_OK.match(value) or value != value.strip(" \t"):
            return f"header {name} has a bad value {value!r}"
        if lowered in ("to-path", "from-path", "content-type"):
            return f"header {name} must not be among the other headers"
        if lowered in seen and lowered in (
            "message-id",
            "byte-range",
            "status",
            "success-report",
            "failure-report",
        ):
            return f"header {name} appears twice"
        seen.add(lowered)
        if lowered == "message-id" and not _IDENT.match(value):
            return f"Message-ID {value!r} is not an ident (4-32 characters)"
        if lowered == "byte-range":
            try:
                problem = ByteRange.parse(value).problem()
            except ValueError as exc:
                problem = str(exc)
            if problem:
                return f"Byte-Range {value!r}: {problem}"
        if lowered == "success-report" and value not in ("yes", "no"):
            return f"Success-Report must be yes or no, got {value!r}"
        if lowered == "failure-report" and value not in ("yes", "no", "partial"):
            return f"Failure-Report must be yes, no or partial, got {value!r}"
        if lowered == "status" and not _STATUS.match(value):
            return f"Status must be '000 <code> [comment]', got {value!r}"
    return None


@attrs.frozen
class Request:
    """An MSRP request (``SEND``, ``REPORT`` or another method) or one chunk of a message."""

    transaction_id: str
    method: str
    to_path: tuple[str, ...]
    from_path: tuple[str, ...]
    #: Headers other than To-Path, From-Path and Content-Type, in order.
    headers: Headers = ()
    content_type: str | None = None
    body: bytes = b""
    flag: Flag = "$"

    def __attrs_post_init__(self) -> None:
        problem = _request_problem(self)
        if problem is not None:
            raise LocalMsrpError(problem[1], where=problem[0])

    def header(self, name: str) -> str | None:
        """Value of a header by case-insensitive name (``Content-Type`` included)."""
        if name.lower() == "content-type":
            return self.content_type
        return _lookup(self.headers, name)

    @property
    def message_id(self) -> str | None:
        return _lookup(self.headers, "Message-ID")

    @property
    def byte_range(self) -> ByteRange:
        """The chunk's range; RFC 4975 default ``1-*/*`` when absent."""
        value = _lookup(self.headers, "Byte-Range")
        return ByteRange(1, None, None) if value is None else ByteRange.parse(value)

    @property
    def success_report(self) -> bool:
        return _lookup(self.headers, "Success-Report") == "yes"

    @property
    def failure_report(self) -> FailureReport:
        value = _lookup(self.headers, "Failure-Report")
        if value == "no":
            return "no"
        if value == "partial":
            return "partial"
        return "yes"

    @property
    def status(self) -> Status | None:
        value = _lookup(self.headers, "Status")
        if value is None:
            return None
        m = _STATUS.match(value)
        assert m is not None
        return Status(int(m.group(1)), m.group(2))

    def end_line(self) -> bytes:
        return b"-------" + self.transaction_id.encode("ascii") + self.flag.encode("ascii") + CRLF

    def to_bytes(self) -> bytes:
        lines = [
            f"MSRP {self.transaction_id} {self.method}",
            "To-Path: " + " ".join(self.to_path),
            "From-Path: " + " ".join(self.from_path),
        ]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        head = "\r\n".join(lines).encode("utf-8") + CRLF
        if self.content_type is None:
            return head + self.end_line()
        return (
            head
            + f"Content-Type: {self.content_type}".encode()
            + CRLF
            + CRLF
            + self.body
            + CRLF
            + self.end_line()
        )


def _request_problem(req: Request) -> tuple[str, str] | None:
    if not _IDENT.match(req.transaction_id):
        return "start line", f"transaction id {req.transaction_id!r} is not an ident"
    if not _METHOD.match(req.method):
        return "start line", f"method {req.method!r} must be upper-case letters"
    if req.flag not in FLAGS:
        return "end line", f"continuation flag {req.flag!r} must be one of $ + #"
    for name, path in (("To-Path", req.to_path), ("From-Path", req.from_path)):
        problem = _check_path(name, path)
        if problem:
            return name, problem
    problem = _check_headers(req.headers)
    if problem:
        return "headers", problem
    if req.content_type is not None and (
        "/" not in req.content_type or not _TEXT_OK.match(req.content_type)
    ):
        return "Content-Type", f"{req.content_type!r} is not a media type"
    if req.body and req.content_type is None:
        return "body", "a body needs a Content-Type"
    marker = CRLF + b"-------" + req.transaction_id.encode("ascii")
    if any(marker + flag.encode("ascii") in req.body for flag in FLAGS):
        return "body", "the body contains the end line of its own transaction"
    if req.method == "SEND" and req.message_id is None:
        return "headers", "SEND needs a Message-ID"
    if req.method == "REPORT":
        if req.message_id is None:
            return "headers", "REPORT needs a Message-ID"
        if _lookup(req.headers, "Status") is None:
            return "headers", "REPORT needs a Status"
        if req.body:
            return "body", "REPORT has no body"
    rng_text = _lookup(req.headers, "Byte-Range")
    if rng_text is not None and req.method == "SEND":
        rng = ByteRange.parse(rng_text)
        if rng.end is not None and rng.end - rng.start + 1 != len(req.body):
            return (
                "Byte-Range",
                f"{rng_text} announces {rng.end - rng.start + 1} bytes, the body has "
                f"{len(req.body)}",
            )
        if req.flag == "$" and rng.total is not None and rng.end is not None:
            if rng.end != rng.total:
                return "Byte-Range", f"last chunk ({rng_text}) does not end at the total"
    return None


@attrs.frozen
class Response:
    """An MSRP response (``MSRP <tid> <code> [comment]``); responses carry no body."""

    transaction_id: str
    status: int
    to_path: tuple[str, ...]
    from_path: tuple[str, ...]
    comment: str | None = None
    headers: Headers = ()

    def __attrs_post_init__(self) -> None:
        problem = _response_problem(self)
        if problem is not None:
            raise LocalMsrpError(problem[1], where=problem[0])

    def header(self, name: str) -> str | None:
        return _lookup(self.headers, name)

    def to_bytes(self) -> bytes:
        start = f"MSRP {self.transaction_id} {self.status:03d}"
        if self.comment is not None:
            start += " " + self.comment
        lines = [
            start,
            "To-Path: " + " ".join(self.to_path),
            "From-Path: " + " ".join(self.from_path),
        ]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        tid = self.transaction_id.encode("ascii")
        return "\r\n".join(lines).encode("utf-8") + CRLF + b"-------" + tid + b"$" + CRLF


def _response_problem(resp: Response) -> tuple[str, str] | None:
    if not _IDENT.match(resp.transaction_id):
        return "start line", f"transaction id {resp.transaction_id!r} is not an ident"
    if not 100 <= resp.status <= 999:
        return "start line", f"status {resp.status} is not a three-digit code"
    if resp.comment is not None and (not _TEXT_OK.match(resp.comment) or "\t" in resp.comment):
        return "start line", f"comment {resp.comment!r} has control characters"
    for name, path in (("To-Path", resp.to_path), ("From-Path", resp.from_path)):
        problem = _check_path(name, path)
        if problem:
            return name, problem
    problem = _check_headers(resp.headers)
    if problem:
        return "headers", problem
    return None


Frame = Request | Response


# ---------------------------------------------------------------------------------------------
# Incremental parser


@attrs.define
class _Pending:
    transaction_id: str
    method: str | None
    status: int | None
    comment: str | None
    lines: list[tuple[str, str]] = attrs.Factory(list)
    header_bytes: int = 0
    bad: RemoteMsrpError | None = None


def _from_path_of(pending: _Pending) -> tuple[str, ...] | None:
    for name, value in pending.lines:
        if name.lower() == "from-path":
            path = tuple(value.split())
            return path if path and _check_path("From-Path", path) is None else None
    return None


class MsrpParser:
    """Turns a byte stream into :class:`Request` / :class:`Response` frames.

    ``max_header_bytes`` bounds the start line plus headers, ``max_body_bytes`` one chunk's body.
    """

    def __init__(self, *, max_header_bytes: int = 16384, max_body_bytes: int = 1 << 20) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._pending: _Pending | None = None
        self._in_body = False
        self._scan_from = 0
        self._broken: RemoteMsrpError | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next complete frame, ``None`` if more bytes are needed; raises on bad input."""
        if self._broken is not None:
            raise self._broken
        try:
            return self._next()
        except RemoteMsrpError as exc:
            if not exc.recoverable:
                self._broken = exc
            raise

    def _fail(self, reason: str, where: str, value: object = None) -> RemoteMsrpError:
        pending = self._pending
        return RemoteMsrpError(
            reason,
            where=where,
            value=value,
            transaction_id=None if pending is None else pending.transaction_id,
            is_request=pending is None or pending.method is not None,
        )

    def _line(self, limit: int, where: str) -> bytes | None:
        idx = self._buf.find(CRLF)
        if idx > limit or (idx < 0 and len(self._buf) > limit):
            reason = f"start line and headers exceed {self.max_header_bytes} bytes"
            raise self._fail(reason, where, bytes(self._buf[:40]))
        if idx < 0:
            return None
        line = bytes(self._buf[:idx])
        del self._buf[: idx + 2]
        return line

    def _next(self) -> Frame | None:
        while True:
            if self._pending is None:
                line = self._line(self.max_header_bytes, "start line")
                if line is None:
                    return None
                self._pending = self._start(line)
                self._pending.header_bytes = len(line) + 2
                continue
            pending = self._pending
            if self._in_body:
                return self._body(pending)
            room = self.max_header_bytes - pending.header_bytes
            line = self._line(max(room, 0), "headers")
            if line is None:
                return None
            pending.header_bytes += len(line) + 2
            if pending.header_bytes > self.max_header_bytes:
                raise self._fail(
                    f"headers exceed {self.max_header_bytes} bytes", "headers", pending.header_bytes
                )
            end = b"-------" + pending.transaction_id.encode("ascii")
            if line.startswith(end) and line[len(end) :].decode("latin-1") in FLAGS:
                return self._finish(pending, None, b"", line[-1:].decode("ascii"))
            if line.startswith(b"-------"):
                raise self._fail("end line does not match the transaction id", "end line", line)
            if line == b"":
                self._in_body = True
                self._scan_from = 0
                continue
            self._header(pending, line)

    def _start(self, line: bytes) -> _Pending:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail("start line is not UTF-8", "start line", line) from None
        parts = text.split(" ", 3)
        if len(parts) < 3 or parts[0] != "MSRP":
            raise self._fail("expected 'MSRP <transaction-id> <method|status>'", "start line", text)
        tid = parts[1]
        if not _IDENT.match(tid):
            raise self._fail("transaction id is not an ident (4-32 characters)", "start line", tid)
        word = parts[2]
        if re.fullmatch(r"[0-9]{3}", word):
            comment = parts[3] if len(parts) == 4 else None
            if comment is not None and not _TEXT_OK.match(comment):
                raise self._fail("comment has control characters", "start line", text)
            return _Pending(tid, None, int(word), comment)
        if len(parts) != 3 or not _METHOD.match(word):
            raise self._fail("method must be upper-case letters", "start line", text)
        return _Pending(tid, word, None, None)

    def _header(self, pending: _Pending, line: bytes) -> None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            pending.bad = pending.bad or self._recoverable(pending, "not UTF-8", "headers", line)
            return
        name, sep, value = text.partition(":")
        if not sep or not value.startswith(" ") or not _HEADER_NAME.match(name):
            pending.bad = pending.bad or self._recoverable(
                pending, "expected 'Name: value'", "headers", text
            )
            return
        pending.lines.append((name, value[1:]))

    def _recoverable(
        self, pending: _Pending, reason: str, where: str, value: object, status: int = 400
    ) -> RemoteMsrpError:
        error = RemoteMsrpError(
            reason,
            where=where,
            value=value,
            transaction_id=pending.transaction_id,
            recoverable=True,
            status=status,
            is_request=pending.method is not None,
        )
        error.from_path = _from_path_of(pending)
        return error

    def _body(self, pending: _Pending) -> Frame | None:
        marker = CRLF + b"-------" + pending.transaction_id.encode("ascii")
        while True:
            idx = self._buf.find(marker, self._scan_from)
            if idx < 0:
                self._scan_from = max(0, len(self._buf) - len(marker) + 1)
                if self._scan_from > self.max_body_bytes:
                    raise self._fail(
                        f"chunk body exceeds {self.max_body_bytes} bytes", "body", self._scan_from
                    )
                return None
            after = idx + len(marker)
            if len(self._buf) < after + 3:
                self._scan_from = idx
                return None
            flag = bytes(self._buf[after : after + 1])
            if flag.decode("latin-1") in FLAGS:
                if self._buf[after + 1 : after + 3] != CRLF:
                    raise self._fail("end line must end right after its flag", "end line", flag)
                break
            # The body held "-------<tid>" followed by something else: keep looking.
            self._scan_from = idx + 1
        if idx > self.max_body_bytes:
            raise self._fail(f"chunk body exceeds {self.max_body_bytes} bytes", "body", idx)
        body = bytes(self._buf[:idx])
        del self._buf[: after + 3]
        self._in_body = False
        self._scan_from = 0
        return self._finish(pending, body, body, flag.decode("ascii"))

    def _finish(self, pending: _Pending, content: bytes | None, body: bytes, flag: str) -> Frame:
        self._pending = None
        if pending.bad is not None:
            pending.bad.from_path = _from_path_of(pending)
            raise pending.bad
        lines = pending.lines
        where_bad = self._recoverable
        if len(lines) < 2 or lines[0][0] != "To-Path" or lines[1][0] != "From-Path":
            raise where_bad(pending, "To-Path then From-Path must come first", "headers", lines[:2])
        to_path = tuple(lines[0][1].split())
        from_path = tuple(lines[1][1].split())
        others: list[tuple[str, str]] = []
        content_type: str | None = None
        for name, value in lines[2:]:
            lowered = name.lower()
            if lowered in _ORDERED:
                raise where_bad(pending, f"{name} appears twice", "headers", value)
            if lowered == "content-type":
                if content_type is not None:
                    raise where_bad(pending, "Content-Type appears twice", "headers", value)
                content_type = value
            else:
                others.append((name, value))
        if pending.method is None:
            assert pending.status is not None
            if content is not None:
                raise where_bad(pending, "a response has no body", "body", content[:40])
            if flag != "$":
                raise where_bad(pending, "a response ends with '$'", "end line", flag)
            try:
                return Response(
                    pending.transaction_id,
                    pending.status,
                    to_path,
                    from_path,
                    pending.comment,
                    tuple(others),
                )
            except LocalMsrpError as exc:
                raise where_bad(pending, exc.reason, exc.where, exc.value) from None
        if content is not None and content_type is None:
            raise where_bad(pending, "a body needs a Content-Type", "headers", None)
        try:
            return Request(
                pending.transaction_id,
                pending.method,
                to_path,
                from_path,
                tuple(others),
                content_type,
                body,
                "$" if flag == "$" else "+" if flag == "+" else "#",
            )
        except LocalMsrpError as exc:
            status = 400
            raise where_bad(pending, exc.reason, exc.where, exc.value, status) from None


def parse_frames(data: bytes) -> list[Frame]:
    """All frames in ``data`` (which must end on a frame boundary); raises on bad input."""
    parser = MsrpParser(max_body_bytes=max(len(data), 1))
    parser.feed(data)
    frames: list[Frame] = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    if parser.buffered:
        raise RemoteMsrpError("data after the last frame", where="stream", value=parser.buffered)
    return frames


# ---------------------------------------------------------------------------------------------
# Session helper


@attrs.frozen
class MessageReceived:
    """A whole message arrived (all its chunks)."""

    message_id: str
    content_type: str
    body: bytes
    from_path: tuple[str, ...]


@attrs.frozen
class MessageAborted:
    """The sender interrupted a message (``#``), or we refused it (too large)."""

    message_id: str
    received: int
    reason: str


@attrs.frozen
class MessageDelivered:
    """Every chunk of a message we sent was acknowledged with 200."""

    message_id: str


@attrs.frozen
class MessageFailed:
    """A chunk of a message we sent got an error response (or an error REPORT)."""

    message_id: str
    status: int
    comment: str | None


@attrs.frozen
class ReportReceived:
    """A ``REPORT`` for a message we sent."""

    message_id: str
    status: Status
    byte_range: ByteRange


@attrs.frozen
class PeerError:
    """The peer sent a malformed frame that could be skipped; it was answered if possible."""

    error: RemoteMsrpError


SessionEvent = (
    MessageReceived | MessageAborted | MessageDelivered | MessageFailed | ReportReceived | PeerError
)


def new_ident() -> str:
    """A fresh random transaction id / Message-ID (16 hex characters)."""
    return secrets.token_hex(8)


def session_id_of(uri: str) -> str:
    """The session-id part of an MSRP URI (``msrp://host:port/<session-id>;tcp``)."""
    return uri.rsplit("/", 1)[-1].split(";", 1)[0]


@attrs.define
class _Outgoing:
    message_id: str
    pending_tids: set[str]
    failure_report: FailureReport
    failed: bool = False


@attrs.define
class _Incoming:
    content_type: str
    data: bytearray
    intervals: list[tuple[int, int]]
    total: int | None = None


def _add_interval(intervals: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted([*intervals, (start, end)]):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


@attrs.define
class MsrpSession:
    """One side of an MSRP session on one connection.

    ``local_uri`` is our ``a=path`` URI (the From-Path of what we send), ``remote_path`` the
    peer's ``a=path`` (our To-Path); left empty, it is learnt from the From-Path of the first
    request received. Incoming requests whose To-Path does not end in our session-id are
    answered ``481``; set ``check_to_path=False`` to accept any.
    """

    local_uri: str
    remote_path: tuple[str, ...]
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_message_bytes: int = 16 << 20
    check_to_path: bool = True
    new_id: Callable[[], str] = new_ident
    parser: MsrpParser = attrs.Factory(MsrpParser)
    _out: bytearray = attrs.Factory(bytearray)
    _sent: dict[str, _Outgoing] = attrs.Factory(dict)
    _tid_to_message: dict[str, str] = attrs.Factory(dict)
    _incoming: dict[str, _Incoming] = attrs.Factory(dict)
    _refused: set[str] = attrs.Factory(set)

    def __attrs_post_init__(self) -> None:
        problem = _check_path("local URI", (self.local_uri,))
        if self.remote_path:
            problem = problem or _check_path("remote path", self.remote_path)
        if problem:
            raise LocalMsrpError(problem, where="session")
        if self.chunk_size < 1:
            raise LocalMsrpError("chunk size must be positive", value=self.chunk_size)

    # -- sending ------------------------------------------------------------------------------

    def send_message(
        self,
        body: bytes,
        content_type: str = "text/plain",
        *,
        message_id: str | None = None,
        success_report: bool = False,
        failure_report: FailureReport = "yes",
        chunk_size: int | None = None,
    ) -> str:
        """Queue ``body`` as one message, chunked; returns its Message-ID.

        An empty body becomes one SEND without content (RFC 4975 section 5.4: the active side
        sends one first to bind the connection)."""
        if not self.remote_path:
            raise LocalMsrpError("the peer's path is not known yet", where="session")
        mid = message_id or self.new_id()
        size = chunk_size or self.chunk_size
        if size < 1:
            raise LocalMsrpError("chunk size must be positive", value=size)
        total = len(body)
        outgoing = _Outgoing(mid, set(), failure_report)
        starts = range(0, total, size) if total else range(1)
        frames: list[Request] = []
        for offset in starts:
            chunk = body[offset : offset + size]
            last = offset + size >= total
            headers: list[tuple[str, str]] = [("Message-ID", mid)]
            if success_report:
                headers.append(("Success-Report", "yes"))
            if failure_report != "yes":
                headers.append(("Failure-Report", failure_report))
            end = offset + len(chunk)
            headers.append(("Byte-Range", f"{offset + 1}-{end}/{total}"))
            tid = self._fresh_tid(chunk)
            frames.append(
                Request(
                    tid,
                    "SEND",
                    self.remote_path,
                    (self.local_uri,),
                    tuple(headers),
                    content_type if chunk else None,
                    chunk,
                    "$" if last else "+",
                )
            )
        for frame in frames:
            if failure_report == "yes":
                outgoing.pending_tids.add(frame.transaction_id)
                self._tid_to_message[frame.transaction_id] = mid
            self._out += frame.to_bytes()
        self._sent[mid] = outgoing
        return mid

    def _fresh_tid(self, body: bytes) -> str:
        while True:
            tid = self.new_id()
            marker = CRLF + b"-------" + tid.encode("ascii")
            if marker not in body and tid not in self._tid_to_message:
                return tid

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer (requests, responses, reports); empties the queue."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def outstanding(self) -> int:
        """Chunks sent and not yet answered."""
        return len(self._tid_to_message)

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[SessionEvent]:
        """Feed bytes from the peer; returns what happened. A malformed frame that cannot be
        skipped raises :class:`RemoteMsrpError` (close the connection)."""
        self.parser.feed(data)
        events: list[SessionEvent] = []
        while True:
            try:
                frame = self.parser.next_frame()
            except RemoteMsrpError as exc:
                if not exc.recoverable:
                    raise
                events.append(PeerError(exc))
                if exc.is_request and exc.transaction_id is not None:
                    self._respond_raw(exc)
                continue
            if frame is None:
                return events
            if isinstance(frame, Response):
                events.extend(self._on_response(frame))
            else:
                events.extend(self._on_request(frame))

    def _respond_raw(self, exc: RemoteMsrpError) -> None:
        to_path = exc.from_path or self.remote_path
        if not to_path or exc.transaction_id is None:
            return  # nowhere to address it: the caller gets the PeerError event only
        ok = _TEXT_OK.match(exc.reason) and "\t" not in exc.reason
        text = exc.reason if ok else REASONS.get(exc.status)
        self._out += Response(
            exc.transaction_id, exc.status, to_path[:1], (self.local_uri,), text
        ).to_bytes()

    def _respond(self, req: Request, status: int, comment: str | None = None) -> None:
        self._out += Response(
            req.transaction_id,
            status,
            req.from_path[:1],
            (self.local_uri,),
            comment if comment is not None else REASONS.get(status),
        ).to_bytes()

    def _on_response(self, resp: Response) -> list[SessionEvent]:
        mid = self._tid_to_message.pop(resp.transaction_id, None)
        if mid is None:
            return []
        outgoing = self._sent.get(mid)
        if outgoing is None:
            return []
        outgoing.pending_tids.discard(resp.transaction_id)
        if resp.status != 200:
            if outgoing.failed:
                return []
            outgoing.failed = True
            return [MessageFailed(mid, resp.status, resp.comment)]
        if not outgoing.pending_tids and not outgoing.failed:
            return [MessageDelivered(mid)]
        return []

    def _on_request(self, req: Request) -> list[SessionEvent]:
        if self.check_to_path and session_id_of(req.to_path[-1]) != session_id_of(self.local_uri):
            if req.method != "REPORT":
                self._respond(req, 481)
            return []
        if not self.remote_path:
            self.remote_path = req.from_path
        if req.method == "SEND":
            return self._on_send(req)
        if req.method == "REPORT":
            status = req.status
            mid = req.message_id
            assert status is not None and mid is not None
            if mid not in self._sent:
                return []
            events: list[SessionEvent] = [ReportReceived(mid, status, req.byte_range)]
            if status.code != 200 and not self._sent[mid].failed:
                self._sent[mid].failed = True
                events.append(MessageFailed(mid, status.code, status.comment))
            return events
        self._respond(req, 501)
        return []

    def _on_send(self, req: Request) -> list[SessionEvent]:
        mid = req.message_id
        assert mid is not None
        rng = req.byte_range
        answer = req.failure_report == "yes"
        if mid in self._refused:
            if req.failure_report != "no":
                self._respond(req, 413)
            if req.flag != "+":
                self._refused.discard(mid)
            return []
        end = rng.start + len(req.body) - 1
        limit = self.max_message_bytes
        if end > limit or (rng.total is not None and rng.total > limit):
            self._incoming.pop(mid, None)
            if req.failure_report != "no":
                self._respond(req, 413)
            if req.flag == "+":
                self._refused.add(mid)
            return [MessageAborted(mid, len(req.body), f"message larger than {limit} bytes")]
        if answer:
            self._respond(req, 200)
        state = self._incoming.get(mid)
        if state is None:
            state = _Incoming(req.content_type or "text/plain", bytearray(), [])
            self._incoming[mid] = state
        if req.body:
            if len(state.data) < end:
                state.data.extend(bytes(end - len(state.data)))
            state.data[rng.start - 1 : end] = req.body
            state.intervals = _add_interval(state.intervals, rng.start, end)
        if req.flag == "#":
            del self._incoming[mid]
            got = sum(hi - lo + 1 for lo, hi in state.intervals)
            return [MessageAborted(mid, got, "interrupted by the sender")]
        if rng.total is not None:
            state.total = rng.total
        if req.flag == "$" and state.total is None:
            state.total = end
        if state.total is None:
            return []
        if state.total == 0:
            # An empty SEND only binds the connection (RFC 4975 section 5.4).
            del self._incoming[mid]
            return []
        complete = state.total == 0 or state.intervals == [(1, state.total)]
        if not complete:
            return []
        del self._incoming[mid]
        body = bytes(state.data[: state.total])
        if req.success_report:
            report = Request(
                self._fresh_tid(b""),
                "REPORT",
                req.from_path,
                (self.local_uri,),
                (
                    ("Message-ID", mid),
                    ("Byte-Range", f"1-{state.total}/{state.total}"),
                    ("Status", "000 200 OK"),
                ),
            )
            self._out += report.to_bytes()
        return [MessageReceived(mid, state.content_type, body, req.from_path)]
