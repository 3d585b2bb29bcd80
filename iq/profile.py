"""The e2ae Iq profile: typed operations of TS 23.334 mapped to and from H.248 commands.

Pure (no I/O, no clock). Each request type has ``encode_request(req) -> actions`` and is
recovered by :func:`decode_request`; each reply by :func:`encode_reply` / :func:`decode_reply`.
The wire layout is described in docs/iq-profile.md; in short:

- Reserve AGW connection point: ``Add = acc/$`` and ``Add = core/$`` per stream in one context
  (``Context = $`` for a new call, or the call's context to add streams to it). The H.248 stream
  id is the stream number (m-line index + 1); the call id travels as the ``e2ae/callid``
  property in ``LocalControl``. SDP fragments in ``Local`` (what the AGW chooses: ``$``) and
  ``Remote`` (the UE's ``a=fingerprint`` lines, known addresses).
- Configure AGW connection point: ``Modify`` with ``Remote`` (address, ``a=setup``, the UE's
  fingerprints), ``Local`` (``a=setup`` of the AGW if it changed) and ``Signals { tlsc/est }``.
- Release: ``Subtract``; the reply carries ``Statistics`` per termination.
- Notify: ``ObservedEvents = <stream> { <timestamp>:<event> }``.
- ServiceChange on ``ROOT`` in the null context: register, restart, forced.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Sequence
from typing import Literal, TypeAlias, TypeVar

import attrs

from certs.errors import CertsError
from certs.fingerprint import Fingerprint
from e2ae.tcpmedia import SETUPS, Setup
from iq.codec import (
    CHOOSE,
    NULL_CONTEXT,
    Action,
    Command,
    ContextId,
    ErrorDescriptor,
    Event,
    Events,
    LocalControl,
    Media,
    ObservedEvent,
    ObservedEvents,
    Parameter,
    ServiceChangeParameters,
    Signals,
    Statistics,
    Stream,
    slot_maker,
)
from iq.errors import LocalIqError, ProfileError, RequestFailed

_T = TypeVar("_T")

#: The ServiceChange profile name and version of this profile.
PROFILE = "e2aeiq/1"

# Package items (H.248.90 / H.248.89 style; the project's own names, see docs/iq-profile.md).
CALL_ID_PROPERTY = "e2ae/callid"
SIGNAL_ESTABLISH_TLS = "tlsc/est"
EVENT_TLS_ESTABLISHED = "tlsc/estd"
EVENT_TLS_FAILURE = "tlsc/fail"
EVENT_STREAM_FAILED = "tlsc/sfail"
EVENT_TCP_FAILURE = "tcpc/fail"
EVENT_CONNECTION_CLOSED = "tcpc/closed"
STAT_OCTETS_SENT = "nt/os"
STAT_OCTETS_RECEIVED = "nt/or"
STAT_PACKETS_SENT = "tcpc/ps"
STAT_PACKETS_RECEIVED = "tcpc/pr"
STAT_TLS_RESULT = "tlsc/res"

ACCESS_PREFIX = "acc/"
CORE_PREFIX = "core/"
ROOT = "ROOT"

MediaType = Literal["message", "application"]
ACCESS_PROTOS = {"message": "TCP/TLS/MSRP", "application": "TCP/TLS/BFCP"}
CORE_PROTOS = {"message": "TCP/MSRP", "application": "TCP/BFCP"}

EventKind = Literal[
    "tls-established", "tls-failure", "tcp-failure", "connection-closed", "stream-failed"
]
_EVENT_NAMES: dict[str, str] = {
    "tls-established": EVENT_TLS_ESTABLISHED,
    "tls-failure": EVENT_TLS_FAILURE,
    "tcp-failure": EVENT_TCP_FAILURE,
    "connection-closed": EVENT_CONNECTION_CLOSED,
    "stream-failed": EVENT_STREAM_FAILED,
}
_EVENT_KINDS = {v: k for k, v in _EVENT_NAMES.items()}
ACCESS_EVENTS = (
    EVENT_TLS_ESTABLISHED,
    EVENT_TLS_FAILURE,
    EVENT_STREAM_FAILED,
    EVENT_TCP_FAILURE,
    EVENT_CONNECTION_CLOSED,
)
CORE_EVENTS = (EVENT_TCP_FAILURE, EVENT_CONNECTION_CLOSED)

TlsFailureCause = Literal[
    "fingerprint-mismatch",
    "no-certificate",
    "protocol-version",
    "handshake-timeout",
    "handshake-failure",
    "fingerprint-unknown",
    "connection-failed",
]
_CAUSE_CODES: dict[str, str] = {
    "fingerprint-mismatch": "fpmm",
    "no-certificate": "nocert",
    "protocol-version": "protover",
    "handshake-timeout": "hstimeout",
    "handshake-failure": "hsfail",
    "fingerprint-unknown": "fpunknown",
    "connection-failed": "connfail",
}
_CAUSES = {v: k for k, v in _CAUSE_CODES.items()}

TlsResult = Literal["established", "failed", "none"]
TLS_RESULTS: tuple[TlsResult, ...] = ("established", "failed", "none")

ServiceChangeKind = Literal["register", "restart", "forced"]
_SERVICE_CHANGES: dict[str, tuple[str, str]] = {
    "register": ("Restart", "901 Cold Boot"),
    "restart": ("Restart", "902 Warm Boot"),
    "forced": ("Forced", "905 Termination taken out of service"),
}


# --------------------------------------------------------------------------- values


@functools.lru_cache(maxsize=1024)
def _ip_text(value: str) -> str | None:
    """The canonical text of an IP address, ``None`` if ``value`` is not one. Remembered: a
    handful of addresses (the AGW's, the UEs') come back in every Reserve and its reply."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _check_ip(instance: object, attribute: object, value: str) -> None:
    if _ip_text(value) is None:
        raise LocalIqError(f"not an IP address: {value!r}")


def _check_port(instance: object, attribute: object, value: int) -> None:
    if not 0 <= value <= 65535:
        raise LocalIqError(f"port out of range: {value}")


@attrs.frozen
class Endpoint:
    """An IP address (literal) and TCP port."""

    host: str = attrs.field(validator=_check_ip)
    port: int = attrs.field(validator=_check_port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _check_stream(instance: object, attribute: object, value: int) -> None:
    if not 1 <= value <= 65535:
        raise LocalIqError(f"stream number must be 1..65535, got {value}")


def _check_media(instance: object, attribute: object, value: str) -> None:
    if value not in ACCESS_PROTOS:
        raise LocalIqError(f"media must be message or application, got {value!r}")


def _check_setup(instance: object, attribute: object, value: str | None) -> None:
    if value is not None and value not in SETUPS:
        raise LocalIqError(f"bad setup role {value!r}")


@attrs.frozen
class StreamReservation:
    """One stream of a Reserve request: an access (TLS towards the UE) and a core (plain TCP)
    termination. ``access_setup``/``core_setup`` are the AGW's own TCP (and TLS) roles."""

    stream: int = attrs.field(validator=_check_stream)
    media: MediaType = attrs.field(validator=_check_media)
    access_setup: Setup = attrs.field(validator=_check_setup)
    core_setup: Setup = attrs.field(validator=_check_setup)
    ue_fingerprints: tuple[Fingerprint, ...] = ()
    ue_address: Endpoint | None = None
    ue_setup: Setup | None = attrs.field(default=None, validator=_check_setup)
    core_address: Endpoint | None = None
    core_remote_setup: Setup | None = attrs.field(default=None, validator=_check_setup)

    @property
    def access_proto(self) -> str:
        return ACCESS_PROTOS[self.media]

    @property
    def core_proto(self) -> str:
        return CORE_PROTOS[self.media]


@attrs.frozen
class ReserveRequest:
    """Reserve AGW connection points for the streams of one call.

    ``context`` None opens a new context (``Context = $``); an id adds streams to that call's
    context. ``agw_fingerprint_hash`` is the hash of the fingerprint the AGW returns."""

    call_id: str
    streams: tuple[StreamReservation, ...]
    context: int | None = None
    agw_fingerprint_hash: str = "sha-256"

    def __attrs_post_init__(self) -> None:
        if not self.streams:
            raise LocalIqError("a reservation needs at least one stream")
        numbers = [s.stream for s in self.streams]
        if len(set(numbers)) != len(numbers):
            raise LocalIqError(f"stream numbers repeat: {numbers}")


@attrs.frozen
class ReservedStream:
    """What the AGW reserved for one stream."""

    stream: int
    access_termination: str
    core_termination: str
    access: Endpoint
    core: Endpoint
    agw_fingerprint: Fingerprint
    access_setup: Setup
    core_setup: Setup


@attrs.frozen
class ReserveReply:
    context: int
    streams: tuple[ReservedStream, ...]

    def stream(self, number: int) -> ReservedStream:
        for s in self.streams:
            if s.stream == number:
                return s
        raise KeyError(number)


@attrs.frozen
class StreamConfiguration:
    """Configure one reserved stream: what the answer (or the UE) told us.

    Remote UE side: ``ue_address``, ``ue_setup`` (the UE's role), ``ue_fingerprints``; remote
    core side: ``core_address``, ``core_remote_setup``. ``access_setup``/``core_setup`` change
    the AGW's own roles. ``establish_tls`` asks the AGW (TLS client) to connect to the UE.
    Only the terminations of the sides that change are sent: in a decoded request the
    termination of an untouched side is ``""``. ``media`` is needed (for the ``m=`` line) when
    an address is given, and travels only then: decoded, it is ``None`` without an address."""

    stream: int = attrs.field(validator=_check_stream)
    media: MediaType | None = attrs.field(validator=attrs.validators.optional(_check_media))
    access_termination: str
    core_termination: str
    ue_address: Endpoint | None = None
    ue_setup: Setup | None = attrs.field(default=None, validator=_check_setup)
    ue_fingerprints: tuple[Fingerprint, ...] = ()
    core_address: Endpoint | None = None
    core_remote_setup: Setup | None = attrs.field(default=None, validator=_check_setup)
    access_setup: Setup | None = attrs.field(default=None, validator=_check_setup)
    core_setup: Setup | None = attrs.field(default=None, validator=_check_setup)
    establish_tls: bool = False

    def __attrs_post_init__(self) -> None:
        if self.media is None and (self.ue_address or self.core_address):
            raise LocalIqError("the media type is needed to configure an address")

    @property
    def changes_access(self) -> bool:
        return bool(
            self.ue_address
            or self.ue_setup
            or self.ue_fingerprints
            or self.access_setup
            or self.establish_tls
        )

    @property
    def changes_core(self) -> bool:
        return bool(self.core_address or self.core_remote_setup or self.core_setup)


@attrs.frozen
class ConfigureRequest:
    context: int
    streams: tuple[StreamConfiguration, ...]

    def __attrs_post_init__(self) -> None:
        if not any(s.changes_access or s.changes_core for s in self.streams):
            raise LocalIqError("a configuration must change something")


@attrs.frozen
class ConfigureReply:
    context: int


@attrs.frozen
class ReleaseRequest:
    """Release terminations of a context; no terminations means all of them (``Subtract = *``)."""

    context: int
    terminations: tuple[str, ...] = ()


@attrs.frozen
class TerminationStatistics:
    termination: str
    octets_sent: int = 0
    octets_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    tls: TlsResult | None = None


@attrs.frozen
class ReleaseReply:
    context: int
    statistics: tuple[TerminationStatistics, ...]


@attrs.frozen
class IqEvent:
    """An event the AGW reports with Notify.

    ``stream`` is the stream number (the ObservedEvents request id); ``cause`` only for
    ``tls-failure``; ``peer`` the remote address of the connection, where known; ``timestamp``
    the H.248 time stamp (:func:`timestamp`)."""

    kind: EventKind
    context: int
    termination: str
    stream: int
    timestamp: str
    cause: TlsFailureCause | None = None
    peer: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in _EVENT_NAMES:
            raise LocalIqError(f"unknown event kind {self.kind!r}")
        if (self.kind == "tls-failure") != (self.cause is not None):
            raise LocalIqError("a cause goes with tls-failure, and only with it")
        if self.cause is not None and self.cause not in _CAUSE_CODES:
            raise LocalIqError(f"unknown TLS failure cause {self.cause!r}")


@attrs.frozen
class NotifyRequest:
    event: IqEvent


@attrs.frozen
class NotifyReply:
    pass


@attrs.frozen
class ServiceChangeRequest:
    kind: ServiceChangeKind
    profile: str = PROFILE


@attrs.frozen
class ServiceChangeReply:
    profile: str = PROFILE


IqRequest: TypeAlias = (
    ReserveRequest | ConfigureRequest | ReleaseRequest | NotifyRequest | ServiceChangeRequest
)
IqReply: TypeAlias = ReserveReply | ConfigureReply | ReleaseReply | NotifyReply | ServiceChangeReply


def timestamp(now: float) -> str:
    """H.248 time stamp ``yyyymmddThhmmssss`` (UTC, hundredths) of a POSIX time."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 10000:02d}"


# --------------------------------------------------------------------------- SDP fragments


@attrs.frozen
class SdpFragment:
    """The few SDP lines the profile carries in Local/Remote. ``None`` port/host means ``$``."""

    host: str | None = None
    ip_version: str = "IP4"
    media: str | None = None
    port: int | None = None
    proto: str | None = None
    setup: str | None = None
    fingerprints: tuple[Fingerprint, ...] = ()
    fingerprint_request: str | None = None  # hash function of an ``a=fingerprint:$``
    has_connection: bool = False

    def lines(self) -> tuple[str, ...]:
        out = ["v=0"]
        if self.has_connection:
            out.append(f"c=IN {self.ip_version} {CHOOSE if self.host is None else self.host}")
        if self.media is not None:
            port = CHOOSE if self.port is None else str(self.port)
            out.append(f"m={self.media} {port} {self.proto} *")
        if self.setup is not None:
            out.append(f"a=setup:{self.setup}")
        out.extend(fp.attribute() for fp in self.fingerprints)
        if self.fingerprint_request is not None:
            if self.fingerprint_request == "sha-256":
                out.append("a=fingerprint:$")
            else:
                out.append(f"a=fingerprint:{self.fingerprint_request} $")
        return tuple(out)


def sdp_for(
    *,
    endpoint: Endpoint | None,
    media: str | None,
    proto: str | None,
    setup: str | None,
    fingerprints: Sequence[Fingerprint] = (),
    choose: bool = False,
    fingerprint_request: str | None = None,
) -> tuple[str, ...]:
    """SDP lines for an endpoint (or ``$`` for what the AGW chooses when ``choose``): the
    lines of the :class:`SdpFragment` these values make, written without making it."""
    out = ["v=0"]
    if endpoint is not None:
        host = endpoint.host
        out.append(f"c=IN IP6 {host}" if ":" in host else f"c=IN IP4 {host}")
        if media is not None:
            out.append(f"m={media} {endpoint.port} {proto} *")
    elif choose:
        out.append("c=IN IP4 $")
        if media is not None:
            out.append(f"m={media} $ {proto} *")
    if setup is not None:
        out.append(f"a=setup:{setup}")
    out.extend(fp.attribute() for fp in fingerprints)
    if endpoint is None and fingerprint_request is not None:
        if fingerprint_request == "sha-256":
            out.append("a=fingerprint:$")
        else:
            out.append(f"a=fingerprint:{fingerprint_request} $")
    return tuple(out)


def _fingerprint(value: str) -> Fingerprint:
    """``Fingerprint.parse(value)`` (which reads the usual spelling with bytes.fromhex)."""
    return Fingerprint.parse(value)


_new_sdp_fragment = slot_maker(SdpFragment)  # (no validators)
_new_endpoint = slot_maker(Endpoint)
_new_reserved_stream = slot_maker(ReservedStream)
_make_stream_reservation = slot_maker(StreamReservation)


def _new_stream_reservation(stream: int, *values: object) -> StreamReservation:
    """``StreamReservation(stream, *values)`` for values the decoder made: media, setups
    and endpoints that its validators accept by construction; the stream number is checked
    here (the codec takes 0)."""
    _check_stream(None, None, stream)
    return _make_stream_reservation(stream, *values)


_NO_SDP = SdpFragment()


def parse_sdp(lines: Sequence[str], where: str) -> SdpFragment:
    """Read an SDP fragment; lines the profile does not use are ignored."""
    if not lines:  # (no Local or Remote: half the calls)
        return _NO_SDP
    host: str | None = None
    version = "IP4"
    media = port = proto = setup = None
    has_connection = False
    fingerprints: list[Fingerprint] = []
    request: str | None = None
    for line in lines:
        # (the type is what comes before the first "=": "c", "m" or "a" means a line that
        # starts with "c=", "m=" or "a=", or is that letter alone, with an empty value)
        kind = line[:2] if len(line) != 1 else line + "="
        if kind == "c=":
            parts = line[2:].split()
            if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise ProfileError(f"bad connection line {line!r}", code=449, where=where)
            has_connection = True
            version = parts[1]
            if parts[2] != CHOOSE:
                host = _ip_text(parts[2])
                if host is None:
                    raise ProfileError(f"bad address {parts[2]!r}", code=449, where=where)
        elif kind == "m=":
            parts = line[2:].split()
            if len(parts) < 3:
                raise ProfileError(f"bad media line {line!r}", code=449, where=where)
            media, port_text, proto = parts[0], parts[1], parts[2]
            if port_text != CHOOSE:
                digits = port_text.isdigit() and port_text.isascii() and len(port_text) <= 10
                if not digits or int(port_text) > 65535:
                    raise ProfileError(f"bad port in {line!r}", code=449, where=where)
                port = int(port_text)
        elif kind == "a=":
            if line.startswith("setup:", 2):
                setup = line[8:].strip()
                if setup not in SETUPS:
                    raise ProfileError(f"bad setup in {line!r}", code=449, where=where)
            elif line.startswith("fingerprint:", 2):
                fp_value = line[14:].strip()
                parts = fp_value.split()
                if parts == [CHOOSE]:
                    request = "sha-256"
                elif len(parts) == 2 and parts[1] == CHOOSE:
                    request = parts[0].lower()
                else:
                    try:
                        fingerprints.append(_fingerprint(fp_value))
                    except CertsError as exc:
                        raise ProfileError(str(exc), code=449, where=where) from None
    return _new_sdp_fragment(
        host, version, media, port, proto, setup, tuple(fingerprints), request, has_connection
    )


def _endpoint(fragment: SdpFragment, where: str) -> Endpoint | None:
    if fragment.host is None and fragment.port is None:
        return None
    if fragment.host is None or fragment.port is None:
        raise ProfileError("address and port must both be given", code=449, where=where)
    # (parse_sdp checked both: the host is _ip_text's, the port 0..65535)
    return _new_endpoint(fragment.host, fragment.port)


# --------------------------------------------------------------------------- requests


def _context_id(context: int | None) -> ContextId:
    return CHOOSE if context is None else context


def _quote_call_id(call_id: str) -> str:
    # H.248 quoted strings cannot hold '"'; percent-encode it (and '%') to keep the value exact.
    return call_id.replace("%", "%25").replace('"', "%22")


def _unquote_call_id(text: str) -> str:
    return text.replace("%22", '"').replace("%25", "%")


def _local_control(call_id: str | None) -> LocalControl:
    if call_id is None:
        return _NO_CONTROL
    return _new_local_control(
        "SendReceive", (_new_parameter(CALL_ID_PROPERTY, _quote_call_id(call_id)),)
    )


# (value objects: one tuple serves every request)
_ACCESS_EVENT_ITEMS = tuple(Event(e) for e in ACCESS_EVENTS)
_CORE_EVENT_ITEMS = tuple(Event(e) for e in CORE_EVENTS)
# The codec's model classes have no validators, converters or post-init hooks: the encoder
# sets their slots directly (every field given, in order).
_new_action = slot_maker(Action)  # (context_id, commands, error)
_new_command = slot_maker(Command)  # (name, termination_id, descriptors)
_new_media = slot_maker(Media)  # (streams)
_new_stream = slot_maker(Stream)  # (stream_id, local_control, local, remote)
_new_events = slot_maker(Events)  # (request_id, events)
_new_local_control = slot_maker(LocalControl)  # (mode, properties)
_new_parameter = slot_maker(Parameter)  # (name, value)
_NO_CONTROL = LocalControl("SendReceive", ())


_ACCESS_CHOOSE = ACCESS_PREFIX + CHOOSE
_CORE_CHOOSE = CORE_PREFIX + CHOOSE


def _encode_reserve(req: ReserveRequest) -> tuple[Action, ...]:
    commands: list[Command] = []
    control = _local_control(req.call_id)
    for s in req.streams:
        remote_ue: tuple[str, ...] | None = None
        if s.ue_address is not None or s.ue_fingerprints or s.ue_setup is not None:
            remote_ue = sdp_for(
                endpoint=s.ue_address,
                media=s.media,
                proto=s.access_proto,
                setup=s.ue_setup,
                fingerprints=s.ue_fingerprints,
            )
        local_access = sdp_for(
            endpoint=None,
            media=s.media,
            proto=s.access_proto,
            setup=s.access_setup,
            choose=True,
            fingerprint_request=req.agw_fingerprint_hash,
        )
        commands.append(
            _new_command(
                "Add",
                _ACCESS_CHOOSE,
                (
                    _new_media((_new_stream(s.stream, control, local_access, remote_ue),)),
                    _new_events(s.stream, _ACCESS_EVENT_ITEMS),
                ),
            )
        )
        remote_core: tuple[str, ...] | None = None
        if s.core_address is not None or s.core_remote_setup is not None:
            remote_core = sdp_for(
                endpoint=s.core_address,
                media=s.media,
                proto=s.core_proto,
                setup=s.core_remote_setup,
            )
        local_core = sdp_for(
            endpoint=None, media=s.media, proto=s.core_proto, setup=s.core_setup, choose=True
        )
        commands.append(
            _new_command(
                "Add",
                _CORE_CHOOSE,
                (
                    _new_media((_new_stream(s.stream, control, local_core, remote_core),)),
                    _new_events(s.stream, _CORE_EVENT_ITEMS),
                ),
            )
        )
    return (_new_action(_context_id(req.context), tuple(commands), None),)


def _encode_configure(req: ConfigureRequest) -> tuple[Action, ...]:
    commands: list[Command] = []
    for s in req.streams:
        if s.changes_access:
            descriptors: list[Media | Signals] = []
            local = None if s.access_setup is None else ("v=0", f"a=setup:{s.access_setup}")
            remote = None
            if s.ue_address or s.ue_setup or s.ue_fingerprints:
                remote = sdp_for(
                    endpoint=s.ue_address,
                    media=s.media,
                    proto=None if s.media is None else ACCESS_PROTOS[s.media],
                    setup=s.ue_setup,
                    fingerprints=s.ue_fingerprints,
                )
            descriptors.append(_new_media((_new_stream(s.stream, _NO_CONTROL, local, remote),)))
            if s.establish_tls:
                descriptors.append(Signals((Event(SIGNAL_ESTABLISH_TLS),)))
            commands.append(_new_command("Modify", s.access_termination, tuple(descriptors)))
        if s.changes_core:
            local = None if s.core_setup is None else ("v=0", f"a=setup:{s.core_setup}")
            remote = None
            if s.core_address or s.core_remote_setup:
                remote = sdp_for(
                    endpoint=s.core_address,
                    media=s.media,
                    proto=None if s.media is None else CORE_PROTOS[s.media],
                    setup=s.core_remote_setup,
                )
            commands.append(
                _new_command(
                    "Modify",
                    s.core_termination,
                    (_new_media((_new_stream(s.stream, _NO_CONTROL, local, remote),)),),
                )
            )
    return (_new_action(req.context, tuple(commands), None),)


def encode_request(req: IqRequest) -> tuple[Action, ...]:
    """The actions of the transaction request for ``req``."""
    if isinstance(req, ReserveRequest):
        return _encode_reserve(req)
    if isinstance(req, ConfigureRequest):
        return _encode_configure(req)
    if isinstance(req, ReleaseRequest):
        terms = req.terminations or ("*",)
        subtracts = tuple([_new_command("Subtract", t, ()) for t in terms])
        return (_new_action(req.context, subtracts, None),)
    if isinstance(req, NotifyRequest):
        ev = req.event
        params: list[Parameter] = []
        if ev.cause is not None:
            params.append(Parameter("cause", _CAUSE_CODES[ev.cause]))
        if ev.peer is not None:
            params.append(Parameter("peer", ev.peer))
        observed = ObservedEvent(_EVENT_NAMES[ev.kind], ev.timestamp, tuple(params))
        return (
            Action(
                ev.context,
                (Command("Notify", ev.termination, (ObservedEvents(ev.stream, (observed,)),)),),
            ),
        )
    method, reason = _SERVICE_CHANGES[req.kind]
    params_sc = ServiceChangeParameters(method=method, reason=reason, profile=req.profile)
    return (Action(NULL_CONTEXT, (Command("ServiceChange", ROOT, (params_sc,)),)),)


def _single_action(actions: Sequence[Action]) -> Action:
    if len(actions) != 1:
        raise ProfileError(f"expected one action, got {len(actions)}", code=421)
    return actions[0]


def _only(cmd: Command, allowed: tuple[type, ...]) -> None:
    for d in cmd.descriptors:
        if not isinstance(d, allowed):
            raise ProfileError(
                f"{type(d).__name__} not legal in {cmd.name}", code=450, where=cmd.termination_id
            )


def _one_stream(cmd: Command) -> Stream:
    media = cmd.find(Media)
    if media is None or len(media.streams) != 1:
        raise ProfileError(
            "expected a Media descriptor with one Stream", code=445, where=cmd.termination_id
        )
    return media.streams[0]


def _call_id(stream: Stream) -> str | None:
    if stream.local_control is None:
        return None
    for p in stream.local_control.properties:
        if p.name == CALL_ID_PROPERTY:
            return _unquote_call_id(p.value)
    return None


def _setup(value: str | None, where: str, *, required: bool = False) -> Setup | None:
    if value is None:
        if required:
            raise ProfileError("a=setup missing", code=445, where=where)
        return None
    for s in SETUPS:
        if s == value:
            return s
    raise ProfileError(f"bad setup {value!r}", code=449, where=where)


def _media(value: str | None, where: str) -> MediaType:
    if value == "message":
        return "message"
    if value == "application":
        return "application"
    raise ProfileError(f"unsupported media {value!r}", code=449, where=where)


def _decode_reserve(action: Action) -> ReserveRequest:
    cmds = action.commands
    if len(cmds) % 2 or not all(c.name == "Add" for c in cmds):
        raise ProfileError("Reserve is pairs of Add", code=421)
    if action.context_id == CHOOSE:
        context = None
    elif isinstance(action.context_id, int):
        context = action.context_id
    else:
        raise ProfileError(f"Add in context {action.context_id!r}", code=421)
    streams: list[StreamReservation] = []
    call_ids: set[str] = set()
    hashes: set[str] = set()
    for acc, core in zip(cmds[0::2], cmds[1::2], strict=True):
        if acc.termination_id != ACCESS_PREFIX + CHOOSE:
            raise ProfileError("expected Add = acc/$", code=430, where=acc.termination_id)
        if core.termination_id != CORE_PREFIX + CHOOSE:
            raise ProfileError("expected Add = core/$", code=430, where=core.termination_id)
        for cmd in (acc, core):
            _only(cmd, (Media, Events))
        a_stream, c_stream = _one_stream(acc), _one_stream(core)
        where = f"{acc.termination_id} stream {a_stream.stream_id}"
        if a_stream.stream_id != c_stream.stream_id:
            raise ProfileError("access and core stream ids differ", code=449, where=where)
        if a_stream.local is None or c_stream.local is None:
            raise ProfileError("Local descriptor missing", code=445, where=where)
        a_local = parse_sdp(a_stream.local, where)
        c_local = parse_sdp(c_stream.local, where)
        media = _media(a_local.media, where)
        if a_local.proto != ACCESS_PROTOS[media] or c_local.proto != CORE_PROTOS[media]:
            raise ProfileError(
                f"unsupported protos {a_local.proto!r}/{c_local.proto!r}", code=449, where=where
            )
        if a_local.fingerprint_request is None:
            raise ProfileError("a=fingerprint:$ missing in Local", code=445, where=where)
        hashes.add(a_local.fingerprint_request)
        a_remote = parse_sdp(a_stream.remote or (), where)
        c_remote = parse_sdp(c_stream.remote or (), where)
        call_id = _call_id(a_stream)
        if call_id is not None:
            call_ids.add(call_id)
        try:
            streams.append(
                _new_stream_reservation(
                    a_stream.stream_id,
                    media,
                    _setup(a_local.setup, where, required=True) or "passive",
                    _setup(c_local.setup, where, required=True) or "active",
                    a_remote.fingerprints,
                    _endpoint(a_remote, where),
                    _setup(a_remote.setup, where),
                    _endpoint(c_remote, where),
                    _setup(c_remote.setup, where),
                )
            )
        except LocalIqError as exc:
            raise ProfileError(str(exc), code=449, where=where) from None
    if len(call_ids) > 1 or len(hashes) > 1:
        raise ProfileError("streams of one reservation disagree on call id or hash", code=449)
    try:
        return ReserveRequest(
            call_id=call_ids.pop() if call_ids else "",
            streams=tuple(streams),
            context=context,
            agw_fingerprint_hash=hashes.pop(),
        )
    except LocalIqError as exc:
        raise ProfileError(str(exc), code=449) from None


@attrs.define
class _Side:
    termination: str
    stream: int
    media: MediaType | None
    remote: Endpoint | None
    remote_setup: Setup | None
    local_setup: Setup | None
    fingerprints: tuple[Fingerprint, ...]
    establish: bool


def _decode_modify(cmd: Command, access: bool) -> _Side:
    where = cmd.termination_id
    _only(cmd, (Media, Signals))
    stream = _one_stream(cmd)
    local = parse_sdp(stream.local or (), where)
    remote = parse_sdp(stream.remote or (), where)
    signals = cmd.find(Signals)
    establish = False
    if signals is not None:
        names = [sig.name for sig in signals.signals]
        if not access or names not in ([], [SIGNAL_ESTABLISH_TLS]):
            raise ProfileError(f"unsupported signals {names}", code=447, where=where)
        establish = bool(names)
    if not access and remote.fingerprints:
        raise ProfileError("fingerprints on the core side", code=449, where=where)
    return _Side(
        termination=where,
        stream=stream.stream_id,
        media=None if remote.media is None else _media(remote.media, where),
        remote=_endpoint(remote, where),
        remote_setup=_setup(remote.setup, where),
        local_setup=_setup(local.setup, where),
        fingerprints=remote.fingerprints,
        establish=establish,
    )


def _decode_configure(action: Action) -> ConfigureRequest:
    if not isinstance(action.context_id, int):
        raise ProfileError(f"Modify in context {action.context_id!r}", code=421)
    sides: dict[int, dict[bool, _Side]] = {}
    for cmd in action.commands:
        access = cmd.termination_id.startswith(ACCESS_PREFIX)
        if not access and not cmd.termination_id.startswith(CORE_PREFIX):
            raise ProfileError("unknown termination", code=430, where=cmd.termination_id)
        side = _decode_modify(cmd, access)
        slot = sides.setdefault(side.stream, {})
        if access in slot:
            raise ProfileError("stream modified twice", code=421, where=cmd.termination_id)
        slot[access] = side
    streams: list[StreamConfiguration] = []
    for number, slot in sides.items():
        acc, core = slot.get(True), slot.get(False)
        media = (acc.media if acc else None) or (core.media if core else None)
        try:
            streams.append(
                StreamConfiguration(
                    stream=number,
                    media=media,
                    access_termination=acc.termination if acc else "",
                    core_termination=core.termination if core else "",
                    ue_address=acc.remote if acc else None,
                    ue_setup=acc.remote_setup if acc else None,
                    ue_fingerprints=acc.fingerprints if acc else (),
                    core_address=core.remote if core else None,
                    core_remote_setup=core.remote_setup if core else None,
                    access_setup=acc.local_setup if acc else None,
                    core_setup=core.local_setup if core else None,
                    establish_tls=acc.establish if acc else False,
                )
            )
        except LocalIqError as exc:
            raise ProfileError(str(exc), code=449, where=f"stream {number}") from None
    try:
        return ConfigureRequest(action.context_id, tuple(streams))
    except LocalIqError as exc:
        raise ProfileError(str(exc), code=449) from None


def decode_request(actions: Sequence[Action]) -> IqRequest:
    """The typed request in a transaction, or :class:`ProfileError` with its H.248 code."""
    action = _single_action(actions)
    if action.error is not None or not action.commands:
        raise ProfileError("action without command", code=421)
    names = {c.name for c in action.commands}
    if names == {"Add"}:
        return _decode_reserve(action)
    if names == {"Modify"}:
        return _decode_configure(action)
    if names == {"Subtract"}:
        if not isinstance(action.context_id, int):
            raise ProfileError(f"Subtract in context {action.context_id!r}", code=421)
        for cmd in action.commands:
            _only(cmd, ())
        terms = tuple(c.termination_id for c in action.commands)
        if terms == ("*",):
            terms = ()
        elif "*" in terms:
            raise ProfileError("Subtract = * mixed with named terminations", code=421)
        return ReleaseRequest(action.context_id, terms)
    if names == {"Notify"} and len(action.commands) == 1:
        return NotifyRequest(_decode_notify(action))
    if names == {"ServiceChange"} and len(action.commands) == 1:
        return ServiceChangeRequest(_decode_service_change(action))
    raise ProfileError(f"unsupported combination of commands {sorted(names)}", code=421)


def _decode_notify(action: Action) -> IqEvent:
    cmd = action.commands[0]
    where = cmd.termination_id
    if not isinstance(action.context_id, int):
        raise ProfileError(f"Notify in context {action.context_id!r}", code=421, where=where)
    _only(cmd, (ObservedEvents,))
    observed = cmd.find(ObservedEvents)
    if observed is None or len(observed.events) != 1:
        raise ProfileError("expected one observed event", code=445, where=where)
    ev = observed.events[0]
    kind = _EVENT_KINDS.get(ev.name)
    if kind is None:
        raise ProfileError(f"unknown event {ev.name!r}", code=446, where=where)
    params = {p.name: p.value for p in ev.parameters}
    cause_code = params.pop("cause", None)
    peer = params.pop("peer", None)
    if params:
        raise ProfileError(f"unknown event parameters {sorted(params)}", code=449, where=where)
    cause = None
    if cause_code is not None:
        cause = _CAUSES.get(cause_code)
        if cause is None:
            raise ProfileError(f"unknown cause {cause_code!r}", code=449, where=where)
    if ev.timestamp is None:
        raise ProfileError("observed event without time stamp", code=457, where=where)
    try:
        return IqEvent(
            kind=kind,  # type: ignore[arg-type]
            context=action.context_id,
            termination=cmd.termination_id,
            stream=observed.request_id,
            timestamp=ev.timestamp,
            cause=cause,  # type: ignore[arg-type]
            peer=peer,
        )
    except LocalIqError as exc:
        raise ProfileError(str(exc), code=457, where=where) from None


def _decode_service_change(action: Action) -> ServiceChangeKind:
    cmd = action.commands[0]
    if action.context_id != NULL_CONTEXT or cmd.termination_id != ROOT:
        raise ProfileError("ServiceChange must be on ROOT in the null context", code=421)
    _only(cmd, (ServiceChangeParameters,))
    params = cmd.find(ServiceChangeParameters)
    if params is None or params.method is None:
        raise ProfileError("ServiceChange without method", code=445, where=ROOT)
    if params.profile is not None and params.profile.lower() != PROFILE:
        raise ProfileError(f"unsupported profile {params.profile!r}", code=449, where=ROOT)
    reason = (params.reason or "").split(" ", 1)[0]
    if params.method == "Restart":
        return "restart" if reason == "902" else "register"
    if params.method in ("Forced", "Graceful", "Disconnected"):
        return "forced"
    raise ProfileError(f"unsupported method {params.method!r}", code=449, where=ROOT)


# --------------------------------------------------------------------------- replies


def encode_reply(request: IqRequest, reply: IqReply) -> tuple[Action, ...]:
    """The actions of the transaction reply answering ``request`` with ``reply``."""
    if isinstance(request, ReserveRequest) and isinstance(reply, ReserveReply):
        commands: list[Command] = []
        for s in request.streams:
            r = reply.stream(s.stream)
            acc = sdp_for(
                endpoint=r.access,
                media=s.media,
                proto=s.access_proto,
                setup=r.access_setup,
                fingerprints=(r.agw_fingerprint,),
            )
            core = sdp_for(endpoint=r.core, media=s.media, proto=s.core_proto, setup=r.core_setup)
            commands.append(
                Command("Add", r.access_termination, (Media((Stream(s.stream, local=acc),)),))
            )
            commands.append(
                Command("Add", r.core_termination, (Media((Stream(s.stream, local=core),)),))
            )
        return (Action(reply.context, tuple(commands)),)
    if isinstance(request, ConfigureRequest) and isinstance(reply, ConfigureReply):
        names: list[str] = []
        for c in request.streams:
            if c.changes_access:
                names.append(c.access_termination)
            if c.changes_core:
                names.append(c.core_termination)
        return (Action(reply.context, tuple(Command("Modify", n) for n in names)),)
    if isinstance(request, ReleaseRequest) and isinstance(reply, ReleaseReply):
        return (
            Action(
                reply.context,
                tuple(
                    Command("Subtract", st.termination, (Statistics(_stats(st)),))
                    for st in reply.statistics
                ),
            ),
        )
    if isinstance(request, NotifyRequest) and isinstance(reply, NotifyReply):
        ev = request.event
        return (Action(ev.context, (Command("Notify", ev.termination),)),)
    if isinstance(request, ServiceChangeRequest) and isinstance(reply, ServiceChangeReply):
        params = ServiceChangeParameters(profile=reply.profile)
        return (Action(NULL_CONTEXT, (Command("ServiceChange", ROOT, (params,)),)),)
    raise LocalIqError(f"{type(reply).__name__} does not answer {type(request).__name__}")


def _stats(st: TerminationStatistics) -> tuple[Parameter, ...]:
    values = [
        Parameter(STAT_OCTETS_SENT, str(st.octets_sent)),
        Parameter(STAT_OCTETS_RECEIVED, str(st.octets_received)),
        Parameter(STAT_PACKETS_SENT, str(st.packets_sent)),
        Parameter(STAT_PACKETS_RECEIVED, str(st.packets_received)),
    ]
    if st.tls is not None:
        values.append(Parameter(STAT_TLS_RESULT, st.tls))
    return tuple(values)


def reply_error(actions: Sequence[Action], error: ErrorDescriptor | None) -> None:
    """Raise :class:`RequestFailed` if a reply carries an error at any level."""
    if error is not None:
        raise RequestFailed(error.text or "error", code=error.code)
    for action in actions:
        if action.error is not None:
            raise RequestFailed(
                action.error.text or "error",
                code=action.error.code,
                where=f"context {action.context_id}",
            )
        for cmd in action.commands:
            err = cmd.find(ErrorDescriptor)
            if err is not None:
                raise RequestFailed(err.text or "error", code=err.code, where=cmd.termination_id)


def _int_stat(value: str, where: str) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > 20:
        raise ProfileError(f"bad statistic {value[:24]!r}", code=449, where=where)
    return int(value)


def decode_reply(request: IqRequest, actions: Sequence[Action]) -> IqReply:
    """The typed reply to ``request`` (errors already checked with :func:`reply_error`)."""
    if isinstance(request, NotifyRequest):
        return NotifyReply()
    if isinstance(request, ServiceChangeRequest):
        action = _single_action(actions)
        params = action.commands[0].find(ServiceChangeParameters) if action.commands else None
        profile = params.profile if params is not None and params.profile else PROFILE
        return ServiceChangeReply(profile)
    action = _single_action(actions)
    if not isinstance(action.context_id, int):
        raise ProfileError(f"reply in context {action.context_id!r}", code=421)
    if isinstance(request, ConfigureRequest):
        return ConfigureReply(action.context_id)
    if isinstance(request, ReleaseRequest):
        stats: list[TerminationStatistics] = []
        for cmd in action.commands:
            where = cmd.termination_id
            found = cmd.find(Statistics)
            values = {p.name: p.value for p in found.values} if found else {}
            tls = values.get(STAT_TLS_RESULT)
            if tls is not None and tls not in TLS_RESULTS:
                raise ProfileError(f"bad TLS result {tls!r}", code=449, where=where)
            stats.append(
                TerminationStatistics(
                    termination=where,
                    octets_sent=_int_stat(values.get(STAT_OCTETS_SENT, "0"), where),
                    octets_received=_int_stat(values.get(STAT_OCTETS_RECEIVED, "0"), where),
                    packets_sent=_int_stat(values.get(STAT_PACKETS_SENT, "0"), where),
                    packets_received=_int_stat(values.get(STAT_PACKETS_RECEIVED, "0"), where),
                    tls=tls,
                )
            )
        return ReleaseReply(action.context_id, tuple(stats))
    cmds = action.commands
    if len(cmds) != 2 * len(request.streams) or not all(c.name == "Add" for c in cmds):
        raise ProfileError("Reserve reply must have an Add per requested Add", code=421)
    reserved: list[ReservedStream] = []
    for s, acc, core in zip(request.streams, cmds[0::2], cmds[1::2], strict=True):
        where = acc.termination_id
        if not acc.termination_id.startswith(ACCESS_PREFIX) or not core.termination_id.startswith(
            CORE_PREFIX
        ):
            raise ProfileError("unexpected termination ids", code=410, where=where)
        a_stream, c_stream = _one_stream(acc), _one_stream(core)
        if a_stream.stream_id != s.stream or c_stream.stream_id != s.stream:
            raise ProfileError("stream id differs from the request", code=449, where=where)
        a_local = parse_sdp(a_stream.local or (), where)
        c_local = parse_sdp(c_stream.local or (), core.termination_id)
        access = _endpoint(a_local, where)
        core_ep = _endpoint(c_local, core.termination_id)
        if access is None or core_ep is None:
            raise ProfileError("reply without address and port", code=445, where=where)
        if len(a_local.fingerprints) != 1:
            raise ProfileError("reply must carry one AGW fingerprint", code=445, where=where)
        reserved.append(
            _new_reserved_stream(  # (no validators)
                s.stream,
                acc.termination_id,
                core.termination_id,
                access,
                core_ep,
                a_local.fingerprints[0],
                _setup(a_local.setup, where) or s.access_setup,
                _setup(c_local.setup, where) or s.core_setup,
            )
        )
    return ReserveReply(action.context_id, tuple(reserved))
