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
from collections.abc import Callable
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
_T = TypeVar("_T")


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

# Each _e_* function returns the text of one item whose first line the caller places and whose
# other lines are already indented for the item's depth (``indent``): the text is written once,
# not re-indented at every level. SDP lines and the "}" closing Local/Remote start at column 0
# so that no indentation becomes part of the SDP. The checks run in the order they always did,
# so that the first bad value found is the one named in the error.


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
    out: list[str] = []
    for p in params:
        name = p.name
        if not names.match(name):
            raise LocalIqError(f"cannot encode name {name!r}")
        out.append(f"{name} = {_value(p.value)}")
    return out


def _block(head: str, items: list[str], indent: str) -> str:
    """``head { item, item }`` one item per line; ``head`` alone if there are no items. The
    items are indented for ``indent + "  "`` already (but for their first line)."""
    if not items:
        return head
    inner = indent + "  "
    return f"{head} {{\n{inner}" + f",\n{inner}".join(items) + f"\n{indent}}}"


def _sdp(head: str, lines: tuple[str, ...]) -> str:
    for line in lines:
        if not line or line != line.strip() or "\r" in line or "\n" in line or "\x00" in line:
            raise LocalIqError(f"cannot encode SDP line {line!r} (empty, padded or with NUL)")
    if not lines:
        return f"{head} {{\n}}"
    body = "\n".join(lines)
    if "}" in body:
        body = body.replace("}", "\\}")
    return f"{head} {{\n{body}\n}}"


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


def _descriptor(d: Descriptor, indent: str) -> str:
    if isinstance(d, Media):
        if not d.streams:
            raise LocalIqError("a Media descriptor needs at least one stream")
        inner = indent + "  "
        return _block("Media", [_stream(s, inner) for s in d.streams], indent)
    if isinstance(d, Events):
        items = [_event(e) for e in d.events]
        return _block(f"Events = {_uint(d.request_id, 'request id')}", items, indent)
    if isinstance(d, Signals):
        if not d.signals:
            return "Signals { }"
        return _block("Signals", [_event(e) for e in d.signals], indent)
    if isinstance(d, ObservedEvents):
        if not d.events:
            raise LocalIqError("an ObservedEvents descriptor needs at least one event")
        items = [_observed(e) for e in d.events]
        return _block(f"ObservedEvents = {_uint(d.request_id, 'request id')}", items, indent)
    if isinstance(d, Statistics):
        if not d.values:
            return "Statistics { }"
        return _block("Statistics", _params(d.values), indent)
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
        return _block("Services", services, indent)
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


def _local_control_text(lc: LocalControl) -> str:
    parts: list[str] = []
    if lc.mode is not None:
        mode = canonical_token(lc.mode)
        if mode not in MODES:
            raise LocalIqError(f"cannot encode mode {lc.mode!r}")
        parts.append(f"Mode = {mode}")
    if lc.properties:
        parts.extend(_params(lc.properties))
    return "LocalControl { " + ", ".join(parts) + " }" if parts else "LocalControl { }"


def _stream(s: Stream, indent: str) -> str:
    items: list[str] = []
    if s.local_control is not None:
        items.append(_local_control_text(s.local_control))
    if s.local is not None:
        items.append(_sdp("Local", s.local))
    if s.remote is not None:
        items.append(_sdp("Remote", s.remote))
    if not items:
        raise LocalIqError(f"stream {s.stream_id} needs LocalControl, Local or Remote")
    return _block(f"Stream = {_uint(s.stream_id, 'stream id', UINT16_MAX)}", items, indent)


def _command(c: Command, indent: str) -> str:
    if c.name not in COMMANDS:
        raise LocalIqError(f"cannot encode command {c.name!r}")
    tid = _check(_TERMINATION, c.termination_id, "termination id")
    head = f"{c.name} = {tid}"
    if not c.descriptors:
        return head
    inner = indent + "  "
    return _block(head, [_descriptor(d, inner) for d in c.descriptors], indent)


def _action(a: Action, indent: str) -> str:
    inner = indent + "  "
    items = [_command(c, inner) for c in a.commands]
    if a.error is not None:
        items.append(_error(a.error))
    head = f"Context = {_context(a.context_id)}"
    return _block(head, items, indent) if items else head + " { }"


def _transaction(t: Transaction) -> str:
    if isinstance(t, TransactionRequest):
        if not t.actions:
            raise LocalIqError("a transaction request needs at least one action")
        tid = _uint(t.transaction_id, "transaction id")
        return _block(f"Transaction = {tid}", [_action(a, "  ") for a in t.actions], "")
    if isinstance(t, TransactionReply):
        head = f"Reply = {_uint(t.transaction_id, 'transaction id')}"
        items = ["ImmAckRequired"] if t.immediate_ack_required else []
        if t.error is not None:
            items.append(_error(t.error))
        else:
            items.extend(_action(a, "  ") for a in t.actions)
        return _block(head, items, "") if items else head + " { }"
    return f"Pending = {_uint(t.transaction_id, 'transaction id')} {{ }}"


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
        body = "\n".join([_transaction(t) for t in message.transactions])
    else:
        raise LocalIqError("a message needs a transaction or an error")
    return f"{head}\n{body}\n".encode()


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


# --------------------------------------------------------------------------- fast decoder

# The decoder above reads the text with some forty reader calls per message, each skipping
# white space. The one below scans the whole message with one regex (``findall``: a list of
# token strings, white space and comments dropped) and parses the list. It accepts only the
# common shapes and gives up (:class:`_Slow`) on anything else - every malformed input, and
# valid but unusual forms (``O-``/``W-`` prefixes, stream-less Media, comments between
# ``Local`` and its ``{``...) - which the decoder above then reads and, for malformed input,
# rejects with its error and offset. Whatever the fast one accepts, the general one accepts
# with the same result (tests/iq/test_codec_fast.py compares the two).
#
# Tokens: "{", "}", "=", ","; a word (_WORD_CLASS and ":", as the readers above read it); a
# quoted string with its quotes (no control characters in it); a whole ``Local { ... }`` or
# ``Remote { ... }`` (long or short, any case, only spaces or line breaks before the "{") up to
# the first unescaped "}" - or, unterminated, to the end of the text, so that no later "{" is
# scanned again (linear time) - recognised anywhere but accepted only as a stream item, and
# only if it ends with an unescaped "}" (a "}" after a "\" is always an escape); any other
# single character, which no step of the parser accepts; and "" at the end of the text (once or
# twice). The scan matches at every position it reaches, so no character is skipped (a comment
# is never read as tokens), and every token is consumed in order by a step that checks it.

_TOKEN_RE = re.compile(
    r"[ \t\r\n]*+(?:;[^\n]*+(?:\n|$)[ \t\r\n]*+)*+"
    r"([{}=,]"
    r"|(?:[lL][oO][cC][aA][lL]|[rR][eE][mM][oO][tT][eE]|[lLrR])[ \t\r\n]*+"
    r"\{(?:[^\\}]+|\\\}|\\)*+(?:\}|\Z)"
    rf"|[{_WORD_CLASS}:]++"
    r'|"[^"\x00-\x08\x0a-\x1f\x7f]*+"'
    r"|[^ \t\r\n;]|\Z)"
)
_OCTET_KW: Final = {"local": True, "l": True, "remote": False, "r": False}
# keywords spelled as encode() writes them (and in lower or upper case): found without lower()
_KW: Final = {
    **{long.upper(): long for long in _TOKENS},
    **{form: long for long, forms in _TOKENS.items() for form in forms},
    **{long: long for long in _TOKENS},
}


class _Slow(Exception):
    """The fast decoder does not take this input: the general one decides."""


def slot_maker(cls: type[_T]) -> Callable[..., _T]:
    """``cls(*every_field)`` without attrs' ``__init__`` (which sets each field through a
    bound ``object.__setattr__`` and a name lookup): the slots are set directly. Only for
    slotted attrs classes whose validators, converters or post-init hooks have nothing to add
    to what the caller already checked (the model classes above have none; iq.profile uses it
    for values its decoder has checked); every field is passed, in order."""
    new = object.__new__
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    setters = [cls.__dict__[field.name].__set__ for field in fields]
    if len(setters) == 1:
        (s0,) = setters

        def make1(a: object) -> _T:
            self = new(cls)
            s0(self, a)
            return self

        return make1
    if len(setters) == 2:
        s0, s1 = setters

        def make2(a: object, b: object) -> _T:
            self = new(cls)
            s0(self, a)
            s1(self, b)
            return self

        return make2
    if len(setters) == 3:
        s0, s1, s2 = setters

        def make3(a: object, b: object, c: object) -> _T:
            self = new(cls)
            s0(self, a)
            s1(self, b)
            s2(self, c)
            return self

        return make3
    if len(setters) == 4:
        s0, s1, s2, s3 = setters

        def make4(a: object, b: object, c: object, d: object) -> _T:
            self = new(cls)
            s0(self, a)
            s1(self, b)
            s2(self, c)
            s3(self, d)
            return self

        return make4

    def make(*values: object) -> _T:
        self = new(cls)
        for set_field, value in zip(setters, values, strict=True):
            set_field(self, value)
        return self

    return make


_new_parameter = slot_maker(Parameter)
_new_local_control = slot_maker(LocalControl)
_new_stream = slot_maker(Stream)
_new_media = slot_maker(Media)
_new_event = slot_maker(Event)
_new_events = slot_maker(Events)
_new_observed_event = slot_maker(ObservedEvent)
_new_command = slot_maker(Command)
_new_action = slot_maker(Action)
_new_request = slot_maker(TransactionRequest)
_new_reply = slot_maker(TransactionReply)
_new_error = slot_maker(ErrorDescriptor)
_new_message = slot_maker(Message)


def _is_word(tok: str) -> bool:
    # a word token: starts with a word character; an octets token (which starts with a
    # letter too) always holds a "{", which no word does
    return tok[:1] in _WORD_CHARS and "{" not in tok


def _f_uint(tok: str, maximum: int = UINT32_MAX) -> int:
    if tok.isdigit() and tok.isascii() and len(tok) <= 10:
        value = int(tok)
        if value <= maximum:
            return value
    raise _Slow


def _f_value(tok: str) -> str:
    if tok[:1] == '"':
        if len(tok) < 2:
            raise _Slow
        return tok[1:-1]
    if not _is_word(tok):
        raise _Slow
    return tok


def _f_error(t: list[str], i: int) -> tuple[ErrorDescriptor, int]:
    """``= code { ["text"] }`` from t[i]."""
    if t[i] != "=" or t[i + 2] != "{":
        raise _Slow
    code = _f_uint(t[i + 1], 9999)
    tok = t[i + 3]
    if tok == "}":
        return _new_error(code, ""), i + 4
    if tok[:1] != '"' or len(tok) < 2 or t[i + 4] != "}":
        raise _Slow
    return _new_error(code, tok[1:-1]), i + 5


def _f_params(t: list[str], i: int, names: re.Pattern[str]) -> tuple[list[Parameter], int]:
    """``{ name = value, ... }`` from the "{" at t[i] (may be empty)."""
    params: list[Parameter] = []
    i += 1
    if t[i] == "}":
        return params, i + 1
    while True:
        name = t[i]
        if ":" in name or not names.match(name) or t[i + 1] != "=":
            raise _Slow
        value = t[i + 2]
        if value[:1] == '"':  # (_f_value, inline)
            if len(value) < 2:
                raise _Slow
            value = value[1:-1]
        elif value[:1] not in _WORD_CHARS or "{" in value:
            raise _Slow
        params.append(_new_parameter(name, value))
        sep = t[i + 3]
        i += 4
        if sep == "}":
            return params, i
        if sep != ",":
            raise _Slow


def _f_observed(t: list[str], i: int) -> tuple[ObservedEvent, int]:
    tok = t[i]
    timestamp: str | None = None
    if ":" in tok:
        timestamp, _, tok = tok.partition(":")
        if not _TIMESTAMP.match(timestamp):
            raise _Slow
    if not _PKGD_NAME.match(tok):
        raise _Slow
    if t[i + 1] == "{":
        params, i = _f_params(t, i + 1, _EVENT_PARAM)
        return _new_observed_event(tok, timestamp, tuple(params)), i
    return _new_observed_event(tok, timestamp, ()), i + 1


def _f_octets(tok: str) -> tuple[bool, tuple[str, ...]]:
    """(local?, lines) of a ``Local { ... }`` / ``Remote { ... }`` token."""
    brace = tok.index("{")
    local = _OCTET_KW.get(tok[:brace].rstrip(" \t\r\n").lower())
    if local is None:  # a comment between the keyword and "{"
        raise _Slow
    content = tok[brace + 1 : -1]
    if "\\}" in content:
        content = content.replace("\\}", "}")
    if "\r" in content:
        content = content.replace("\r\n", "\n").replace("\r", "\n")
    return local, tuple(filter(None, [line.strip() for line in content.split("\n")]))


def _f_local_control(t: list[str], i: int) -> tuple[LocalControl, int]:
    """``{ Mode = m, name = value, ... }`` from the "{" at t[i]."""
    if t[i] != "{":
        raise _Slow
    i += 1
    mode: str | None = None
    props: list[Parameter] = []
    if t[i] == "}":
        return _new_local_control(None, ()), i + 1
    while True:
        tok = t[i]
        if t[i + 1] != "=":
            raise _Slow
        if mode is None and (_KW.get(tok) or _LOOKUP.get(tok.lower())) == "Mode":
            mode = _KW.get(t[i + 2]) or _LOOKUP.get(t[i + 2].lower())
            if mode not in MODES:
                raise _Slow
        else:
            if ":" in tok or not _PKGD_NAME.match(tok):
                raise _Slow
            props.append(_new_parameter(tok, _f_value(t[i + 2])))
        sep = t[i + 3]
        i += 4
        if sep == "}":
            return _new_local_control(mode, tuple(props)), i
        if sep != ",":
            raise _Slow


def _f_stream(t: list[str], i: int, sid: int) -> tuple[Stream, int]:
    """The ``{ ... }`` of ``Stream = sid`` from t[i]: at least one item."""
    if t[i] != "{":
        raise _Slow
    i += 1
    control: LocalControl | None = None
    local: tuple[str, ...] | None = None
    remote: tuple[str, ...] | None = None
    while True:
        tok = t[i]
        if tok[-1:] == "}" and len(tok) > 1 and tok[-2] != "\\":  # (terminated octets)
            is_local, lines = _f_octets(tok)
            if is_local:
                if local is not None:
                    raise _Slow
                local = lines
            else:
                if remote is not None:
                    raise _Slow
                remote = lines
            i += 1
        elif control is None and (_KW.get(tok) or _LOOKUP.get(tok.lower())) == "LocalControl":
            control, i = _f_local_control(t, i + 1)
        else:
            raise _Slow
        sep = t[i]
        i += 1
        if sep == "}":
            return _new_stream(sid, control, local, remote), i
        if sep != ",":
            raise _Slow


def _f_services(t: list[str], i: int) -> tuple[ServiceChangeParameters, int]:
    if t[i] != "{":
        raise _Slow
    i += 1
    fields: dict[str, object] = {}
    while True:
        tok = t[i]
        kw = _KW.get(tok) or _LOOKUP.get(tok.lower())
        if kw is None or kw not in _SERVICE_KEYS:
            if not _TIMESTAMP.match(tok) or "timestamp" in fields:
                raise _Slow
            fields["timestamp"] = tok
            i += 1
        else:
            key = _SERVICE_KEYS[kw]
            if key in fields or t[i + 1] != "=":
                raise _Slow
            raw = t[i + 2]
            if key == "method":
                method = _KW.get(raw) or _LOOKUP.get(raw.lower())
                if method not in METHODS:
                    raise _Slow
                fields[key] = method
            elif key == "reason":
                fields[key] = _f_value(raw)
            elif key == "delay":
                fields[key] = _f_uint(raw)
            elif key == "version":
                fields[key] = _f_uint(raw, 99)
            elif key == "profile":
                if not _PROFILE.match(raw):
                    raise _Slow
                fields[key] = raw
            else:  # address, mgc_id: an mId
                if not _MID.match(raw):
                    raise _Slow
                fields[key] = raw
            i += 3
        sep = t[i]
        i += 1
        if sep == "}":
            return ServiceChangeParameters(**fields), i  # type: ignore[arg-type]
        if sep != ",":
            raise _Slow


_SERVICE_KEYS: Final = {
    "Method": "method",
    "Reason": "reason",
    "Delay": "delay",
    "ServiceChangeAddress": "address",
    "Profile": "profile",
    "Version": "version",
    "MgcIdToTry": "mgc_id",
}


def _f_descriptor(t: list[str], i: int) -> tuple[Descriptor, int]:
    kw = _KW.get(t[i]) or _LOOKUP.get(t[i].lower())
    i += 1
    if kw == "Media":
        if t[i] != "{":
            raise _Slow
        i += 1
        streams: list[Stream] = []
        while True:
            if (_KW.get(t[i]) or _LOOKUP.get(t[i].lower())) != "Stream" or t[i + 1] != "=":
                raise _Slow  # (also the stream-less shorthand)
            stream, i = _f_stream(t, i + 3, _f_uint(t[i + 2], UINT16_MAX))
            streams.append(stream)
            sep = t[i]
            i += 1
            if sep == "}":
                return _new_media(tuple(streams)), i
            if sep != ",":
                raise _Slow
    if kw == "Events":
        if t[i] != "=":
            return _new_events(0, ()), i
        rid = _f_uint(t[i + 1])
        i += 2
        if t[i] != "{":
            return _new_events(rid, ()), i
        events, i = _f_event_list(t, i)
        return _new_events(rid, tuple(events)), i
    if kw == "Signals":
        if t[i] != "{":
            raise _Slow
        signals, i = _f_event_list(t, i)
        return Signals(tuple(signals)), i
    if kw == "ObservedEvents":
        if t[i] != "=" or t[i + 2] != "{":
            raise _Slow
        rid = _f_uint(t[i + 1])
        i += 3
        observed: list[ObservedEvent] = []
        while True:
            ev, i = _f_observed(t, i)
            observed.append(ev)
            sep = t[i]
            i += 1
            if sep == "}":
                return ObservedEvents(rid, tuple(observed)), i
            if sep != ",":
                raise _Slow
    if kw == "Statistics":
        if t[i] != "{":
            raise _Slow
        values, i = _f_params(t, i, _PKGD_NAME)
        return Statistics(tuple(values)), i
    if kw == "Audit":
        if t[i] != "{":
            raise _Slow
        i += 1
        audit: list[str] = []
        if t[i] == "}":
            return Audit(), i + 1
        while True:
            item = _KW.get(t[i]) or _LOOKUP.get(t[i].lower())
            if not item:
                raise _Slow
            audit.append(item)
            sep = t[i + 1]
            i += 2
            if sep == "}":
                return Audit(tuple(audit)), i
            if sep != ",":
                raise _Slow
    if kw == "Services":
        return _f_services(t, i)
    if kw == "Error":
        return _f_error(t, i)
    raise _Slow


def _f_event_list(t: list[str], i: int) -> tuple[list[Event], int]:
    """``{ event, ... }`` from the "{" at t[i] (may be empty)."""
    i += 1
    events: list[Event] = []
    if t[i] == "}":
        return events, i + 1
    while True:
        name = t[i]  # (_f_event, inline)
        if ":" in name or not _PKGD_NAME.match(name):
            raise _Slow
        if t[i + 1] == "{":
            params, i = _f_params(t, i + 1, _EVENT_PARAM)
            events.append(_new_event(name, tuple(params)))
        else:
            events.append(_new_event(name, ()))
            i += 1
        sep = t[i]
        i += 1
        if sep == "}":
            return events, i
        if sep != ",":
            raise _Slow


def _f_command(t: list[str], i: int, name: CommandName) -> tuple[Command, int]:
    """``= tid [{ descriptors }]`` from t[i]."""
    tid = t[i + 1]
    if t[i] != "=" or not _TERMINATION.match(tid):
        raise _Slow
    i += 2
    if t[i] != "{":
        return _new_command(name, tid, ()), i
    i += 1
    if t[i] == "}":
        return _new_command(name, tid, ()), i + 1
    descriptors: list[Descriptor] = []
    while True:
        d, i = _f_descriptor(t, i)
        descriptors.append(d)
        sep = t[i]
        i += 1
        if sep == "}":
            return _new_command(name, tid, tuple(descriptors)), i
        if sep != ",":
            raise _Slow


def _f_context_id(tok: str) -> ContextId:
    if tok in (CHOOSE, NULL_CONTEXT, ALL):
        return tok  # type: ignore[return-value]
    return _f_uint(tok)


def _f_action(t: list[str], i: int, reply: bool) -> tuple[Action, int]:
    """``= id { commands [, Error] }`` from t[i] (after ``Context``)."""
    if t[i] != "=" or t[i + 2] != "{":
        raise _Slow
    cid = _f_context_id(t[i + 1])
    i += 3
    commands: list[Command] = []
    error: ErrorDescriptor | None = None
    if t[i] == "}":
        if not reply:
            raise _Slow
        return _new_action(cid, (), None), i + 1
    while True:
        kw = _KW.get(t[i]) or _LOOKUP.get(t[i].lower())
        if error is not None:
            raise _Slow
        if kw in COMMANDS:
            cmd, i = _f_command(t, i + 1, kw)
            commands.append(cmd)
        elif kw == "Error" and reply:
            error, i = _f_error(t, i + 1)
        else:
            raise _Slow  # (also the O-/W- prefixes)
        sep = t[i]
        i += 1
        if sep == "}":
            break
        if sep != ",":
            raise _Slow
    if not reply and not commands:
        raise _Slow
    return _new_action(cid, tuple(commands), error), i


def _f_transaction(t: list[str], i: int, kw: str) -> tuple[Transaction, int]:
    """``= tid { ... }`` from t[i]."""
    if t[i] != "=" or t[i + 2] != "{":
        raise _Slow
    tid = _f_uint(t[i + 1])
    i += 3
    if kw == "Pending":
        if t[i] != "}":
            raise _Slow
        return TransactionPending(tid), i + 1
    actions: list[Action] = []
    if kw == "Transaction":
        while True:
            if (_KW.get(t[i]) or _LOOKUP.get(t[i].lower())) != "Context":
                raise _Slow
            action, i = _f_action(t, i + 1, False)
            actions.append(action)
            sep = t[i]
            i += 1
            if sep == "}":
                return _new_request(tid, tuple(actions)), i
            if sep != ",":
                raise _Slow
    error: ErrorDescriptor | None = None
    ack = False
    if t[i] == "}":
        return _new_reply(tid, (), None, False), i + 1
    while True:
        item = _KW.get(t[i]) or _LOOKUP.get(t[i].lower())
        if item == "ImmAckRequired" and not actions and error is None:
            ack = True
            i += 1
        elif item == "Error" and not actions and error is None:
            error, i = _f_error(t, i + 1)
        elif item == "Context" and error is None:
            action, i = _f_action(t, i + 1, True)
            actions.append(action)
        else:
            raise _Slow
        sep = t[i]
        i += 1
        if sep == "}":
            return _new_reply(tid, tuple(actions), error, ack), i
        if sep != ",":
            raise _Slow


def _decode_fast(text: str) -> Message:
    """The message in ``text`` (no NUL in it), or :class:`_Slow`."""
    t = _TOKEN_RE.findall(text)
    start = t[0]
    prefix, slash, version_text = start.partition("/")
    if (
        not slash
        or prefix.upper() != "MEGACO"
        or ":" in start
        or not version_text.isdigit()
        or not version_text.isascii()
        or len(version_text) > 2
        or not 1 <= int(version_text) <= 3
    ):
        raise _Slow
    mid = t[1]
    if not _MID.match(mid):
        raise _Slow
    i = 2
    transactions: list[Transaction] = []
    error: ErrorDescriptor | None = None
    while t[i]:  # up to the "" at the end
        kw = _KW.get(t[i]) or _LOOKUP.get(t[i].lower())
        if kw == "Error" and not transactions and error is None:
            error, i = _f_error(t, i + 1)
        elif kw in ("Transaction", "Reply", "Pending") and error is None:
            transaction, i = _f_transaction(t, i + 1, kw)
            transactions.append(transaction)
        else:
            raise _Slow
    if not transactions and error is None:
        raise _Slow
    return _new_message(mid, tuple(transactions), error, int(version_text))


def decode(data: bytes) -> Message:
    """Decode one H.248 text message. Raises :class:`CodecError` (with its H.248 code) only."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"not UTF-8: {exc.reason}", where=f"offset {exc.start}") from None
    if "\x00" in text:
        raise CodecError("NUL character in message", where=f"offset {text.index(chr(0))}")
    try:
        return _decode_fast(text)
    except (_Slow, IndexError):
        pass
    return _decode_general(text)


def _decode_general(text: str) -> Message:
    """The message in ``text`` read by :class:`_Parser`: every form, and the errors."""
    parser = _Parser(text)
    try:
        return parser.message()
    except RecursionError:
        raise parser.fail("nesting too deep") from None
