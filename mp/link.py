"""The Mp link over mutual-certificate TLS (or, as an explicit opt-in, plain TCP): Twisted edge.

Two public ends, on the Iq link's machinery (:class:`iq.link.IqLinkProtocol`: TPKT framing,
H.248 text, transaction ids, timeouts, duplicate handling, bounded pending requests):

- :class:`MpController`, the MRFC end: listens; the MRFP connects and registers with
  ServiceChange (one link per mId, its certificate pinned); ``join``/``connect``/``start_tls``/
  ``leave`` return Deferreds of typed replies; each Notify goes to ``on_event``.
- :class:`MpAgent`, the MRFP end: connects, registers, reconnects with backoff, serves an
  :class:`MpHandler` and sends events with :meth:`MpAgent.notify`.

Every log event about an Mp message names ``context``, ``termination``, ``conference`` and
``participant``; no log event carries a PSK (texts go through :func:`mp.profile.redact`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar, cast

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorSSL, IReactorTCP
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from iq.admission import (
    INSUFFICIENT_RESOURCES,
    AllowEntry,
    IqLimits,
    KnownGateway,
    Refusal,
)
from iq.codec import Action, Message, TransactionReply, TransactionRequest
from iq.config import IqTlsConfig
from iq.connection import printable
from iq.errors import LocalIqError, NotInService, RemoteIqError
from iq.link import IqLinkProtocol, ListeningController, ReconnectingAgent, _creator
from mp import profile
from mp.profile import (
    AckReply,
    ConnectRequest,
    JoinReply,
    JoinRequest,
    LeaveReply,
    LeaveRequest,
    MpEvent,
    StartTlsRequest,
    redact,
)

log = Logger(namespace="mp")

DEFAULT_PORT = 2945
DEFAULT_TIMEOUT = 5.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Streams whose conference and participant an end remembers for its logs.
MAX_REMEMBERED_STREAMS = 10000

_R = TypeVar("_R")


def _default_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _failure_text(failure: Failure) -> str:
    return redact(printable(failure.getErrorMessage()))


@attrs.frozen
class _Who:
    conference: str
    participant: str


class _Streams:
    """(context, termination) -> who, bounded (the oldest forgotten first); context ->
    conference."""

    def __init__(self, limit: int = MAX_REMEMBERED_STREAMS) -> None:
        self.limit = limit
        self._streams: OrderedDict[tuple[int, str], _Who] = OrderedDict()
        self._contexts: OrderedDict[int, str] = OrderedDict()

    def add(self, context: int, termination: str, who: _Who) -> None:
        self._streams[(context, termination)] = who
        self._contexts[context] = who.conference
        self._contexts.move_to_end(context)
        while len(self._streams) > self.limit:
            self._streams.popitem(last=False)
        while len(self._contexts) > self.limit:
            self._contexts.popitem(last=False)

    def remove(self, context: int, termination: str) -> None:
        self._streams.pop((context, termination), None)
        if not any(c == context for c, _ in self._streams):
            self._contexts.pop(context, None)

    def has_context(self, context: int) -> bool:
        return context in self._contexts

    def fields(self, context: int | None, termination: str) -> dict[str, object]:
        who = None if context is None else self._streams.get((context, termination))
        conference = who.conference if who else None
        if conference is None and context is not None:
            conference = self._contexts.get(context)
        return {
            "context": context,
            "termination": termination,
            "conference": conference,
            "participant": who.participant if who else None,
        }


def _request_fields(request: profile.AnyRequest, streams: _Streams) -> dict[str, object]:
    if isinstance(request, JoinRequest):
        return {
            "context": request.context,
            "termination": profile.TERMINATION_PREFIX[request.media] + "$",
            "conference": request.conference,
            "participant": request.participant,
            "call_id": request.call_id,
        }
    if isinstance(request, profile.NotifyRequest):
        return streams.fields(request.event.context, request.event.termination)
    if isinstance(request, ConnectRequest | StartTlsRequest | LeaveRequest):
        return streams.fields(request.context, request.termination)
    return {"context": None, "termination": "ROOT", "conference": None, "participant": None}


_NAMES: dict[type, str] = {
    JoinRequest: "join",
    ConnectRequest: "connect",
    StartTlsRequest: "start_tls",
    LeaveRequest: "leave",
    profile.NotifyRequest: "notify",
    profile.ServiceChangeRequest: "service_change",
}


def _link(owner: Any, *, mid: str, reactor: Any, tls: IqTlsConfig | None) -> IqLinkProtocol:
    link = IqLinkProtocol(owner, mid=mid, reactor=reactor, tls=tls, faults=None)
    link.redact = redact
    return link


# --------------------------------------------------------------------------- MRFC end


class _ControllerFactory(Factory):
    def __init__(self, ctrl: MpController) -> None:
        self.ctrl = ctrl

    def buildProtocol(self, addr: Any) -> IqLinkProtocol | None:
        ctrl = self.ctrl
        if not ctrl._room_for_link(addr):
            return None
        link = _link(ctrl, mid=ctrl.mid, reactor=ctrl.reactor, tls=ctrl.tls)
        link.handshake_timeout = ctrl.handshake_timeout
        return ctrl._accepted(link)


@attrs.define
class _Mrfp:
    mid: str
    link: IqLinkProtocol | None
    identity: Any
    in_service: bool = True
    streams: _Streams = attrs.field(factory=_Streams)


class MpController(ListeningController):
    """The MRFC end of Mp. MRFPs are named by the mId they register with (``<mrfp>``)."""

    label = "Mp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        tls: IqTlsConfig | None,
        insecure: bool = False,
        allow: Iterable[str | AllowEntry] = (),
        mid: str = "<mrfc>",
        limits: IqLimits | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        reactor: Any = None,
        on_event: Callable[[MpEvent], None] | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        """``tls``: mutual-certificate TLS with the MRFPs' certificates pinned. ``tls=None``
        (plain TCP, which authenticates nobody) only with ``insecure=True`` and an ``allow``
        list of ``MID@ADDRESS`` entries; otherwise :class:`~iq.errors.LocalIqError`."""
        super().__init__(
            tls=tls,
            insecure=insecure,
            allow=allow,
            limits=limits,
            timeout=timeout,
            reactor=reactor,
            handshake_timeout=handshake_timeout,
        )
        self.host = host
        self.port = port
        self.mid = mid
        self.on_event = on_event
        self._mrfps: dict[str, _Mrfp] = {}
        self._waiting: list[defer.Deferred[str]] = []
        self._listening: IListeningPort | None = None

    # -- lifecycle

    def listen(self) -> int:
        """Listen on ``host:port`` (port 0: a free one); returns the port number."""
        factory = _ControllerFactory(self)
        if self.tls is None:
            log.warn(
                "Mp on {mp} is PLAIN TCP (insecure opt-in): no MRFP is authenticated and every"
                " PSK crosses the link in clear; only the allow-list {allow} may register",
                mp=f"{self.host}:{self.port}",
                allow=", ".join(str(a) for a in self.admission.allow),
            )
            port = cast(IReactorTCP, self.reactor).listenTCP(
                self.port, factory, interface=self.host
            )
        else:
            port = cast(IReactorSSL, self.reactor).listenSSL(
                self.port, factory, _creator(self.tls, "server"), interface=self.host
            )
        self._listening = port
        number = int(port.getHost().port)
        log.info("Mp listening on {mp}", mp=f"{self.host}:{number}")
        return number

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close every link."""
        for link in list(self._open):
            link.close()
        self._stop_timers()
        port, self._listening = self._listening, None
        if port is None:
            return defer.succeed(None)
        return cast("defer.Deferred[None]", defer.maybeDeferred(port.stopListening))

    def gateways_in_service(self) -> list[str]:
        return [m.mid for m in self._mrfps.values() if m.in_service and m.link is not None]

    def when_gateway(self) -> defer.Deferred[str]:
        """Fires with the mId of an MRFP in service (now, if one is)."""
        in_service = self.gateways_in_service()
        if in_service:
            return defer.succeed(in_service[0])
        d: defer.Deferred[str] = defer.Deferred()
        self._waiting.append(d)
        return d

    # -- requests

    def join(
        self, gateway: str | None, request: JoinRequest, *, timeout: float | None = None
    ) -> defer.Deferred[JoinReply]:
        """Add the participant's stream to the conference (``gateway`` ``None``: the first
        MRFP in service)."""
        return self._request(gateway, request, JoinReply, timeout)

    def connect(
        self, gateway: str | None, request: ConnectRequest, *, timeout: float | None = None
    ) -> defer.Deferred[AckReply]:
        return self._request(gateway, request, AckReply, timeout)

    def start_tls(
        self, gateway: str | None, request: StartTlsRequest, *, timeout: float | None = None
    ) -> defer.Deferred[AckReply]:
        return self._request(gateway, request, AckReply, timeout)

    def leave(
        self, gateway: str | None, request: LeaveRequest, *, timeout: float | None = None
    ) -> defer.Deferred[LeaveReply]:
        return self._request(gateway, request, LeaveReply, timeout)

    def _request(
        self,
        gateway: str | None,
        request: profile.MpRequest,
        kind: type[_R],
        timeout: float | None,
    ) -> defer.Deferred[_R]:
        name = gateway
        if name is None:
            in_service = self.gateways_in_service()
            name = in_service[0] if in_service else None
        mrfp = self._mrfps.get(name) if name is not None else None
        what = _NAMES[type(request)]
        if mrfp is None or mrfp.link is None or not mrfp.in_service:
            return defer.fail(NotInService(f"MRFP {gateway or '(any)'} is not in service"))
        fields = _request_fields(request, mrfp.streams)
        log.info("Mp {what} to {gateway}", what=what, gateway=mrfp.mid, **fields)
        try:
            actions = profile.encode_request(request)
        except LocalIqError as exc:
            return defer.fail(exc)
        d = mrfp.link.request(
            actions, timeout=self.timeout if timeout is None else timeout, what=what
        )

        def typed(reply: TransactionReply) -> _R:
            profile.reply_error(reply.actions, reply.error)
            result = profile.decode_reply(request, reply.actions)
            assert isinstance(result, kind)
            if isinstance(request, JoinRequest) and isinstance(result, JoinReply):
                mrfp.streams.add(
                    result.context,
                    result.termination,
                    _Who(request.conference, request.participant),
                )
                log.info(
                    "Mp join answered by {gateway}: {termination} in context {context}",
                    gateway=mrfp.mid,
                    **mrfp.streams.fields(result.context, result.termination),
                    local=str(result.local),
                )
            elif isinstance(request, LeaveRequest) and isinstance(result, LeaveReply):
                st = result.statistics
                log.info(
                    "Mp leave answered by {gateway}: {octets_in}/{octets_out} octets in/out",
                    gateway=mrfp.mid,
                    **mrfp.streams.fields(request.context, request.termination),
                    octets_in=st.octets_in,
                    octets_out=st.octets_out,
                    messages_in=st.messages_in,
                    messages_out=st.messages_out,
                )
                mrfp.streams.remove(request.context, request.termination)
            return result

        def failed(failure: Failure) -> Failure:
            log.warn(
                "Mp {what} to {gateway} failed: {error}",
                what=what,
                gateway=mrfp.mid,
                error=_failure_text(failure),
                code=getattr(failure.value, "code", None),
                **fields,
            )
            return failure

        return d.addCallback(typed).addErrback(failed)

    # -- link owner

    def link_lost(self, link: IqLinkProtocol, reason: Failure) -> None:
        if not link.verified:
            log.warn("Mp link from {peer} lost before it was verified", peer=link.peer)
        self._link_gone(link)
        for mrfp in self._mrfps.values():
            if mrfp.link is link:
                mrfp.link = None
                mrfp.in_service = False
                log.warn("Mp MRFP {gateway} out of service: link lost", gateway=mrfp.mid)

    def handle_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> defer.Deferred[TransactionReply]:
        op = profile.decode_request(request.actions)
        mid = message.mid
        if isinstance(op, profile.ServiceChangeRequest):
            return defer.succeed(self._service_change(link, mid, request, op))
        mrfp = self._mrfps.get(mid)
        if mrfp is None or mrfp.link is not link:
            raise RemoteIqError("MRFP not registered", code=505, where=mid)
        if not isinstance(op, profile.NotifyRequest):
            raise RemoteIqError(f"{type(op).__name__} not served by the MRFC", code=501)
        ev = op.event
        fields = mrfp.streams.fields(ev.context, ev.termination)
        if not mrfp.streams.has_context(ev.context):
            log.warn(
                "Mp {kind} from {gateway} refused: context {context} is not one of its own",
                kind=ev.kind,
                gateway=mid,
                **fields,
            )
            raise RemoteIqError(f"context {ev.context} unknown", code=411, where=ev.termination)
        log.info(
            "Mp {kind} on {termination} context {context} ({participant} in {conference})"
            " from {gateway}",
            kind=ev.kind,
            gateway=mid,
            reason=redact(ev.reason),
            **fields,
        )
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.error(
                    "Mp event callback failed on {kind}:\n{traceback}",
                    kind=ev.kind,
                    traceback=redact(Failure().getTraceback()),
                    **fields,
                )
        actions = profile.encode_reply(op, profile.NotifyReply())
        return defer.succeed(TransactionReply(request.transaction_id, actions))

    def _service_change(
        self,
        link: IqLinkProtocol,
        mid: str,
        request: TransactionRequest,
        op: profile.ServiceChangeRequest,
    ) -> TransactionReply:
        old = self._mrfps.get(mid)
        known = None
        if old is not None:
            known = KnownGateway(
                old.identity,
                link_up=old.link is not None,
                same_link=old.link is link,
                has_contexts=True,
            )
        self._admit(link, mid, op.kind, known, self._room_for_mrfp)
        if op.kind == "forced":
            assert old is not None
            old.in_service = False
            log.info("Mp MRFP {gateway} out of service (Forced)", gateway=mid)
        else:
            mrfp = _Mrfp(mid, link, link.identity)
            if old is not None and op.kind == "restart":
                mrfp.streams = old.streams  # warm restart: the MRFP kept its contexts
            self._mrfps[mid] = mrfp
            link.registered_mid = mid
            self._registered(link)
            log.info(
                "Mp MRFP {gateway} in service ({kind}) from {peer}",
                gateway=mid,
                kind=op.kind,
                peer=link.peer,
                identity=str(link.identity),
            )
            waiting, self._waiting = self._waiting, []
            # after this reply is on the wire: a request the waiter sends at once must reach
            # the MRFP after the reply that registers it (505 otherwise)
            self.reactor.callLater(0, _fire, waiting, mid)
        actions = profile.encode_reply(op, profile.ServiceChangeReply())
        return TransactionReply(request.transaction_id, actions)

    def _room_for_mrfp(self) -> Refusal | None:
        """Room for one more MRFP record: forget one without a link if full."""
        if len(self._mrfps) < self.limits.max_gateways:
            return None
        for name, m in list(self._mrfps.items()):
            if m.link is None:
                del self._mrfps[name]
                return None
        return Refusal(INSUFFICIENT_RESOURCES, "too many MRFPs (max_gateways)")


def _fire(waiting: list[defer.Deferred[str]], mid: str) -> None:
    for w in waiting:
        if not w.called:
            w.callback(mid)


# --------------------------------------------------------------------------- MRFP end


class MpHandler(Protocol):
    """What the MRFP implements. Each method returns the reply or a Deferred of it, or raises
    (fails with) :class:`iq.errors.RemoteIqError` (e.g. ``RemoteIqError("...", code=411)``),
    which the MRFC receives as that H.248 error; any other exception becomes 500."""

    def join(self, request: JoinRequest) -> JoinReply | defer.Deferred[JoinReply]: ...

    def connect(self, request: ConnectRequest) -> AckReply | defer.Deferred[AckReply]: ...

    def start_tls(self, request: StartTlsRequest) -> AckReply | defer.Deferred[AckReply]: ...

    def leave(self, request: LeaveRequest) -> LeaveReply | defer.Deferred[LeaveReply]: ...


class _AgentFactory(ClientFactory):
    def __init__(self, agent: MpAgent) -> None:
        self.agent = agent

    def buildProtocol(self, addr: Any) -> IqLinkProtocol:
        a = self.agent
        return _link(a, mid=a.mid, reactor=a.reactor, tls=a.tls)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.agent._connect_failed(reason)


class MpAgent(ReconnectingAgent):
    """The MRFP end of Mp: connects to the MRFC at ``host:port`` and serves ``handler``."""

    label = "Mp"
    peer_name = "MRFC"

    def __init__(
        self,
        handler: MpHandler,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        mid: str = "<mrfp>",
        tls: IqTlsConfig | None,
        insecure: bool = False,
        reactor: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        seed: int | None = None,
    ) -> None:
        """``tls``: mutual-certificate TLS, the MRFC's certificate pinned. ``tls=None`` (plain
        TCP) only with ``insecure=True``; otherwise :class:`~iq.errors.LocalIqError`."""
        if tls is None and not insecure:
            raise LocalIqError(
                "Mp over plain TCP carries the PSKs in clear and authenticates nobody: use TLS"
                " with pinned certificates, or opt in to plain TCP explicitly (insecure)"
            )
        super().__init__(
            host,
            port,
            tls=tls,
            timeout=timeout,
            reactor=reactor,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            seed=seed,
        )
        self.handler = handler
        self.mid = mid
        self._streams = _Streams()

    def start(self) -> None:
        """Connect (and keep reconnecting) until :meth:`stop`."""
        if self._running:
            return
        self._running = True
        if self.tls is None:
            log.warn(
                "Mp to {mp} is PLAIN TCP (insecure opt-in): the MRFC is not authenticated and"
                " every PSK crosses the link in clear",
                mp=f"{self.host}:{self.port}",
            )
        self._connect()

    def notify(self, event: MpEvent) -> defer.Deferred[None]:
        """Report ``event`` to the MRFC; fires when it acknowledged it. While the link is down
        (the agent reconnecting) the event waits, up to ``notify_backlog`` of them, with the
        time it happened, and goes out after the next registration: a warm restart keeps the
        MRFC's streams, so it still applies. Fails with :class:`~iq.errors.LinkLost` if the
        backlog is full or the agent stops, with :class:`~iq.errors.RequestFailed` if the
        MRFC refuses it."""
        stamped = (event, profile.timestamp(self.reactor.seconds()))
        held = self._hold(stamped)
        if held is not None:
            fields = self._streams.fields(event.context, event.termination)
            if not held.called:
                log.info("Mp {kind} held until the link is up again", kind=event.kind, **fields)
            else:
                log.warn("Mp {kind} not sent: the link is down", kind=event.kind, **fields)
            return held
        assert self._link is not None
        return self._send_notify(self._link, stamped)

    def _send_notify(
        self, link: IqLinkProtocol, stamped: tuple[MpEvent, str]
    ) -> defer.Deferred[None]:
        event, stamp = stamped
        fields = self._streams.fields(event.context, event.termination)
        request = profile.NotifyRequest(event, stamp)
        log.info("Mp {kind} to the MRFC", kind=event.kind, reason=redact(event.reason), **fields)
        d = link.request(profile.encode_request(request), timeout=self.timeout, what="notify")

        def check(reply: TransactionReply) -> None:
            profile.reply_error(reply.actions, reply.error)

        def failed(failure: Failure) -> Failure:
            log.warn(
                "Mp {kind} to the MRFC failed: {error}",
                kind=event.kind,
                error=_failure_text(failure),
                **fields,
            )
            return failure

        return d.addCallback(check).addErrback(failed)

    def _forced(self) -> tuple[tuple[Action, ...], str]:
        return profile.encode_request(profile.ServiceChangeRequest("forced")), "forced"

    # -- connection management

    def _factory(self) -> ClientFactory:
        return _AgentFactory(self)

    def _failure_text(self, reason: Failure) -> str:
        return _failure_text(reason)

    def _service_change(self, kind: str) -> tuple[tuple[Action, ...], str]:
        change = profile.ServiceChangeRequest(cast(profile.ServiceChangeKind, kind))
        return profile.encode_request(change), kind

    def _check_reply(self, reply: TransactionReply) -> None:
        profile.reply_error(reply.actions, reply.error)

    def handle_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> defer.Deferred[TransactionReply]:
        if not self._registered:
            raise RemoteIqError("not registered yet", code=505)
        op = profile.decode_request(request.actions)
        method: Callable[[Any], Any]
        if isinstance(op, JoinRequest):
            method = self.handler.join
        elif isinstance(op, ConnectRequest):
            method = self.handler.connect
        elif isinstance(op, StartTlsRequest):
            method = self.handler.start_tls
        elif isinstance(op, LeaveRequest):
            method = self.handler.leave
        else:
            raise RemoteIqError(f"{type(op).__name__} not served by the MRFP", code=501)
        what = _NAMES[type(op)]
        fields = _request_fields(op, self._streams)
        log.info("Mp {what} from the MRFC", what=what, **fields)
        d = defer.maybeDeferred(method, op)

        def encode(reply: profile.MpReply) -> TransactionReply:
            if isinstance(op, JoinRequest) and isinstance(reply, JoinReply):
                self._streams.add(
                    reply.context, reply.termination, _Who(op.conference, op.participant)
                )
                log.info(
                    "Mp join served: {termination} in context {context}",
                    **self._streams.fields(reply.context, reply.termination),
                )
            elif isinstance(op, LeaveRequest):
                self._streams.remove(op.context, op.termination)
            return TransactionReply(request.transaction_id, profile.encode_reply(op, reply))

        def failed(failure: Failure) -> Failure:
            if failure.check(RemoteIqError):
                log.warn(
                    "Mp {what} refused: {error}",
                    what=what,
                    error=_failure_text(failure),
                    code=getattr(failure.value, "code", 500),
                    **fields,
                )
                return failure
            # A bug in the handler: logged here, redacted (the link would log it whole), and
            # answered with 500.
            log.error(
                "Mp {what} failed in the MRFP: {error}\n{traceback}",
                what=what,
                error=_failure_text(failure),
                traceback=redact(failure.getTraceback()),
                **fields,
            )
            return Failure(RemoteIqError("internal failure in the MRFP", code=500))

        return d.addCallback(encode).addErrback(failed)
