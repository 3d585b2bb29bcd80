"""SIP over UDP or TCP for the lab's user agents and core stub (Twisted edge).

A :class:`SipNode` owns one UDP socket (every node) and, for a UE over TCP, one outbound
connection to its proxy (RFC 5626 style: requests for the UE come back on it). Received bytes go
through the P-CSCF's SIP parser (:mod:`pcscf.sip.message`); malformed input is logged and
dropped. Each message is logged as one event (``{direction}`` ``{summary}``) so that a call flow
can be printed from the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import (
    ClientFactory,
    DatagramProtocol,
    Protocol,
    ServerFactory,
    connectionDone,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import (
    Message,
    MessageError,
    Request,
    StreamParser,
    make_response,
    parse_datagram,
    validate_request,
)

Transport = Literal["udp", "tcp"]
Address = tuple[str, int]
Handler = Callable[[Message, Address, Transport], None]

log = Logger(namespace="lab.sip")


def summary(message: Message) -> str:
    """``INVITE sip:bob@lab`` or ``200 OK (INVITE)``, plus the SDP protos when a body is there."""
    if isinstance(message, Request):
        head = f"{message.method} {message.uri}"
    else:
        head = f"{message.status} {message.reason} ({message.cseq[1]})"
    if message.body and message.content_type.lower().startswith("application/sdp"):
        protos = [
            line.split()[2]
            for line in message.body.decode("utf-8", "replace").splitlines()
            if line.startswith("m=") and len(line.split()) > 2
        ]
        head += f" [SDP {', '.join(protos)}]"
    return head


#: Read UDP datagrams up to this size: Twisted's default (8192) cuts bigger ones silently.
MAX_DATAGRAM = 65_535


class _Udp(DatagramProtocol):
    noisy = False

    def __init__(self, node: SipNode) -> None:
        self.node = node

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n\x00"):
            return
        try:
            message = parse_datagram(datagram)
        except MessageError as exc:
            log.warn(
                "{node}: malformed SIP from {peer}: {error}",
                node=self.node.name,
                peer=f"{addr[0]}:{addr[1]}",
                error=str(exc),
            )
            if exc.partial is not None:
                self.node.refuse(exc.partial, (addr[0], addr[1]), exc)
            return
        self.node.received(message, (addr[0], addr[1]), "udp")


#: Seconds a stopping node waits for a TCP connection to write what is pending.
STOP_GRACE = 2.0


class _Stream(Protocol):
    """A TCP connection: the node's own one to the proxy (``ready`` given), or one a peer
    opened to the node's listener (RFC 3261 18.1.1: a request too large for UDP)."""

    def __init__(self, node: SipNode, ready: defer.Deferred[None] | None) -> None:
        self.node = node
        self.parser = StreamParser()
        self.ready = ready
        self.peer: Address | None = None
        #: Fires when the connection is gone (after loseConnection has written what was
        #: pending: the last response of a UE that stops is not lost).
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.ready is None:
            address = self.transport.getPeer()  # type: ignore[union-attr]
            self.peer = (address.host, address.port)
            self.node.inbound[self.peer] = self
            return
        self.node.stream = self
        self.ready.callback(None)

    def dataReceived(self, data: bytes) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        for item in self.parser.feed(data):
            if isinstance(item, MessageError):
                log.warn(
                    "{node}: malformed SIP over TCP dropped: {error}",
                    node=self.node.name,
                    error=str(item),
                )
                continue
            self.node.received(item, (peer.host, peer.port), "tcp")
        if self.parser.broken:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.node.stream is self:
            self.node.stream = None
        if self.peer is not None and self.node.inbound.get(self.peer) is self:
            del self.node.inbound[self.peer]
        if not self.closed.called:
            self.closed.callback(None)


class _Listener(ServerFactory):
    noisy = False

    def __init__(self, node: SipNode) -> None:
        self.node = node

    def buildProtocol(self, addr: Any) -> _Stream:
        return _Stream(self.node, None)


class SipNode:
    """Sends and receives SIP messages; hands each received one to ``handler``."""

    def __init__(self, reactor: Any, name: str, host: str = "127.0.0.1") -> None:
        self.reactor = reactor
        self.name = name
        self.host = host
        self.handler: Handler | None = None
        self.port = 0
        self.stream: _Stream | None = None
        #: TCP connections peers opened to us, by their address: answers go back on them.
        self.inbound: dict[Address, _Stream] = {}
        self._udp: Any = None
        self._tcp: Any = None

    def listen(self, port: int = 0) -> int:
        """UDP and TCP on the same port, as RFC 3261 18.2.1 asks of a server: a proxy sends a
        request too large for UDP over TCP to the same address (18.1.1)."""
        for _attempt in range(20):
            udp = self.reactor.listenUDP(
                port, _Udp(self), interface=self.host, maxPacketSize=MAX_DATAGRAM
            )
            bound = int(udp.getHost().port)
            try:
                self._tcp = self.reactor.listenTCP(bound, _Listener(self), interface=self.host)
            except CannotListenError:
                udp.stopListening()
                if port:
                    raise
                continue
            self._udp = udp
            self.port = bound
            return bound
        raise CannotListenError(self.host, port, "no port free for both UDP and TCP")

    def connect_tcp(self, host: str, port: int) -> defer.Deferred[None]:
        """One connection to the proxy; every send goes on it from now on."""
        ready: defer.Deferred[None] = defer.Deferred()
        node = self

        class _Factory(ClientFactory):
            noisy = False

            def buildProtocol(self, addr: Any) -> _Stream:
                return _Stream(node, ready)

            def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
                ready.errback(reason)

        connector = self.reactor.connectTCP(host, port, _Factory(), timeout=5)
        ready.addCallback(lambda _: self._bound_tcp(connector))
        return ready

    def _bound_tcp(self, connector: Any) -> None:
        assert self.stream is not None and self.stream.transport is not None
        self.port = int(self.stream.transport.getHost().port)

    @property
    def transport(self) -> Transport:
        return "tcp" if self.stream is not None else "udp"

    def received(self, message: Message, addr: Address, transport: Transport) -> None:
        log.info(
            "{node} <- {summary}",
            node=self.name,
            summary=summary(message),
            direction="in",
            call_id=message.get("Call-ID"),
            peer=f"{addr[0]}:{addr[1]}",
        )
        if isinstance(message, Request):
            try:
                validate_request(message)
            except RemoteSipError as exc:
                log.warn(
                    "{node}: bad {method} from {peer}: {error}",
                    node=self.name,
                    method=message.method,
                    peer=f"{addr[0]}:{addr[1]}",
                    error=str(exc),
                )
                self.refuse(message, addr, exc)
                return
        if self.handler is not None:
            try:
                self.handler(message, addr, transport)
            except RemoteSipError as exc:
                log.warn(
                    "{node}: refused a message from {peer}: {error}",
                    node=self.name,
                    peer=f"{addr[0]}:{addr[1]}",
                    error=str(exc),
                )
                if isinstance(message, Request):
                    self.refuse(message, addr, exc)
            except Exception:
                log.failure(
                    "{node}: failed on a message from {peer}",
                    node=self.name,
                    peer=f"{addr[0]}:{addr[1]}",
                )

    def refuse(self, request: Request, addr: Address, error: RemoteSipError) -> None:
        """Answer a bad request with its error status (400, ...) and reason, if it can be
        answered at all (not an ACK, a Via to send the response to)."""
        if request.method == "ACK":
            return
        try:
            response = make_response(request, error.status, error.reason)
            self.send(response, addr)
        except Exception as exc:
            log.debug("{node}: no response to a bad request: {error}", node=self.name, error=exc)

    def send(self, message: Message, addr: Address) -> None:
        log.info(
            "{node} -> {summary}",
            node=self.name,
            summary=summary(message),
            direction="out",
            call_id=message.get("Call-ID"),
            peer=f"{addr[0]}:{addr[1]}",
        )
        data = message.serialise()
        inbound = self.inbound.get(addr)
        if self.stream is not None and self.stream.transport is not None:
            self.stream.transport.write(data)
        elif inbound is not None and inbound.transport is not None:
            inbound.transport.write(data)
        elif self._udp is not None:
            self._udp.write(data, addr)

    def stop(self) -> defer.Deferred[Any]:
        waits: list[defer.Deferred[Any]] = []
        streams = [self.stream] if self.stream is not None else []
        for stream in [*streams, *self.inbound.values()]:
            transport = stream.transport
            if transport is not None:
                waits.append(stream.closed)
                transport.loseConnection()
                # a peer that reads nothing does not hold us: abort after a while
                abort = self.reactor.callLater(STOP_GRACE, transport.abortConnection)
                stream.closed.addBoth(lambda r, t=abort: (t.active() and t.cancel(), r)[1])
        for name in ("_udp", "_tcp"):
            port = getattr(self, name)
            if port is not None:
                waits.append(defer.maybeDeferred(port.stopListening))
                setattr(self, name, None)
        return defer.gatherResults(waits, consumeErrors=True)
