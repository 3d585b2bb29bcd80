"""The Access Gateway media plane (Twisted edge): terminations, TLS access legs, TCP core legs.

:class:`AccessGateway` is the API the Iq side drives::

    gw = AccessGateway("198.51.100.1", "203.0.113.1", identity, ports=PortRange(40000, 40999))
    r = gw.reserve(stream="1", tls_role="server", core_role="connect",
                   fingerprints=[ue_fp])              # Add: r.access_port, r.fingerprint
    gw.configure(r.termination, core_address=("203.0.113.50", 12763))   # Modify
    stats = gw.release(r.termination)                                     # Subtract

Everything that happens on its own (TLS established or refused, a TCP leg failing, a relay
closing, the TLS establishment timer running out) is reported to the ``observer`` callback as the
events of :mod:`accessgw.termination`, carrying the termination id (the Iq side turns them into
Notify requests).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import attrs
from OpenSSL import SSL
from twisted.internet import defer, interfaces, main, tcp
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from accessgw import writethrough
from accessgw.errors import InvalidRequest, LocalAccessGwError, PortsExhausted, UnknownTermination
from accessgw.ports import PortAllocator, PortRange
from accessgw.termination import (
    Closed,
    ConnectCore,
    CoreRole,
    EarlyHandshakePolicy,
    Event,
    FailureCause,
    StartRelay,
    State,
    StreamFailed,
    TcpFailure,
    Termination,
    TerminationStats,
    Timers,
    TlsEstablished,
    TlsFailure,
    TlsRole,
    classify_handshake_error,
)
from accessgw.tlsleg import AccessTLSProtocol, verify_leaf
from certs.fingerprint import HASH_FUNCS, Fingerprint
from certs.generate import CertAndKey
from certs.tls import KeyLogWriter, make_context
from e2ae.logsetup import enabled

log = Logger(namespace="accessgw")

#: Bytes asked of the kernel per socket read: the main throughput lever (fewer, larger system
#: calls; the TLS record size hardly matters), while bigger reads cost transient memory per busy
#: session. Also each leg's write-buffer high-water mark. See "Relay tuning" in docs/accessgw.md.
DEFAULT_READ_SIZE = 128 * 1024

Address = tuple[str, int]

#: Linux: a bind to port 0 leaves the choice of the local port to connect(), which picks one
#: free for that destination at once, instead of searching the whole ephemeral range for a
#: port free for any destination (the core leg binds to the core address before connecting).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_CONNECTION_DONE = Failure(main.CONNECTION_DONE)
#: Linux: a socket made non-blocking by socket() itself (0 elsewhere: setblocking after).
_SOCK_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)


# Private Twisted API below (no public API does these jobs; each is checked against the installed
# Twisted by tests/accessgw/test_gateway_private.py):
# - tcp.Connector._makeTransport: the one place a connector builds its tcp.Client. Twisted has
#   no public way to set a socket option between socket() and bind() of a client socket
#   (connectTCP and the endpoints take none, twisted/twisted#8207), nor to give connectTCP
#   another Client class; BaseConnector declares _makeTransport abstract for subclasses.
# - tcp.Client._requiresResolution / _setRealAddress: what resolveAddress itself uses to skip
#   name resolution; the public resolveAddress always goes through a Deferred.
# - tcp.Port._logConnectionLostMsg: the only hook for Twisted's "(TCP Port N Closed)" line,
#   short of filtering the global log.
# - tcp.Port.loseConnection's steps (disconnecting, stopReading, connectionLost), run at once.
# - tcp.Port.startListening's steps (tcp._reservedFD, _preexistingSocket, _reuseAddress,
#   _reusePort, _realPortNumber): Twisted logs "starting on" in the middle of the method, with
#   no hook to leave it out.


class _CoreClient(tcp.Client):
    """Twisted's TCP client, with the local port chosen at connect time (see above)."""

    def createInternetSocket(self) -> socket.socket:
        sock: socket.socket = super().createInternetSocket()
        with contextlib.suppress(OSError):  # not Linux: bind() picks the port, as usual
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        return sock

    def resolveAddress(self) -> None:
        # An IP address needs no resolution: connect now rather than through a Deferred.
        # (Private: _requiresResolution, _setRealAddress; see above.)
        if self._requiresResolution:
            super().resolveAddress()
            return
        try:
            self._setRealAddress(self.addr)
        except Exception:
            self.failIfNotConnected(Failure())


class _TerminationPort(tcp.Port):
    """A termination's listening port. It closes once its connection is there; the AGW's own
    log says so with the termination's fields, so Twisted's "(TCP Port N Closed)" is not
    repeated for every stream.

    Its start is Twisted's ``startListening`` without the "<factory> starting on <port>" line
    when no observer would keep an info line (``--log-level`` above info): that line, built
    and published for every Reserve, was a few per cent of the AGW's CPU. With info lines kept
    (and for anything but a new IPv4 socket) Twisted's own method runs, line included.

    It stops listening at once when asked outside its own accept loop (a Release): Twisted
    defers every close to a timer of 0 s (a Deferred, a delayed call and one more reactor
    pass per port), which only the accept loop needs, a connection's protocol stopping the
    port that is accepting it (the core leg does)."""

    #: The port number listened on (known once listening, without asking the socket again).
    number: int | None = None
    _accepting = False

    def _logConnectionLostMsg(self) -> None:  # private hook, see above
        pass

    def doRead(self) -> None:
        self._accepting = True
        try:
            super().doRead()
        finally:
            self._accepting = False

    def loseConnection(self, connDone: Failure = _CONNECTION_DONE) -> defer.Deferred[None] | None:
        if self._accepting or not self.connected or self.disconnecting:
            return cast("defer.Deferred[None] | None", super().loseConnection(connDone))
        # tcp.Port.loseConnection without the deferral (private state: see above).
        self.disconnecting = True
        self.stopReading()
        self.connectionLost(connDone)
        return defer.succeed(None)

    stopListening = loseConnection

    def startListening(self) -> None:
        if (
            enabled(LogLevel.info)
            or self._preexistingSocket is not None
            or self.addressFamily != socket.AF_INET
        ):
            super().startListening()
            self.number = int(self.getHost().port)
            return
        # tcp.Port.startListening (Twisted 26.10) step by step, private state included (see
        # above; tests/accessgw/test_gateway_fastpath.py compares the two ports it makes).
        tcp._reservedFD.reserve()
        skt: socket.socket | None = None
        try:
            # Non-blocking from socket() on: no separate call to make it so.
            skt = socket.socket(socket.AF_INET, socket.SOCK_STREAM | _SOCK_NONBLOCK)
            if self._reuseAddress:  # type: ignore[attr-defined]
                skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reusePort:  # type: ignore[attr-defined]
                skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if not _SOCK_NONBLOCK:
                skt.setblocking(False)
            skt.bind((self.interface, self.port))
        except OSError as le:
            if skt is not None:
                skt.close()
            raise CannotListenError(self.interface, self.port, le) from le
        skt.listen(self.backlog)
        self._realPortNumber = self.number = skt.getsockname()[1]
        assert self.factory is not None
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()


class _CoreConnector(tcp.Connector):
    # Private hook (see above): connect() builds the transport here, and only here can it be a
    # _CoreClient, whose socket gets IP_BIND_ADDRESS_NO_PORT before Twisted binds it.
    def _makeTransport(self) -> tcp.Client:
        return _CoreClient(self.host, self.port, self.bindAddress, self, self.reactor)


@attrs.frozen
class Reservation:
    """What the AGW reserved for a stream (goes into the Iq reply's Local descriptors)."""

    termination: str
    stream: str
    access_ip: str
    access_port: int | None
    """``None`` when the AGW is TLS client (it connects out; SDP carries port 9)."""
    core_ip: str
    core_port: int | None
    """``None`` when the AGW connects to the core."""
    fingerprint: Fingerprint
    """The AGW's own certificate fingerprint, for the SDP towards the UE."""


def _release_producer(consumer: Any, producer: Any) -> None:
    """``producer`` has nothing more to give ``consumer``: unregister it, and let it read again
    if ``consumer``'s backpressure had paused it (it still has to see its peer's close).

    A transport whose registered streaming producer is paused, when its buffer drains, resumes
    that producer *instead of* finishing a pending half-close; with no more data to write, the
    half-close would then never happen. Unregistering first makes the half-close the next thing
    the transport does once its buffer is empty."""
    if consumer.producer is producer:
        paused = consumer.producerPaused
        consumer.unregisterProducer()
        if paused and producer.connected and not producer.disconnecting:
            producer.resumeProducing()


@implementer(interfaces.IHalfCloseableProtocol)
class _CoreLeg(TwistedProtocol):
    """Plain TCP towards the core; paused until the access side is verified."""

    transport: Any

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.relaying = False
        self.read_done = False
        self.write_done = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.bufferSize = self.session.gateway.read_size
        self.session.core_connected(self)
        if not self.relaying and self.transport.connected:
            self.transport.pauseProducing()  # nothing is read before the relay starts

    def dataReceived(self, data: bytes) -> None:
        self.session.from_core(data)

    def readConnectionLost(self) -> None:
        self.read_done = True
        self.session.core_eof()
        self._maybe_close()

    def writeConnectionLost(self) -> None:
        self.write_done = True
        self._maybe_close()

    def _maybe_close(self) -> None:
        # Both directions are finished: the connection is over.
        if self.read_done and self.write_done:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.core_lost(self, reason)


class _CoreFactory(ClientFactory):
    noisy = False  # no "Starting factory" line per connection

    def __init__(self, session: _Session) -> None:
        self.session = session

    def buildProtocol(self, addr: Any) -> TwistedProtocol | None:
        if self.session.core is not None or self.session.term.state in (
            State.CLOSED,
            State.FAILED,
        ):
            return None  # one core connection per termination
        return _CoreLeg(self.session)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.session.core_connect_failed(reason)


class _AccessFactory(Factory):
    noisy = False  # no "Starting factory" line per connection

    def __init__(self, session: _Session, role: str) -> None:
        self.session = session
        self.role = role

    def buildProtocol(self, addr: Any) -> TwistedProtocol | None:
        return self.session.new_attempt(self.role)


class _AccessClientFactory(ClientFactory, _AccessFactory):
    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.session.access_connect_failed(reason)


class _Session:
    """The Twisted side of one termination."""

    def __init__(self, gateway: AccessGateway, term: Termination, iq_context: str | None) -> None:
        self.gateway = gateway
        self.term = term
        self.iq_context = iq_context
        self.access_port: Any = None
        self.core_port: Any = None
        self.access_port_number: int | None = None
        self.core_port_number: int | None = None
        self.legs: dict[int, AccessTLSProtocol] = {}
        self.access: AccessTLSProtocol | None = None
        self.core: _CoreLeg | None = None
        self.ue_address: Address | None = None
        self.core_address: Address | None = None
        self.want_core_connect = False
        self.timer: Any = None
        self.timer_deadline: float | None = None
        self.released = False

    @property
    def now(self) -> float:
        return float(self.gateway.reactor.seconds())

    # -- access side --

    def new_attempt(self, role: str) -> AccessTLSProtocol | None:
        ctx = self.gateway.server_context if role == "server" else self.gateway.client_context
        return AccessTLSProtocol(self, ctx, role, read_size=self.gateway.read_size)

    def leg_connected(self, leg: AccessTLSProtocol) -> None:
        attempt = self.term.attempt_started(leg.peer, self.now)
        if attempt is None:
            log.info(
                "refused connection on {termination}: no more attempts taken",
                termination=self.term.id,
                stream=self.term.stream,
                peer=leg.peer,
                iq_context=self.iq_context,
            )
            leg.refuse()
            return
        leg.attempt = attempt
        self.legs[attempt] = leg
        self._reschedule()

    def certificate_presented(self, leg: AccessTLSProtocol, der: bytes | None) -> bool:
        if leg.attempt is None:
            return False
        return self.term.certificate_presented(leg.attempt, der, self.now)

    def handshake_done(self, leg: AccessTLSProtocol, der: bytes | None) -> None:
        if leg.attempt is None:
            return
        self._apply(self.term.handshake_done(leg.attempt, der, self.now))

    def handshake_failed(self, leg: AccessTLSProtocol, reasons: list[str]) -> None:
        if leg.attempt is None:
            return
        cause = classify_handshake_error(reasons)
        if leg.handshake_complete:
            # A TLS error after acceptance: the session is over.
            self._apply(
                self.term.leg_closed("access", clean=False, reason="tls-error", now=self.now)
            )
            return
        self._apply(self.term.handshake_failed(leg.attempt, cause, self.now, "; ".join(reasons)))

    def access_connect_failed(self, reason: Failure) -> None:
        attempt = self.term.attempt_started(str(self.ue_address), self.now)
        if attempt is not None:
            self._apply(
                self.term.handshake_failed(
                    attempt, "connection-failed", self.now, reason.getErrorMessage()
                )
            )

    def data_from_ue(self, leg: AccessTLSProtocol, data: bytes) -> None:
        self.term.relayed("to_core", len(data), self.now)
        if self.core is not None:
            writethrough.write(self.core.transport, data)

    def ue_eof(self, leg: AccessTLSProtocol) -> None:
        if self.core is not None:
            _release_producer(self.core.transport, leg.transport)
            self.core.transport.loseWriteConnection()

    def leg_lost(self, leg: AccessTLSProtocol, reason: Failure) -> None:
        if leg.attempt is not None:
            self.legs.pop(leg.attempt, None)
        if leg is self.access:
            clean = reason.check(ConnectionDone) is not None
            self._apply(self.term.leg_closed("access", clean=clean, reason="reset", now=self.now))
        elif leg.attempt is not None:
            self._apply(self.term.attempt_lost(leg.attempt, self.now))

    # -- core side --

    def core_connected(self, leg: _CoreLeg) -> None:
        self.core = leg
        if self.core_port is not None:
            # One core connection per termination: stop listening once it is there.
            self.core_port.stopListening()
        self._apply(self.term.core_connected(self.now))

    def core_connect_failed(self, reason: Failure) -> None:
        self._apply(self.term.core_failed(reason.getErrorMessage(), self.now))

    def from_core(self, data: bytes) -> None:
        self.term.relayed("to_ue", len(data), self.now)
        if self.access is not None:
            self.access.write_to_ue(data)

    def core_eof(self) -> None:
        if self.access is not None:
            if self.core is not None:
                _release_producer(self.access.transport, self.core.transport)
            self.access.half_close()

    def core_lost(self, leg: _CoreLeg, reason: Failure) -> None:
        if leg is not self.core:
            return
        clean = reason.check(ConnectionDone) is not None
        self._apply(self.term.leg_closed("core", clean=clean, reason="reset", now=self.now))

    def connect_core(self) -> None:
        if self.core is not None:
            return
        if self.core_address is None:
            self.want_core_connect = True  # connect as soon as the ALG gives the address
            return
        self.want_core_connect = False
        host, port = self.core_address
        _CoreConnector(
            host,
            port,
            _CoreFactory(self),
            timeout=10,
            bindAddress=(self.gateway.core_ip, 0),
            reactor=self.gateway.reactor,
        ).connect()

    # -- events --

    def _fields(self) -> dict[str, object]:
        return {
            "termination": self.term.id,
            "stream": self.term.stream,
            "iq_context": self.iq_context,
        }

    def _apply(self, events: Iterable[Event]) -> None:
        for event in events:
            self._act(event)
            self.gateway._notify(event)
        self._reschedule()

    def _act(self, event: Event) -> None:
        if isinstance(event, TlsEstablished):
            self.access = self.legs.get(event.attempt)
            if self.access_port is not None:
                self.access_port.stopListening()  # one verified session per termination
                self.access_port = None
            log.info(
                "TLS established on {termination} with {peer}, fingerprint {fingerprint}",
                peer=event.peer,
                fingerprint=event.fingerprint.value,
                **self._fields(),
            )
        elif isinstance(event, TlsFailure):
            leg = self.legs.get(event.attempt)
            if leg is not None:
                leg.refuse()
            log.warn(
                "TLS refused on {termination} from {peer}: {cause}",
                peer=event.peer,
                cause=event.cause,
                detail=event.detail,
                **self._fields(),
            )
        elif isinstance(event, ConnectCore):
            self.connect_core()
        elif isinstance(event, StartRelay):
            self._start_relay()
        elif isinstance(event, TcpFailure):
            log.warn(
                "TCP failure on {termination}, {side} side: {reason}",
                side=event.side,
                reason=event.reason,
                **self._fields(),
            )
        elif isinstance(event, StreamFailed):
            self._close_access_side()
            log.warn(
                "stream failed on {termination}: no verified TLS session ({cause})",
                cause=event.cause,
                **self._fields(),
            )
        elif isinstance(event, Closed):
            self._close_legs(abort=not event.clean)
            if enabled(LogLevel.info):
                log.info(
                    "relay closed on {termination}: {reason}",
                    reason=event.reason,
                    stats=event.stats.as_dict(),
                    **self._fields(),
                )

    def _start_relay(self) -> None:
        access, core = self.access, self.core
        if access is None or core is None:
            return
        # Each transport is the other's producer: a slow side slows the other, memory bounded.
        core.transport.registerProducer(access.transport, True)
        access.transport.registerProducer(core.transport, True)
        core.relaying = True
        access.start_relay(lambda data: self.data_from_ue(access, data))
        core.transport.resumeProducing()

    def _close_access_side(self) -> None:
        if self.access_port is not None:
            self.access_port.stopListening()
            self.access_port = None
        for leg in list(self.legs.values()):
            if leg is not self.access:
                leg.refuse()

    def _close_legs(self, *, abort: bool) -> None:
        self._close_access_side()
        if self.core_port is not None:
            self.core_port.stopListening()
            self.core_port = None
        if self.access is not None:
            self.access.close(abort=abort)
        if self.core is not None:
            if abort:
                self.core.transport.abortConnection()
            else:
                self.core.transport.loseConnection()

    def _reschedule(self) -> None:
        deadline = None if self.released else self.term.next_deadline()
        if self.timer is not None and self.timer.active():
            if deadline == self.timer_deadline:
                return  # the timer already set is the right one
            self.timer.cancel()
        self.timer = None
        self.timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.now)
            self.timer = self.gateway.reactor.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self._apply(self.term.poll(self.now))


class AccessGateway:
    """The IMS-AGW media plane: reserves terminations, pins UE certificates, relays to the core."""

    def __init__(
        self,
        access_ip: str,
        core_ip: str,
        identity: CertAndKey,
        *,
        ports: PortRange | None = None,
        reactor: Any = None,
        keylog: Path | None = None,
        timers: Timers | None = None,
        early_policy: EarlyHandshakePolicy = "hold",
        accepted_hashes: Iterable[str] = HASH_FUNCS,
        fingerprint_hash: str = "sha-256",
        read_size: int = DEFAULT_READ_SIZE,
        observer: Callable[[Event], None] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if early_policy not in ("hold", "reject"):
            raise LocalAccessGwError(
                f"early handshake policy must be hold or reject, not {early_policy!r}"
            )
        self.reactor = reactor
        self.access_ip = access_ip
        self.core_ip = core_ip
        self.identity = identity
        self._fingerprints: dict[str, Fingerprint] = {}
        self._fingerprints_of: CertAndKey | None = None
        self.ports = ports
        self.timers = timers or Timers()
        self.early_policy = early_policy
        self.accepted_hashes = tuple(accepted_hashes)
        self.fingerprint_hash = fingerprint_hash
        self.read_size = read_size
        self.observers: list[Callable[[Event], None]] = [observer] if observer else []
        writer = KeyLogWriter(keylog) if keylog is not None else None
        self.server_context = make_context(identity, "server", keylog=writer, verify=verify_leaf)
        self.client_context = make_context(identity, "client", keylog=writer, verify=verify_leaf)
        for ctx in (self.server_context, self.client_context):
            ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        self._allocators: dict[str, PortAllocator] = {}
        self._sessions: dict[str, _Session] = {}
        self._next_id = 1
        #: Bytes relayed by the terminations already released, each way (:meth:`relayed_bytes`).
        self._released_to_core = 0
        self._released_to_ue = 0

    # -- API --

    def fingerprint(self, hash_func: str | None = None) -> Fingerprint:
        """The AGW's own certificate fingerprint (default hash from the configuration)."""
        name = hash_func or self.fingerprint_hash
        # Every Reserve reply carries it: serialising and hashing the certificate each time
        # cost a few percent of the AGW's CPU. The identity is fixed at construction.
        cached = self._fingerprints.get(name)
        if cached is None or self._fingerprints_of is not self.identity:
            if self._fingerprints_of is not self.identity:
                self._fingerprints = {}
                self._fingerprints_of = self.identity
            cached = self._fingerprints[name] = self.identity.fingerprint(name)
        return cached

    def reserve(
        self,
        *,
        stream: str = "1",
        tls_role: TlsRole = "server",
        core_role: CoreRole = "connect",
        fingerprints: Iterable[Fingerprint] = (),
        iq_context: str | None = None,
        termination: str | None = None,
    ) -> Reservation:
        """Reserve a termination pair (access + core): binds the listening ports now.

        Raises :class:`PortsExhausted` (H.248 510) when the port range has no free port."""
        if tls_role not in ("server", "client"):
            raise InvalidRequest(termination or "$", tls_role, "TLS role must be server or client")
        if core_role not in ("listen", "connect"):
            raise InvalidRequest(
                termination or "$", core_role, "core role must be listen or connect"
            )
        term_id = termination or f"agw/{self._next_id}"
        self._next_id += 1
        if term_id in self._sessions:
            raise InvalidRequest(term_id, term_id, "termination id already in use")
        term = Termination(
            id=term_id,
            stream=stream,
            tls_role=tls_role,
            core_role=core_role,
            timers=self.timers,
            early_policy=self.early_policy,
            accepted_hashes=self.accepted_hashes,
        )
        session = _Session(self, term, iq_context)
        try:
            if tls_role == "server":
                session.access_port, session.access_port_number = self._listen(
                    self.access_ip, _AccessFactory(session, "server")
                )
                term.listen()
            if core_role == "listen":
                session.core_port, session.core_port_number = self._listen(
                    self.core_ip, _CoreFactory(session)
                )
        except Exception:
            self._free_ports(session)
            if session.access_port is not None:
                session.access_port.stopListening()
            raise
        self._sessions[term_id] = session
        fps = tuple(fingerprints)
        if fps:
            session._apply(term.configure(fps, session.now, start_timer=False))
        if enabled(LogLevel.info):
            log.info(
                "reserved {termination} (TLS {tls_role}, core {core_role})"
                " access port {access_port} core port {core_port}",
                termination=term_id,
                stream=stream,
                iq_context=iq_context,
                tls_role=tls_role,
                core_role=core_role,
                access_port=session.access_port_number,
                core_port=session.core_port_number,
            )
        return Reservation(
            termination=term_id,
            stream=stream,
            access_ip=self.access_ip,
            access_port=session.access_port_number,
            core_ip=self.core_ip,
            core_port=session.core_port_number,
            fingerprint=self.fingerprint(),
        )

    def configure(
        self,
        termination: str,
        *,
        fingerprints: Iterable[Fingerprint] | None = None,
        ue_address: Address | None = None,
        core_address: Address | None = None,
        establish_tls: bool = False,
        start_timer: bool = True,
    ) -> None:
        """Give a termination the UE's fingerprints, the remote addresses, or the "establish TLS
        session" signal (AGW as TLS client: connect to ``ue_address`` now).

        A remote address the AGW does not connect to (the UE's when it is TLS server, the
        core's when it listens) is recorded and otherwise ignored. The TLS establishment timer
        starts here unless ``start_timer`` is false (a reservation's own parameters)."""
        session = self._session(termination)
        term = session.term
        if establish_tls and term.tls_role != "client":
            raise InvalidRequest(termination, "establish-tls", "the AGW is TLS server here")
        if establish_tls and (ue_address or session.ue_address) is None:
            raise InvalidRequest(termination, None, "establish TLS needs the UE address")
        if ue_address is not None:
            session.ue_address = ue_address  # used when the AGW is TLS client
        if core_address is not None:
            session.core_address = core_address  # used when the AGW connects to the core
        events = term.configure(
            None if fingerprints is None else tuple(fingerprints),
            session.now,
            establish_tls=establish_tls,
            start_timer=start_timer,
        )
        session._apply(events)
        if (
            session.want_core_connect
            and session.core_address is not None
            and term.core_role == "connect"
        ):
            session.connect_core()
        if establish_tls and session.ue_address is not None and term.state is State.CONNECTING:
            host, port = session.ue_address
            self.reactor.connectTCP(
                host,
                port,
                _AccessClientFactory(session, "client"),
                timeout=self.timers.handshake,
                bindAddress=(self.access_ip, 0),
            )

    def release(self, termination: str) -> TerminationStats:
        """Subtract: close both legs, free the ports, return the statistics."""
        session = self._session(termination)
        stats = session.term.release(session.now)
        session.released = True
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session._close_legs(abort=False)
        self._free_ports(session)
        del self._sessions[termination]
        self._released_to_core += stats.bytes_to_core
        self._released_to_ue += stats.bytes_to_ue
        if enabled(LogLevel.info):
            log.info(
                "released {termination}",
                termination=termination,
                stream=stats.stream,
                iq_context=session.iq_context,
                stats=stats.as_dict(),
            )
        return stats

    def stats(self, termination: str) -> TerminationStats:
        return self._session(termination).term.stats()

    def state(self, termination: str) -> State:
        return self._session(termination).term.state

    @property
    def terminations(self) -> list[str]:
        return list(self._sessions)

    def relayed_bytes(self) -> tuple[int, int]:
        """Bytes relayed since start, ``(to_core, to_ue)``, by every termination, released or
        not (for the metrics, read at each scrape: nothing is added on the relay's path)."""
        to_core, to_ue = self._released_to_core, self._released_to_ue
        for session in self._sessions.values():
            to_core += session.term.bytes_to_core
            to_ue += session.term.bytes_to_ue
        return to_core, to_ue

    def add_observer(self, observer: Callable[[Event], None]) -> None:
        self.observers.append(observer)

    def close(self) -> None:
        """Release every termination (shutdown)."""
        for term_id in list(self._sessions):
            self.release(term_id)

    # -- internals --

    def _session(self, termination: str) -> _Session:
        session = self._sessions.get(termination)
        if session is None:
            raise UnknownTermination(termination)
        return session

    def _notify(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                log.failure("observer failed on {event!r}", event=event)

    def _listen(self, address: str, factory: Factory) -> tuple[Any, int]:
        if self.ports is None:
            port = self._listen_on(0, factory, address)
            assert port.number is not None
            return port, port.number
        allocator = self._allocators.setdefault(address, PortAllocator(address, self.ports))
        busy: set[int] = set()
        while True:
            number = allocator.allocate(skip=frozenset(busy))
            try:
                port = self._listen_on(number, factory, address)
            except CannotListenError:
                allocator.free(number)
                busy.add(number)
                if len(busy) >= len(self.ports):
                    raise PortsExhausted(address, self.ports.low, self.ports.high) from None
                continue
            return port, number

    def _listen_on(self, number: int, factory: Factory, address: str) -> _TerminationPort:
        port = _TerminationPort(number, factory, interface=address, reactor=self.reactor)
        port.startListening()
        # A termination's port expects one connection (a few, with impostors): accept one per
        # readiness instead of Twisted's default 100, which costs a failing accept() every time.
        # (Twisted raises it again by itself if connections queue up. numberAccepts has no
        # underscore but no documentation either: tests/accessgw/test_gateway_private.py checks it.)
        port.numberAccepts = 1
        return port

    def _free_ports(self, session: _Session) -> None:
        for address, number in (
            (self.access_ip, session.access_port_number),
            (self.core_ip, session.core_port_number),
        ):
            allocator = self._allocators.get(address)
            if allocator is not None and number is not None:
                allocator.free(number)


__all__ = [
    "DEFAULT_READ_SIZE",
    "AccessGateway",
    "FailureCause",
    "Reservation",
]
