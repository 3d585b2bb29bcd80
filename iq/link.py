"""The Iq link over TCP or mutual-certificate TLS (Twisted edge).

Two public ends:

- :class:`IqController`, the IMS-ALG end used by the P-CSCF: listens on its Iq address; AGWs
  connect and register with ServiceChange; ``reserve``/``configure``/``release`` return
  Deferreds of typed replies; ``subscribe`` delivers Notify events and gateway state changes.
- :class:`IqAgent`, the IMS-AGW end used by the access gateway: connects to the ALG, registers,
  reconnects with backoff and registers again, serves requests through a
  :class:`GatewayHandler`, sends events with ``notify`` and says Forced on ``stop``.

Both ends share :class:`IqLinkProtocol`: TPKT framing, H.248 text, transaction ids, a timeout
per request, at-most-once handling of duplicate requests (cached replies, ``Pending`` while a
request is still being served), unknown replies logged and dropped, every pending request failed
with :class:`LinkLost` when the link goes down, and seeded fault injection.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeAlias, cast

import attrs
from OpenSSL import SSL
from twisted.internet import defer, tcp
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.fingerprint import Fingerprint, matching_fingerprint
from certs.tls import peer_certificate_der
from e2ae.logsetup import enabled
from e2ae.tcpmedia import TlsRole
from iq import profile
from iq.admission import (
    INSUFFICIENT_RESOURCES,
    AllowEntry,
    IqAdmission,
    IqLimits,
    KnownGateway,
    PeerIdentity,
    Refusal,
)
from iq.codec import Action, Message, TransactionReply, TransactionRequest
from iq.config import IqTlsConfig
from iq.connection import (
    LATE_REPLY_WINDOW,
    DuplicateRequest,
    Event,
    IqConnection,
    LateReplyReceived,
    LateWindowClosed,
    MessageRefused,
    PeerErrorReceived,
    ReplyEncodingFailed,
    ReplyReceived,
    RequestReceived,
    StreamBroken,
    TransactionTimedOut,
    UnknownPendingReceived,
    UnknownReplyReceived,
    WrongMid,
    error_descriptor,
    printable,
)
from iq.errors import (
    ERROR_TEXTS,
    IqTimeout,
    LinkLost,
    LocalIqError,
    NotInService,
    Overloaded,
    RemoteIqError,
)
from iq.transactions import FaultInjector, FaultPlan

log = Logger(namespace="iq")

DEFAULT_PORT = 2944
DEFAULT_TIMEOUT = 5.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
MAX_EARLY_BYTES = 65536


def _as_is(text: str) -> str:
    return text


def write_through(transport: Any, data: bytes) -> None:
    """Write ``data`` to a Twisted TCP ``transport``: straight to its socket when nothing is
    queued before it, the rest (what the socket did not take) through ``transport.write``.

    ``FileDescriptor.write`` only buffers: the bytes go out on a later reactor pass, after an
    ``epoll_ctl`` that registers the socket for writing, and another that unregisters it once
    the buffer is empty. Sending at once what the socket takes, when the transport holds
    nothing (so the order of bytes is kept), saves both and the pass; buffering, producer
    backpressure, closing and error handling stay the transport's. Used by the Iq link for
    its replies and by the AGW's relay (:mod:`accessgw.writethrough`).

    Only for Twisted's own TCP transports (``tcp.Connection``): a protocol wrapper such as
    TLS hands unknown attributes on to the transport under it, whose socket must never see
    the wrapper's plaintext. A transport without these attributes just gets ``write``.

    "Nothing queued" is read from ``FileDescriptor``'s private state: ``_tempDataBuffer``
    (the list ``write`` appends to until the next ``doWrite``) and ``_writeDisconnecting``
    (set by ``loseWriteConnection``), beside ``dataBuffer``/``offset``. No public API tells
    whether a transport holds unsent bytes, nor that a half-close is pending;
    tests/accessgw/test_gateway_private.py checks that shape on real TCP transports."""
    try:
        idle = (
            transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._tempDataBuffer
            and transport.offset == len(transport.dataBuffer)
        )
        sock = transport.socket if idle else None
    except AttributeError:
        sock = None
    if sock is not None:
        try:
            sent = sock.send(data)
        except OSError:
            # Would block, or the connection is broken: the transport's own write queues the
            # bytes, and its next attempt meets the error and closes the connection as usual.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def _creator(tls: IqTlsConfig, role: TlsRole) -> _ContextFactory:
    return _ContextFactory(tls.context(role))


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class _ContextFactory:
    """Connection creator for Twisted's TLS: connections of one prepared pyOpenSSL context."""

    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)

    def clientConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)


class _LinkOwner(Protocol):
    def link_ready(self, link: IqLinkProtocol) -> None: ...

    def link_lost(self, link: IqLinkProtocol, reason: Failure) -> None: ...

    def handle_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> defer.Deferred[TransactionReply]: ...


#: What an owner may also have: ``serve_request``, like ``handle_request`` but returning the
#: reply itself when it has it at once (a Deferred only for one that comes later), so that a
#: request served synchronously costs no Deferred chain.
ServeRequest: TypeAlias = Callable[
    ["IqLinkProtocol", Message, TransactionRequest],
    "TransactionReply | defer.Deferred[TransactionReply]",
]


@attrs.define
class _Waiter:
    deferred: defer.Deferred[TransactionReply]
    on_late: Callable[[TransactionReply], None] | None


@implementer(IHandshakeListener)
class IqLinkProtocol(TwistedProtocol):
    """One Iq connection, either end. Owned by an :class:`IqController` or :class:`IqAgent`.

    The transaction rules are :class:`~iq.connection.IqConnection`'s; this feeds it the bytes
    read, writes what it returns (through the fault injector), keeps one reactor timer on its
    next deadline and turns its events into Deferreds and calls to the owner."""

    def __init__(
        self,
        owner: _LinkOwner,
        *,
        mid: str,
        reactor: IReactorTime,
        tls: IqTlsConfig | None,
        faults: FaultPlan | None,
    ) -> None:
        self.owner = owner
        self.mid = mid
        self.reactor = reactor
        self.tls = tls
        self.faults = FaultInjector(faults) if faults is not None else None
        self.peer = "?"
        #: What the peer proved: its address, and over TLS the pinned fingerprint it matched.
        self.identity = PeerIdentity("?")
        self.conn = IqConnection(mid, max_pending=IqLimits().max_pending)
        self.ready = False
        #: Became ready once (TLS: the peer's certificate matched a pinned fingerprint).
        self.verified = False
        self.closed = False
        self._early: list[bytes] = []
        self._waiters: dict[int, _Waiter] = {}
        #: Handlers for replies that arrive after their request timed out (see request()).
        self._late: dict[int, Callable[[TransactionReply], None]] = {}
        self._timer: IDelayedCall | None = None
        self._armed_for: float | None = None
        self._pumping = False
        #: Packets written while the pump runs: one write for them all when it ends.
        self._batch: list[bytes] = []
        #: Plain TCP (no TLS, no fault injection): packets go straight to the socket when
        #: nothing is queued in the transport (accessgw.writethrough), in the same reactor turn.
        self._direct = False
        self._serve: ServeRequest | None = getattr(owner, "serve_request", None)
        self._handshake_timer: IDelayedCall | None = None
        #: Seconds a TLS peer has to complete the handshake and pass the fingerprint check.
        self.handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT
        self._cut = False
        #: Applied to every text from the wire or about a message before it is logged (a
        #: profile that carries secrets, such as Mp's PSKs, sets one that hides them).
        self.redact: Callable[[str], str] = _as_is

    @property
    def registered_mid(self) -> str | None:
        """The mId this link registered as (set by the controller when it accepts it): replies
        and requests under another mId are refused."""
        return self.conn.registered_mid

    @registered_mid.setter
    def registered_mid(self, mid: str | None) -> None:
        self.conn.registered_mid = mid

    @property
    def peer_mid(self) -> str | None:
        return self.conn.peer_mid

    @property
    def max_pending(self) -> int:
        """Requests waiting for a reply at most; more fail at once with :class:`Overloaded`."""
        return self.conn.max_pending

    @max_pending.setter
    def max_pending(self, value: int) -> None:
        self.conn.max_pending = value

    @property
    def pending_interval(self) -> float:
        """Seconds between Pending messages while a request is being served."""
        return self.conn.pending_interval

    @pending_interval.setter
    def pending_interval(self, value: float) -> None:
        self.conn.pending_interval = value

    # -- connection

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.conn.peer = self.peer
        self.identity = PeerIdentity(str(getattr(peer, "host", "?")))
        # A peer that vanishes without a FIN (a half-open link) is found by TCP keep-alive.
        keep_alive = getattr(self.transport, "setTcpKeepAlive", None)
        if keep_alive is not None:
            keep_alive(True)
        # Small request/reply messages: without TCP_NODELAY, Nagle and delayed ACKs hold each
        # pipelined message back ~40 ms (a few dozen calls/s in all).
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        # Only Twisted's own TCP transport: a TLS transport (a protocol wrapper) hands unknown
        # attributes on to the TCP transport under it, whose socket must never see plaintext.
        self._direct = (
            self.tls is None and self.faults is None and isinstance(self.transport, tcp.Connection)
        )
        if self.tls is None:
            self._become_ready()
        else:
            self._handshake_timer = self.reactor.callLater(
                self.handshake_timeout, self._handshake_expired
            )

    def _handshake_expired(self) -> None:
        if not self.ready and not self.closed:
            log.warn("Iq TLS handshake with {peer} timed out", peer=self.peer)
            self.transport.abortConnection()  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        assert self.tls is not None
        conn = cast(SSL.Connection, self.transport.getHandle())  # type: ignore[union-attr]
        der = peer_certificate_der(conn)
        match = None if der is None else matching_fingerprint(der, self.tls.peer_fingerprints)
        if match is None:
            log.warn(
                "Iq peer {peer} refused: certificate matches no pinned fingerprint",
                peer=self.peer,
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        log.info(
            "Iq TLS peer {peer} verified ({fingerprint})", peer=self.peer, fingerprint=match.value
        )
        self.identity = PeerIdentity(self.identity.address, match.value)
        self._become_ready()

    def _become_ready(self) -> None:
        self.ready = True
        self.verified = True
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        early, self._early = self._early, []
        self.owner.link_ready(self)
        for data in early:
            self.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.ready = False
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        # The owner learns first (gateway out of service), then every pending request fails.
        self.owner.link_lost(self, reason)
        aborted = self.conn.connection_lost()
        waiters, self._waiters = self._waiters, {}
        self._late.clear()
        for entry in aborted:
            waiter = waiters.pop(entry.transaction_id, None)
            if waiter is not None:
                waiter.deferred.errback(
                    LinkLost(
                        f"Iq link to {self.peer} lost with transaction {entry.transaction_id}"
                        f" pending ({entry.what})"
                    )
                )

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self._flush()
            self.transport.loseConnection()

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        if not self.ready:
            # Never use a byte from a TLS peer before its certificate was checked.
            self._early.append(data)
            if sum(map(len, self._early)) > MAX_EARLY_BYTES:
                self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.conn.receive_data(data, self.reactor.seconds())
        self._pump()

    def _pump(self) -> None:
        """Write what the connection sends on its own and act on its events, in order; then
        arm the timer for its next deadline."""
        if self._pumping:
            return  # a reply sent while an event is handled: the running loop goes on
        self._pumping = True
        conn = self.conn
        try:
            while not self.closed:
                event = conn.next_event()
                if conn.has_packets:
                    self._write_packets(conn.packets_to_send())
                if event is None:
                    break
                self._handle(event)
        finally:
            self._pumping = False
            self._flush()
        self._arm()

    def _arm(self) -> None:
        """One reactor timer, on the connection's next deadline or before it: a timer armed
        for an earlier deadline (one whose request has been answered since) is left to fire
        and re-arm, rather than cancelled and scheduled anew on every reply."""
        deadline = None if self.closed else self.conn.timers()
        timer = self._timer
        if timer is not None and timer.active():
            armed = self._armed_for
            if deadline is None or (armed is not None and armed <= deadline):
                return
            timer.cancel()
        self._timer = None
        self._armed_for = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._armed_for = None
        if self.closed:
            return
        self.conn.on_timer(self.reactor.seconds())
        self._pump()

    def _handle(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._request_received(event.message, event.request)
        elif isinstance(event, ReplyReceived):
            waiter = self._waiters.pop(event.reply.transaction_id, None)
            if waiter is not None:
                waiter.deferred.callback(event.reply)
        elif isinstance(event, TransactionTimedOut):
            self._timed_out(event)
        elif isinstance(event, LateReplyReceived):
            self._late_reply(event.reply)
        elif isinstance(event, LateWindowClosed):
            self._late.pop(event.transaction_id, None)
        elif isinstance(event, UnknownReplyReceived):
            self._unknown_reply(event.reply)
        elif isinstance(event, UnknownPendingReceived):
            log.warn("Iq Pending for unknown transaction {tid} dropped", tid=event.transaction_id)
        elif isinstance(event, DuplicateRequest):
            if event.in_progress:
                log.info(
                    "Iq duplicate of transaction {tid} in progress: Pending",
                    tid=event.transaction_id,
                )
            else:
                log.info(
                    "Iq duplicate of transaction {tid}: cached reply", tid=event.transaction_id
                )
        elif isinstance(event, MessageRefused):
            log.warn(
                "Iq message from {peer} refused: {error}",
                peer=self.peer,
                error=self.redact(str(event.error)),
            )
        elif isinstance(event, PeerErrorReceived):
            log.warn(
                "Iq peer {peer} reports error {code} {text}",
                peer=self.peer,
                code=event.error.code,
                text=self.redact(event.error.text),
            )
        elif isinstance(event, WrongMid):
            log.warn(
                "Iq message from {peer} under mId {mid} refused: the link is registered as"
                " {gateway}",
                peer=self.peer,
                mid=printable(event.mid),
                gateway=event.registered_mid,
            )
        elif isinstance(event, ReplyEncodingFailed):
            log.error(
                "Iq reply {tid} cannot be encoded: {error}",
                tid=event.transaction_id,
                error=self.redact(str(event.error)),
            )
        elif isinstance(event, StreamBroken):
            log.warn(
                "Iq framing from {peer} broken, closing: {error}",
                peer=self.peer,
                error=self.redact(str(event.error)),
            )
            self._flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
        # PendingReceived: the connection restarted the request's deadline; nothing to do.

    def _request_received(self, message: Message, request: TransactionRequest) -> None:
        tid = request.transaction_id
        serve = self._serve
        if serve is None:
            d = defer.maybeDeferred(self.owner.handle_request, self, message, request)
        else:
            # The owner's reply at once, when it has it: sent as the Deferred chain below would
            # (same packet, same log lines), without building the chain.
            try:
                result = serve(self, message, request)
            except BaseException:
                d = defer.fail(Failure())
            else:
                if isinstance(result, defer.Deferred):
                    d = result
                elif isinstance(result, Failure):
                    d = defer.fail(result)
                else:
                    try:
                        self._send_reply(result)
                    except BaseException:
                        log.failure("Iq reply {tid} not sent", tid=tid)
                    return

        def failed(failure: Failure) -> TransactionReply:
            if not failure.check(RemoteIqError):
                log.failure("Iq transaction {tid} failed", failure, tid=tid)
            return TransactionReply(tid, error=error_descriptor(failure.value))

        d.addErrback(failed).addCallback(self._send_reply).addErrback(
            lambda f: log.failure("Iq reply {tid} not sent", f, tid=tid)
        )

    def _send_reply(self, reply: TransactionReply) -> None:
        packet = self.conn.send_reply(reply, self.reactor.seconds())
        if not self.closed:
            self._write_packet(packet)
            self._pump()

    def _timed_out(self, event: TransactionTimedOut) -> None:
        tid = event.transaction_id
        waiter = self._waiters.pop(tid, None)
        log.warn(
            "Iq transaction {tid} ({what}) to {peer} timed out after {timeout}s",
            tid=tid,
            what=event.what,
            peer=self.peer,
            timeout=event.timeout,
        )
        if waiter is None:
            return
        if waiter.on_late is not None:
            self._late[tid] = waiter.on_late
        waiter.deferred.errback(
            IqTimeout(f"no reply to transaction {tid} ({event.what}) within {event.timeout}s")
        )

    def _late_reply(self, reply: TransactionReply) -> None:
        late = self._late.pop(reply.transaction_id, None)
        if late is None:
            self._unknown_reply(reply)
            return
        log.warn(
            "Iq late reply to timed-out transaction {tid} from {peer}: cleaning up",
            tid=reply.transaction_id,
            peer=self.peer,
        )
        try:
            late(reply)
        except Exception:
            log.failure("Iq late-reply handler for {tid} failed", tid=reply.transaction_id)

    def _unknown_reply(self, reply: TransactionReply) -> None:
        log.warn(
            "Iq reply to unknown transaction {tid} from {peer} dropped",
            tid=reply.transaction_id,
            peer=self.peer,
        )

    # -- sending

    def request(
        self,
        actions: tuple[Action, ...],
        *,
        timeout: float,
        what: str = "",
        on_late: Callable[[TransactionReply], None] | None = None,
        bounded: bool = True,
    ) -> defer.Deferred[TransactionReply]:
        """Send a transaction request; the Deferred fires with the reply, or fails with
        :class:`IqTimeout` / :class:`LinkLost` / :class:`Overloaded`.

        ``on_late`` is called with a reply that arrives after the timeout (within
        :data:`LATE_REPLY_WINDOW` seconds), so that what the peer did anyway can be undone.
        ``bounded=False`` (a Release): never refused by :attr:`max_pending`
        (:meth:`IqConnection.send_request`)."""
        if self.closed or not self.ready:
            return defer.fail(LinkLost(f"Iq link to {self.peer} is not up"))
        now = self.reactor.seconds()
        try:
            sent = self.conn.send_request(
                actions,
                now,
                timeout=timeout,
                what=what,
                late_window=None if on_late is None else LATE_REPLY_WINDOW,
                bounded=bounded,
            )
        except Overloaded as exc:
            log.warn(
                "Iq {what} to {peer} refused: {count} requests already wait for a reply",
                what=what,
                peer=self.peer,
                count=self.conn.pending_count,
            )
            return defer.fail(exc)
        except LocalIqError as exc:
            # Nothing was recorded: no pending transaction, no timer.
            log.error(
                "Iq {what} to {peer} cannot be encoded: {error}",
                what=what,
                peer=self.peer,
                error=self.redact(str(exc)),
            )
            return defer.fail(exc)
        d: defer.Deferred[TransactionReply] = defer.Deferred()
        self._waiters[sent.transaction_id] = _Waiter(d, on_late)
        self._write_packet(sent.data)
        # The timer armed is on or before every other deadline; if it is on or before this
        # one too, _arm would leave it as it is: no need to look for the earliest.
        timer, armed = self._timer, self._armed_for
        if timer is None or armed is None or armed > now + timeout or not timer.active():
            self._arm()
        return d

    def _write_packets(self, packets: list[bytes]) -> None:
        for packet in packets:
            self._write_packet(packet)

    def _write_packet(self, packet: bytes) -> None:
        if self.closed or self._cut:
            return
        if self.faults is None:
            if self._pumping:
                self._batch.append(packet)
            else:
                self.transport.write(packet)  # type: ignore[union-attr]
            return
        decision = self.faults.next()
        if decision.copies == 0:
            log.info("Iq fault injection: message to {peer} dropped", peer=self.peer)
        if decision.disconnect:
            self._cut = True

        def deliver() -> None:
            if self.closed or self.transport is None:
                return
            for _ in range(decision.copies):
                self.transport.write(packet)
            if decision.disconnect:
                log.info("Iq fault injection: link to {peer} cut", peer=self.peer)
                self.transport.abortConnection()  # type: ignore[attr-defined]

        if decision.delay:
            self.reactor.callLater(decision.delay, deliver)
        else:
            deliver()

    def _flush(self) -> None:
        """Write the packets batched while the pump ran, in order, as one write."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self.closed or self._cut:
            return
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        if self._direct:
            write_through(self.transport, data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    @property
    def pending_count(self) -> int:
        return self.conn.pending_count


class _LinkFactory(Factory):
    def __init__(
        self,
        owner: _LinkOwner,
        *,
        mid: str,
        reactor: IReactorTime,
        tls: IqTlsConfig | None,
        faults: FaultPlan | None,
    ) -> None:
        self.owner = owner
        self.mid = mid
        self.reactor = reactor
        self.tls = tls
        self.faults = faults
        self.handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT

    def buildProtocol(self, addr: Any) -> IqLinkProtocol | None:
        link = IqLinkProtocol(
            self.owner, mid=self.mid, reactor=self.reactor, tls=self.tls, faults=self.faults
        )
        link.handshake_timeout = self.handshake_timeout
        return link


class _ControllerFactory(_LinkFactory):
    owner: IqController

    def buildProtocol(self, addr: Any) -> IqLinkProtocol | None:
        if not self.owner._room_for_link(addr):
            return None
        link = super().buildProtocol(addr)
        assert link is not None
        return self.owner._accepted(link)


#: Told of every Iq request the ALG end makes: the command (:func:`command_name`), the result
#: (:func:`result_name`) and the seconds to the reply (``None``: not sent). For metrics.
TransactionObserver: TypeAlias = Callable[[str, str, float | None], None]
#: Told of every request the AGW end served: the command and the result.
HandledObserver: TypeAlias = Callable[[str, str], None]

_COMMANDS: dict[type, str] = {
    profile.ReserveRequest: "reserve",
    profile.ConfigureRequest: "configure",
    profile.ReleaseRequest: "release",
    profile.NotifyRequest: "notify",
}


def command_name(request: object) -> str:
    """``reserve``, ``configure``, ``release``, ``notify`` (``other`` for anything else)."""
    return _COMMANDS.get(type(request), "other")


def result_name(exc: BaseException | None) -> str:
    """A bounded name for how a request ended: ``ok``, ``timeout``, ``link_lost``,
    ``not_in_service``, ``overloaded``, ``h248_<code>`` (an error the peer answered or we
    answered, with a code of :data:`iq.errors.ERROR_TEXTS`; ``h248_other`` for another code),
    ``local_error`` or ``error``."""
    if exc is None:
        return "ok"
    if isinstance(exc, IqTimeout):
        return "timeout"
    if isinstance(exc, LinkLost):
        return "link_lost"
    if isinstance(exc, NotInService):
        return "not_in_service"
    if isinstance(exc, Overloaded):
        return "overloaded"
    if isinstance(exc, RemoteIqError):
        return f"h248_{exc.code}" if exc.code in ERROR_TEXTS else "h248_other"
    if isinstance(exc, LocalIqError):
        return "local_error"
    return "error"


def _log_fields(request: profile.IqRequest, gw: _Gateway) -> dict[str, object]:
    """Named log fields (call_id, iq_context) of a request, for correlation."""
    if isinstance(request, profile.ReserveRequest):
        return {"call_id": request.call_id, "iq_context": request.context}
    context = getattr(request, "context", None)
    entry = gw.contexts.get(context) if isinstance(context, int) else None
    return {"call_id": entry[0] if entry else None, "iq_context": context}


def _default_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# --------------------------------------------------------------------------- ALG end


@attrs.frozen
class IqNotification:
    """An event a gateway reported, with the call id of its context if known."""

    gateway: str
    call_id: str | None
    event: profile.IqEvent


@attrs.frozen
class GatewayStatus:
    """A gateway came into service (registered) or went out of it (Forced, link lost)."""

    gateway: str
    in_service: bool
    reason: str


ControllerEvent: TypeAlias = IqNotification | GatewayStatus


@attrs.define
class _Gateway:
    mid: str
    link: IqLinkProtocol | None
    #: Who registered it (address, TLS fingerprint): a new link takes it over only as that peer.
    identity: PeerIdentity
    in_service: bool = True
    contexts: dict[int, tuple[str, set[str]]] = attrs.field(factory=dict)


class ListeningController:
    """What the controlling end of an Iq-style link (Iq's ALG, Mp's MRFC) keeps of the links
    it accepts: admission (TLS or the insecure allow-list), the limits, the links open and the
    register timer of each (a link must register within ``register_timeout``), and the count of
    links lost before they were verified. A subclass names its link in logs (``label``) and
    keeps its gateways."""

    label = "Iq"

    def __init__(
        self,
        *,
        tls: IqTlsConfig | None,
        insecure: bool,
        allow: Iterable[str | AllowEntry],
        limits: IqLimits | None,
        timeout: float,
        reactor: Any,
        handshake_timeout: float,
    ) -> None:
        self.admission = IqAdmission.build(tls=tls is not None, insecure=insecure, allow=allow)
        self.limits = limits if limits is not None else IqLimits()
        self.tls = tls
        self.timeout = timeout
        self.handshake_timeout = handshake_timeout
        self.reactor = reactor if reactor is not None else _default_reactor()
        #: Every link accepted and not yet lost (up or still in its TLS handshake).
        self._open: set[IqLinkProtocol] = set()
        self._register_timers: dict[IqLinkProtocol, IDelayedCall] = {}
        #: Links lost before they were up: with TLS, a failed handshake or a certificate that
        #: matches no pinned fingerprint (no byte of such a peer is read as H.248).
        self.unverified_links = 0

    def _room_for_link(self, addr: Any) -> bool:
        """Whether one more connection may be accepted (``max_links``); logs a refusal.
        Refused, Twisted closes the connection before any byte is read."""
        if len(self._open) < self.limits.max_links:
            return True
        log.warn(
            "{label} connection from {peer} refused: {count} links open (max_links)",
            label=self.label,
            peer=f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}",
            count=len(self._open),
        )
        return False

    def _accepted(self, link: IqLinkProtocol) -> IqLinkProtocol:
        link.max_pending = self.limits.max_pending
        self._open.add(link)
        return link

    def link_ready(self, link: IqLinkProtocol) -> None:
        log.info("{label} link from {peer} up", label=self.label, peer=link.peer)
        self._register_timers[link] = self.reactor.callLater(
            self.limits.register_timeout, self._not_registered, link
        )

    def _not_registered(self, link: IqLinkProtocol) -> None:
        self._register_timers.pop(link, None)
        if link.registered_mid is None and not link.closed:
            log.warn(
                "{label} link from {peer} closed: no ServiceChange within {timeout}s",
                label=self.label,
                peer=link.peer,
                timeout=self.limits.register_timeout,
            )
            link.transport.abortConnection()  # type: ignore[union-attr]

    def _link_gone(self, link: IqLinkProtocol) -> None:
        """Forget a lost link (its register timer too); count it if it was never verified."""
        if not link.verified:
            self.unverified_links += 1
        self._open.discard(link)
        self._registered(link)

    def _registered(self, link: IqLinkProtocol) -> None:
        timer = self._register_timers.pop(link, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _stop_timers(self) -> None:
        for timer in self._register_timers.values():
            if timer.active():
                timer.cancel()
        self._register_timers.clear()

    def _admit(
        self,
        link: IqLinkProtocol,
        mid: str,
        kind: Any,
        known: KnownGateway | None,
        room: Callable[[], Refusal | None],
    ) -> None:
        """The admission check of a ServiceChange ``kind`` as ``mid`` (``room``: whether a new
        gateway fits, asked only for a new one); logs and raises the refusal."""
        refusal = self.admission.service_change(
            mid, kind, link.identity, link_mid=link.registered_mid, known=known
        )
        if refusal is None and known is None and kind != "forced":
            refusal = room()
        if refusal is not None:
            log.warn(
                "{label} ServiceChange {kind} as {gateway} from {peer} refused: {reason}",
                label=self.label,
                kind=kind,
                gateway=printable(mid),
                peer=link.peer,
                identity=str(link.identity),
                reason=refusal.reason,
                code=refusal.code,
            )
            raise RemoteIqError(refusal.reason, code=refusal.code)


class IqController(ListeningController):
    """The IMS-ALG end of Iq.

    Gateways are named by the mId they register with (e.g. ``<agw1.example.net>``). Several may
    register; :meth:`gateways_in_service` lists them in registration order."""

    def __init__(
        self,
        *,
        mid: str = "[127.0.0.1]:2944",
        tls: IqTlsConfig | None = None,
        insecure: bool = False,
        allow: Iterable[str | AllowEntry] = (),
        limits: IqLimits | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        faults: FaultPlan | None = None,
        reactor: Any = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        observer: TransactionObserver | None = None,
    ) -> None:
        """``tls``: mutual-certificate TLS with pinned AGW certificates. Without it the link is
        plain TCP, which authenticates nobody: only with ``insecure=True`` and an ``allow``
        list of ``MID@ADDRESS`` entries (:class:`~iq.admission.AllowEntry`); otherwise
        :class:`LocalIqError`. With TLS, ``allow`` (if given) restricts the mIds further.
        ``observer`` is told of every request made (:data:`TransactionObserver`)."""
        super().__init__(
            tls=tls,
            insecure=insecure,
            allow=allow,
            limits=limits,
            timeout=timeout,
            reactor=reactor,
            handshake_timeout=handshake_timeout,
        )
        self.mid = mid
        self.faults = faults
        self.observer = observer
        self._gateways: dict[str, _Gateway] = {}
        self._links: set[IqLinkProtocol] = set()
        self._subscribers: list[Callable[[ControllerEvent], None]] = []

    def listen(self, port: int = DEFAULT_PORT, interface: str = "127.0.0.1") -> IListeningPort:
        """Listen for AGWs (TLS if configured). Port 0 picks a free port: see ``getHost()``."""
        factory = _ControllerFactory(
            self, mid=self.mid, reactor=self.reactor, tls=self.tls, faults=self.faults
        )
        factory.handshake_timeout = self.handshake_timeout
        if self.tls is None:
            log.warn(
                "Iq on {iq} is PLAIN TCP (insecure opt-in): no gateway is authenticated; only"
                " the allow-list {allow} may register",
                iq=f"{interface}:{port}",
                allow=", ".join(str(a) for a in self.admission.allow),
            )
        if self.tls is not None:
            return cast(IReactorSSL, self.reactor).listenSSL(
                port, factory, _creator(self.tls, "server"), interface=interface
            )
        return cast(IReactorTCP, self.reactor).listenTCP(port, factory, interface=interface)

    def gateways_in_service(self) -> list[str]:
        return [g.mid for g in self._gateways.values() if g.in_service]

    def subscribe(self, callback: Callable[[ControllerEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every :class:`IqNotification` and :class:`GatewayStatus`;
        returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def call_id_of(self, gateway: str, context: int) -> str | None:
        gw = self._gateways.get(gateway)
        entry = gw.contexts.get(context) if gw else None
        return entry[0] if entry else None

    def reserve(
        self, gateway: str, request: profile.ReserveRequest, *, timeout: float | None = None
    ) -> defer.Deferred[profile.ReserveReply]:
        """Reserve terminations. If the reply comes only after the timeout (the caller has
        given up), the context it created is released at once, so nothing stays reserved."""

        def late(reply: TransactionReply) -> None:
            try:
                profile.reply_error(reply.actions, reply.error)
                reserved = profile.decode_reply(request, reply.actions)
            except Exception:
                return  # an error reply reserved nothing
            assert isinstance(reserved, profile.ReserveReply)
            log.warn(
                "Iq late Reserve reply from {gateway}: releasing context {iq_context}",
                gateway=gateway,
                iq_context=reserved.context,
                call_id=request.call_id,
            )
            self.release(gateway, profile.ReleaseRequest(reserved.context)).addErrback(
                lambda f: log.warn(
                    "Iq release of late context {iq_context} failed: {error}",
                    iq_context=reserved.context,
                    error=f.getErrorMessage(),
                )
            )

        d = self._request(gateway, request, timeout, on_late=late)

        def remember(reply: profile.IqReply) -> profile.ReserveReply:
            assert isinstance(reply, profile.ReserveReply)
            gw = self._gateways.get(gateway)
            if gw is not None:
                _, terms = gw.contexts.setdefault(reply.context, (request.call_id, set()))
                for s in reply.streams:
                    terms.update((s.access_termination, s.core_termination))
            return reply

        return d.addCallback(remember)

    def configure(
        self, gateway: str, request: profile.ConfigureRequest, *, timeout: float | None = None
    ) -> defer.Deferred[profile.ConfigureReply]:
        return cast(
            "defer.Deferred[profile.ConfigureReply]", self._request(gateway, request, timeout)
        )

    def release(
        self, gateway: str, request: profile.ReleaseRequest, *, timeout: float | None = None
    ) -> defer.Deferred[profile.ReleaseReply]:
        # Not refused by the link's pending bound: a Release refused under load would leave the
        # gateway holding the context's terminations for good (nothing else releases them).
        d = self._request(gateway, request, timeout, bounded=False)

        def forget(reply: profile.IqReply) -> profile.ReleaseReply:
            assert isinstance(reply, profile.ReleaseReply)
            gw = self._gateways.get(gateway)
            entry = gw.contexts.get(request.context) if gw else None
            if gw is not None and entry is not None:
                entry[1].difference_update(s.termination for s in reply.statistics)
                if not request.terminations or not entry[1]:
                    del gw.contexts[request.context]
            return reply

        return d.addCallback(forget)

    def stop(self) -> None:
        """Close every link (the listening port is the caller's to stop)."""
        for link in list(self._links):
            link.close()

    # -- internals

    def _request(
        self,
        gateway: str,
        request: profile.IqRequest,
        timeout: float | None,
        *,
        on_late: Callable[[TransactionReply], None] | None = None,
        bounded: bool = True,
    ) -> defer.Deferred[profile.IqReply]:
        gw = self._gateways.get(gateway)
        if gw is None or not gw.in_service or gw.link is None:
            if self.observer is not None:
                self.observer(command_name(request), "not_in_service", None)
            return defer.fail(NotInService(f"gateway {gateway} is not in service"))
        what = type(request).__name__
        fields = _log_fields(request, gw)
        if enabled(LogLevel.debug):
            log.debug("Iq {what} to {gateway}", what=what, gateway=gateway, **fields)
        d = gw.link.request(
            profile.encode_request(request),
            timeout=self.timeout if timeout is None else timeout,
            what=what,
            on_late=on_late,
            bounded=bounded,
        )

        def typed(reply: TransactionReply) -> profile.IqReply:
            profile.reply_error(reply.actions, reply.error)
            return profile.decode_reply(request, reply.actions)

        def failed(failure: Failure) -> Failure:
            log.warn(
                "Iq {what} to {gateway} failed: {error}",
                what=what,
                gateway=gateway,
                error=failure.getErrorMessage(),
                **fields,
            )
            return failure

        d.addCallback(typed).addErrback(failed)
        observer = self.observer
        if observer is not None:
            command, start = command_name(request), self.reactor.seconds()

            def observed(result: object) -> object:
                exc = result.value if isinstance(result, Failure) else None
                observer(command, result_name(exc), self.reactor.seconds() - start)
                return result

            d.addBoth(observed)
        return d

    def _emit(self, event: ControllerEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.failure("Iq subscriber failed on {event!r}", event=event)

    def link_ready(self, link: IqLinkProtocol) -> None:
        self._links.add(link)
        super().link_ready(link)

    def link_lost(self, link: IqLinkProtocol, reason: Failure) -> None:
        self._link_gone(link)
        self._links.discard(link)
        for gw in list(self._gateways.values()):
            if gw.link is link:
                # Its contexts are kept: after a warm restart the gateway still has them.
                gw.link = None
                was_in_service, gw.in_service = gw.in_service, False
                log.warn("Iq gateway {gateway} out of service: link lost", gateway=gw.mid)
                if was_in_service:
                    self._emit(GatewayStatus(gw.mid, False, "link lost"))

    def handle_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> defer.Deferred[TransactionReply]:
        op = profile.decode_request(request.actions)
        mid = message.mid
        if isinstance(op, profile.ServiceChangeRequest):
            return defer.succeed(self._service_change(link, mid, request, op))
        gw = self._gateways.get(mid)
        if gw is None or gw.link is not link:
            raise RemoteIqError("gateway not registered", code=505, where=mid)
        if not isinstance(op, profile.NotifyRequest):
            raise RemoteIqError(f"{type(op).__name__} not served by the ALG", code=501)
        entry = gw.contexts.get(op.event.context)
        if entry is None:
            # Only a context this gateway's link was given may be reported on.
            log.warn(
                "Iq {kind} from {gateway} refused: context {iq_context} is not one of its own",
                kind=op.event.kind,
                gateway=mid,
                iq_context=op.event.context,
                termination=op.event.termination,
                peer=link.peer,
            )
            raise RemoteIqError(
                f"context {op.event.context} was not created on this link",
                code=411,
                where=op.event.termination,
            )
        call_id = entry[0]
        log.info(
            "Iq {kind} on {termination} context {iq_context} call {call_id} from {gateway}",
            kind=op.event.kind,
            termination=op.event.termination,
            iq_context=op.event.context,
            call_id=call_id,
            gateway=mid,
            cause=op.event.cause,
            peer=op.event.peer,
        )
        self._emit(IqNotification(mid, call_id, op.event))
        actions = profile.encode_reply(op, profile.NotifyReply())
        return defer.succeed(TransactionReply(request.transaction_id, actions))

    def _service_change(
        self,
        link: IqLinkProtocol,
        mid: str,
        request: TransactionRequest,
        op: profile.ServiceChangeRequest,
    ) -> TransactionReply:
        old = self._gateways.get(mid)
        known = None
        if old is not None:
            known = KnownGateway(
                old.identity,
                link_up=old.link is not None,
                same_link=old.link is link,
                has_contexts=bool(old.contexts),
            )
        self._admit(link, mid, op.kind, known, self._room_for_gateway)
        if op.kind == "forced":
            assert old is not None
            if old.in_service:
                old.in_service = False
                log.info("Iq gateway {gateway} out of service (Forced)", gateway=mid)
                self._emit(GatewayStatus(mid, False, "forced"))
        else:
            gateway = _Gateway(mid, link, link.identity)
            if old is not None and op.kind == "restart":
                gateway.contexts = old.contexts  # warm boot: the AGW kept its contexts
            self._gateways[mid] = gateway
            link.registered_mid = mid
            self._registered(link)
            log.info(
                "Iq gateway {gateway} in service ({kind}) from {peer}",
                gateway=mid,
                kind=op.kind,
                peer=link.peer,
                identity=str(link.identity),
            )
            self._emit(GatewayStatus(mid, True, op.kind))
        actions = profile.encode_reply(op, profile.ServiceChangeReply())
        return TransactionReply(request.transaction_id, actions)

    def _room_for_gateway(self) -> Refusal | None:
        """Room for one more gateway record: forget one without link or contexts if full."""
        if len(self._gateways) < self.limits.max_gateways:
            return None
        for name, gw in list(self._gateways.items()):
            if gw.link is None and not gw.contexts:
                del self._gateways[name]
                return None
        return Refusal(
            INSUFFICIENT_RESOURCES,
            f"{len(self._gateways)} gateways already known (max_gateways)",
        )


# --------------------------------------------------------------------------- AGW end


class GatewayHandler(Protocol):
    """What an access gateway implements to serve Iq. Each method returns the reply or a
    Deferred of it, or raises (or fails with) a :class:`iq.errors.CommandError` such as
    :class:`~iq.errors.InsufficientResources` (510) or :class:`~iq.errors.UnknownTermination`
    (430), which the ALG receives as an H.248 error. Any other exception becomes 500."""

    def reserve(
        self, request: profile.ReserveRequest
    ) -> profile.ReserveReply | defer.Deferred[profile.ReserveReply]: ...

    def configure(
        self, request: profile.ConfigureRequest
    ) -> profile.ConfigureReply | defer.Deferred[profile.ConfigureReply]: ...

    def release(
        self, request: profile.ReleaseRequest
    ) -> profile.ReleaseReply | defer.Deferred[profile.ReleaseReply]: ...


class ReconnectingAgent:
    """What the gateway end of an Iq-style link (Iq's AGW, Mp's MRFP) keeps to stay connected:
    the peer's address, TLS or plain TCP, the registration state and the reconnect loop (jittered
    exponential backoff from ``backoff_initial`` to ``backoff_max``). A subclass names its link
    in logs (``label``), builds its connection's factory and says what a failure was."""

    label = "Iq"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: IqTlsConfig | None,
        timeout: float,
        reactor: Any,
        backoff_initial: float,
        backoff_max: float,
        seed: int | None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.timeout = timeout
        self.reactor = reactor if reactor is not None else _default_reactor()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._random = random.Random(seed)
        self._delay = backoff_initial
        self._link: IqLinkProtocol | None = None
        self._registered = False
        self._ever_registered = False
        self._running = False
        self._retry: IDelayedCall | None = None
        self._waiting: list[defer.Deferred[None]] = []
        self._backlog: list[tuple[Any, defer.Deferred[None]]] = []
        self.registrations = 0

    #: Who the agent registers with, in messages (the ALG for Iq, the MRFC for Mp).
    peer_name = "ALG"
    #: Notifications kept while the link is down, sent in order once registered again.
    notify_backlog = 1000

    @property
    def registered(self) -> bool:
        return self._registered

    def _hold(self, item: Any) -> defer.Deferred[None] | None:
        """``None`` while the link is up and registered (the caller sends ``item``). Otherwise
        ``item`` (what :meth:`_send_notify` takes) waits, up to ``notify_backlog`` of them, and
        goes out after the next registration: a warm reconnection keeps the peer's contexts, so
        it still applies. The Deferred fires when the peer acknowledged it, or fails with
        :class:`LinkLost` at once if the backlog is full or the agent is not running, later if
        the agent stops first."""
        if self._link is not None and self._registered:
            return None
        if not self._running:
            return defer.fail(LinkLost(f"{self.label} agent not running"))
        if len(self._backlog) >= self.notify_backlog:
            return defer.fail(
                LinkLost(
                    f"{self.label} link to the {self.peer_name} is not up and"
                    f" {len(self._backlog)} notifications are already waiting"
                )
            )
        waiting: defer.Deferred[None] = defer.Deferred()
        self._backlog.append((item, waiting))
        return waiting

    def _send_held(self, link: IqLinkProtocol) -> None:
        """Send what :meth:`_hold` kept, in order (right after a registration)."""
        backlog, self._backlog = self._backlog, []
        if backlog:
            log.info(
                "{label} sending {count} notification(s) held while the link was down",
                label=self.label,
                count=len(backlog),
            )
        for item, held in backlog:
            self._send_notify(link, item).chainDeferred(held)

    def _send_notify(self, link: IqLinkProtocol, item: Any) -> defer.Deferred[None]:
        """Send one notification ``item`` on ``link``; fires when the peer acknowledged it."""
        raise NotImplementedError

    def when_registered(self) -> defer.Deferred[None]:
        """Fires once the peer has accepted our ServiceChange (now, if it already has)."""
        if self._registered:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def stop(self) -> defer.Deferred[None]:
        """ServiceChange Forced, then close the link; no more reconnecting."""
        self._running = False
        backlog, self._backlog = self._backlog, []
        for _, held in backlog:
            held.errback(LinkLost(f"{self.label} agent stopped"))
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        link = self._link
        if link is None or not link.ready:
            if link is not None:
                link.close()
            return defer.succeed(None)
        request, what = self._forced()
        d = link.request(request, timeout=self.timeout, what=what)

        def close(_: object) -> None:
            self._registered = False
            link.close()

        return d.addBoth(close)

    def link_ready(self, link: IqLinkProtocol) -> None:
        """The connection is up (TLS verified): register (ServiceChange ``register`` the first
        time, ``restart`` after), then wake :meth:`when_registered` and send what waited."""
        self._link = link
        kind = "restart" if self._ever_registered else "register"
        request, what = self._service_change(kind)
        d = link.request(request, timeout=self.timeout, what=what)

        def accepted(reply: TransactionReply) -> None:
            self._check_reply(reply)
            self._registered = True
            self._ever_registered = True
            self._delay = self.backoff_initial
            self.registrations += 1
            log.info(
                "{label} registered with the {peer_name} at {peer} ({kind})",
                label=self.label,
                peer_name=self.peer_name,
                peer=link.peer,
                kind=kind,
            )
            waiting, self._waiting = self._waiting, []
            for w in waiting:
                w.callback(None)
            self._send_held(link)

        def refused(failure: Failure) -> None:
            log.warn(
                "{label} registration with {peer} failed: {error}",
                label=self.label,
                peer=link.peer,
                error=self._failure_text(failure),
            )
            link.close()

        d.addCallbacks(accepted, refused)

    def link_lost(self, link: IqLinkProtocol, reason: Failure) -> None:
        if link is self._link:
            self._link = None
            self._registered = False
        log.info(
            "{label} link to the {peer_name} lost: {error}",
            label=self.label,
            peer_name=self.peer_name,
            error=self._failure_text(reason),
        )
        self._schedule_reconnect()

    def _service_change(self, kind: str) -> tuple[tuple[Action, ...], str]:
        """The encoded ServiceChange ``kind`` (register, restart) of the link's profile, and
        its name in logs."""
        raise NotImplementedError

    def _check_reply(self, reply: TransactionReply) -> None:
        """Raise the profile's error for a refusing reply (the registration failed)."""
        raise NotImplementedError

    def _forced(self) -> tuple[tuple[Action, ...], str]:
        """The encoded ServiceChange Forced of the link's profile, and its name in logs."""
        raise NotImplementedError

    def _factory(self) -> ClientFactory:
        raise NotImplementedError

    def _failure_text(self, reason: Failure) -> str:
        return str(reason.getErrorMessage())

    def _connect(self) -> None:
        self._retry = None
        factory = self._factory()
        if self.tls is not None:
            cast(IReactorSSL, self.reactor).connectSSL(
                self.host, self.port, factory, _creator(self.tls, "client")
            )
        else:
            cast(IReactorTCP, self.reactor).connectTCP(self.host, self.port, factory)

    def _schedule_reconnect(self) -> None:
        if not self._running or (self._retry is not None and self._retry.active()):
            return
        delay = self._delay * (0.5 + self._random.random())
        self._delay = min(self._delay * 2, self.backoff_max)
        log.info(
            self.label + " reconnecting to {peer} in {delay:.2f}s",
            peer=f"{self.host}:{self.port}",
            delay=delay,
        )
        self._retry = self.reactor.callLater(delay, self._connect)

    def _connect_failed(self, reason: Failure) -> None:
        log.warn(
            self.label + " connection to {peer} failed: {error}",
            peer=f"{self.host}:{self.port}",
            error=self._failure_text(reason),
        )
        self._schedule_reconnect()


class _AgentFactory(ClientFactory):
    def __init__(self, agent: IqAgent) -> None:
        self.agent = agent

    def buildProtocol(self, addr: Any) -> IqLinkProtocol:
        a = self.agent
        return IqLinkProtocol(a, mid=a.mid, reactor=a.reactor, tls=a.tls, faults=a.faults)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.agent._connect_failed(reason)


class IqAgent(ReconnectingAgent):
    """The IMS-AGW end of Iq: connects to the ALG at ``host:port`` and serves ``handler``."""

    def __init__(
        self,
        handler: GatewayHandler,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        mid: str = "<agw>",
        tls: IqTlsConfig | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        faults: FaultPlan | None = None,
        reactor: Any = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        seed: int | None = None,
        observer: HandledObserver | None = None,
    ) -> None:
        """``observer`` is told of every request ``handler`` served (:data:`HandledObserver`)."""
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
        self.observer = observer
        self.mid = mid
        self.faults = faults

    def start(self) -> None:
        """Connect (and keep reconnecting) until :meth:`stop`."""
        if not self._running:
            self._running = True
            self._connect()

    def notify(self, event: profile.IqEvent) -> defer.Deferred[None]:
        """Report an event to the ALG; fires when the ALG acknowledged it.

        While the link is down (the agent reconnecting) the event waits, up to
        ``notify_backlog`` of them, and goes out after the next registration: a warm
        reconnection keeps the ALG's contexts, so it still applies. Fails with
        :class:`LinkLost` if the backlog is full or the agent stops; a Notify already sent
        when the link drops fails with it (at most once, like every request)."""
        held = self._hold(event)
        if held is not None:
            return held
        assert self._link is not None
        return self._send_notify(self._link, event)

    def _send_notify(self, link: IqLinkProtocol, event: profile.IqEvent) -> defer.Deferred[None]:
        request = profile.NotifyRequest(event)
        d = link.request(profile.encode_request(request), timeout=self.timeout, what="Notify")

        def check(reply: TransactionReply) -> None:
            profile.reply_error(reply.actions, reply.error)

        return d.addCallback(check)

    def _forced(self) -> tuple[tuple[Action, ...], str]:
        return profile.encode_request(profile.ServiceChangeRequest("forced")), "Forced"

    # -- connection management

    def _factory(self) -> ClientFactory:
        return _AgentFactory(self)

    def _service_change(self, kind: str) -> tuple[tuple[Action, ...], str]:
        change = profile.ServiceChangeRequest(cast(profile.ServiceChangeKind, kind))
        return profile.encode_request(change), "ServiceChange"

    def _check_reply(self, reply: TransactionReply) -> None:
        profile.reply_error(reply.actions, reply.error)

    def handle_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> defer.Deferred[TransactionReply]:
        op, method = self._method(request)
        return self._reply_later(request, op, defer.maybeDeferred(method, op))

    def serve_request(
        self, link: IqLinkProtocol, message: Message, request: TransactionRequest
    ) -> TransactionReply | defer.Deferred[TransactionReply]:
        """:meth:`handle_request` for the link: the reply itself when the handler answers at
        once (no Deferred), the Deferred of it otherwise; raises as :meth:`handle_request`."""
        op, method = self._method(request)
        try:
            result = method(op)
        except BaseException:
            return self._reply_later(request, op, defer.fail(Failure()))
        if isinstance(result, (defer.Deferred, Failure)):
            return self._reply_later(request, op, defer.maybeDeferred(lambda: result))
        observer = self.observer
        if observer is not None:
            observer(command_name(op), "ok")
        return TransactionReply(request.transaction_id, profile.encode_reply(op, result))

    def _method(
        self, request: TransactionRequest
    ) -> tuple[profile.IqRequest, Callable[[Any], Any]]:
        if not self._registered:
            raise RemoteIqError("not registered yet", code=505)
        op = profile.decode_request(request.actions)
        method: Callable[[Any], Any]
        if isinstance(op, profile.ReserveRequest):
            method = self.handler.reserve
        elif isinstance(op, profile.ConfigureRequest):
            method = self.handler.configure
        elif isinstance(op, profile.ReleaseRequest):
            method = self.handler.release
        else:
            raise RemoteIqError(f"{type(op).__name__} not served by the AGW", code=501)
        return op, method

    def _reply_later(
        self, request: TransactionRequest, op: profile.IqRequest, d: defer.Deferred[Any]
    ) -> defer.Deferred[TransactionReply]:
        observer = self.observer
        if observer is not None:
            command = command_name(op)

            def observed(result: object) -> object:
                exc = result.value if isinstance(result, Failure) else None
                observer(command, result_name(exc))
                return result

            d.addBoth(observed)

        def encode(reply: profile.IqReply) -> TransactionReply:
            return TransactionReply(request.transaction_id, profile.encode_reply(op, reply))

        return d.addCallback(encode)


def pinned(fingerprints: Iterable[str]) -> tuple[Fingerprint, ...]:
    """Parse ``"sha-256 AB:..."`` strings (from configuration) into fingerprints."""
    return tuple(Fingerprint.parse(f) for f in fingerprints)
