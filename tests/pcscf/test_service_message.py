"""SIP MESSAGE through the P-CSCF service over real sockets on 127.0.0.1: a multipart body with
NUL and 8-bit bytes crosses both legs byte for byte, the 202 comes back, one log event names
the MESSAGE; over the UDP threshold it goes to the core over TCP; a broken Content-Length is
answered 400; a core that never answers gets the UE a 408 (Timer F, short timers here)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from pcscf.service import SipService
from pcscf.sip.message import Request
from pcscf.sip.proxy import Peer, ProxyConfig
from tests.pcscf.sip.test_proxy_input import _core_both, _udp
from tests.pcscf.sip.test_proxy_message import BODY, MULTIPART
from tests.pcscf.test_service import Endpoint, SlowHandler, _is, _register


class MessageEndpoint(Endpoint):
    """An :class:`Endpoint` that answers MESSAGE with 202 Accepted (and a header to check that
    the response is relayed unchanged)."""

    def _answer(self, msg: Request) -> str:
        if msg.method != "MESSAGE":
            return super()._answer(msg)
        keep = ("via", "from", "call-id", "cseq")
        lines = [f"{k}: {v}" for k, v in msg.headers if k.lower() in keep]
        lines += [f"To: {msg.get('To')};tag=uas", "X-Accepted-By: test"]
        return "SIP/2.0 202 Accepted\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if str(event.get("log_format", "")).startswith("MESSAGE "):
            self.events.append(event)


def _service(core_port: int, **config: Any) -> SipService:
    proxy = ProxyConfig(
        gm=("127.0.0.1", 0),
        core=("127.0.0.1", 0),
        next_hop=Peer("core", "udp", "127.0.0.1", core_port),
        **config,
    )
    service = SipService(proxy, SlowHandler(), reactor=reactor)
    service.listen()
    return service


def _message(ue: Endpoint, port: int, call: str, body: bytes = BODY, uri: str = "") -> None:
    ue.send(
        f"""MESSAGE {uri or "sip:bob@ims.test"} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bK{call}
Max-Forwards: 70
From: <sip:alice@ims.test>;tag=a
To: <sip:bob@ims.test>
Call-ID: {call}
CSeq: 1 MESSAGE
Content-Type: {MULTIPART}""",
        port,
        body,
    )


@pytest_twisted.inlineCallbacks
def test_originating_message_body_arrives_intact_and_202_comes_back() -> Generator[Any, Any, None]:
    ue, core = MessageEndpoint(), MessageEndpoint(auto=("REGISTER", "MESSAGE"))
    ports = [_udp(ue), _udp(core)]
    service = _service(core.port)
    events = _Events()
    globalLogPublisher.addObserver(events)
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        _message(ue, gm, "msg-1")
        got = yield core.wait(_is(method="MESSAGE", call="msg-1"))
        assert got.body == BODY
        assert got.get("Content-Type") == MULTIPART
        assert got.get_all("Record-Route") == []
        accepted = yield ue.wait(_is(status=202, call="msg-1"))
        assert accepted.get("X-Accepted-By") == "test"
        assert [m for m in ue.got if m.call_id == "msg-1" and getattr(m, "status", 0) == 100] == []
        (event,) = events.events
        assert event["call_id"] == "msg-1"
        assert event["direction"] == "orig"
        assert event["status"] == 202
        assert event["peer"] == f"gm/udp:127.0.0.1:{ue.port}"
        assert event["next_hop"] == f"core/udp:127.0.0.1:{core.port}"
    finally:
        globalLogPublisher.removeObserver(events)
        yield service.stop()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_terminating_message_reaches_the_registered_ue() -> Generator[Any, Any, None]:
    ue, core = MessageEndpoint(auto=("MESSAGE",)), MessageEndpoint(auto=("REGISTER",))
    ports = [_udp(ue), _udp(core)]
    service = _service(core.port)
    try:
        gm, core_side = service.config.gm[1], service.config.core[1]
        _register(ue, gm)
        reg = yield core.wait(_is(method="REGISTER", call="reg"))
        yield ue.wait(_is(status=200, call="reg"))
        core.send(
            f"""MESSAGE sip:alice@127.0.0.1:{ue.port} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{core.port};branch=z9hG4bKterm1
Max-Forwards: 70
Route: {reg.get("Path")}
From: <sip:bob@ims.test>;tag=b
To: <sip:alice@ims.test>
Call-ID: term-1
CSeq: 1 MESSAGE
Content-Type: {MULTIPART}""",
            core_side,
            BODY,
        )
        got = yield ue.wait(_is(method="MESSAGE", call="term-1"))
        assert got.body == BODY
        accepted = yield core.wait(_is(status=202, call="term-1"))
        assert accepted.top_via.branch == "z9hG4bKterm1"
    finally:
        yield service.stop()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_message_over_the_udp_threshold_goes_to_the_core_over_tcp() -> Generator[Any, Any, None]:
    big = BODY + bytes(range(256)) * 4
    ue, core = MessageEndpoint(), MessageEndpoint(auto=("REGISTER", "MESSAGE"))
    uport = _udp(ue)
    ports, transports = _core_both(core)
    service = _service(core.port)
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        _message(ue, gm, "msg-big", big)
        got = yield core.wait(_is(method="MESSAGE", call="msg-big"))
        assert len(got.serialise()) > 1300
        assert "tcp msg-big" in transports
        assert got.top_via.transport == "TCP"
        assert got.body == big
        accepted = yield ue.wait(_is(status=202, call="msg-big"))
        assert accepted.top_via.transport == "UDP"
    finally:
        yield service.stop()
        uport.stopListening()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_content_length_past_the_body_is_answered_400() -> Generator[Any, Any, None]:
    ue, core = MessageEndpoint(), MessageEndpoint(auto=("REGISTER", "MESSAGE"))
    ports = [_udp(ue), _udp(core)]
    service = _service(core.port)
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        head = (
            f"MESSAGE sip:bob@ims.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKcl\r\n"
            "From: <sip:alice@ims.test>;tag=a\r\nTo: <sip:bob@ims.test>\r\nCall-ID: msg-cl\r\n"
            f"CSeq: 1 MESSAGE\r\nContent-Type: {MULTIPART}\r\n"
            f"Content-Length: {len(BODY) + 40}\r\n\r\n"
        )
        ue.transport.write(head.encode() + BODY, ("127.0.0.1", gm))  # type: ignore[union-attr]
        bad = yield ue.wait(_is(status=400, call="msg-cl"))
        assert bad.reason == "Body shorter than Content-Length"
        assert [m for m in core.got if m.call_id == "msg-cl"] == []
    finally:
        yield service.stop()
        for port in ports:
            port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_core_that_never_answers_gets_the_ue_a_408() -> Generator[Any, Any, None]:
    ue, core = MessageEndpoint(), MessageEndpoint(auto=("REGISTER",))  # MESSAGE unanswered
    ports = [_udp(ue), _udp(core)]
    service = _service(core.port, t1=0.02, t2=0.08)
    try:
        gm = service.config.gm[1]
        _register(ue, gm)
        yield ue.wait(_is(status=200, call="reg"))
        _message(ue, gm, "msg-lost")
        timeout = yield ue.wait(_is(status=408, call="msg-lost"))
        assert timeout.cseq == (1, "MESSAGE")
        copies = [m for m in core.got if m.call_id == "msg-lost"]
        assert len(copies) > 3  # Timer E: the first send and its retransmissions
        assert all(m.body == BODY for m in copies)
    finally:
        yield service.stop()
        for port in ports:
            port.stopListening()
