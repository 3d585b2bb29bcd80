"""The SIP service edge over real UDP/TCP sockets on 127.0.0.1 (ephemeral ports), in process:
a slow media handler for one call does not hold up another, and bad input never stops it."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientCreator, DatagramProtocol, Protocol

from pcscf.mediahook import CallControl
from pcscf.service import SipService
from pcscf.sip.media import DialogId, Forward, MediaContext, MediaResult
from pcscf.sip.message import Request, Response, parse_datagram
from pcscf.sip.proxy import Peer, ProxyConfig

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=message 9 TCP/TLS/MSRP *\r\n"


class Endpoint(DatagramProtocol):
    """A UDP SIP endpoint that records what it gets; the 'core' one answers automatically."""

    noisy = False

    def __init__(self, auto: tuple[str, ...] = ()) -> None:
        self.got: list[Request | Response] = []
        self.waiters: list[tuple[Callable[[Any], bool], defer.Deferred[Any]]] = []
        self.auto = auto

    @property
    def port(self) -> int:
        return int(self.transport.getHost().port)  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        msg = parse_datagram(data)
        self.got.append(msg)
        for pred, d in list(self.waiters):
            if pred(msg):
                self.waiters.remove((pred, d))
                d.callback(msg)
        if isinstance(msg, Request) and msg.method in self.auto:
            self.transport.write(self._answer(msg).encode(), addr)  # type: ignore[union-attr]

    def _answer(self, msg: Request) -> str:
        keep = ("via", "from", "call-id", "cseq", "contact", "record-route")
        lines = [
            f"{k}: {v}" for k, v in msg.headers if k.lower() in keep and k.lower() != "contact"
        ]
        to = msg.get("To") or ""
        if msg.method == "REGISTER":
            lines += [f"To: {to}", f"Contact: {msg.get('Contact')}", "Expires: 600"]
        elif msg.method == "INVITE":
            tag = "" if "tag=" in to else ";tag=callee"
            lines += [f"To: {to}{tag}", f"Contact: <sip:peer@127.0.0.1:{self.port}>"]
            body = SDP.replace(b"TCP/TLS/MSRP", b"TCP/MSRP")
            lines += ["Content-Type: application/sdp", f"Content-Length: {len(body)}"]
            return "SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\n\r\n" + body.decode()
        else:
            lines.append(f"To: {to}")
        return "SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"

    def wait(self, pred: Callable[[Any], bool]) -> defer.Deferred[Any]:
        for msg in self.got:
            if pred(msg):
                return defer.succeed(msg)
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiters.append((pred, d))
        d.addTimeout(10, reactor)
        return d

    def send(self, text: str, port: int, body: bytes = b"") -> None:
        head = text.strip().replace("\n", "\r\n")
        data = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        self.transport.write(data, ("127.0.0.1", port))  # type: ignore[union-attr]


class SlowHandler:
    """Holds the SDP of calls named 'slow-*' until released; 'boom-*' raises."""

    def __init__(self) -> None:
        self.held: dict[str, defer.Deferred[MediaResult]] = {}
        self.ended: list[DialogId] = []

    def attach(self, control: CallControl) -> None:
        self.control = control

    def sdp(self, context: MediaContext, body: bytes) -> MediaResult | defer.Deferred[MediaResult]:
        if context.call_id.startswith("boom"):
            raise RuntimeError("handler bug")
        if context.call_id.startswith("slow"):
            d: defer.Deferred[MediaResult] = defer.Deferred()
            self.held[context.call_id] = d
            return d
        return Forward(body.replace(b"TCP/TLS/MSRP", b"TCP/MSRP"))

    def dialog_ended(self, dialog: DialogId, reason: str) -> None:
        self.ended.append(dialog)


@pytest.fixture
def endpoints() -> Generator[tuple[Endpoint, Endpoint], None, None]:
    ue, core = Endpoint(auto=("BYE",)), Endpoint(auto=("REGISTER", "OPTIONS", "INVITE", "BYE"))
    ports = [
        reactor.listenUDP(0, ue, interface="127.0.0.1", maxPacketSize=65_535),
        reactor.listenUDP(0, core, interface="127.0.0.1", maxPacketSize=65_535),
    ]
    yield ue, core
    for port in ports:
        port.stopListening()


def _service(core_port: int, handler: Any) -> SipService:
    config = ProxyConfig(
        gm=("127.0.0.1", 0),
        core=("127.0.0.1", 0),
        next_hop=Peer("core", "udp", "127.0.0.1", core_port),
    )
    service = SipService(config, handler, reactor=reactor)
    service.listen()
    return service


def _invite(ue: Endpoint, gm: int, call: str) -> None:
    ue.send(
        f"""INVITE sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bK{call}
Max-Forwards: 70
From: <sip:alice@ims.test>;tag=a
To: <sip:bob@ims.test>
Call-ID: {call}
CSeq: 1 INVITE
Contact: <sip:alice@127.0.0.1:{ue.port}>
Content-Type: application/sdp""",
        gm,
        SDP,
    )


def _register(ue: Endpoint, gm: int) -> None:
    ue.send(
        f"""REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKreg
From: <sip:alice@ims.test>;tag=r
To: <sip:alice@ims.test>
Call-ID: reg
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:{ue.port}>
Security-Client: msrp-tls;mediasec""",
        gm,
    )


def _is(
    method: str | None = None, status: int | None = None, call: str | None = None
) -> Callable[[Any], bool]:
    def pred(msg: Any) -> bool:
        if method is not None and not (isinstance(msg, Request) and msg.method == method):
            return False
        if status is not None and not (isinstance(msg, Response) and msg.status == status):
            return False
        return call is None or msg.call_id == call

    return pred


@pytest_twisted.inlineCallbacks
def test_slow_handler_does_not_block_other_calls(
    endpoints: tuple[Endpoint, Endpoint],
) -> Generator[Any, Any, None]:
    ue, core = endpoints
    handler = SlowHandler()
    service = _service(core.port, handler)
    gm = service.config.gm[1]
    try:
        _register(ue, gm)
        ok = yield ue.wait(_is(status=200, call="reg"))
        assert "msrp-tls;mediasec" in ok.get("Security-Server")
        _invite(ue, gm, "slow-1")
        yield ue.wait(_is(status=100, call="slow-1"))
        _invite(ue, gm, "fast-1")
        fast = yield core.wait(_is(method="INVITE", call="fast-1"))
        assert b"TCP/MSRP" in fast.body
        assert not [m for m in core.got if m.call_id == "slow-1"]
        handler.held["slow-1"].callback(Forward(b"slow body"))
        slow = yield core.wait(_is(method="INVITE", call="slow-1"))
        assert slow.body == b"slow body"
    finally:
        yield service.stop()


@pytest_twisted.inlineCallbacks
def test_bad_input_is_answered_and_the_service_carries_on(
    endpoints: tuple[Endpoint, Endpoint],
) -> Generator[Any, Any, None]:
    ue, core = endpoints
    service = _service(core.port, SlowHandler())
    gm = service.config.gm[1]
    try:
        ue.transport.write(b"\x00\xff garbage \r\n\r\n", ("127.0.0.1", gm))  # type: ignore[union-attr]
        ue.send(
            f"""OPTIONS sip:x@ims.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKbad
From: <sip:alice@ims.test>;tag=a
To: <sip:x@ims.test>
Call-ID: bad
CSeq: one OPTIONS""",
            gm,
        )
        bad = yield ue.wait(_is(status=400, call="bad"))
        assert "Bad CSeq" in bad.reason
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        _invite(ue, gm, "boom-1")
        failed = yield ue.wait(_is(status=500, call="boom-1"))
        assert "media handling failed" in failed.get("Warning")
        assert DialogId("boom-1", "orig") in handler_ended(service)
    finally:
        yield service.stop()


def handler_ended(service: SipService) -> list[DialogId]:
    handler = service.handler
    assert isinstance(handler, SlowHandler)
    return handler.ended


def test_port_zero_is_replaced_by_the_chosen_port() -> None:
    config = ProxyConfig(
        gm=("127.0.0.1", 0), core=("127.0.0.1", 0), next_hop=Peer("core", "udp", "127.0.0.1", 9)
    )
    service = SipService(config, reactor=reactor)
    service.listen()
    try:
        assert service.config.gm[1] != 0 and service.config.core[1] != 0
        assert service.core.config is service.config
    finally:
        service.stop()


class _TcpClient(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.waiting: list[tuple[bytes, defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for needle, d in list(self.waiting):
            if needle in self.data:
                self.waiting.remove((needle, d))
                d.callback(self.data)

    def wait_for(self, needle: bytes) -> defer.Deferred[bytes]:
        if needle in self.data:
            return defer.succeed(self.data)
        d: defer.Deferred[bytes] = defer.Deferred()
        self.waiting.append((needle, d))
        d.addTimeout(10, reactor)
        return d

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


@pytest_twisted.inlineCallbacks
def test_tcp_framing_error_closes_only_that_connection(
    endpoints: tuple[Endpoint, Endpoint],
) -> Generator[Any, Any, None]:
    _, core = endpoints
    service = _service(core.port, SlowHandler())
    gm = service.config.gm[1]
    try:
        good = yield ClientCreator(reactor, _TcpClient).connectTCP("127.0.0.1", gm)
        bad = yield ClientCreator(reactor, _TcpClient).connectTCP("127.0.0.1", gm)
        bad.transport.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n\r\n")
        yield bad.closed
        port = good.transport.getHost().port
        request = (
            f"OPTIONS sip:x@ims.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKt"
            "\r\nFrom: <sip:a@ims.test>;tag=1\r\nTo: <sip:x@ims.test>\r\nCall-ID: tcp\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        # a UE that is not registered is refused on its own connection, which stays usable
        good.transport.write(request.encode()[:40])
        good.transport.write(request.encode()[40:])
        yield good.wait_for(b"403 Forbidden (not registered)")
        good.transport.write(request.replace("z9hG4bKt", "z9hG4bKu").encode())
        data = yield good.wait_for(b"z9hG4bKu")
        assert data.count(b"SIP/2.0 403") == 2
        assert len(service.connections) == 1
        good.transport.loseConnection()
        yield good.closed
    finally:
        yield service.stop()


@pytest_twisted.inlineCallbacks
def test_handler_ends_a_call_and_reoffers_through_call_control(
    endpoints: tuple[Endpoint, Endpoint],
) -> Generator[Any, Any, None]:
    ue, core = endpoints
    handler = SlowHandler()
    service = _service(core.port, handler)
    gm = service.config.gm[1]
    try:
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        _invite(ue, gm, "ctl-1")
        ok = yield ue.wait(_is(status=200, call="ctl-1"))
        assert b"TCP/MSRP" in ok.body
        dialog = DialogId("ctl-1", "orig")
        status, answer = yield handler.control.reoffer(dialog, "core", SDP)
        assert status == 200 and b"m=message" in answer
        yield core.wait(_is(method="ACK", call="ctl-1"))
        handler.control.end_call(dialog, 503, "TLS session failed")
        to_ue = yield ue.wait(_is(method="BYE", call="ctl-1"))
        to_core = yield core.wait(_is(method="BYE", call="ctl-1"))
        for bye in (to_ue, to_core):
            assert bye.get("Reason") == 'SIP;cause=503;text="TLS session failed"'
        assert to_ue.uri == f"sip:alice@127.0.0.1:{ue.port}"
        assert to_core.uri == f"sip:peer@127.0.0.1:{core.port}"
        assert dialog in handler.ended
    finally:
        yield service.stop()


def test_log_events_below_the_started_level_are_not_emitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twisted.logger import LogLevel, globalLogPublisher

    import e2ae.logsetup
    from pcscf.sip.proxy import Log

    seen: list[dict[str, Any]] = []
    service = SipService(
        ProxyConfig(
            gm=("127.0.0.1", 5060),
            core=("127.0.0.1", 5061),
            next_hop=Peer("core", "udp", "127.0.0.1", 5062),
        )
    )
    globalLogPublisher.addObserver(seen.append)
    try:
        service.run([Log("info", "not started: {call_id}", {"call_id": "c0"})])
        monkeypatch.setattr(e2ae.logsetup, "_threshold", LogLevel.warn)
        service.run(
            [
                Log("info", "below the level: {call_id}", {"call_id": "c1"}),
                Log("warn", "kept: {call_id}", {"call_id": "c2"}),
            ]
        )
    finally:
        globalLogPublisher.removeObserver(seen.append)
    mine = [e for e in seen if e.get("log_namespace") == "pcscf"]
    assert [e["call_id"] for e in mine] == ["c0", "c2"]
    assert mine[1]["log_level"] == LogLevel.warn
