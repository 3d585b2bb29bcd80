"""The Iq side of the AGW (Twisted edge): serves Reserve/Configure/Release from the ALG on top
of :class:`accessgw.gateway.AccessGateway` and reports its events with Notify.

Each stream is a pair of H.248 terminations, ``acc/<context>/<stream>`` (TLS towards the UE) and
``core/<context>/<stream>`` (plain TCP towards the core), backed by one AccessGateway termination.
Roles come from the ``a=setup`` the ALG gives for the AGW's own side: ``passive`` (or
``actpass``, resolved to passive, or ``holdconn``) means the AGW listens - on the access side
that makes it TLS server; ``active`` means it connects - TLS client on the access side, after
the "establish TLS session" signal.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from accessgw.errors import (
    AccessGwError,
    InvalidRequest,
    PortsExhausted,
)
from accessgw.errors import UnknownTermination as AgwUnknownTermination
from accessgw.gateway import AccessGateway
from accessgw.termination import (
    Closed,
    CoreRole,
    Event,
    StreamFailed,
    TcpFailure,
    TerminationStats,
    TlsEstablished,
    TlsFailure,
    TlsRole,
)
from e2ae import tcpmedia
from e2ae.logsetup import enabled
from iq import profile
from iq.errors import (
    InsufficientResources,
    UnknownContext,
    UnknownTermination,
    UnsupportedValue,
)

log = Logger(namespace="accessgw.iq")


@attrs.define
class _Stream:
    context: int
    stream: int
    access: str
    core: str
    call_id: str
    tls_role: TlsRole
    core_role: CoreRole


def _tls_role(setup: profile.Setup) -> TlsRole:
    # an access side that leaves the choice open (actpass) waits as TLS server until told
    return tcpmedia.tls_role(setup) or "server"


def _core_role(setup: str) -> CoreRole:
    return "connect" if setup == "active" else "listen"


def _setup_of(role: str) -> profile.Setup:
    return "active" if role in ("client", "connect") else "passive"


def _endpoint(e: profile.Endpoint | None) -> tuple[str, int] | None:
    return None if e is None else (e.host, e.port)


class GatewayIqHandler:
    """:class:`iq.link.GatewayHandler` of the AGW. Give it an :class:`iq.link.IqAgent` with
    :meth:`attach` so that events go to the ALG as Notify."""

    def __init__(self, gateway: AccessGateway) -> None:
        self.gateway = gateway
        self.agent: Any = None
        self._contexts = itertools.count(1)
        self._streams: dict[str, _Stream] = {}  # by access termination id
        self._by_core: dict[str, str] = {}
        #: context -> its streams' access ids, in the order reserved (a release or a reserve
        #: into a context looked through every stream of every call).
        self._by_context: dict[int, dict[str, None]] = {}
        gateway.add_observer(self._on_event)

    def attach(self, agent: Any) -> None:
        self.agent = agent

    # -- GatewayHandler --

    def reserve(self, request: profile.ReserveRequest) -> profile.ReserveReply:
        context = request.context if request.context is not None else next(self._contexts)
        if request.context is not None and not self._in_context(context):
            raise UnknownContext(f"no context {context}", where=f"Context = {context}")
        done: list[str] = []
        reserved: list[profile.ReservedStream] = []
        try:
            for s in request.streams:
                access = f"{profile.ACCESS_PREFIX}{context}/{s.stream}"
                core = f"{profile.CORE_PREFIX}{context}/{s.stream}"
                if access in self._streams:
                    raise UnsupportedValue(f"stream {s.stream} already reserved", where=access)
                tls_role, core_role = _tls_role(s.access_setup), _core_role(s.core_setup)
                r = self.gateway.reserve(
                    stream=str(s.stream),
                    tls_role=tls_role,
                    core_role=core_role,
                    fingerprints=s.ue_fingerprints,
                    iq_context=str(context),
                    termination=access,
                )
                done.append(access)
                self._streams[access] = _Stream(
                    context, s.stream, access, core, request.call_id, tls_role, core_role
                )
                self._by_core[core] = access
                self._by_context.setdefault(context, {})[access] = None
                if s.ue_address is not None or s.core_address is not None:
                    self.gateway.configure(
                        access,
                        ue_address=_endpoint(s.ue_address),
                        core_address=_endpoint(s.core_address),
                        start_timer=False,
                    )
                reserved.append(
                    profile.ReservedStream(
                        stream=s.stream,
                        access_termination=access,
                        core_termination=core,
                        access=profile.Endpoint(r.access_ip, r.access_port or 9),
                        core=profile.Endpoint(r.core_ip, r.core_port or 9),
                        agw_fingerprint=self.gateway.fingerprint(request.agw_fingerprint_hash),
                        access_setup=_setup_of(tls_role),
                        core_setup=_setup_of(core_role),
                    )
                )
        except Exception as exc:
            for access in done:
                self._forget(access)
                self.gateway.release(access)
            raise to_iq_error(exc) from exc
        if enabled(LogLevel.info):
            log.info(
                "Iq reserved {count} stream(s) in context {iq_context} for call {call_id}",
                count=len(reserved),
                iq_context=context,
                call_id=request.call_id,
            )
        return profile.ReserveReply(context, tuple(reserved))

    def configure(self, request: profile.ConfigureRequest) -> profile.ConfigureReply:
        for cfg in request.streams:
            stream = self._find(request.context, cfg.access_termination, cfg.core_termination)
            if cfg.access_setup is not None and _tls_role(cfg.access_setup) != stream.tls_role:
                raise UnsupportedValue("the AGW's access role cannot change", where=stream.access)
            if cfg.core_setup is not None and _core_role(cfg.core_setup) != stream.core_role:
                raise UnsupportedValue("the AGW's core role cannot change", where=stream.core)
            try:
                self.gateway.configure(
                    stream.access,
                    fingerprints=cfg.ue_fingerprints or None,
                    ue_address=_endpoint(cfg.ue_address),
                    core_address=_endpoint(cfg.core_address),
                    establish_tls=cfg.establish_tls,
                )
            except AccessGwError as exc:
                raise to_iq_error(exc) from exc
        return profile.ConfigureReply(request.context)

    def release(self, request: profile.ReleaseRequest) -> profile.ReleaseReply:
        if request.terminations:
            names = list(request.terminations)
        else:
            names = [
                n
                for access in self._by_context.get(request.context, ())
                for n in (access, self._streams[access].core)
            ]
            if not names:
                raise UnknownContext(f"no context {request.context}")
        wanted = set(names)
        # Resolve every name first (a name of a pair released just before must still resolve).
        streams = [
            (name, self._find(request.context, name if name in self._streams else "", name))
            for name in names
        ]
        statistics: list[profile.TerminationStatistics] = []
        released: dict[str, TerminationStats] = {}
        for name, stream in streams:
            if stream.access not in released:
                released[stream.access] = self.gateway.release(stream.access)
                self._forget(stream.access)
            stats = released[stream.access]
            if name == stream.access:
                statistics.append(_access_statistics(name, stats))
            else:
                statistics.append(_core_statistics(name, stats))
        if enabled(LogLevel.info):
            log.info(
                "Iq released {count} termination(s) in context {iq_context}",
                count=len(wanted),
                iq_context=request.context,
            )
        return profile.ReleaseReply(request.context, tuple(statistics))

    # -- events -> Notify --

    def _on_event(self, event: Event) -> None:
        stream = self._streams.get(event.termination)
        if stream is None:
            return
        now = float(self.gateway.reactor.seconds())
        notify: profile.IqEvent | None = None

        def make(kind: profile.EventKind, term: str, **kw: Any) -> profile.IqEvent:
            return profile.IqEvent(
                kind=kind,
                context=stream.context,
                termination=term,
                stream=stream.stream,
                timestamp=profile.timestamp(now),
                **kw,
            )

        if isinstance(event, TlsEstablished):
            notify = make("tls-established", stream.access, peer=event.peer)
        elif isinstance(event, TlsFailure):
            notify = make("tls-failure", stream.access, cause=event.cause, peer=event.peer or None)
        elif isinstance(event, TcpFailure):
            term = stream.access if event.side == "access" else stream.core
            notify = make("tcp-failure", term)
        elif isinstance(event, StreamFailed):
            notify = make("stream-failed", stream.access)
        elif isinstance(event, Closed):
            term = stream.core if event.reason.startswith("core") else stream.access
            notify = make("connection-closed", term)
        if notify is None or self.agent is None:
            return
        d: defer.Deferred[None] = self.agent.notify(notify)

        def failed(failure: Failure) -> None:
            log.warn(
                "Iq Notify {kind} on {termination} not delivered: {error}",
                kind=notify.kind if notify else "",
                termination=event.termination,
                iq_context=stream.context,
                error=failure.getErrorMessage(),
            )

        d.addErrback(failed)

    # -- helpers --

    def _in_context(self, context: int) -> bool:
        return context in self._by_context

    def _find(self, context: int, access: str, core: str) -> _Stream:
        key = access or self._by_core.get(core, "")
        stream = self._streams.get(key)
        if stream is None or stream.context != context:
            raise UnknownTermination(
                f"unknown termination {access or core!r}", where=access or core
            )
        return stream

    def _forget(self, access: str) -> None:
        stream = self._streams.pop(access, None)
        if stream is not None:
            self._by_core.pop(stream.core, None)
            members = self._by_context.get(stream.context)
            if members is not None:
                members.pop(access, None)
                if not members:
                    del self._by_context[stream.context]


def _tls_result(stats: TerminationStats) -> profile.TlsResult:
    if stats.tls_result == "verified":
        return "established"
    if stats.tls_result == "pending":
        return "none"
    return "failed"


def _access_statistics(name: str, stats: TerminationStats) -> profile.TerminationStatistics:
    return profile.TerminationStatistics(
        termination=name,
        octets_sent=stats.bytes_to_ue,
        octets_received=stats.bytes_to_core,
        packets_sent=stats.packets_to_ue,
        packets_received=stats.packets_to_core,
        tls=_tls_result(stats),
    )


def _core_statistics(name: str, stats: TerminationStats) -> profile.TerminationStatistics:
    return profile.TerminationStatistics(
        termination=name,
        octets_sent=stats.bytes_to_core,
        octets_received=stats.bytes_to_ue,
        packets_sent=stats.packets_to_core,
        packets_received=stats.packets_to_ue,
    )


def to_iq_error(exc: BaseException) -> BaseException:
    """The H.248 error an AGW failure is answered with (its ``code`` is the wire code)."""
    if isinstance(exc, PortsExhausted):
        return InsufficientResources(str(exc), where=exc.address)
    if isinstance(exc, AgwUnknownTermination):
        return UnknownTermination(str(exc), where=exc.termination)
    if isinstance(exc, InvalidRequest):
        return UnsupportedValue(exc.reason, where=exc.termination)
    return exc
