"""pcscf.udpua: the SIP/UDP transport of the user-agent elements, on a fake socket and clock:
Timer A/E retransmissions (an INVITE stops at a provisional response, other requests go on
every T2), Timer B/F, the ACK of a non-2xx INVITE response, responses kept for
retransmitted requests, stray responses, and bad input dropped without ending anything."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task

from pcscf.sip import Request, Response, make_response, parse_datagram
from pcscf.udpua import T1, T2, UdpUserAgent

PEER = ("127.0.0.1", 5999)


class FakePort:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> Any:
        class Host:
            host, port = "127.0.0.1", 5060

        return Host()

    def stopListening(self) -> None:
        pass


class FakeReactor(task.Clock):
    def __init__(self) -> None:
        super().__init__()
        self.port = FakePort()

    def listenUDP(self, port: int, proto: Any, interface: str, maxPacketSize: int) -> FakePort:
        return self.port


def _request(method: str, branch: str = "z9hG4bKabc") -> Request:
    headers = (
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", "<sip:a@x>;tag=1"),
        ("To", "<sip:b@x>"),
        ("Call-ID", "c1"),
        ("CSeq", f"1 {method}"),
    )
    return Request(headers, b"", method, "sip:b@x")


def _ua() -> tuple[UdpUserAgent, FakeReactor, list[Any], list[Response]]:
    reactor = FakeReactor()
    got: list[Any] = []
    strays: list[Response] = []
    ua = UdpUserAgent(reactor, "test", lambda r, a: got.append(r), on_stray=strays.append)
    ua.listen("127.0.0.1", 0)
    return ua, reactor, got, strays


def _methods(reactor: FakeReactor) -> list[str]:
    out = []
    for data, _ in reactor.port.sent:
        message = parse_datagram(data)
        out.append(message.method if isinstance(message, Request) else str(message.status))
    return out


@pytest.mark.parametrize(("method", "after"), [("INVITE", 0), ("BYE", 5)])
def test_retransmissions_stop_or_slow_at_a_provisional_response(method: str, after: int) -> None:
    ua, reactor, _, _ = _ua()
    request = _request(method)
    done = ua.request(request, PEER)
    reactor.advance(T1)
    reactor.advance(2 * T1)
    assert _methods(reactor) == [method] * 3
    ua.datagram(make_response(request, 100).serialise(), PEER)
    reactor.pump([T2] * 5)
    assert len(_methods(reactor)) == 3 + after
    ua.datagram(make_response(request, 200, to_tag="t").serialise(), PEER)
    assert done.called and done.result.status == 200
    reactor.pump([T2] * 4)
    assert len(_methods(reactor)) == 3 + after and ua.pending == 0


def test_no_final_response_is_a_timeout_after_64_t1() -> None:
    ua, reactor, _, _ = _ua()
    failures: list[Any] = []
    ua.request(_request("MESSAGE"), PEER).addErrback(failures.append)
    reactor.pump([T1] * 200)
    assert failures and failures[0].check(TimeoutError)
    assert ua.pending == 0
    assert 8 <= _methods(reactor).count("MESSAGE") <= 12  # T1, 2T1, 4T1, then every T2


def test_a_non_2xx_response_to_an_invite_is_acked_and_a_stray_2xx_is_passed_on() -> None:
    ua, reactor, _, strays = _ua()
    invite = _request("INVITE")
    done = ua.request(invite, PEER)
    ua.datagram(make_response(invite, 486, to_tag="t").serialise(), PEER)
    assert done.result.status == 486
    assert _methods(reactor) == ["INVITE", "ACK"]
    ua.datagram(make_response(invite, 200, to_tag="t").serialise(), PEER)
    assert [r.status for r in strays] == [200]


def test_a_retransmitted_request_gets_the_kept_response_and_bad_input_is_dropped() -> None:
    ua, reactor, got, _ = _ua()
    message = _request("MESSAGE", "z9hG4bKin")
    ua.datagram(message.serialise(), PEER)
    assert len(got) == 1
    ua.respond(message, make_response(message, 202, to_tag="x"), PEER)
    ua.datagram(message.serialise(), PEER)
    assert len(got) == 1 and _methods(reactor) == ["202", "202"]
    ua.datagram(b"\x00 not sip", PEER)
    assert len(got) == 1

    def boom(request: Request, addr: Any) -> None:
        raise RuntimeError("handler bug")

    ua.on_request = boom
    ua.datagram(_request("OPTIONS", "z9hG4bKother").serialise(), PEER)  # logged, not raised


def test_the_kept_responses_are_bounded() -> None:
    reactor = FakeReactor()
    ua = UdpUserAgent(reactor, "test", lambda r, a: None, answered=3)
    ua.listen("127.0.0.1", 0)
    for n in range(10):
        request = _request("MESSAGE", f"z9hG4bK{n}")
        ua.respond(request, make_response(request, 200, to_tag="x"), PEER)
    assert len(ua._answered) == 3


def test_a_2xx_to_an_invite_is_sent_again_until_done_and_timers_end_with_stop() -> None:
    ua, reactor, _, _ = _ua()
    invite = _request("INVITE", "z9hG4bKinv")
    ok = make_response(invite, 200, to_tag="x")
    acked = {"yes": False}
    ua.retransmit_2xx(invite, ok, lambda: acked["yes"])
    reactor.advance(T1)  # T1
    reactor.advance(2 * T1)  # then 2*T1 later
    assert _methods(reactor) == ["200", "200"]
    acked["yes"] = True
    reactor.pump([T2] * 4)
    assert _methods(reactor) == ["200", "200"]
    # without an ACK it stops after 64*T1
    other = _request("INVITE", "z9hG4bKinv2")
    ua.retransmit_2xx(other, make_response(other, 200, to_tag="y"), lambda: False)
    reactor.pump([T1] * 200)
    assert 8 <= _methods(reactor).count("200") - 2 <= 12
    fired: list[int] = []
    ua.later(1.0, fired.append, 1)
    ua.stop()
    reactor.advance(2.0)
    assert fired == []
