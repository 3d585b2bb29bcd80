"""What the SIP edges do with input they cannot use, over real sockets on 127.0.0.1: datagrams up
to 65,535 bytes are read whole, a header that is not UTF-8 is answered 400 with the reason, a
50 KB INVITE gets its final response over UDP and over TCP, a request over the UDP threshold
goes to a UDP next hop over TCP (RFC 3261 18.1.1) or is answered 513 when TCP fails, and the
core stub answers a request without Call-ID or with ``Expires: abc`` with 400 instead of
failing."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ClientCreator, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from pcscf.service import SipService
from pcscf.sip.message import Message, Request, Response, StreamParser
from pcscf.sip.proxy import Peer, ProxyConfig
from tests.pcscf.test_service import SDP, Endpoint, SlowHandler, _is, _register, _service

#: An SDP of about 50 KB (a few m-lines and many attributes, as a large conference offer has).
BIG_SDP = SDP + b"".join(b"a=x-pad:%05d " % i + b"x" * 80 + b"\r\n" for i in range(560))


def _big_invite(via: str, port: int, call: str) -> bytes:
    head = (
        "INVITE sip:bob@ims.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{via} 127.0.0.1:{port};branch=z9hG4bK{call}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@ims.test>;tag=a\r\nTo: <sip:bob@ims.test>\r\n"
        f"Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(BIG_SDP)}\r\n\r\n"
    )
    return head.encode() + BIG_SDP


def _udp(endpoint: Endpoint) -> Any:
    return reactor.listenUDP(0, endpoint, interface="127.0.0.1", maxPacketSize=65_535)


def _service_with(core_port: int, **limits: Any) -> SipService:
    config = ProxyConfig(
        gm=("127.0.0.1", 0),
        core=("127.0.0.1", 0),
        next_hop=Peer("core", "udp", "127.0.0.1", core_port),
        **limits,
    )
    service = SipService(config, SlowHandler(), reactor=reactor)
    service.listen()
    return service


class _CoreTcp(Protocol):
    """The TCP side of a core :class:`Endpoint`: what arrives is recorded with (and answered
    like) what arrives over UDP, and the answer goes back on the connection."""

    def __init__(self, endpoint: Endpoint, transports: list[str]) -> None:
        self.endpoint = endpoint
        self.transports = transports
        self.parser = StreamParser()

    def dataReceived(self, data: bytes) -> None:
        for item in self.parser.feed(data):
            if isinstance(item, Exception):
                raise AssertionError(f"bad SIP from the P-CSCF: {item}")
            self.transports.append(f"tcp {item.call_id}")
            endpoint = self.endpoint
            endpoint.got.append(item)
            for pred, d in list(endpoint.waiters):
                if pred(item):
                    endpoint.waiters.remove((pred, d))
                    d.callback(item)
            if isinstance(item, Request) and item.method in endpoint.auto:
                self.transport.write(endpoint._answer(item).encode())  # type: ignore[union-attr]


def _core_both(endpoint: Endpoint) -> tuple[list[Any], list[str]]:
    """``endpoint`` on UDP and TCP of one port, as a SIP server listens (RFC 3261 18.2.1).

    TCP is bound first: a UDP port that fails to bind raises before the endpoint is connected,
    so the endpoint can be offered to the next port (a UDP port bound and then stopped would
    still hold it until its asynchronous stop)."""
    transports: list[str] = []
    for _ in range(20):
        factory = Factory.forProtocol(lambda: _CoreTcp(endpoint, transports))
        tcp = reactor.listenTCP(0, factory, interface="127.0.0.1")
        try:
            udp = reactor.listenUDP(
                tcp.getHost().port, endpoint, interface="127.0.0.1", maxPacketSize=65_535
            )
        except CannotListenError:
            tcp.stopListening()
            continue
        return [udp, tcp], transports
    raise AssertionError("no port free for both UDP and TCP")


class _Errors:
    """Log events of unhandled errors (tracebacks) while a test runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.events.append(event)


@pytest_twisted.inlineCallbacks
def test_non_utf8_header_gets_400_and_no_traceback() -> None:
    ue, core = Endpoint(), Endpoint()
    ports = [
        reactor.listenUDP(0, e, interface="127.0.0.1", maxPacketSize=65_535) for e in (ue, core)
    ]
    service = _service(core.port, SlowHandler())
    errors = _Errors()
    globalLogPublisher.addObserver(errors)
    try:
        gm = service.config.gm[1]
        data = (
            f"OPTIONS sip:x@ims.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKutf\r\n"
            "From: \xe9ve <sip:eve@ims.test>;tag=e\r\nTo: <sip:x@ims.test>\r\nCall-ID: utf\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode("latin-1")
        ue.transport.write(data, ("127.0.0.1", gm))  # type: ignore[union-attr]
        bad = yield ue.wait(_is(status=400, call="utf"))
        assert bad.reason == "Header is not UTF-8"
        assert not errors.events, errors.events
    finally:
        globalLogPublisher.removeObserver(errors)
        yield service.stop()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_50kb_invite_over_udp_is_forwarded_whole_and_answered() -> None:
    """Twisted reads 8192 bytes of a datagram unless told otherwise: the INVITE would have been
    cut and dropped without an answer."""
    ue, core = Endpoint(auto=("BYE",)), Endpoint(auto=("REGISTER", "INVITE"))
    assert len(BIG_SDP) > 50_000
    ports = [
        reactor.listenUDP(0, e, interface="127.0.0.1", maxPacketSize=65_535) for e in (ue, core)
    ]
    # 0: no switch to TCP, so the 50 KB INVITE crosses both UDP legs as one datagram each
    service = _service_with(core.port, udp_tcp_threshold=0)
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        ue.transport.write(_big_invite("UDP", ue.port, "big-udp"), ("127.0.0.1", gm))  # type: ignore[union-attr]
        forwarded = yield core.wait(_is(method="INVITE", call="big-udp"))
        assert forwarded.body == BIG_SDP.replace(b"TCP/TLS/MSRP", b"TCP/MSRP")
        assert forwarded.top_via.transport == "UDP"
        final = yield ue.wait(_is(status=200, call="big-udp"))
        assert isinstance(final, Response)
    finally:
        yield service.stop()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_invite_over_the_udp_threshold_goes_to_the_udp_next_hop_over_tcp() -> None:
    """RFC 3261 18.1.1: larger than 1300 bytes with the path MTU unknown, the request goes over
    TCP to the same address and the top Via says TCP; a smaller one stays on UDP."""
    ue, core = Endpoint(auto=("BYE",)), Endpoint(auto=("REGISTER", "INVITE"))
    uport = _udp(ue)
    ports, transports = _core_both(core)
    service = _service(core.port, SlowHandler())
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        ue.transport.write(_big_invite("UDP", ue.port, "big-switch"), ("127.0.0.1", gm))  # type: ignore[union-attr]
        forwarded = yield core.wait(_is(method="INVITE", call="big-switch"))
        assert "tcp big-switch" in transports
        via = forwarded.top_via
        assert (via.transport, via.port) == ("TCP", service.config.core[1])
        assert forwarded.body == BIG_SDP.replace(b"TCP/TLS/MSRP", b"TCP/MSRP")
        final = yield ue.wait(_is(status=200, call="big-switch"))
        assert final.cseq == (1, "INVITE")
        assert "tcp reg" not in transports  # the REGISTER (small) went over UDP
    finally:
        yield service.stop()
        uport.stopListening()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_over_the_threshold_with_no_tcp_at_the_next_hop_is_answered_513() -> None:
    """No silent drop and no 32 s wait for Timer B: the refused TCP connection ends the
    transaction, and the UE learns why."""
    ue, core = Endpoint(), Endpoint(auto=("REGISTER", "INVITE"))
    ports = [_udp(e) for e in (ue, core)]
    service = _service(core.port, SlowHandler())
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        ue.transport.write(_big_invite("UDP", ue.port, "big-513"), ("127.0.0.1", gm))  # type: ignore[union-attr]
        refused = yield ue.wait(_is(status=513, call="big-513"))
        warning = refused.get("Warning") or ""
        assert "too large for UDP" in warning and f"TCP to 127.0.0.1:{core.port}" in warning
        assert not [m for m in core.got if m.call_id == "big-513"]
    finally:
        yield service.stop()
        for port in ports:
            port.stopListening()


class _TcpUe(Protocol):
    def __init__(self) -> None:
        self.parser = StreamParser()
        self.got: list[Message] = []
        self.arrived: defer.Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:
        for item in self.parser.feed(data):
            if isinstance(item, Exception):
                raise AssertionError(f"bad SIP from the P-CSCF: {item}")
            self.got.append(item)
        if self.arrived is not None and self.got:
            arrived, self.arrived = self.arrived, None
            arrived.callback(None)

    @defer.inlineCallbacks
    def wait(self, status: int, call: str) -> Generator[Any, Any, Response]:
        for _ in range(200):
            for msg in self.got:
                if isinstance(msg, Response) and msg.status == status and msg.call_id == call:
                    return msg
            self.arrived = defer.Deferred()
            self.arrived.addTimeout(10, reactor)
            yield self.arrived
        raise AssertionError("no such response")


@pytest_twisted.inlineCallbacks
def test_50kb_invite_over_tcp_gets_its_final_response() -> None:
    core = Endpoint(auto=("REGISTER", "INVITE"))
    ports, _transports = _core_both(core)
    service = _service(core.port, SlowHandler())
    try:
        gm = service.config.gm[1]
        ue = yield ClientCreator(reactor, _TcpUe).connectTCP("127.0.0.1", gm)
        local = ue.transport.getHost().port
        register = (
            "REGISTER sip:ims.test SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bKtreg\r\n"
            "From: <sip:alice@ims.test>;tag=r\r\nTo: <sip:alice@ims.test>\r\nCall-ID: treg\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{local};transport=tcp>\r\n"
            "Security-Client: msrp-tls;mediasec\r\nContent-Length: 0\r\n\r\n"
        )
        ue.transport.write(register.encode())
        yield ue.wait(200, "treg")
        ue.transport.write(_big_invite("TCP", local, "big-tcp"))
        forwarded = yield core.wait(_is(method="INVITE", call="big-tcp"))
        assert forwarded.body == BIG_SDP.replace(b"TCP/TLS/MSRP", b"TCP/MSRP")
        final = yield ue.wait(200, "big-tcp")
        assert final.cseq == (1, "INVITE")
        ue.transport.loseConnection()
    finally:
        yield service.stop()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_core_stub_answers_bad_requests_with_400() -> None:
    from lab.core import CoreStub

    core = CoreStub(reactor, domain="ims.test")
    core_port = core.listen()
    ue = Endpoint()
    port = reactor.listenUDP(0, ue, interface="127.0.0.1", maxPacketSize=65_535)
    errors = _Errors()
    globalLogPublisher.addObserver(errors)
    try:
        register = f"""REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKexp
From: <sip:alice@ims.test>;tag=r
To: <sip:alice@ims.test>
Call-ID: expires-abc
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:{ue.port}>
Expires: abc"""
        ue.send(register, core_port)
        bad = yield ue.wait(_is(status=400, call="expires-abc"))
        assert "Bad Expires" in bad.reason
        ue.send(
            f"""OPTIONS sip:x@ims.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKnocid
From: <sip:alice@ims.test>;tag=o
To: <sip:x@ims.test>
CSeq: 1 OPTIONS""",
            core_port,
        )
        nocid = yield ue.wait(
            lambda m: isinstance(m, Response) and m.status == 400 and m.cseq[1] == "OPTIONS"
        )
        assert "Call-ID" in nocid.reason
        ue.send(register.replace("Expires: abc", "Expires: 60"), core_port)
        ok = yield ue.wait(_is(status=200, call="expires-abc"))
        assert ok.get("Expires") == "60"
        assert not errors.events, errors.events
    finally:
        globalLogPublisher.removeObserver(errors)
        port.stopListening()
        yield defer.maybeDeferred(core.stop)


class _Watch(Protocol):
    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@pytest_twisted.inlineCallbacks
def test_tcp_connections_are_bounded_and_idle_ones_closed() -> None:
    from pcscf.service import SipService
    from pcscf.sip.proxy import Peer, ProxyConfig

    config = ProxyConfig(
        gm=("127.0.0.1", 0),
        core=("127.0.0.1", 0),
        next_hop=Peer("core", "udp", "127.0.0.1", 9),
        max_connections=2,
        idle_timeout=0.5,
    )
    service = SipService(config, SlowHandler(), reactor=reactor)
    service.listen()
    gm = service.config.gm[1]
    try:
        chatty = yield ClientCreator(reactor, _Watch).connectTCP("127.0.0.1", gm)
        silent = yield ClientCreator(reactor, _Watch).connectTCP("127.0.0.1", gm)
        for _ in range(50):  # until the service holds both
            if len(service.connections) == 2:
                break
            yield deferLater(reactor, 0.02)
        third = yield ClientCreator(reactor, _Watch).connectTCP("127.0.0.1", gm)
        yield third.lost.addTimeout(5, reactor)  # refused at once: over the limit
        assert len(service.connections) == 2
        keepalive = task.LoopingCall(lambda: chatty.transport.write(b"\r\n\r\n"))
        keepalive.clock = reactor
        keepalive.start(0.1)
        yield silent.lost.addTimeout(5, reactor)  # silent for longer than idle_timeout
        assert not chatty.lost.called  # CRLF keep-alives are signs of life
        keepalive.stop()
        yield chatty.lost.addTimeout(5, reactor)
        assert not service.connections
    finally:
        yield service.stop()


@pytest_twisted.inlineCallbacks
def test_lab_nodes_take_tcp_on_their_udp_port_and_answer_on_the_connection() -> None:
    """The core stub (and the UE simulator, same node) listen on TCP beside UDP, as a SIP
    server must (RFC 3261 18.2.1), so a P-CSCF can switch a large request to TCP."""
    from lab.core import CoreStub

    core = CoreStub(reactor, domain="ims.test")
    core_port = core.listen()
    try:
        client = yield ClientCreator(reactor, _TcpUe).connectTCP("127.0.0.1", core_port)
        local = client.transport.getHost().port
        client.transport.write(
            (
                "REGISTER sip:ims.test SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bKtcpstub\r\n"
                "From: <sip:carol@ims.test>;tag=r\r\nTo: <sip:carol@ims.test>\r\n"
                "Call-ID: stub-tcp\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:carol@127.0.0.1:{local};transport=tcp>\r\nExpires: 60\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        ok = yield client.wait(200, "stub-tcp")
        assert ok.get("Expires") == "60"
        client.transport.loseConnection()
    finally:
        yield defer.maybeDeferred(core.stop)
