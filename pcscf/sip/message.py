"""SIP messages (RFC 3261 section 7): model, parser, serialiser and TCP stream framing.

A message is a frozen value: start line, an ordered tuple of ``(name, value)`` header fields as
received (names keep their spelling; lookups use :func:`~pcscf.sip.headers.canonical` so compact
forms match), and the body bytes. Editing returns a new message. The serialiser always writes a
correct ``Content-Length``.

Framing: over UDP one datagram is one message (:func:`parse_datagram`); over TCP the
:class:`StreamParser` cuts messages out of a byte stream by ``Content-Length``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs

from pcscf.sip.errors import LocalSipError, RemoteSipError
from pcscf.sip.headers import Via, _parse_via, canonical, split_list
from pcscf.sip.uri import NameAddr, _parse_name_addr

SIP_VERSION = "SIP/2.0"
#: Size limits: the biggest message we take, header count and one header line.
MAX_MESSAGE = 65_535
MAX_HEADERS = 200
MAX_LINE = 8_192

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    493: "Undecipherable",
    500: "Server Internal Error",
    503: "Service Unavailable",
    513: "Message Too Large",
}

Header = tuple[str, str]
Headers = tuple[Header, ...]


def _index_of(headers: Iterable[Header]) -> dict[str, tuple[str, ...]]:
    """Canonical name -> its values in order, for header fields in this order."""
    index: dict[str, tuple[str, ...]] = {}
    for key, value in headers:
        name = canonical(key)
        if name in index:
            index[name] += (value,)  # a repeated name: rare, a new tuple is cheap
        else:
            index[name] = (value,)
    return index


_M = TypeVar("_M", bound="_Base")


def _is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


@functools.lru_cache(maxsize=4096)
def _parse_cseq(value: str) -> tuple[int, str]:
    """A CSeq value, remembered: it is read three or four times per message."""
    number, _, method = value.strip().partition(" ")
    method = method.strip()
    digits = number.isdigit() and number.isascii()
    if not digits or len(number) > 10 or int(number) >= 2**31 or not method:
        raise RemoteSipError(400, f"Bad CSeq {value!r}", where="CSeq")
    return int(number), method.upper()


@attrs.frozen
class _Base:
    headers: tuple[Header, ...]
    body: bytes
    #: canonical name -> values, built on the first lookup: a message is looked up a dozen
    #: times while it is handled, and each lookup scanned every header line.
    _index: dict[str, tuple[str, ...]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False, hash=False
    )
    #: canonical name -> its comma-list items (:meth:`values`), as asked for.
    _items: dict[str, tuple[str, ...]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False, hash=False
    )
    #: the serialised message, made on the first :meth:`serialise` (a forwarded request is
    #: serialised to check its size, to send it and to count it).
    _wire: bytes | None = attrs.field(default=None, init=False, eq=False, repr=False, hash=False)

    # -- lookups ----------------------------------------------------------------------------
    def _lookup(self) -> dict[str, tuple[str, ...]]:
        index = self._index
        if index is None:
            index = _index_of(self.headers)
            object.__setattr__(self, "_index", index)
        return index

    def get(self, name: str) -> str | None:
        """Value of the first header field with this name (compact forms match), or None."""
        index = self._index
        if index is None:
            index = self._lookup()
        values = index.get(canonical(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every field value with this name, in order (one per header line)."""
        index = self._index
        if index is None:
            index = self._lookup()
        return list(index.get(canonical(name), ()))

    def values(self, name: str) -> list[str]:
        """Every list item of a comma-list header over all its lines."""
        return list(self._values(name))

    def _values(self, name: str) -> tuple[str, ...]:
        """:meth:`values` as the remembered tuple (not to be edited, not copied)."""
        items = self._items
        if items is None:
            items = {}
            object.__setattr__(self, "_items", items)
        key = canonical(name)
        found = items.get(key)
        if found is None:
            out: list[str] = []
            for value in (self._index or self._lookup()).get(key, ()):
                out.extend(split_list(value, name))
            found = items[key] = tuple(out)
        return found

    # -- typed accessors --------------------------------------------------------------------
    # (each reads the index by canonical name itself: what ``get`` would do, a few calls
    # fewer; they are read a dozen times per message)
    @property
    def call_id(self) -> str:
        values = (self._index or self._lookup()).get("call-id")
        value = values[0].strip() if values else ""
        if not value:
            raise RemoteSipError(400, "Missing Call-ID header", where="Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        values = (self._index or self._lookup()).get("cseq")
        if not values:
            raise RemoteSipError(400, "Missing CSeq header", where="CSeq")
        return _parse_cseq(values[0])

    def _addr(self, name: str) -> NameAddr:
        value = self.get(name)
        if value is None:
            raise RemoteSipError(400, f"Missing {name} header", where=name)
        return NameAddr.parse(value, name)

    @property
    def from_(self) -> NameAddr:
        values = (self._index or self._lookup()).get("from")
        if not values:
            raise RemoteSipError(400, "Missing From header", where="From")
        return _parse_name_addr(values[0], "From")

    @property
    def to(self) -> NameAddr:
        values = (self._index or self._lookup()).get("to")
        if not values:
            raise RemoteSipError(400, "Missing To header", where="To")
        return _parse_name_addr(values[0], "To")

    @property
    def vias(self) -> list[Via]:
        return [_parse_via(item) for item in self._values("via")]

    @property
    def top_via(self) -> Via:
        items = self._items
        values = items.get("via") if items else None
        if values is None:
            values = self._values("via")
        if not values:
            raise RemoteSipError(400, "Missing Via header", where="Via")
        return _parse_via(values[0])

    def addresses(self, name: str) -> list[NameAddr]:
        """Route / Record-Route / Path / Contact values as name-addrs."""
        return [_parse_name_addr(item, name) for item in self._values(name)]

    @property
    def content_type(self) -> str:
        values = (self._index or self._lookup()).get("content-type")
        return values[0].split(";")[0].strip().lower() if values else ""

    @property
    def has_sdp(self) -> bool:
        # bytes.isspace(): every byte one that bytes.strip() removes (and at least one)
        body = self.body
        return bool(body) and not body.isspace() and self.content_type == "application/sdp"

    # -- editing ----------------------------------------------------------------------------
    def without(self, name: str) -> tuple[Header, ...]:
        wanted = canonical(name)
        return tuple(h for h in self.headers if canonical(h[0]) != wanted)

    def replacing(self, name: str, values: Iterable[str]) -> tuple[Header, ...]:
        """Headers with every ``name`` line replaced by one line per value, where the first was."""
        wanted = canonical(name)
        new = [(name, v) for v in values]
        out: list[Header] = []
        placed = False
        for header in self.headers:
            if canonical(header[0]) == wanted:
                if not placed:
                    out.extend(new)
                    placed = True
                continue
            out.append(header)
        if not placed:
            out.extend(new)
        return tuple(out)

    def prepending(self, name: str, value: str) -> tuple[Header, ...]:
        """Put ``value`` first among ``name`` fields (before the first one, or after start)."""
        wanted = canonical(name)
        out = list(self.headers)
        for index, header in enumerate(out):
            if canonical(header[0]) == wanted:
                out.insert(index, (name, value))
                return tuple(out)
        return ((name, value), *out)

    def dropping_first_value(self, name: str) -> tuple[Header, ...]:
        """Remove the first list item of ``name`` (a Via or Route), keeping the rest."""
        wanted = canonical(name)
        headers = self.headers
        for i, (key, value) in enumerate(headers):
            if canonical(key) == wanted:
                rest = split_list(value, name)[1:]
                if rest:
                    return (*headers[:i], (key, ", ".join(rest)), *headers[i + 1 :])
                return headers[:i] + headers[i + 1 :]
        return tuple(headers)

    # -- edits as messages: the edited message answers lookups from the old index, with the
    # edited name's values changed, instead of indexing every header line again.
    def _rebuilt(self: _M, headers: tuple[Header, ...]) -> _M:
        raise NotImplementedError

    def _edited(self: _M, headers: tuple[Header, ...], *changes: tuple[str, tuple[str, ...]]) -> _M:
        """A copy with ``headers``, which differ from this message's only in the lines of the
        canonical names of ``changes``, each name's values now the ones given, in order."""
        new = self._rebuilt(headers)
        index = self._index
        if index is not None:
            index = dict(index)
            items = self._items
            items = dict(items) if items else None
            for name, values in changes:
                if values:
                    index[name] = values
                else:
                    index.pop(name, None)
                if items is not None:
                    items.pop(name, None)
            object.__setattr__(new, "_index", index)
            if items is not None:
                object.__setattr__(new, "_items", items)
        return new

    def with_replaced(self: _M, name: str, values: Iterable[str]) -> _M:
        """``evolve(headers=replacing(name, values))``."""
        values = tuple(values)
        return self._edited(self.replacing(name, values), (canonical(name), values))

    def with_prepended(self: _M, name: str, value: str) -> _M:
        """``evolve(headers=prepending(name, value))``."""
        wanted = canonical(name)
        old = self.get_all(name)
        return self._edited(self.prepending(name, value), (wanted, (value, *old)))

    def with_first_value_dropped(self: _M, name: str) -> _M:
        """``evolve(headers=dropping_first_value(name))``."""
        wanted = canonical(name)
        old = self.get_all(name)
        if not old:
            return self._edited(self.headers, (wanted, ()))
        rest = split_list(old[0], name)[1:]
        values = (", ".join(rest), *old[1:]) if rest else tuple(old[1:])
        return self._edited(self.dropping_first_value(name), (wanted, values))

    def _shed(self, keep_wire: bool) -> None:
        """Drop what lookups and :meth:`serialise` remembered (``keep_wire``: keep the
        serialised bytes). For a message kept only in case it is asked for again: a transaction
        lingers 32 s after its final response (Timer J, K, D, L over UDP), and its messages'
        lookups and bytes are about two fifths of what it holds. A lookup after this rebuilds
        them."""
        object.__setattr__(self, "_index", None)
        object.__setattr__(self, "_items", None)
        if not keep_wire:
            object.__setattr__(self, "_wire", None)

    def _head(self, start: str) -> bytes:
        """The start line and the header lines (a Content-Length of the body's size last), with
        the blank line after them, encoded."""
        lines = [
            f"{key}: {value}"
            for key, value in self.headers
            if key not in _LENGTH_NAMES and canonical(key) != "content-length"
        ]
        head = "\r\n".join([start, *lines, f"Content-Length: {len(self.body)}", "", ""])
        breaks = len(lines) + 3
        if head.count("\r") != breaks or head.count("\n") != breaks:
            # a CR or LF besides the separators: in a header value it cannot be sent
            for key, value in self.headers:
                if canonical(key) != "content-length" and ("\r" in value or "\n" in value):
                    raise LocalSipError(f"header {key} holds a line break")
        return head.encode("utf-8")


@attrs.frozen
class Request(_Base):
    method: str
    uri: str

    def serialise(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._head(f"{self.method} {self.uri} {SIP_VERSION}") + self.body
            object.__setattr__(self, "_wire", wire)
        return wire

    def _rebuilt(self, headers: tuple[Header, ...]) -> Request:
        return _new_request(headers, self.body, self.method, self.uri)

    def evolve(self, **changes: Any) -> Request:
        # attrs.evolve looks the fields up on every call; a message is edited a dozen times
        # on its way through the proxy.
        if not changes.keys() <= _REQUEST_FIELDS:
            return attrs.evolve(self, **changes)
        new = _new_request(
            changes.get("headers", self.headers),
            changes.get("body", self.body),
            changes.get("method", self.method),
            changes.get("uri", self.uri),
        )
        if new.headers is self.headers:
            _share_lookups(self, new)
        return new


@attrs.frozen
class Response(_Base):
    status: int
    reason: str

    def serialise(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._head(f"{SIP_VERSION} {self.status} {self.reason}") + self.body
            object.__setattr__(self, "_wire", wire)
        return wire

    def _rebuilt(self, headers: tuple[Header, ...]) -> Response:
        return _new_response(headers, self.body, self.status, self.reason)

    def evolve(self, **changes: Any) -> Response:
        if not changes.keys() <= _RESPONSE_FIELDS:
            return attrs.evolve(self, **changes)
        new = _new_response(
            changes.get("headers", self.headers),
            changes.get("body", self.body),
            changes.get("status", self.status),
            changes.get("reason", self.reason),
        )
        if new.headers is self.headers:
            _share_lookups(self, new)
        return new


Message = Request | Response


def _slot_setters(cls: type[Any], names: tuple[str, ...]) -> list[Callable[[Any, Any], None]]:
    setters = []
    for name in names:
        owner = next(c for c in cls.__mro__ if name in c.__dict__)
        setters.append(owner.__dict__[name].__set__)
    return setters


def _maker(cls: type[_M], names: tuple[str, str]) -> Callable[[Headers, bytes, Any, Any], _M]:
    """``cls(headers, body, a, b)`` with the slots set directly instead of through attrs'
    ``__init__`` (a bound ``object.__setattr__`` and a name per field): the message classes
    have no validators or converters, and the lookup slots start empty as their defaults."""
    fields = tuple(field.name for field in attrs.fields(cls))
    assert fields == ("headers", "body", "_index", "_items", "_wire", *names), fields
    s_headers, s_body, s_index, s_items, s_wire, s_a, s_b = _slot_setters(cls, fields)
    new = object.__new__

    def make(headers: Headers, body: bytes, a: Any, b: Any) -> _M:
        self = new(cls)
        s_headers(self, headers)
        s_body(self, body)
        s_index(self, None)
        s_items(self, None)
        s_wire(self, None)
        s_a(self, a)
        s_b(self, b)
        return self

    return make


#: ``Request(headers, body, method, uri)`` and ``Response(headers, body, status, reason)``.
_new_request: Callable[[Headers, bytes, str, str], Request] = _maker(Request, ("method", "uri"))
_new_response: Callable[[Headers, bytes, int, str], Response] = _maker(
    Response, ("status", "reason")
)


def _share_lookups(old: _Base, new: _Base) -> None:
    """``new`` has ``old``'s header tuple: it answers lookups from the same index (built from
    those headers only, never edited in place)."""
    object.__setattr__(new, "_index", old._index)
    object.__setattr__(new, "_items", old._items)


_REQUEST_FIELDS = frozenset({"headers", "body", "method", "uri"})
_RESPONSE_FIELDS = frozenset({"headers", "body", "status", "reason"})


class MessageError(RemoteSipError):
    """A message that failed to parse; ``partial`` holds what could be read of a request."""

    def __init__(self, status: int, reason: str, partial: Request | None) -> None:
        super().__init__(status, reason, where="message")
        self.partial = partial


#: A header line in its plain form: a token name, optional blanks, a colon. A head whose every
#: line after the start line is like this (no folding, no bare CR or LF, none too long, not
#: too many) is split without the per-line checks of :func:`_parse_head_lines`, which would
#: all pass; any other head goes through them, which name the line at fault.
_NOT_PLAIN_LINE = re.compile(r"\r\n(?![A-Za-z0-9\-.!%*_+`'~]+[ \t]*:)")


def _parse_head(head: str) -> tuple[str, list[Header]]:
    if (
        len(head) <= MAX_LINE
        and head.count("\r") == head.count("\n") == head.count("\r\n")
        and _NOT_PLAIN_LINE.search(head) is None
    ):
        lines = head.split("\r\n")
        if len(lines) <= MAX_HEADERS + 1:
            split = [raw.partition(":") for raw in lines[1:]]
            return lines[0], [(name.rstrip(" \t"), value.strip()) for name, _, value in split]
    return _parse_head_lines(head)


def _parse_head_lines(head: str) -> tuple[str, list[Header]]:
    lines = head.split("\r\n")
    start = lines[0]
    if "\r" in start or "\n" in start:
        raise RemoteSipError(400, "Bare CR or LF in the start line", where="start line")
    headers: list[Header] = []
    for raw in lines[1:]:
        if len(raw) > MAX_LINE:
            raise RemoteSipError(400, "Header line too long", where="headers")
        if "\r" in raw or "\n" in raw:
            raise RemoteSipError(400, "Bare CR or LF in a header line", where="headers")
        if raw[:1] in (" ", "\t"):
            if not headers:
                raise RemoteSipError(400, "Continuation line before any header", where="headers")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {raw.strip()}".strip())
            if len(headers[-1][1]) > MAX_LINE:  # it is serialised as one line
                raise RemoteSipError(400, "Folded header too long", where="headers")
            continue
        name, colon, value = raw.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _is_token(name):
            raise RemoteSipError(400, f"Bad header line {raw[:40]!r}", where="headers")
        headers.append((name, value.strip()))
        if len(headers) > MAX_HEADERS:
            raise RemoteSipError(400, "Too many header fields", where="headers")
    return start, headers


def _start_line(start: str, headers: list[Header], body: bytes) -> Message:
    if start.startswith(SIP_VERSION + " "):
        _, code, reason = [*start.split(" ", 2), "", ""][:3]
        digits = code.isdigit() and code.isascii()
        if len(code) != 3 or not digits or not 100 <= int(code) <= 699:
            raise RemoteSipError(400, f"Bad status code {code!r}", where="status line")
        return _new_response(tuple(headers), body, int(code), reason)
    parts = start.split(" ")
    if len(parts) != 3:
        raise RemoteSipError(400, "Bad request line", where="request line")
    method, uri, version = parts
    if version != SIP_VERSION:
        raise RemoteSipError(505, f"Unsupported version {version[:20]!r}", where="request line")
    if not _is_token(method):
        raise RemoteSipError(400, f"Bad method {method[:20]!r}", where="request line")
    if ":" not in uri:
        raise RemoteSipError(400, f"Bad Request-URI {uri[:40]!r}", where="request line")
    return _new_request(tuple(headers), body, method, uri)


def _content_length(headers: list[Header]) -> int | None:
    values = [v for k, v in headers if k in _LENGTH_NAMES or canonical(k) == "content-length"]
    return _length_of(values)


def _length_of(values: list[str] | tuple[str, ...]) -> int | None:
    """The Content-Length these field values give (None without any), or 400."""
    if not values:
        return None
    digits = values[0].isdigit() and values[0].isascii()
    if len(set(values)) > 1 or not digits or len(values[0]) > 9:
        raise RemoteSipError(400, f"Bad Content-Length {values[0][:20]!r}", where="Content-Length")
    return int(values[0])


#: The usual spellings of Content-Length, known without :func:`canonical` (others still match).
_LENGTH_NAMES = frozenset({"Content-Length", "content-length", "l", "L"})


def _salvage(start: str, head: str) -> Request | None:
    """Best-effort read of a broken request so that it can still be answered with 400."""
    parts = start.split(" ")
    if len(parts) != 3 or not _is_token(parts[0]) or parts[0] == "ACK":
        return None
    headers: list[Header] = []
    for raw in head.split("\r\n")[1:]:
        name, colon, value = raw.partition(":")
        if colon and _is_token(name.strip()) and "\r" not in raw and "\n" not in raw:
            headers.append((name.strip(), value.strip()))
    request = Request(tuple(headers), b"", parts[0], parts[1])
    try:
        request.top_via  # noqa: B018 - checks the Via can be parsed
        request.call_id  # noqa: B018
        request.cseq  # noqa: B018
        request.from_  # noqa: B018
        request.to  # noqa: B018
    except RemoteSipError:
        return None
    return request


def _build(head_bytes: bytes, body: bytes, *, stream: bool) -> Message:
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        # What is not UTF-8 is still read (with U+FFFD) far enough to answer the request
        # with 400.
        head = head_bytes.decode("utf-8", errors="replace")
        start = head.split("\r\n", 1)[0]
        error = RemoteSipError(400, "Header is not UTF-8", where="headers")
        raise MessageError(error.status, error.reason, _salvage(start, head)) from error
    try:
        start_line, headers = _parse_head(head)
        index = _index_of(headers)
        length = _length_of(index.get("content-length", ()))
        if length is None and stream:
            raise RemoteSipError(400, "Missing Content-Length over a stream", where="framing")
        if length is not None:
            if length > len(body):
                raise RemoteSipError(400, "Body shorter than Content-Length", where="framing")
            body = body[:length]
        message = _start_line(start_line, headers, body)
        object.__setattr__(message, "_index", index)
        return message
    except MessageError:
        raise
    except RemoteSipError as exc:
        start = head.split("\r\n", 1)[0]
        raise MessageError(exc.status, exc.reason, _salvage(start, head)) from exc


def parse_datagram(data: bytes) -> Message:
    """One UDP datagram -> one message (RFC 3261 section 18.3)."""
    if len(data) > MAX_MESSAGE:
        raise MessageError(513, "Message Too Large", None)
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise MessageError(400, "No blank line after the headers", None)
    return _build(data[:end], data[end + 4 :], stream=False)


class StreamParser:
    """Incremental framing of SIP over TCP: feed bytes, take complete messages.

    Keep-alive CRLFs between messages are skipped. A framing error (no Content-Length,
    oversized message) is fatal for the stream: :meth:`feed` raises :class:`MessageError`
    and the connection should be closed; an error inside one well-framed message only costs
    that message (also raised, but the parser stays usable).
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message
        self.broken = False

    def feed(self, data: bytes) -> list[Message | MessageError]:
        """Add bytes; return the messages (or per-message errors) now complete, in order."""
        if self.broken:
            return []
        self._buffer += data
        out: list[Message | MessageError] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    self.broken = True
                    out.append(MessageError(513, "Message Too Large", None))
                return out
            head = bytes(self._buffer[:end])
            try:
                # Framing needs only Content-Length: a header that is not UTF-8 costs that
                # message (a 400 from _build), not the connection.
                text = head.decode("utf-8", errors="replace")
                _, headers = _parse_head(text)
                length = _content_length(headers)
            except RemoteSipError as exc:
                self.broken = True
                out.append(MessageError(exc.status, exc.reason, None))
                return out
            if length is None:
                self.broken = True
                out.append(MessageError(400, "Missing Content-Length over a stream", None))
                return out
            total = end + 4 + length
            if total > self._max:
                self.broken = True
                out.append(MessageError(513, "Message Too Large", None))
                return out
            if len(self._buffer) < total:
                return out
            body = bytes(self._buffer[end + 4 : total])
            del self._buffer[:total]
            try:
                out.append(_build(head, body, stream=True))
            except MessageError as exc:
                out.append(exc)

    @property
    def pending(self) -> int:
        return len(self._buffer)


def validate_request(request: Request) -> None:
    """The checks of RFC 3261 section 16.3 step 1 a proxy needs; RemoteSipError otherwise."""
    top = request.top_via
    request.call_id  # noqa: B018
    request.from_  # noqa: B018
    request.to  # noqa: B018
    _, method = request.cseq
    if method != request.method and not (request.method == "ACK" and method == "ACK"):
        raise RemoteSipError(400, f"CSeq method {method} does not match {request.method}")
    if not top.branch:
        raise RemoteSipError(400, "Via without branch parameter", where="Via")
    forwards = request.get("max-forwards")
    hops = None if forwards is None else forwards.strip()
    if hops is not None and (not (hops.isdigit() and hops.isascii()) or len(hops) > 3):
        raise RemoteSipError(400, f"Bad Max-Forwards {forwards!r}", where="Max-Forwards")
    for name in ("route", "record-route", "contact"):
        request.addresses(name)


def validate_response(response: Response) -> None:
    response.top_via  # noqa: B018
    response.call_id  # noqa: B018
    response.cseq  # noqa: B018
    response.to  # noqa: B018


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[Header] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` (RFC 3261 section 8.2.6): Via, From, To, Call-ID, CSeq copied."""
    headers: list[Header] = []
    for key, value in request.headers:
        name = canonical(key)
        if name in ("via", "from", "call-id", "cseq"):
            headers.append((key, value))
        elif name == "to":
            if to_tag and NameAddr.parse(value, "To").tag is None:
                value = str(NameAddr.parse(value, "To").with_param("tag", to_tag))
            headers.append((key, value))
        elif name == "record-route" and 100 < status < 300:
            headers.append((key, value))
    headers.extend(extra)
    return Response(tuple(headers), body, status, reason or REASONS.get(status, "Unknown"))


def make_request(
    method: str,
    uri: str,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    max_forwards: int = 70,
    extra: Iterable[Header] = (),
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> Request:
    """A new request as a user agent sends it (RFC 3261 section 8.1.1): the mandatory header
    fields in the usual order, then ``extra``, then Content-Type if there is a body."""
    if not _is_token(method):
        raise LocalSipError(f"bad method {method!r}")
    headers: list[Header] = [
        ("Via", via),
        ("Max-Forwards", str(max_forwards)),
        ("From", from_),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        *extra,
    ]
    if body:
        headers.append(("Content-Type", content_type))
    return Request(tuple(headers), body, method, uri)
