"""The e2ae Mp profile: typed MRFC/MRFP operations mapped to and from H.248 actions.

Pure (no I/O, no clock). Requests are encoded by :func:`encode_request` and recovered by
:func:`decode_request`; replies by :func:`encode_reply` / :func:`decode_reply`; the MRFP's
events by :func:`encode_event` / :func:`decode_event`. The wire layout is described in
docs/mp-profile.md. The PSK of a stream travels in the Add as the ``e2aepsk/key`` property;
it is never part of a ``repr`` and :func:`redact` removes it from any text about to be logged.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Literal, TypeAlias

import attrs

from certs.psk import ALLOWED_PSK_CIPHERS
from e2ae.tcpmedia import TlsRole
from iq import profile as iq_profile
from iq.codec import (
    CHOOSE,
    NULL_CONTEXT,
    Action,
    Command,
    ErrorDescriptor,
    Event,
    Events,
    LocalControl,
    ObservedEvent,
    ObservedEvents,
    Parameter,
    ServiceChangeParameters,
    Signals,
    Statistics,
    Stream,
)
from iq.codec import Media as MediaDescriptor
from iq.errors import LocalIqError, ProfileError, RequestFailed
from iq.profile import parse_sdp

#: The ServiceChange profile name and version of this profile.
PROFILE = "e2aemp/1"

# Package items (the project's own packages, see docs/mp-profile.md).
PROP_CONFERENCE = "e2aemp/conf"
PROP_PARTICIPANT = "e2aemp/part"
PROP_SECURITY = "e2aemp/sec"
PROP_TLS_ROLE = "e2aemp/tlsrole"
PROP_CALL_ID = "e2aemp/callid"
PROP_PSK_KEY = "e2aepsk/key"
PROP_PSK_ID = "e2aepsk/id"
PROP_PSK_SUITES = "e2aepsk/suites"
SIGNAL_CONNECT = "e2aemp/connect"
SIGNAL_START_TLS = "e2aemp/starttls"
EVENT_STREAM = "e2aemp/ev"
STAT_OCTETS_IN = "nt/or"
STAT_OCTETS_OUT = "nt/os"
STAT_MESSAGES_IN = "e2aemp/mr"
STAT_MESSAGES_OUT = "e2aemp/ms"
PACKAGES = ("e2aemp", "e2aepsk")
#: The request id of the Events descriptor of every Add, and so of every ObservedEvents.
EVENTS_REQUEST_ID = 1
#: The stream id of the one stream of an Mp termination.
STREAM_ID = 1
ROOT = "ROOT"

Media = Literal["msrp", "bfcp"]
Security = Literal["tls-psk", "plain"]
TcpRole = Literal["active", "passive"]
EventKind = Literal[
    "tcp-established", "tls-established", "tls-failed", "renegotiation-refused", "closed"
]
ServiceChangeKind = Literal["register", "restart", "forced"]

MEDIA: tuple[Media, ...] = ("msrp", "bfcp")
SECURITIES: tuple[Security, ...] = ("tls-psk", "plain")
TCP_ROLES: tuple[TcpRole, ...] = ("active", "passive")
TLS_ROLES: tuple[TlsRole, ...] = ("client", "server")
EVENT_KINDS: tuple[EventKind, ...] = (
    "tcp-established",
    "tls-established",
    "tls-failed",
    "renegotiation-refused",
    "closed",
)

#: The SDP media type and the transport of each medium, plain and over TLS.
SDP_MEDIA: dict[Media, str] = {"msrp": "message", "bfcp": "application"}
PROTOS: dict[tuple[Media, Security], str] = {
    ("msrp", "plain"): "TCP/MSRP",
    ("msrp", "tls-psk"): "TCP/TLS/MSRP",
    ("bfcp", "plain"): "TCP/BFCP",
    ("bfcp", "tls-psk"): "TCP/TLS/BFCP",
}
#: The termination id prefix of each medium: ``msrp/$`` in an Add, ``msrp/<n>`` after it.
TERMINATION_PREFIX: dict[Media, str] = {"msrp": "msrp/", "bfcp": "bfcp/"}

_SERVICE_CHANGES: dict[str, tuple[str, str]] = {
    "register": ("Restart", "901 Cold Boot"),
    "restart": ("Restart", "902 Warm Boot"),
    "forced": ("Forced", "905 Termination taken out of service"),
}


# --------------------------------------------------------------------------- values

# the address and port checks of Iq's endpoints (iq.profile.Endpoint)
_check_ip = iq_profile._check_ip
_check_port = iq_profile._check_port


@attrs.frozen
class Endpoint:
    """An IP address (literal) and TCP port."""

    ip: str = attrs.field(validator=_check_ip)
    port: int = attrs.field(validator=_check_port)

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def _check_key(instance: object, attribute: object, value: bytes) -> None:
    if not value:
        raise LocalIqError("empty PSK")


def _check_suites(instance: object, attribute: object, value: tuple[str, ...]) -> None:
    if not value:
        raise LocalIqError("no PSK cipher suite")
    for suite in value:
        if suite not in ALLOWED_PSK_CIPHERS:
            raise LocalIqError(f"cipher suite {suite!r} is not allowed for TLS-PSK")


@attrs.frozen
class PskConfig:
    """The TLS-PSK of one stream (the TEK of its crypto session). ``key`` is never shown:
    not in ``repr``, never logged; on the wire only in the Add, which :func:`redact` hides."""

    key: bytes = attrs.field(repr=False, validator=_check_key)
    identity: bytes
    ciphersuites: tuple[str, ...] = attrs.field(validator=_check_suites)


@attrs.frozen
class JoinRequest:
    """Add one termination (one participant stream) into the conference's context.

    ``context`` ``None``: the conference's first stream (the MRFP chooses the context).
    ``tcp_role``/``tls_role`` are the MRFP's own roles on the stream. ``tls-psk`` needs
    ``tls_role`` and ``psk``; ``plain`` has neither. ``remote_path`` only for MSRP,
    ``bfcp_user``/``floors`` only for BFCP."""

    conference: str
    context: int | None
    participant: str
    media: Media
    tcp_role: TcpRole
    security: Security
    tls_role: TlsRole | None = None
    psk: PskConfig | None = None
    remote: Endpoint | None = None
    remote_path: tuple[str, ...] = ()
    bfcp_user: int | None = None
    floors: tuple[int, ...] = ()
    call_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.media not in MEDIA:
            raise LocalIqError(f"media must be msrp or bfcp, got {self.media!r}")
        if self.tcp_role not in TCP_ROLES:
            raise LocalIqError(f"TCP role must be active or passive, got {self.tcp_role!r}")
        if self.security not in SECURITIES:
            raise LocalIqError(f"security must be tls-psk or plain, got {self.security!r}")
        if self.security == "tls-psk":
            if self.tls_role not in TLS_ROLES or self.psk is None:
                raise LocalIqError("tls-psk needs a TLS role (client or server) and a PSK")
        elif self.tls_role is not None or self.psk is not None:
            raise LocalIqError("a plain stream has no TLS role and no PSK")
        if self.context is not None and not 0 < self.context < 2**32 - 1:
            raise LocalIqError(f"context id out of range: {self.context}")
        if not self.conference or not self.participant:
            raise LocalIqError("conference and participant must be given")
        if self.media == "msrp" and (self.bfcp_user is not None or self.floors):
            raise LocalIqError("BFCP user id and floors belong to a BFCP stream")
        if self.media == "bfcp" and self.remote_path:
            raise LocalIqError("an MSRP path belongs to an MSRP stream")
        if self.bfcp_user is not None and not 0 < self.bfcp_user <= 0xFFFF:
            raise LocalIqError(f"BFCP user id out of range: {self.bfcp_user}")
        for floor in self.floors:
            if not 0 < floor <= 0xFFFF:
                raise LocalIqError(f"BFCP floor id out of range: {floor}")
        for uri in self.remote_path:
            if not uri or any(ch.isspace() for ch in uri):
                raise LocalIqError(f"bad MSRP URI {uri!r}")


@attrs.frozen
class JoinReply:
    """What the MRFP chose: the context, the termination (``msrp/<n>``, ``bfcp/<n>``), its
    address and, for MSRP, its own MSRP URI (``msrp://ip:port/session;tcp``)."""

    context: int
    termination: str
    local: Endpoint
    local_path: str | None


@attrs.frozen
class ConnectRequest:
    """Active role: open the TCP connection to ``remote`` now."""

    context: int
    termination: str
    remote: Endpoint


@attrs.frozen
class StartTlsRequest:
    """TLS client role: start the handshake (TCP is up)."""

    context: int
    termination: str


@attrs.frozen
class LeaveRequest:
    context: int
    termination: str


def _check_count(instance: object, attribute: object, value: int) -> None:
    if not 0 <= value < 2**64:
        raise LocalIqError(f"statistic out of range: {value}")


@attrs.frozen
class StreamStatistics:
    octets_in: int = attrs.field(validator=_check_count)
    octets_out: int = attrs.field(validator=_check_count)
    messages_in: int = attrs.field(validator=_check_count)
    messages_out: int = attrs.field(validator=_check_count)


@attrs.frozen
class LeaveReply:
    statistics: StreamStatistics


@attrs.frozen
class AckReply:
    """The reply to Connect and StartTls."""


@attrs.frozen
class MpEvent:
    """An MRFP -> MRFC Notify."""

    context: int
    termination: str
    kind: EventKind
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise LocalIqError(f"unknown event kind {self.kind!r}")


MpRequest: TypeAlias = JoinRequest | ConnectRequest | StartTlsRequest | LeaveRequest
MpReply: TypeAlias = JoinReply | AckReply | LeaveReply


@attrs.frozen
class NotifyRequest:
    """The MRFP reports ``event``; ``timestamp`` (``yyyymmddThhmmssss``, see
    :func:`timestamp`) is when it saw it."""

    event: MpEvent
    timestamp: str | None = None


@attrs.frozen
class NotifyReply:
    """The MRFC's acknowledgement of a Notify."""


@attrs.frozen
class ServiceChangeRequest:
    kind: ServiceChangeKind
    profile: str = PROFILE


@attrs.frozen
class ServiceChangeReply:
    profile: str = PROFILE


AnyRequest: TypeAlias = MpRequest | NotifyRequest | ServiceChangeRequest
AnyReply: TypeAlias = MpReply | NotifyReply | ServiceChangeReply


def timestamp(now: float) -> str:
    """H.248 time stamp ``yyyymmddThhmmssss`` (UTC, hundredths) of a POSIX time."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 10000:02d}"


# --------------------------------------------------------------------------- redaction

_KEY_TEXT = re.compile(r"(?i)e2aepsk/key(\s*=\s*)(\"[^\"]*\"|[^\s,}\"']*)")
_KEY_PARAMETER = re.compile(r"(?i)(name='e2aepsk/key', value=)'[^']*'")
_LONG_HEX = re.compile(r"[0-9A-Fa-f]{16,}")


def redact(text: str) -> str:
    """``text`` safe to log: every ``e2aepsk/key = ...`` value becomes ``<redacted>``, and so
    does any run of 16 or more hex digits (a key cut out of its context, e.g. in the snippet
    of a parse error)."""
    text = _KEY_TEXT.sub("e2aepsk/key=<redacted>", text)
    text = _KEY_PARAMETER.sub(r"\1'<redacted>'", text)
    return _LONG_HEX.sub("<redacted>", text)


# --------------------------------------------------------------------------- text values


def _quote(text: str) -> str:
    # H.248 quoted strings cannot hold '"' or control characters: percent-encode them (and
    # '%') so that any URI or call id travels exactly.
    out = []
    for ch in text:
        if ch == "%" or ch == '"' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unquote(text: str, where: str) -> str:
    raw = _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), text.encode("utf-8"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError("bad percent-encoding", code=449, where=where) from None


def _media_of_termination(termination: str) -> Media:
    return "bfcp" if termination.startswith(TERMINATION_PREFIX["bfcp"]) else "msrp"


# --------------------------------------------------------------------------- SDP


def _c_line(ep: Endpoint) -> str:
    return f"c=IN {'IP6' if ':' in ep.ip else 'IP4'} {ep.ip}"


def _local_sdp(req: JoinRequest) -> tuple[str, ...]:
    proto = PROTOS[(req.media, req.security)]
    lines = ["v=0", "c=IN IP4 $", f"m={SDP_MEDIA[req.media]} $ {proto} *"]
    lines.append(f"a=setup:{req.tcp_role}")
    if req.media == "msrp":
        lines.append("a=path:$")
    else:
        lines.append("a=floorctrl:s-only")
        lines.extend(f"a=floorid:{floor}" for floor in req.floors)
        if req.bfcp_user is not None:
            lines.append(f"a=userid:{req.bfcp_user}")
    return tuple(lines)


def _remote_sdp(req: JoinRequest) -> tuple[str, ...] | None:
    if req.remote is None and not req.remote_path:
        return None
    lines = ["v=0"]
    if req.remote is not None:
        proto = PROTOS[(req.media, req.security)]
        lines.append(_c_line(req.remote))
        lines.append(f"m={SDP_MEDIA[req.media]} {req.remote.port} {proto} *")
    if req.remote_path:
        lines.append("a=path:" + " ".join(req.remote_path))
    return tuple(lines)


def _attributes(lines: Sequence[str], name: str) -> list[str]:
    prefix = f"a={name}:"
    return [line[len(prefix) :].strip() for line in lines if line.startswith(prefix)]


def _sdp_endpoint(lines: Sequence[str], where: str) -> Endpoint | None:
    fragment = parse_sdp(lines, where)
    if fragment.host is None and fragment.port is None:
        return None
    if fragment.host is None or fragment.port is None:
        raise ProfileError("address and port must both be given", code=449, where=where)
    return Endpoint(fragment.host, fragment.port)


def _small_int(text: str, what: str, where: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) <= 0xFFFF:
        raise ProfileError(f"bad {what} {text[:20]!r}", code=449, where=where)
    return int(text)


# --------------------------------------------------------------------------- requests


def _join_properties(req: JoinRequest) -> tuple[Parameter, ...]:
    props = [
        Parameter(PROP_CONFERENCE, _quote(req.conference)),
        Parameter(PROP_PARTICIPANT, _quote(req.participant)),
        Parameter(PROP_SECURITY, req.security),
    ]
    if req.tls_role is not None:
        props.append(Parameter(PROP_TLS_ROLE, req.tls_role))
    if req.call_id is not None:
        props.append(Parameter(PROP_CALL_ID, _quote(req.call_id)))
    if req.psk is not None:
        props.append(Parameter(PROP_PSK_KEY, req.psk.key.hex()))
        props.append(Parameter(PROP_PSK_ID, req.psk.identity.hex()))
        props.append(Parameter(PROP_PSK_SUITES, ":".join(req.psk.ciphersuites)))
    return tuple(props)


def encode_request(req: AnyRequest) -> tuple[Action, ...]:
    """The actions of the transaction request for ``req`` (see docs/mp-profile.md)."""
    if isinstance(req, JoinRequest):
        stream = Stream(
            STREAM_ID,
            LocalControl("SendReceive", _join_properties(req)),
            _local_sdp(req),
            _remote_sdp(req),
        )
        events = Events(EVENTS_REQUEST_ID, (Event(EVENT_STREAM),))
        termination = TERMINATION_PREFIX[req.media] + CHOOSE
        command = Command("Add", termination, (MediaDescriptor((stream,)), events))
        return (Action(CHOOSE if req.context is None else req.context, (command,)),)
    if isinstance(req, ConnectRequest):
        media = _media_of_termination(req.termination)
        remote = (
            "v=0",
            _c_line(req.remote),
            f"m={SDP_MEDIA[media]} {req.remote.port} TCP *",
        )
        stream = Stream(STREAM_ID, remote=remote)
        signals = Signals((Event(SIGNAL_CONNECT),))
        command = Command("Modify", req.termination, (MediaDescriptor((stream,)), signals))
        return (Action(req.context, (command,)),)
    if isinstance(req, StartTlsRequest):
        command = Command("Modify", req.termination, (Signals((Event(SIGNAL_START_TLS),)),))
        return (Action(req.context, (command,)),)
    if isinstance(req, LeaveRequest):
        return (Action(req.context, (Command("Subtract", req.termination),)),)
    if isinstance(req, NotifyRequest):
        ev = req.event
        params = [Parameter("kind", ev.kind)]
        if ev.reason:
            params.append(Parameter("reason", _quote(ev.reason)[:200]))
        observed = ObservedEvents(
            EVENTS_REQUEST_ID, (ObservedEvent(EVENT_STREAM, req.timestamp, tuple(params)),)
        )
        return (Action(ev.context, (Command("Notify", ev.termination, (observed,)),)),)
    if isinstance(req, ServiceChangeRequest):
        method, reason = _SERVICE_CHANGES[req.kind]
        params_sc = ServiceChangeParameters(method=method, reason=reason, profile=req.profile)
        return (Action(NULL_CONTEXT, (Command("ServiceChange", ROOT, (params_sc,)),)),)
    raise LocalIqError(f"not an Mp request: {type(req).__name__}")


def _single_command(actions: Sequence[Action]) -> tuple[Action, Command]:
    if len(actions) != 1:
        raise ProfileError(f"expected one action, got {len(actions)}", code=421)
    action = actions[0]
    if len(action.commands) != 1:
        raise ProfileError(f"expected one command, got {len(action.commands)}", code=421)
    return action, action.commands[0]


def _only(cmd: Command, allowed: tuple[type, ...]) -> None:
    seen: set[type] = set()
    for d in cmd.descriptors:
        if not isinstance(d, allowed):
            raise ProfileError(
                f"{type(d).__name__} not legal in {cmd.name}", code=450, where=cmd.termination_id
            )
        if type(d) in seen:
            raise ProfileError(
                f"{type(d).__name__} twice in {cmd.name}", code=451, where=cmd.termination_id
            )
        seen.add(type(d))


def _one_stream(cmd: Command) -> Stream:
    media = cmd.find(MediaDescriptor)
    if media is None or len(media.streams) != 1:
        raise ProfileError(
            "expected a Media descriptor with one Stream", code=445, where=cmd.termination_id
        )
    stream = media.streams[0]
    if stream.stream_id != STREAM_ID:
        raise ProfileError(
            f"stream id {stream.stream_id}, expected {STREAM_ID}",
            code=449,
            where=cmd.termination_id,
        )
    return stream


def _context(action: Action, where: str) -> int:
    if not isinstance(action.context_id, int) or action.context_id == 0:
        raise ProfileError(f"command in context {action.context_id!r}", code=421, where=where)
    return action.context_id


def _properties(stream: Stream, where: str) -> dict[str, str]:
    props: dict[str, str] = {}
    control = stream.local_control
    if control is None:
        raise ProfileError("LocalControl missing", code=445, where=where)
    for p in control.properties:
        package = p.name.split("/", 1)[0].lower()
        if package not in PACKAGES:
            raise ProfileError(f"unsupported package {package[:20]!r}", code=444, where=where)
        name = p.name.lower()
        if name not in _JOIN_PROPERTIES:
            raise ProfileError(f"unknown property {p.name[:40]!r}", code=449, where=where)
        if name in props:
            raise ProfileError(f"property {p.name} twice", code=451, where=where)
        props[name] = p.value
    return props


_JOIN_PROPERTIES = {
    PROP_CONFERENCE,
    PROP_PARTICIPANT,
    PROP_SECURITY,
    PROP_TLS_ROLE,
    PROP_CALL_ID,
    PROP_PSK_KEY,
    PROP_PSK_ID,
    PROP_PSK_SUITES,
}
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})*$")


def _psk(props: dict[str, str], where: str) -> PskConfig | None:
    key, ident, suites = (props.get(n) for n in (PROP_PSK_KEY, PROP_PSK_ID, PROP_PSK_SUITES))
    if key is None and ident is None and suites is None:
        return None
    if key is None or ident is None or suites is None:
        raise ProfileError("e2aepsk needs key, id and suites", code=449, where=where)
    # Never put the key's text in an error: it could be the key.
    if not key or not _HEX.fullmatch(key) or len(key) > 256:
        raise ProfileError("bad e2aepsk/key value", code=449, where=where)
    if not _HEX.fullmatch(ident) or len(ident) > 256:
        raise ProfileError("bad e2aepsk/id value", code=449, where=where)
    names = tuple(s for s in suites.split(":") if s)
    try:
        return PskConfig(bytes.fromhex(key), bytes.fromhex(ident), names)
    except LocalIqError as exc:
        raise ProfileError(str(exc)[:120], code=449, where=where) from None


def _choice(value: str | None, allowed: Sequence[str], what: str, where: str) -> str | None:
    if value is None:
        return None
    if value.lower() not in allowed:
        raise ProfileError(f"bad {what} {value[:20]!r}", code=449, where=where)
    return value.lower()


def _decode_join(action: Action, cmd: Command) -> JoinRequest:
    where = cmd.termination_id
    if action.context_id == CHOOSE:
        context = None
    elif isinstance(action.context_id, int) and action.context_id != 0:
        context = action.context_id
    else:
        raise ProfileError(f"Add in context {action.context_id!r}", code=421, where=where)
    media: Media
    if cmd.termination_id.lower() == "msrp/$":
        media = "msrp"
    elif cmd.termination_id.lower() == "bfcp/$":
        media = "bfcp"
    else:
        raise ProfileError("expected Add = msrp/$ or bfcp/$", code=430, where=where)
    _only(cmd, (MediaDescriptor, Events))
    stream = _one_stream(cmd)
    props = _properties(stream, where)
    if stream.local is None:
        raise ProfileError("Local descriptor missing", code=445, where=where)
    conference = props.get(PROP_CONFERENCE)
    participant = props.get(PROP_PARTICIPANT)
    if not conference or not participant:
        raise ProfileError("e2aemp/conf and e2aemp/part are required", code=449, where=where)
    security = _choice(props.get(PROP_SECURITY), SECURITIES, "security", where)
    if security is None:
        raise ProfileError("e2aemp/sec is required", code=449, where=where)
    tls_role = _choice(props.get(PROP_TLS_ROLE), TLS_ROLES, "TLS role", where)
    call_id = props.get(PROP_CALL_ID)
    psk = _psk(props, where)
    local = parse_sdp(stream.local, where)
    if local.media != SDP_MEDIA[media]:
        raise ProfileError(f"media {str(local.media)[:20]!r} in {media} Add", code=449, where=where)
    proto = PROTOS[(media, security)]  # type: ignore[index]
    if local.proto is None or local.proto.upper() != proto:
        raise ProfileError(
            f"proto {str(local.proto)[:20]!r} does not match {security}", code=449, where=where
        )
    if local.setup not in TCP_ROLES:
        raise ProfileError("a=setup:active or a=setup:passive required", code=445, where=where)
    remote_lines = stream.remote or ()
    remote = _sdp_endpoint(remote_lines, where)
    paths = _attributes(remote_lines, "path")
    remote_path = tuple(uri for line in paths for uri in line.split())
    bfcp_user = None
    floors: tuple[int, ...] = ()
    if media == "bfcp":
        users = _attributes(stream.local, "userid")
        if len(users) > 1:
            raise ProfileError("a=userid twice", code=449, where=where)
        if users:
            bfcp_user = _small_int(users[0], "BFCP user id", where)
        floors = tuple(
            _small_int(f.split()[0] if f.split() else "", "floor id", where)
            for f in _attributes(stream.local, "floorid")
        )
    try:
        return JoinRequest(
            conference=_unquote(conference, where),
            context=context,
            participant=_unquote(participant, where),
            media=media,
            tcp_role=local.setup,
            security=security,  # type: ignore[arg-type]
            tls_role=tls_role,  # type: ignore[arg-type]
            psk=psk,
            remote=remote,
            remote_path=remote_path,
            bfcp_user=bfcp_user,
            floors=floors,
            call_id=None if call_id is None else _unquote(call_id, where),
        )
    except LocalIqError as exc:
        raise ProfileError(str(exc)[:120], code=449, where=where) from None


def _signal(cmd: Command) -> str:
    signals = cmd.find(Signals)
    where = cmd.termination_id
    if signals is None or len(signals.signals) != 1:
        raise ProfileError("expected one signal", code=421, where=where)
    sig = signals.signals[0]
    name = sig.name.lower()
    if name.split("/", 1)[0] not in PACKAGES:
        raise ProfileError(f"unsupported package in {sig.name[:40]!r}", code=444, where=where)
    if name not in (SIGNAL_CONNECT, SIGNAL_START_TLS):
        raise ProfileError(f"unknown signal {sig.name[:40]!r}", code=447, where=where)
    if sig.parameters:
        raise ProfileError("unexpected signal parameters", code=449, where=where)
    return name


def _decode_modify(action: Action, cmd: Command) -> ConnectRequest | StartTlsRequest:
    where = cmd.termination_id
    context = _context(action, where)
    if CHOOSE in where or "*" in where:
        raise ProfileError("Modify needs a termination id", code=430, where=where)
    _only(cmd, (MediaDescriptor, Signals))
    signal = _signal(cmd)
    if signal == SIGNAL_START_TLS:
        if cmd.find(MediaDescriptor) is not None:
            raise ProfileError("StartTls carries no Media", code=450, where=where)
        return StartTlsRequest(context, cmd.termination_id)
    stream = _one_stream(cmd)
    if stream.local_control is not None or stream.local is not None:
        raise ProfileError("Connect carries only Remote", code=450, where=where)
    remote = _sdp_endpoint(stream.remote or (), where)
    if remote is None:
        raise ProfileError("Connect needs the Remote address", code=445, where=where)
    return ConnectRequest(context, cmd.termination_id, remote)


def _decode_subtract(action: Action, cmd: Command) -> LeaveRequest:
    where = cmd.termination_id
    context = _context(action, where)
    if CHOOSE in where or "*" in where:
        raise ProfileError("Subtract needs a termination id", code=430, where=where)
    _only(cmd, ())
    return LeaveRequest(context, cmd.termination_id)


def _decode_notify(action: Action, cmd: Command) -> NotifyRequest:
    where = cmd.termination_id
    context = _context(action, where)
    _only(cmd, (ObservedEvents,))
    observed = cmd.find(ObservedEvents)
    if observed is None or len(observed.events) != 1:
        raise ProfileError("expected one observed event", code=445, where=where)
    ev = observed.events[0]
    if ev.name.lower() != EVENT_STREAM:
        if ev.name.split("/", 1)[0].lower() not in PACKAGES:
            raise ProfileError(f"unsupported package in {ev.name[:40]!r}", code=444, where=where)
        raise ProfileError(f"unknown event {ev.name[:40]!r}", code=446, where=where)
    params = {p.name.lower(): p.value for p in ev.parameters}
    kind = params.pop("kind", None)
    reason = params.pop("reason", "")
    if params:
        raise ProfileError(f"unknown event parameters {sorted(params)[:3]}", code=449, where=where)
    if kind is None:
        raise ProfileError("event without kind", code=457, where=where)
    if kind.lower() not in EVENT_KINDS:
        raise ProfileError(f"unknown event kind {kind[:30]!r}", code=449, where=where)
    event = MpEvent(context, cmd.termination_id, kind.lower(), _unquote(reason, where))  # type: ignore[arg-type]
    return NotifyRequest(event, ev.timestamp)


def _decode_service_change(action: Action, cmd: Command) -> ServiceChangeRequest:
    if action.context_id != NULL_CONTEXT or cmd.termination_id != ROOT:
        raise ProfileError("ServiceChange must be on ROOT in the null context", code=421)
    _only(cmd, (ServiceChangeParameters,))
    params = cmd.find(ServiceChangeParameters)
    if params is None or params.method is None:
        raise ProfileError("ServiceChange without method", code=445, where=ROOT)
    if params.profile is not None and params.profile.lower() != PROFILE:
        raise ProfileError(f"unsupported profile {params.profile[:30]!r}", code=449, where=ROOT)
    reason = (params.reason or "").split(" ", 1)[0]
    if params.method == "Restart":
        return ServiceChangeRequest("restart" if reason == "902" else "register")
    if params.method in ("Forced", "Graceful", "Disconnected"):
        return ServiceChangeRequest("forced")
    raise ProfileError(f"unsupported method {params.method!r}", code=449, where=ROOT)


def decode_request(actions: Sequence[Action]) -> AnyRequest:
    """The Mp request of a transaction request; :class:`~iq.errors.ProfileError` with the
    H.248 error code for anything else."""
    action, cmd = _single_command(actions)
    if cmd.name == "Add":
        return _decode_join(action, cmd)
    if cmd.name == "Modify":
        return _decode_modify(action, cmd)
    if cmd.name == "Subtract":
        return _decode_subtract(action, cmd)
    if cmd.name == "Notify":
        return _decode_notify(action, cmd)
    if cmd.name == "ServiceChange":
        return _decode_service_change(action, cmd)
    raise ProfileError(f"{cmd.name} is not an Mp command", code=421, where=cmd.termination_id)


# --------------------------------------------------------------------------- replies


def _request_context(request: AnyRequest) -> int:
    if isinstance(request, NotifyRequest):
        return request.event.context
    if isinstance(request, ConnectRequest | StartTlsRequest | LeaveRequest):
        return request.context
    raise LocalIqError(f"{type(request).__name__} has no context")


def _request_termination(request: AnyRequest) -> str:
    if isinstance(request, NotifyRequest):
        return request.event.termination
    if isinstance(request, ConnectRequest | StartTlsRequest | LeaveRequest):
        return request.termination
    raise LocalIqError(f"{type(request).__name__} has no termination")


def encode_reply(request: AnyRequest, reply: AnyReply) -> tuple[Action, ...]:
    """The actions of the transaction reply answering ``request`` with ``reply``."""
    if isinstance(request, JoinRequest) and isinstance(reply, JoinReply):
        if request.context is not None and reply.context != request.context:
            raise LocalIqError(f"Join into {request.context} answered from {reply.context}")
        proto = PROTOS[(request.media, request.security)]
        lines = [
            "v=0",
            _c_line(reply.local),
            f"m={SDP_MEDIA[request.media]} {reply.local.port} {proto} *",
            f"a=setup:{request.tcp_role}",
        ]
        if reply.local_path is not None:
            if not reply.local_path or any(ch.isspace() for ch in reply.local_path):
                raise LocalIqError(f"bad MSRP URI {reply.local_path!r}")
            lines.append(f"a=path:{reply.local_path}")
        stream = Stream(STREAM_ID, local=tuple(lines))
        command = Command("Add", reply.termination, (MediaDescriptor((stream,)),))
        return (Action(reply.context, (command,)),)
    if isinstance(request, ConnectRequest | StartTlsRequest) and isinstance(reply, AckReply):
        return (Action(request.context, (Command("Modify", request.termination),)),)
    if isinstance(request, LeaveRequest) and isinstance(reply, LeaveReply):
        st = reply.statistics
        values = (
            Parameter(STAT_OCTETS_IN, str(st.octets_in)),
            Parameter(STAT_OCTETS_OUT, str(st.octets_out)),
            Parameter(STAT_MESSAGES_IN, str(st.messages_in)),
            Parameter(STAT_MESSAGES_OUT, str(st.messages_out)),
        )
        command = Command("Subtract", request.termination, (Statistics(values),))
        return (Action(request.context, (command,)),)
    if isinstance(request, NotifyRequest) and isinstance(reply, NotifyReply):
        ev = request.event
        return (Action(ev.context, (Command("Notify", ev.termination),)),)
    if isinstance(request, ServiceChangeRequest) and isinstance(reply, ServiceChangeReply):
        params = ServiceChangeParameters(profile=reply.profile)
        return (Action(NULL_CONTEXT, (Command("ServiceChange", ROOT, (params,)),)),)
    raise LocalIqError(f"{type(reply).__name__} does not answer {type(request).__name__}")


def reply_error(actions: Sequence[Action], error: ErrorDescriptor | None) -> None:
    """Raise :class:`~iq.errors.RequestFailed` (with the peer's code) if the reply carries an
    Error descriptor, at transaction or action level."""
    if error is not None:
        raise RequestFailed(error.text or "request failed", code=error.code)
    for action in actions:
        if action.error is not None:
            raise RequestFailed(action.error.text or "request failed", code=action.error.code)


def _int_stat(value: str, where: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 20) or int(value) >= 2**64:
        raise ProfileError(f"bad statistic {value[:25]!r}", code=449, where=where)
    return int(value)


def decode_reply(request: AnyRequest, actions: Sequence[Action]) -> AnyReply:
    """The typed reply to ``request`` (call :func:`reply_error` first)."""
    action, cmd = _single_command(actions)
    where = cmd.termination_id
    if isinstance(request, JoinRequest):
        if cmd.name != "Add":
            raise ProfileError(f"{cmd.name} answers an Add", code=421, where=where)
        context = _context(action, where)
        if request.context is not None and context != request.context:
            raise ProfileError(f"reply from context {context}", code=411, where=where)
        if not cmd.termination_id.lower().startswith(TERMINATION_PREFIX[request.media]):
            raise ProfileError(f"{request.media} termination expected", code=430, where=where)
        if CHOOSE in where or "*" in where:
            raise ProfileError("the MRFP must choose the termination", code=430, where=where)
        stream = _one_stream(cmd)
        if stream.local is None:
            raise ProfileError("Local descriptor missing", code=445, where=where)
        local = _sdp_endpoint(stream.local, where)
        if local is None:
            raise ProfileError("the MRFP's address is missing", code=445, where=where)
        paths = _attributes(stream.local, "path")
        local_path: str | None = None
        if request.media == "msrp":
            if len(paths) != 1 or not paths[0] or len(paths[0].split()) != 1:
                raise ProfileError("one a=path URI expected", code=445, where=where)
            local_path = paths[0]
        return JoinReply(context, cmd.termination_id, local, local_path)
    if isinstance(request, ServiceChangeRequest):
        if cmd.name != "ServiceChange":
            raise ProfileError(f"{cmd.name} answers a ServiceChange", code=421, where=where)
        params = cmd.find(ServiceChangeParameters)
        profile = params.profile if params is not None and params.profile else PROFILE
        return ServiceChangeReply(profile)
    expected = {
        ConnectRequest: "Modify",
        StartTlsRequest: "Modify",
        LeaveRequest: "Subtract",
        NotifyRequest: "Notify",
    }[type(request)]
    if cmd.name != expected:
        raise ProfileError(f"{cmd.name} answers a {expected}", code=421, where=where)
    if action.context_id != _request_context(request) or where != _request_termination(request):
        raise ProfileError("reply for another context or termination", code=411, where=where)
    if isinstance(request, LeaveRequest):
        stats = cmd.find(Statistics)
        values = {p.name.lower(): p.value for p in stats.values} if stats is not None else {}
        return LeaveReply(
            StreamStatistics(
                *(
                    _int_stat(values.get(name, "0"), where)
                    for name in (
                        STAT_OCTETS_IN,
                        STAT_OCTETS_OUT,
                        STAT_MESSAGES_IN,
                        STAT_MESSAGES_OUT,
                    )
                )
            )
        )
    if isinstance(request, NotifyRequest):
        return NotifyReply()
    return AckReply()
