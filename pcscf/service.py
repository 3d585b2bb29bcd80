"""The P-CSCF SIP service: UDP and TCP listeners on the Gm and core sides around
:class:`~pcscf.sip.proxy.ProxyCore`, the media handler calls and the timers; and the whole
P-CSCF as one Twisted service, wired by :func:`build` from a
:class:`~pcscf.config.PcscfConfig` (SIP, the Iq controller, the e2ae media handler).

``e2ae pcscf`` (:func:`serve`, and so ``e2ae run``, which starts that command) and
``e2ae demo`` all put the P-CSCF together with :func:`build`.

A thin Twisted edge: bytes in -> parser -> core -> actions out. Nothing a peer sends can raise
out of it: a malformed message is answered (400) or dropped, and logged.
"""

from __future__ import annotations

import gc
import socket
import sys
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from e2ae.logsetup import enabled
from pcscf.config import PcscfConfig
from pcscf.mediahook import MediaHandler, PassThrough
from pcscf.sip.media import DialogId, Forward, MediaResult, Reject, Side
from pcscf.sip.message import MessageError, Response, StreamParser, parse_datagram
from pcscf.sip.proxy import (
    Action,
    DialogEnded,
    Log,
    MediaRequest,
    Peer,
    ProxyConfig,
    ProxyCore,
    ReofferAnswered,
    Send,
)

if TYPE_CHECKING:
    from e2ae.metrics import MetricsServer
    from iq.link import IqController
    from pcscf.e2ae import E2aeMediaHandler
    from pcscf.metrics import PcscfMetrics

log = Logger(namespace="pcscf")
#: UDP socket buffer size asked for (the kernel may cap it at net.core.rmem_max).
UDP_BUFFER = 4 * 1024 * 1024

ConnKey = tuple[Side, str, int]
_LEVELS = {name: LogLevel.levelWithName(name) for name in ("debug", "info", "warn", "error")}


#: Read UDP datagrams up to this size: Twisted's default (8192) cuts bigger ones silently.
MAX_DATAGRAM = 65_535


class _Udp(DatagramProtocol):
    noisy = False

    def __init__(self, service: SipService, side: Side) -> None:
        self.service = service
        self.side = side

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n\x00"):
            return  # keep-alive
        self.service.received_datagram(Peer(self.side, "udp", addr[0], addr[1]), datagram)


class _Stream(TimeoutMixin, Protocol):
    def __init__(self, service: SipService, side: Side) -> None:
        self.service = service
        self.side = side
        self.parser = StreamParser()
        self.peer: Peer | None = None

    def connectionMade(self) -> None:
        addr = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = Peer(self.side, "tcp", addr.host, addr.port)
        self.callLater = self.service.reactor.callLater
        idle = self.service.config.idle_timeout
        self.setTimeout(idle if idle > 0 else None)
        self.service.connection_made(self)

    def timeoutConnection(self) -> None:
        log.warn(
            "SIP connection from {peer} closed: idle for {timeout}s",
            peer=str(self.peer),
            timeout=self.service.config.idle_timeout,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None
        self.resetTimeout()  # any byte, a CRLF keep-alive too, is a sign of life
        for item in self.parser.feed(data):
            self.service.received_item(self.peer, item)
        if self.parser.broken:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.setTimeout(None)
        self.service.connection_lost(self)

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class _StreamFactory(Factory):
    noisy = False

    def __init__(self, service: SipService, side: Side) -> None:
        self.service = service
        self.side = side

    def buildProtocol(self, addr: Any) -> _Stream | None:
        held = sum(1 for key in self.service.connections if key[0] == self.side)
        if held >= self.service.config.max_connections:
            log.warn(
                "SIP connection from {peer} refused: {held} connections on {side} (the limit)",
                peer=f"{getattr(addr, 'host', addr)}:{getattr(addr, 'port', '')}",
                held=held,
                side=self.side,
            )
            return None
        return _Stream(self.service, self.side)


class _Connector(ClientFactory):
    noisy = False

    def __init__(self, service: SipService, key: ConnKey) -> None:
        self.service = service
        self.key = key

    def buildProtocol(self, addr: Any) -> _Stream:
        return _Stream(self.service, self.key[0])

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        dropped = self.service.pending_tcp.pop(self.key, [])
        log.warn(
            "TCP connection to {peer} failed, {count} message(s) dropped: {error}",
            peer=f"{self.key[0]}/tcp:{self.key[1]}:{self.key[2]}",
            count=len(dropped),
            error=reason.getErrorMessage(),
        )
        side, host, port = self.key
        service = self.service
        service.run(service.core.transport_failed(Peer(side, "tcp", host, port), service.now()))


class _Control:
    def __init__(self, service: SipService) -> None:
        self.service = service

    def end_call(self, dialog: DialogId, cause: int, text: str) -> None:
        self.service.run(self.service.core.end_call(dialog, cause, text, self.service.now()))

    def reoffer(
        self, dialog: DialogId, side: Side, body: bytes
    ) -> defer.Deferred[tuple[int, bytes]]:
        token, actions = self.service.core.reoffer(dialog, side, body, self.service.now())
        d: defer.Deferred[tuple[int, bytes]] = defer.Deferred()
        self.service.reoffers[token] = d
        self.service.run(actions)
        return d


class SipService:
    """Listens for SIP on both sides and runs the proxy core."""

    def __init__(
        self,
        config: ProxyConfig,
        handler: MediaHandler | None = None,
        *,
        reactor: Any = None,
        core: ProxyCore | None = None,
        metrics: PcscfMetrics | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.config = config
        self.core = core if core is not None else ProxyCore(config)
        self.handler: MediaHandler = handler if handler is not None else PassThrough()
        #: Counts responses and ended calls (``None``: metrics off, nothing counted).
        self.metrics = metrics
        self.connections: dict[ConnKey, _Stream] = {}
        self.pending_tcp: dict[ConnKey, list[bytes]] = {}
        self.reoffers: dict[int, defer.Deferred[tuple[int, bytes]]] = {}
        self.udp: dict[Side, Any] = {}
        self.ports: list[IListeningPort] = []
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        #: Open the Gm port with ``SO_REUSEPORT``, shared with the other workers of
        #: ``e2ae pcscf --workers N`` (pcscf/workers.py); its port must not be 0.
        self.shared_gm = False
        self.handler.attach(_Control(self))

    # ------------------------------------------------------------------ lifecycle
    def listen(self) -> None:
        """Open UDP and TCP on the Gm and core addresses of the configuration. A port 0 is
        replaced by the one the system chose (call before any message flows)."""
        if self.shared_gm:
            gm = self.listen_shared("gm", *self.config.gm)
        else:
            gm = self.listen_side("gm", *self.config.gm)
        core = self.listen_side("core", *self.config.core)
        if (gm, core) != (self.config.gm[1], self.config.core[1]):
            self.config = attrs.evolve(
                self.config, gm=(self.config.gm[0], gm), core=(self.config.core[0], core)
            )
            self.core = ProxyCore(self.config, registrar=self.core.registrar)

    def listen_side(self, side: Side, host: str, port: int) -> int:
        """UDP then TCP on the same port (port 0: the system picks a port free for both);
        returns the port."""
        for _ in range(20 if port == 0 else 1):
            udp = _Udp(self, side)
            uport = self.reactor.listenUDP(port, udp, interface=host, maxPacketSize=MAX_DATAGRAM)
            sock = getattr(uport, "socket", None)
            if sock is not None:
                # bursts of calls must not overflow the kernel's default receive buffer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)
            actual = int(uport.getHost().port)
            try:
                tport = self.reactor.listenTCP(actual, _StreamFactory(self, side), interface=host)
            except CannotListenError:
                uport.stopListening()
                if port != 0:
                    raise
                continue
            self.udp[side] = udp
            self.ports += [uport, tport]
            return actual
        raise CannotListenError(host, port, OSError("no port free for both UDP and TCP"))

    def listen_shared(self, side: Side, host: str, port: int) -> int:
        """UDP and TCP on ``port`` with ``SO_REUSEPORT`` (Linux): every process listening so
        on it gets a share of the peers, the kernel choosing by their address and port (a
        flow always reaches the same socket while the set of sockets is unchanged)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        udp_sock = socket.socket(family, socket.SOCK_DGRAM)
        tcp_sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)
            udp_sock.bind((host, port))
            udp_sock.setblocking(False)
            tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            tcp_sock.bind((host, port))
            tcp_sock.listen(50)
            tcp_sock.setblocking(False)
            udp = _Udp(self, side)
            uport = self.reactor.adoptDatagramPort(
                udp_sock.fileno(), family, udp, maxPacketSize=MAX_DATAGRAM
            )
            tport = self.reactor.adoptStreamPort(
                tcp_sock.fileno(), family, _StreamFactory(self, side)
            )
        except OSError as exc:
            raise CannotListenError(host, port, exc) from exc
        finally:
            udp_sock.close()  # the reactor holds copies of both descriptors
            tcp_sock.close()
        self.udp[side] = udp
        self.ports += [uport, tport]
        return int(uport.getHost().port)

    def stop(self) -> defer.Deferred[Any]:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for conn in list(self.connections.values()):
            conn.transport.loseConnection()  # type: ignore[union-attr]
        return defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in self.ports], consumeErrors=True
        )

    def now(self) -> float:
        return float(self.reactor.seconds())

    # ------------------------------------------------------------------ input
    def received_datagram(self, peer: Peer, data: bytes) -> None:
        try:
            item = parse_datagram(data)
        except MessageError as exc:
            self.run(self.core.malformed(peer, exc))
            return
        self.received_item(peer, item)

    def received_item(self, peer: Peer, item: Any) -> None:
        if isinstance(item, MessageError):
            self.run(self.core.malformed(peer, item))
            return
        try:
            actions = self.core.receive(peer, item, self.now())
        except Exception:
            log.failure("Proxy failed on a message from {peer}", peer=str(peer))
            return
        self.run(actions)

    def connection_made(self, conn: _Stream) -> None:
        assert conn.peer is not None
        key = (conn.peer.side, conn.peer.host, conn.peer.port)
        self.connections[key] = conn
        for data in self.pending_tcp.pop(key, []):
            conn.send(data)

    def connection_lost(self, conn: _Stream) -> None:
        if conn.peer is None:
            return
        key = (conn.peer.side, conn.peer.host, conn.peer.port)
        if self.connections.get(key) is conn:
            del self.connections[key]

    # ------------------------------------------------------------------ output
    def run(self, actions: list[Action]) -> None:
        """Carry out what the core asked for, then re-arm the timer."""
        for action in actions:
            try:
                self._do(action)
            except Exception:
                log.failure("Failed to carry out {action!r}", action=action)
        self._rearm()

    def _do(self, action: Action) -> None:
        if isinstance(action, Send):
            self.send(action.peer, action.message.serialise())
            if self.metrics is not None and isinstance(action.message, Response):
                self.metrics.response(action.message.status, action.relayed)
        elif isinstance(action, MediaRequest):
            self._media(action)
        elif isinstance(action, DialogEnded):
            if self.metrics is not None:
                self.metrics.call_ended(action.outcome, action.cause)
            try:
                self.handler.dialog_ended(action.dialog, action.reason)
            except Exception:
                log.failure("Media handler failed on dialog end", call_id=action.dialog.call_id)
        elif isinstance(action, ReofferAnswered):
            d = self.reoffers.pop(action.token, None)
            if d is not None:
                d.callback((action.status, action.body))
        elif isinstance(action, Log):
            level = _LEVELS[action.level]
            if enabled(level):
                log.emit(level, action.format, **action.fields)

    def send(self, peer: Peer, data: bytes) -> None:
        if peer.transport == "udp":
            udp = self.udp.get(peer.side)
            if udp is not None and udp.transport is not None:
                udp.transport.write(data, (peer.host, peer.port))
            return
        key = (peer.side, peer.host, peer.port)
        conn = self.connections.get(key)
        if conn is not None:
            conn.send(data)
            return
        queue = self.pending_tcp.setdefault(key, [])
        queue.append(data)
        if len(queue) == 1:
            host = self.config.address(peer.side)[0]
            self.reactor.connectTCP(
                peer.host, peer.port, _Connector(self, key), timeout=5, bindAddress=(host, 0)
            )

    def _media(self, action: MediaRequest) -> None:
        token = action.token
        call_id = action.context.call_id

        def done(result: object) -> None:
            if not isinstance(result, Forward | Reject):
                log.error(
                    "Media handler returned {result!r} for {call_id}",
                    result=result,
                    call_id=call_id,
                )
                result = Reject(500, "media handler returned no result")
            self.run(self.core.media_result(token, result, self.now()))

        def failed(failure: Failure) -> None:
            log.failure("Media handler failed for {call_id}", failure, call_id=call_id)
            self.run(
                self.core.media_result(token, Reject(500, "media handling failed"), self.now())
            )

        d: defer.Deferred[MediaResult] = defer.maybeDeferred(
            self.handler.sdp, action.context, action.body
        )
        d.addCallbacks(done, failed)

    def _rearm(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        if self._timer is not None and self._timer.active():
            if self._timer_at is not None and self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.reactor.callLater(max(0.0, deadline - self.now()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            actions = self.core.tick(self.now())
        except Exception:
            log.failure("Proxy timer failed")
            actions = []
        self.run(actions)


class PcscfService(Service):
    """A P-CSCF put together by :func:`build`: SIP on the Gm and core sides, the Iq controller
    the AGWs register with, and the media handler (e2ae per the policy).

    :meth:`startService` opens the SIP listeners (UDP and TCP on each side) and the Iq
    listener; a port 0 is replaced by the one the system chose, which :attr:`gm`,
    :attr:`core` and :attr:`iq` give afterwards. :meth:`stopService` closes the Iq links, the
    SIP connections and every listener. With ``metrics`` it also serves ``/metrics`` there
    (:attr:`metrics_address`)."""

    name = "pcscf"

    def __init__(
        self,
        config: PcscfConfig,
        sip: SipService,
        controller: IqController,
        e2ae: E2aeMediaHandler,
        metrics: MetricsServer | None = None,
    ) -> None:
        self.config = config
        self.sip = sip
        self.controller = controller
        self.e2ae = e2ae
        self.metrics = metrics
        self.iq_port: IListeningPort | None = None
        self._iq_bound: int | None = None

    @property
    def gm(self) -> tuple[str, int]:
        """The Gm (UE side) SIP address, its actual port once started."""
        return self.sip.config.gm

    @property
    def core(self) -> tuple[str, int]:
        """The core side SIP address, its actual port once started."""
        return self.sip.config.core

    @property
    def iq(self) -> tuple[str, int]:
        """The Iq address the AGWs connect to, its actual port once started."""
        host, port = self.config.iq
        return host, (port if self._iq_bound is None else self._iq_bound)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where ``/metrics`` is served (its actual port once started); ``None``: metrics off."""
        return None if self.metrics is None else self.metrics.bound

    def startService(self) -> None:
        """Open every listener. Raises :class:`CannotListenError` (nothing is left open)."""
        host, port = self.config.iq
        try:
            self.sip.listen()
            self.iq_port = self.controller.listen(port, host)
            self._iq_bound = int(self.iq_port.getHost().port)
            if self.metrics is not None:
                self.metrics.listen(self.sip.reactor, "P-CSCF")
        except Exception:
            self.sip.stop()
            if self.iq_port is not None:
                self.iq_port.stopListening()
                self.iq_port = None
            raise
        super().startService()

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        self.e2ae.stop()
        self.controller.stop()
        closing = []
        if self.iq_port is not None:
            closing.append(defer.maybeDeferred(self.iq_port.stopListening))
        closing.append(self.sip.stop())
        if self.metrics is not None:
            closing.append(defer.maybeDeferred(self.metrics.stop))
        return defer.gatherResults(closing, consumeErrors=True)


def build(
    config: PcscfConfig,
    handler: MediaHandler | None = None,
    *,
    reactor: Any = None,
    metrics: tuple[str, int] | None = None,
    shared_gm: bool = False,
) -> PcscfService:
    """The P-CSCF of ``config``, not yet started: SIP on both sides, Iq for the AGWs, e2ae per
    the policy. ``handler`` replaces the e2ae media handler (e.g.
    :class:`~pcscf.mediahook.PassThrough`); Iq is served either way. ``metrics``: serve
    Prometheus metrics on this address (port 0: the system picks), in a registry of this
    P-CSCF's own (docs/metrics.md); ``None``: none are kept. ``shared_gm``: open the Gm port
    with ``SO_REUSEPORT``, shared with the other workers of ``e2ae pcscf --workers``. Raises
    :class:`~iq.errors.LocalIqError` for an Iq configuration that cannot be used."""
    from pcscf.e2ae import E2aeMediaHandler, iq_controller

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    controller = iq_controller(config, reactor)
    e2ae = E2aeMediaHandler(controller, config.policy, reactor=reactor)
    if handler is None:
        handler = e2ae
    else:
        e2ae.stop()
    counters: PcscfMetrics | None = None
    server: MetricsServer | None = None
    if metrics is not None:
        from e2ae.metrics import MetricsServer, new_registry
        from pcscf.metrics import PcscfMetrics

        server = MetricsServer(new_registry(), metrics)
        counters = PcscfMetrics(server.registry)
        controller.observer = counters.iq_transaction
    sip = SipService(_proxy_config(config), handler, reactor=reactor, metrics=counters)
    sip.shared_gm = shared_gm
    if counters is not None:
        table = e2ae.table
        counters.watch(
            lambda: len(sip.core.registrar),
            lambda: sum(1 for call in table.calls.values() if call.streams),
            lambda: (len(sip.core.server_txns), len(sip.core.client_txns)),
        )
    return PcscfService(config, sip, controller, e2ae, server)


#: The collector's thresholds while serving (Python's are 700, 10, 10). Under load the P-CSCF
#: keeps every completed transaction for Timer J/K/D (32 s over UDP): hundreds of thousands of
#: live objects, which Python's thresholds made the collector walk in full about once a second,
#: each time longer (20 ms at first, 140 ms after 10 s at 500 calls/s; a quarter of the CPU of a
#: 20 s step at 600 calls/s, and none of it ever found garbage). With these, a young collection
#: runs every 10,000 allocations and a full one after 500 middle ones (minutes apart at full
#: load): docs/performance.md, "The garbage collector".
GC_THRESHOLDS = (10_000, 10, 500)


def serve(
    config: PcscfConfig,
    handler: MediaHandler | None = None,
    *,
    metrics: tuple[str, int] | None = None,
    worker: int | None = None,
) -> int:
    """Run the P-CSCF of :func:`build` until stopped (the ``e2ae pcscf`` command). Prints the
    bound addresses. ``metrics``: serve Prometheus metrics there (:func:`build`). ``worker``:
    run as worker ``worker`` of ``e2ae pcscf --workers`` (pcscf/workers.py): the Gm port is
    shared (``SO_REUSEPORT``) and the line printed names the worker and its metrics port."""
    from twisted.internet import reactor

    from iq.errors import LocalIqError

    try:
        pcscf = build(
            config, handler, reactor=reactor, metrics=metrics, shared_gm=worker is not None
        )
    except LocalIqError as exc:
        print(f"e2ae pcscf: {exc}", file=sys.stderr)
        return 2
    try:
        pcscf.startService()
    except CannotListenError as exc:
        print(f"e2ae pcscf: cannot listen: {exc}", file=sys.stderr)
        return 1
    (gm_host, gm_port), (core_host, core_port) = pcscf.gm, pcscf.core
    iq_host, iq_actual = pcscf.iq
    log.info(
        "P-CSCF listening: gm {gm}, core {core}, next hop {next_hop}; Iq {iq} ({iq_transport})",
        gm=f"{gm_host}:{gm_port}",
        core=f"{core_host}:{core_port}",
        next_hop=f"{config.next_hop[0]}:{config.next_hop[1]}",
        iq=f"{iq_host}:{iq_actual}",
        iq_transport="TLS" if pcscf.controller.tls is not None else "TCP",
    )

    # Said once the reactor runs, so its signal handlers are in place: a SIGTERM sent as
    # soon as this line is read stops the service cleanly.
    def _ready() -> None:
        addresses = f"gm={gm_host}:{gm_port} core={core_host}:{core_port} iq={iq_host}:{iq_actual}"
        if worker is None:
            print(f"pcscf {addresses}", flush=True)
            return
        bound = pcscf.metrics_address
        shown = "" if bound is None else f" metrics={bound[0]}:{bound[1]}"
        print(f"pcscf worker={worker} {addresses}{shown}", flush=True)

    reactor.callWhenRunning(_ready)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", pcscf.stopService)
    # What start-up made (modules, the configuration, Twisted) lives as long as the process:
    # out of the collector's way, a full collection no longer walks it (tens of ms each).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    reactor.run()
    return 0


def _proxy_config(config: PcscfConfig) -> ProxyConfig:
    host, port = config.next_hop
    transport: Any = config.next_hop_transport
    return ProxyConfig(
        gm=config.gm,
        core=config.core,
        next_hop=Peer("core", transport, host, port),
        network_mechanisms=config.policy.network_mechanisms,
        **config.sip_limits,  # type: ignore[arg-type]
    )
