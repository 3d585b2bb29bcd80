"""H.248.1 text encoding (MEGACO, H.248.1 Annex B / RFC 3525): the subset the Iq profile uses.

Pure: ``decode(bytes) -> Message`` and ``encode(Message) -> bytes``. Input is tolerant (any
white space and line breaks, comments, long or short tokens in any case, ``O-``/``W-`` command
prefixes); output is canonical (long tokens, one item per line, two-space indent).

Supported: the message header ``MEGACO/<version> <mId>``; ``Transaction``, ``Reply`` (with
``ImmAckRequired``), ``Pending``, message and transaction level ``Error``; ``Context = <id|$|-|*>``;
commands ``Add``, ``Modify``, ``Subtract``, ``Notify``, ``ServiceChange``, ``AuditValue``;
descriptors ``Media`` (``Stream``, ``LocalControl`` with ``Mode`` and properties, ``Local``,
``Remote``), ``Events``, ``Signals``, ``ObservedEvents``, ``Statistics``, ``Audit``,
``ServiceChange`` parameters (``Services``) and ``Error``.

``Local``/``Remote`` hold SDP: the codec keeps it as a tuple of lines (white space around lines
dropped, ``}`` escaped as ``\\}`` on the wire); building and reading the SDP is the profile's job.
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeAlias, TypeVar

import attrs

from iq.errors import CodecError, LocalIqError

CHOOSE: Final = "$"
NULL_CONTEXT: Final = "-"
ALL: Final = "*"
ContextId: TypeAlias = int | Literal["$", "-", "*"]

UINT32_MAX = 2**32 - 1
UINT16_MAX = 2**16 - 1
_D = TypeVar("_D")


# --------------------------------------------------------------------------- model


@attrs.frozen
class Parameter:
    """``name = value`` (a property, a statistic, an event or signal parameter)."""

    name: str
    value: str


@attrs.frozen
class LocalControl:
    mode: str | None = None
    properties: tuple[Parameter, ...] = ()


@attrs.frozen
class Stream:
    """One ``Stream = id { ... }`` of a Media descriptor."""

    stream_id: int
    local_control: LocalControl | None = None
    local: tuple[str, ...] | None = None
    remote: tuple[str, ...] | None = None


@attrs.frozen
class Media:
    streams: tuple[Stream, ...] = ()


@attrs.frozen
class Event:
    """A requested event (in ``Events``) or a signal (in ``Signals``), with parameters."""

    name: str
    parameters: tuple[Parameter, ...] = ()


@attrs.frozen
class Events:
    request_id: int
    events: tuple[Event, ...] = ()


@attrs.frozen
class Signals:
    signals: tuple[Event, ...] = ()


@attrs.frozen
class ObservedEvent:
    name: str
    timestamp: str | None = None
    parameters: tuple[Parameter, ...] = ()


@attrs.frozen
class ObservedEvents:
    request_id: int
    events: tuple[ObservedEvent, ...] = ()


@attrs.frozen
class Statistics:
    values: tuple[Parameter, ...] = ()


@attrs.frozen
class Audit:
    """``Audit { Statistics, Media, ... }``: the descriptors asked for."""

    items: tuple[str, ...] = ()


@attrs.frozen
class ServiceChangeParameters:
    """``Services { Method = ..., Reason = "...", ... }``."""

    method: str | None = None
    reason: str | None = None
    delay: int | None = None
    address: str | None = None
    profile: str | None = None
    version: int | None = None
    mgc_id: str | None = None
    timestamp: str | None = None


@attrs.frozen
class ErrorDescriptor:
    code: int
    text: str = ""


Descriptor: TypeAlias = (
    Media
    | Events
    | Signals
    | ObservedEvents
    | Statistics
    | Audit
    | ServiceChangeParameters
    | ErrorDescriptor
)

CommandName = Literal["Add", "Modify", "Subtract", "Notify", "ServiceChange", "AuditValue"]


@attrs.frozen
class Command:
    """A command request or reply: ``Add = acc/$ { descriptors }``."""

    name: CommandName
    termination_id: str
    descriptors: tuple[Descriptor, ...] = ()

    def find(self, kind: type[_D]) -> _D | None:
        """The first descriptor of the given type, if any."""
        for descriptor in self.descriptors:
            if isinstance(descriptor, kind):
                return descriptor
        return None


@attrs.frozen
class Action:
    """``Context = id { commands }`` in a request or a reply (a reply may carry an error)."""

    context_id: ContextId
    commands: tuple[Command, ...] = ()
    error: ErrorDescriptor | None = None


@attrs.frozen
class TransactionRequest:
    transaction_id: int
    actions: tuple[Action, ...]


@attrs.frozen
class TransactionReply:
    transaction_id: int
    actions: tuple[Action, ...] = ()
    error: ErrorDescriptor | None = None
    immediate_ack_required: bool = False


@attrs.frozen
class TransactionPending:
    transaction_id: int


Transaction: TypeAlias = TransactionRequest | TransactionReply | TransactionPending


@attrs.frozen
class Message:
    """One H.248 message: header and either transactions or a message-level error."""

    mid: str
    transactions: tuple[Transaction, ...] = ()
    error: ErrorDescriptor | None = None
    version: int = 3


# --------------------------------------------------------------------------- tokens

# Long and short forms (H.248.1 Annex B.2); canonical output uses the long form.
_TOKENS: dict[str, tuple[str, ...]] = {
    "Transaction": ("transaction", "t"),
    "Reply": ("reply", "p"),
    "Pending": ("pending", "pn"),
    "ImmAckRequired": ("immackrequired", "ia"),
    "Context": ("context", "c"),
    "Error": ("error", "er"),
    "Add": ("add", "a"),
    "Modify": ("modify", "mf"),
    "Subtract": ("subtract", "s"),
    "Notify": ("notify", "n"),
    "ServiceChange": ("servicechange", "sc"),
    "AuditValue": ("auditvalue", "av"),
    "Media": ("media", "m"),
    "Stream": ("stream", "st"),
    "LocalControl": ("localcontrol", "o"),
    "Local": ("local", "l"),
    "Remote": ("remote", "r"),
    "Mode": ("mode", "mo"),
    "Events": ("events", "e"),
    "Signals": ("signals", "sg"),
    "ObservedEvents": ("observedevents", "oe"),
    "Statistics": ("statistics", "sa"),
    "Audit": ("audit", "at"),
    "Services": ("services", "sv"),
    "Method": ("method", "mt"),
    "Reason": ("reason", "re"),
    "Delay": ("delay", "dl"),
    "ServiceChangeAddress": ("servicechangeaddress", "ad"),
    "Profile": ("profile", "pf"),
    "Version": ("version", "v"),
    "MgcIdToTry": ("mgcidtotry", "mg"),
    "SendReceive": ("sendreceive", "sr"),
    "SendOnly": ("sendonly", "so"),
    "ReceiveOnly": ("receiveonly", "rc"),
    "Inactive": ("inactive", "in"),
    "Loopback": ("loopback", "lb"),
    "Restart": ("restart", "rs"),
    "Forced": ("forced", "fo"),
    "Graceful": ("graceful", "gr"),
    "Disconnected": ("disconnected", "dc"),
    "Handoff": ("handoff", "ho"),
    "Failover": ("failover", "fl"),
}
_LOOKUP: dict[str, str] = {form: long for long, forms in _TOKENS.items() for form in forms}

COMMANDS: tuple[CommandName, ...] = (
    "Add",
    "Modify",
    "Subtract",
    "Notify",
    "ServiceChange",
    "AuditValue",
)
MODES = ("SendReceive", "SendOnly", "ReceiveOnly", "Inactive", "Loopback")
METHODS = ("Restart", "Forced", "Graceful", "Disconnected", "Handoff", "Failover")

_SAFE = re.compile(r"^[A-Za-z0-9+\-&!_/'?@^`~*$\\()%|.]+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_PKGD_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_]{0,63}|\*)/(?:[A-Za-z][A-Za-z0-9_]{0,63}|\*)$")
_EVENT_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}(?:/[A-Za-z][A-Za-z0-9_]{0,63})?$")
_PROFILE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}/\d{1,2}$")
# pathNAME of the ABNF: no dots or dashes except in an "@domain" suffix.
_TERMINATION = re.compile(r"^[A-Za-z0-9_$*][A-Za-z0-9_/$*]{0,63}(?:@[A-Za-z0-9.\-]{1,64})?$")
_TIMESTAMP = re.compile(r"^\d{8}T\d{8}$")
_MID = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\](?::\d{1,5})?|<[A-Za-z0-9][A-Za-z0-9.\-]{0,63}>(?::\d{1,5})?"
    r"|[A-Za-z0-9_][A-Za-z0-9_/$*@.\-]{0,63})$"
)
_QUOTED_OK = re.compile(r'^[^"\x00-\x08\x0a-\x1f\x7f]*$')


def canonical_token(text: str) -> str | None:
    """The long form of a keyword given in any case, long or short; ``None`` if not one."""
    return _LOOKUP.get(text.lower())


# --------------------------------------------------------------------------- encoder


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise LocalIqError(f"cannot encode {what} {value!r}")
    return value


def _value(value: str) -> str:
    if _SAFE.fullmatch(value):
        return value
    if not _QUOTED_OK.fullmatch(value):
        raise LocalIqError(f"cannot encode value {value!r}: no quotes or control characters")
    return f'"{value}"'


def _context(cid: ContextId) -> str:
    if isinstance(cid, int):
        if not 0 <= cid <= UINT32_MAX:
            raise LocalIqError(f"context id {cid} out of range")
        return str(cid)
    if cid not in (CHOOSE, NULL_CONTEXT, ALL):
        raise LocalIqError(f"bad context id {cid!r}")
    return cid


def _uint(value: int, what: str, maximum: int = UINT32_MAX) -> str:
    if not 0 <= value <= maximum:
        raise LocalIqError(f"{what} {value} out of range")
    return str(value)


def _params(params: tuple[Parameter, ...], names: re.Pattern[str] = _PKGD_NAME) -> list[str]:
    return [f"{_check(names, p.name, 'name')} = {_value(p.value)}" for p in params]


def _block(head: str, items: list[str], indent: str) -> str:
    """``head { item, item }`` one item per line; ``head`` alone if there are no items."""
    if not items:
        return head
    inner = indent + "  "
    body = ",\n".join(inner + item.replace("\n", "\n" + inner) for item in items)
    return f"{head} {{\n{body}\n{indent}}}"


def _sdp(head: str, lines: tuple[str, ...]) -> str:
    for line in lines:
        if not line or line != line.strip() or any(ch in line for ch in "\r\n\x00"):
            raise LocalIqError(f"cannot encode SDP line {line!r} (empty, padded or with NUL)")
    # Every SDP line and the closing brace start at column 0 so that no indentation becomes
    # part of the SDP: they are marked with NUL here and the marker and the indentation before
    # it are removed by encode().
    escaped = "".join("\n\x00" + line.replace("}", "\\}") for line in lines)
    return f"{head} {{{escaped}\n\x00}}"


def _event(ev: Event) -> str:
    name = _check(_PKGD_NAME, ev.name, "event name")
    if not ev.parameters:
        return name
    return f"{name} {{ {', '.join(_params(ev.parameters, _EVENT_PARAM))} }}"


def _observed(ev: ObservedEvent) -> str:
    name = _check(_PKGD_NAME, ev.name, "event name")
    if ev.timestamp is not None:
        name = f"{_check(_TIMESTAMP, ev.timestamp, 'timestamp')}:{name}"
    if not ev.parameters:
        return name
    return f"{name} {{ {', '.join(_params(ev.parameters, _EVENT_PARAM))} }}"


def _quoted(text: str) -> str:
    if not _QUOTED_OK.fullmatch(text):
        raise LocalIqError(f"cannot encode text {text!r}: no quotes or control characters")
    return f'"{text}"'


def _error(err: ErrorDescriptor) -> str:
    code = _uint(err.code, "error code", 9999)
    return f"Error = {code} {{ {_quoted(err.text)} }}"


def _descriptor(d: Descriptor) -> str:
    if isinstance(d, Media):
        if not d.streams:
            raise LocalIqError("a Media descriptor needs at least one stream")
        return _block("Media", [_stream(s) for s in d.streams], "")
    if isinstance(d, Events):
        items = [_event(e) for e in d.events]
        return _block(f"Events = {_uint(d.request_id, 'request id')}", items, "")
    if isinstance(d, Signals):
        return _block("Signals", [_event(e) for e in d.signals], "") + (
            " { }" if not d.signals else ""
        )
    if isinstance(d, ObservedEvents):
        if not d.events:
            raise LocalIqError("an ObservedEvents descriptor needs at least one event")
        items = [_observed(e) for e in d.events]
        return _block(f"ObservedEvents = {_uint(d.request_id, 'request id')}", items, "")
    if isinstance(d, Statistics):
        return _block("Statistics", _params(d.values), "") + (" { }" if not d.values else "")
    if isinstance(d, Audit):
        items = []
        for item in d.items:
            kw = canonical_token(item)
            if kw is None:
                raise LocalIqError(f"cannot encode audit item {item!r}")
            items.append(kw)
        return "Audit { " + ", ".join(items) + " }" if items else "Audit { }"
    if isinstance(d, ServiceChangeParameters):
        services = _services(d)
        if not services:
            raise LocalIqError("a Services descriptor needs at least one parameter")
        return _block("Services", services, "")
    return _error(d)


def _services(p: ServiceChangeParameters) -> list[str]:
    items: list[str] = []
    if p.method is not None:
        method = canonical_token(p.method)
        if method not in METHODS:
            raise LocalIqError(f"cannot encode ServiceChange method {p.method!r}")
        items.append(f"Method = {method}")
    if p.reason is not None:
        items.append(f"Reason = {_quoted(p.reason)}")
    if p.delay is not None:
        items.append(f"Delay = {_uint(p.delay, 'delay')}")
    if p.address is not None:
        items.append(f"ServiceChangeAddress = {_check(_MID, p.address, 'address')}")
    if p.profile is not None:
        items.append(f"Profile = {_check(_PROFILE, p.profile, 'profile')}")
    if p.version is not None:
        items.append(f"Version = {_uint(p.version, 'version', 99)}")
    if p.mgc_id is not None:
        items.append(f"MgcIdToTry = {_check(_MID, p.mgc_id, 'mId')}")
    if p.timestamp is not None:
        items.append(_check(_TIMESTAMP, p.timestamp, "timestamp"))
    return items


def _stream(s: Stream) -> str:
    items: list[str] = []
    if s.local_control is not None:
        lc: list[str] = []
        if s.local_control.mode is not None:
            mode = canonical_token(s.local_control.mode)
            if mode not in MODES:
                raise LocalIqError(f"cannot encode mode {s.local_control.mode!r}")
            lc.append(f"Mode = {mode}")
        lc.extend(_params(s.local_control.properties))
        items.append("LocalControl { " + ", ".join(lc) + " }" if lc else "LocalControl { }")
    if s.local is not None:
        items.append(_sdp("Local", s.local))
    if s.remote is not None:
        items.append(_sdp("Remote", s.remote))
    if not items:
        raise LocalIqError(f"stream {s.stream_id} needs LocalControl, Local or Remote")
    return _block(f"Stream = {_uint(s.stream_id, 'stream id', UINT16_MAX)}", items, "")


def _command(c: Command) -> str:
    if c.name not in COMMANDS:
        raise LocalIqError(f"cannot encode command {c.name!r}")
    tid = _check(_TERMINATION, c.termination_id, "termination id")
    return _block(f"{c.name} = {tid}", [_descriptor(d) for d in c.descriptors], "")


def _action(a: Action) -> str:
    items = [_command(c) for c in a.commands]
    if a.error is not None:
        items.append(_error(a.error))
    head = f"Context = {_context(a.context_id)}"
    return _block(head, items, "") if items else head + " { }"


def _transaction(t: Transaction) -> str:
    if isinstance(t, TransactionRequest):
        if not t.actions:
            raise LocalIqError("a transaction request needs at least one action")
        tid = _uint(t.transaction_id, "transaction id")
        return _block(f"Transaction = {tid}", [_action(a) for a in t.actions], "")
    if isinstance(t, TransactionReply):
        head = f"Reply = {_uint(t.transaction_id, 'transaction id')}"
        items = ["ImmAckRequired"] if t.immediate_ack_required else []
        if t.error is not None:
            items.append(_error(t.error))
        else:
            items.extend(_action(a) for a in t.actions)
        return _block(head, items, "") if items else head + " { }"
    return f"Pending = {_uint(t.transaction_id, 'transaction id')} {{ }}"


_SDP_MARK = re.compile(r"\n[ ]*\x00")


def encode(message: Message) -> bytes:
    """Canonical text of ``message`` (UTF-8). Raises :class:`LocalIqError` on bad values."""
    if not 1 <= message.version <= 99:
        raise LocalIqError(f"bad version {message.version}")
    head = f"MEGACO/{message.version} {_check(_MID, message.mid, 'mId')}"
    if message.error is not None:
        if message.transactions:
            raise LocalIqError("a message carries either an error or transactions")
        body = _error(message.error)
    elif message.transactions:
        body = "\n".join(_transaction(t) for t in message.transactions)
    else:
        raise LocalIqError("a message needs a transaction or an error")
    text = f"{head}\n{body}\n"
    # SDP closing braces were marked with NUL so that indentation does not reach them.
    if "\x00" in text:
        text = _SDP_MARK.sub("\n", text)
    return text.encode("utf-8")


# --------------------------------------------------------------------------- decoder

_WORD_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-&!_/'?@^`~*$\\()%|.#<>[]:"
)
MAX_DEPTH = 32
_WS_START = frozenset(" \t\r\n;")
_WS_RE = re.compile(r"(?:[ \t\r\n]+|;[^\n]*(?:\n|$))*")
_WORD_CLASS = r"A-Za-z0-9+\-&!_/'?@^`~*$\\()%|.#<>\[\]"
_WORD_RE = re.compile(f"[{_WORD_CLASS}:]+")
_WORD_NO_COLON_RE = re.compile(f"[{_WORD_CLASS}]+")
# up to the first "}" that is not escaped as "\}"; a "\" before anything else is kept as is
# (possessive: no backtracking over long or unterminated input)
_OCTETS_RE = re.compile(r"((?:[^\\}]+|\\\}|\\)*+)\}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.pos = 0
        self.transaction_id: int | None = None

    # -- errors and low level

    def fail(self, reason: str, code: int = 400) -> CodecError:
        snippet = self.text[self.pos : self.pos + 20]
        return CodecError(
            reason,
            code=code,
            where=f"offset {self.pos} ({snippet!r})",
            transaction_id=self.transaction_id,
        )

    # The low-level readers below skip white space themselves, each with the same two
    # steps (a look at the next character, the regex only if it opens white space): they are
    # called some forty times per message and a call to ws() or peek() each time was a
    # third of the decoding time.

    def ws(self) -> None:
        # white space, and comments from ";" to the end of the line
        pos = self.pos
        if pos < self.end and self.text[pos] in _WS_START:
            self.pos = _WS_RE.match(self.text, pos).end()  # type: ignore[union-attr]

    def peek(self) -> str:
        text, pos = self.text, self.pos
        if pos < self.end and text[pos] in _WS_START:
            pos = self.pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        return text[pos] if pos < self.end else ""

    def expect(self, ch: str) -> None:
        text, pos = self.text, self.pos
        if pos < self.end and text[pos] in _WS_START:
            pos = self.pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= self.end or text[pos] != ch:
            raise self.fail(f"expected {ch!r}")
        self.pos = pos + 1

    def accept(self, ch: str) -> bool:
        text, pos = self.text, self.pos
        if pos < self.end and text[pos] in _WS_START:
            pos = self.pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos < self.end and text[pos] == ch:
            self.pos = pos + 1
            return True
        return False

    def word(self, *, stop_colon: bool = False) -> str:
        text, pos = self.text, self.pos
        if pos < self.end and text[pos] in _WS_START:
            pos = self.pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        match = (_WORD_NO_COLON_RE if stop_colon else _WORD_RE).match(text, pos)
        if match is None:
            raise self.fail("expected a name or value")
        self.pos = match.end()
        return match.group()

    def keyword(self) -> tuple[str, str]:
        """(canonical long kw or "", the raw word)."""
        text, pos = self.text, self.pos
        if pos < self.end and text[pos] in _WS_START:
            pos = self.pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        match = _WORD_RE.match(text, pos)
        if match is None:
            raise self.fail("expected a name or value")
        self.pos = match.end()
        raw = match.group()
        return _LOOKUP.get(raw.lower()) or "", raw

    def uint(self, what: str, maximum: int = UINT32_MAX) -> int:
        raw = self.word()
        if not raw.isdigit() or not raw.isascii() or len(raw) > 10 or int(raw) > maximum:
            self.pos -= len(raw)
            raise self.fail(f"bad {what} {raw!r}")
        return int(raw)

    def quoted(self) -> str:
        if self.peek() != '"':
            raise self.fail("expected a quoted string")
        end = self.text.find('"', self.pos + 1)
        if end < 0:
            raise self.fail("unterminated quoted string")
        value = self.text[self.pos + 1 : end]
        if not _QUOTED_OK.fullmatch(value):
            raise self.fail("control character in quoted string")
        self.pos = end + 1
        return value

    def value(self) -> str:
        return self.quoted() if self.peek() == '"' else self.word()

    def equal(self) -> None:
        self.expect("=")

    def items(self, parse_item: object) -> None:
        """``{ item, item, ... }`` calling ``parse_item()`` for each item (may be empty)."""
        assert callable(parse_item)
        self.expect("{")
        if self.accept("}"):
            return
        while True:
            parse_item()
            if self.accept(","):
                continue
            self.expect("}")
            return

    def skip_block(self, depth: int = 0) -> None:
        """Skip a balanced ``{ ... }`` (used for unknown descriptors we reject anyway)."""
        if depth > MAX_DEPTH:
            raise self.fail("nesting too deep")
        self.expect("{")
        while True:
            ch = self.peek()
            if ch == "":
                raise self.fail("unterminated block")
            if ch == "}":
                self.pos += 1
                return
            if ch == "{":
                self.skip_block(depth + 1)
            elif ch == '"':
                self.quoted()
            else:
                self.pos += 1

    def octets(self) -> tuple[str, ...]:
        """``{ octet string }`` with ``\\}`` escapes, split into non-empty stripped lines."""
        self.expect("{")
        match = _OCTETS_RE.match(self.text, self.pos)
        if match is None:
            raise self.fail("unterminated Local/Remote descriptor")
        self.pos = match.end()
        content = match.group(1).replace("\\}", "}")
        lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return tuple(s for s in (line.strip() for line in lines) if s)

    # -- grammar

    def message(self) -> Message:
        self.ws()
        if self.text[self.pos : self.pos + 1] == "!":  # pretty-printed authentication header
            raise self.fail("authentication header not supported", 401)
        start = self.word(stop_colon=True)
        if "/" not in start or start.split("/", 1)[0].upper() not in ("MEGACO", "!"):
            self.pos -= len(start)
            raise self.fail("expected MEGACO/<version>")
        version_text = start.split("/", 1)[1]
        if not version_text.isdigit() or not version_text.isascii() or len(version_text) > 2:
            raise self.fail(f"bad version {version_text!r}")
        version = int(version_text)
        if not 1 <= version <= 3:
            raise self.fail(f"version {version} not supported", 406)
        mid = self.mid()
        transactions: list[Transaction] = []
        error: ErrorDescriptor | None = None
        while self.peek():
            kw, raw = self.keyword()
            if kw == "Error" and not transactions and error is None:
                error = self.error_body()
            elif kw in ("Transaction", "Reply", "Pending") and error is None:
                transactions.append(self.transaction(kw))
            else:
                self.pos -= len(raw)
                raise self.fail(f"unexpected {raw!r} in message body")
        if not transactions and error is None:
            raise self.fail("message has no transaction")
        return Message(mid=mid, transactions=tuple(transactions), error=error, version=version)

    def mid(self) -> str:
        self.ws()
        text = self.text
        start = self.pos
        if self.pos < len(text) and text[self.pos] in "[<":
            close = "]" if text[self.pos] == "[" else ">"
            end = text.find(close, self.pos)
            if end < 0:
                raise self.fail("unterminated mId")
            self.pos = end + 1
            if self.pos < len(text) and text[self.pos] == ":":
                self.pos += 1
                while self.pos < len(text) and text[self.pos].isdigit():
                    self.pos += 1
        else:
            while self.pos < len(text) and text[self.pos] in _WORD_CHARS:
                self.pos += 1
        mid = text[start : self.pos]
        if not _MID.match(mid):
            self.pos = start
            raise self.fail(f"bad mId {mid!r}")
        return mid

    def error_body(self) -> ErrorDescriptor:
        self.equal()
        code = self.uint("error code", 9999)
        self.expect("{")
        text = ""
        if self.peek() == '"':
            text = self.quoted()
        self.expect("}")
        return ErrorDescriptor(code, text)

    def no_item(self) -> None:
        raise self.fail("no items allowed here")

    def transaction(self, kw: str) -> Transaction:
        self.equal()
        tid = self.uint("transaction id")
        self.transaction_id = tid
        if kw == "Pending":
            self.items(self.no_item)
            return TransactionPending(tid)
        if kw == "Transaction":
            actions: list[Action] = []
            self.items(lambda: actions.append(self.action(reply=False)))
            if not actions:
                raise self.fail("transaction without action", 403)
            return TransactionRequest(tid, tuple(actions))
        reply_actions: list[Action] = []
        errors: list[ErrorDescriptor] = []
        flags: list[bool] = []

        def item() -> None:
            kw, raw = self.keyword()
            if kw == "ImmAckRequired" and not reply_actions and not errors:
                flags.append(True)
            elif kw == "Error" and not reply_actions and not errors:
                errors.append(self.error_body())
            elif kw == "Context" and not errors:
                self.pos -= len(raw)
                reply_actions.append(self.action(reply=True))
            else:
                self.pos -= len(raw)
                raise self.fail(f"unexpected {raw!r} in Reply")

        self.items(item)
        return TransactionReply(
            tid,
            tuple(reply_actions),
            errors[0] if errors else None,
            immediate_ack_required=bool(flags),
        )

    def context_id(self) -> ContextId:
        raw = self.word()
        if raw in (CHOOSE, NULL_CONTEXT, ALL):
            return raw  # type: ignore[return-value]
        if raw.isdigit() and raw.isascii() and len(raw) <= 10 and int(raw) <= UINT32_MAX:
            return int(raw)
        self.pos -= len(raw)
        raise self.fail(f"bad context id {raw!r}", 422)

    def action(self, *, reply: bool) -> Action:
        kw, raw = self.keyword()
        if kw != "Context":
            self.pos -= len(raw)
            raise self.fail(f"expected Context, got {raw!r}", 422)
        self.equal()
        cid = self.context_id()
        commands: list[Command] = []
        errors: list[ErrorDescriptor] = []

        def item() -> None:
            kw, raw = self.keyword()
            if kw in COMMANDS and not errors:
                commands.append(self.command(kw))
            elif kw == "Error" and reply and not errors:
                errors.append(self.error_body())
            elif raw.upper() in ("O-", "W-") or raw.upper().startswith(("O-", "W-")):
                # optional / wildcard-response prefixes: accepted and dropped
                rest = raw[2:]
                if rest.upper().startswith(("O-", "W-")):
                    rest = rest[2:]
                cmd = canonical_token(rest)
                if cmd not in COMMANDS:
                    self.pos -= len(raw)
                    raise self.fail(f"unknown command {raw!r}", 422)
                commands.append(self.command(cmd))
            else:
                self.pos -= len(raw)
                raise self.fail(f"unsupported item {raw!r} in Context", 422)

        self.items(item)
        if not reply and not commands:
            raise self.fail("action without command", 422)
        return Action(cid, tuple(commands), errors[0] if errors else None)

    def command(self, name: CommandName) -> Command:
        self.equal()
        start = self.pos
        tid = self.word()
        if not _TERMINATION.match(tid):
            self.pos = start
            raise self.fail(f"bad termination id {tid!r}", 442)
        descriptors: list[Descriptor] = []
        if self.peek() == "{":
            self.items(lambda: descriptors.append(self.descriptor()))
        return Command(name, tid, tuple(descriptors))

    def descriptor(self) -> Descriptor:
        kw, raw = self.keyword()
        if kw == "Media":
            streams: list[Stream] = []
            loose: list[Stream] = []

            def media_item() -> None:
                tok, r = self.keyword()
                if tok == "Stream":
                    self.equal()
                    sid = self.uint("stream id", UINT16_MAX)
                    streams.append(self.stream_body(sid))
                elif tok in ("LocalControl", "Local", "Remote"):
                    # single-stream shorthand: descriptors directly in Media mean stream 1
                    self.pos -= len(r)
                    loose.append(self.stream_item(Stream(1)))
                else:
                    self.pos -= len(r)
                    raise self.fail(f"unsupported item {r!r} in Media", 450)

            self.items(media_item)
            if not streams and not loose:  # mediaDescriptor: at least one mediaParm
                raise self.fail("Media without a stream", 450)
            if loose:
                if streams:
                    raise self.fail("Stream and stream-less Media mixed", 450)
                merged = Stream(1)
                for part in loose:
                    merged = attrs.evolve(
                        merged,
                        local_control=part.local_control or merged.local_control,
                        local=part.local if part.local is not None else merged.local,
                        remote=part.remote if part.remote is not None else merged.remote,
                    )
                streams.append(merged)
            return Media(tuple(streams))
        if kw == "Events":
            if self.peek() != "=":  # "Events" alone clears the requested events
                return Events(0)
            self.equal()
            rid = self.uint("request id")
            events: list[Event] = []
            if self.peek() == "{":
                self.items(lambda: events.append(self.event()))
            return Events(rid, tuple(events))
        if kw == "Signals":
            signals: list[Event] = []
            self.items(lambda: signals.append(self.event()))
            return Signals(tuple(signals))
        if kw == "ObservedEvents":
            self.equal()
            rid = self.uint("request id")
            observed: list[ObservedEvent] = []
            self.items(lambda: observed.append(self.observed_event()))
            if not observed:  # observedEventsDescriptor: at least one observedEvent
                raise self.fail("ObservedEvents without an event", 457)
            return ObservedEvents(rid, tuple(observed))
        if kw == "Statistics":
            values: list[Parameter] = []
            self.items(lambda: values.append(self.parameter()))
            return Statistics(tuple(values))
        if kw == "Audit":
            audit: list[str] = []

            def audit_item() -> None:
                tok, r = self.keyword()
                if not tok:
                    self.pos -= len(r)
                    raise self.fail(f"unsupported audit item {r!r}", 450)
                audit.append(tok)

            self.items(audit_item)
            return Audit(tuple(audit))
        if kw == "Services":
            return self.services()
        if kw == "Error":
            return self.error_body()
        self.pos -= len(raw)
        raise self.fail(f"unsupported descriptor {raw!r}", 450)

    def stream_body(self, sid: int) -> Stream:
        box = [Stream(sid)]

        def item() -> None:
            box[0] = self.stream_item(box[0])

        self.items(item)
        if box[0] == Stream(sid):  # streamDescriptor: at least one streamParm
            raise self.fail(f"Stream {sid} without a descriptor", 450)
        return box[0]

    def stream_item(self, stream: Stream) -> Stream:
        kw, raw = self.keyword()
        if kw == "LocalControl" and stream.local_control is None:
            modes: list[str] = []
            props: list[Parameter] = []

            def lc_item() -> None:
                tok, r = self.keyword()
                if tok == "Mode" and not modes:
                    self.equal()
                    mode_raw = self.word()
                    mode = canonical_token(mode_raw)
                    if mode not in MODES:
                        self.pos -= len(mode_raw)
                        raise self.fail(f"bad mode {mode_raw!r}", 449)
                    modes.append(mode)
                else:
                    self.pos -= len(r)
                    props.append(self.parameter())

            self.items(lc_item)
            control = LocalControl(modes[0] if modes else None, tuple(props))
            # (the constructor, not attrs.evolve: this runs for every stream of every message)
            return Stream(stream.stream_id, control, stream.local, stream.remote)
        if kw == "Local" and stream.local is None:
            return Stream(stream.stream_id, stream.local_control, self.octets(), stream.remote)
        if kw == "Remote" and stream.remote is None:
            return Stream(stream.stream_id, stream.local_control, stream.local, self.octets())
        self.pos -= len(raw)
        code = 451 if kw in ("LocalControl", "Local", "Remote") else 450
        raise self.fail(f"unexpected {raw!r} in Stream", code)

    def pkgd_name(self) -> str:
        start = self.pos
        name = self.word(stop_colon=True)
        if not _PKGD_NAME.match(name):
            self.pos = start
            raise self.fail(f"bad package/item name {name!r}", 449)
        return name

    def parameter(self) -> Parameter:
        self.ws()
        name = self.pkgd_name()
        self.equal()
        return Parameter(name, self.value())

    def parameters(self) -> tuple[Parameter, ...]:
        params: list[Parameter] = []
        if self.peek() == "{":

            def item() -> None:
                self.ws()
                name = self.word(stop_colon=True)
                if not _EVENT_PARAM.match(name):
                    raise self.fail(f"bad parameter name {name!r}", 449)
                self.equal()
                params.append(Parameter(name, self.value()))

            self.items(item)
        return tuple(params)

    def event(self) -> Event:
        self.ws()
        name = self.pkgd_name()
        return Event(name, self.parameters())

    def observed_event(self) -> ObservedEvent:
        self.ws()
        timestamp: str | None = None
        start = self.pos
        first = self.word(stop_colon=True)
        if self.peek() == ":":
            if not _TIMESTAMP.match(first):
                self.pos = start
                raise self.fail(f"bad timestamp {first!r}")
            timestamp = first
            self.pos += 1
        else:
            self.pos = start
        name = self.pkgd_name()
        return ObservedEvent(name, timestamp, self.parameters())

    def services(self) -> ServiceChangeParameters:
        fields: dict[str, object] = {}

        def item() -> None:
            tok, raw = self.keyword()
            key = {
                "Method": "method",
                "Reason": "reason",
                "Delay": "delay",
                "ServiceChangeAddress": "address",
                "Profile": "profile",
                "Version": "version",
                "MgcIdToTry": "mgc_id",
            }.get(tok)
            if key is None:
                if _TIMESTAMP.match(raw) and "timestamp" not in fields:
                    fields["timestamp"] = raw
                    return
                self.pos -= len(raw)
                raise self.fail(f"unsupported ServiceChange parameter {raw!r}", 449)
            if key in fields:
                raise self.fail(f"{tok} appears twice", 451)
            self.equal()
            if key == "method":
                m_raw = self.word()
                method = canonical_token(m_raw)
                if method not in METHODS:
                    self.pos -= len(m_raw)
                    raise self.fail(f"bad ServiceChange method {m_raw!r}", 449)
                fields[key] = method
            elif key == "reason":
                fields[key] = self.value()
            elif key in ("delay", "version"):
                fields[key] = self.uint(tok, 99 if key == "version" else UINT32_MAX)
            elif key in ("address", "mgc_id"):
                if self.peek() == '"':
                    raise self.fail(f"bad {tok}")
                fields[key] = self.mid()
            else:
                start = self.pos
                profile = self.word()
                if not _PROFILE.match(profile):
                    self.pos = start
                    raise self.fail(f"bad profile {profile!r}", 449)
                fields[key] = profile

        self.items(item)
        if not fields:  # serviceChangeDescriptor: at least one parameter (H.248.1 Annex B)
            raise self.fail("Services without a parameter")
        return ServiceChangeParameters(**fields)  # type: ignore[arg-type]


def decode(data: bytes) -> Message:
    """Decode one H.248 text message. Raises :class:`CodecError` (with its H.248 code) only."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"not UTF-8: {exc.reason}", where=f"offset {exc.start}") from None
    if "\x00" in text:
        raise CodecError("NUL character in message", where=f"offset {text.index(chr(0))}")
    parser = _Parser(text)
    try:
        return parser.message()
    except RecursionError:
        raise parser.fail("nesting too deep") from None
