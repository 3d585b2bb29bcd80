"""E2aeMediaHandler over a real IqController and IqAgent on loopback, with an in-process
AccessGateway behind the agent (tests/agw_iq.py) and openssl s_client as the UE's TLS client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from accessgw.gateway import AccessGateway
from iq import profile
from iq.link import IqAgent, IqController
from pcscf.e2ae import E2aeMediaHandler
from pcscf.policy import Policy
from pcscf.sdp import SessionDescription
from pcscf.sip.media import DialogId, Forward, MediaContext, Reject
from tests import agw_iq
from tests.agw_helpers import SinkFactory, identity, s_client
from tests.agw_helpers import wait_for as wait_long
from tests.conftest import plain_iq, run_cleanups
from tests.media_helpers import media_context as ctx


class Control:
    """A CallControl that records what the handler asked for."""

    def __init__(self) -> None:
        self.ended: list[tuple[DialogId, int, str]] = []
        self.reoffers: list[tuple[DialogId, str, bytes]] = []

    def end_call(self, dialog: DialogId, cause: int, text: str) -> None:
        self.ended.append((dialog, cause, text))

    def reoffer(self, dialog: DialogId, side: Any, body: bytes) -> defer.Deferred[Any]:
        self.reoffers.append((dialog, side, body))
        return defer.succeed((200, b""))


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    await wait_long(predicate, timeout)


def offer(fp: str, setup: str = "active") -> bytes:
    return (
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=message 7394 TCP/TLS/MSRP *\r\na=setup:{setup}\r\n"
        f"a=fingerprint:{fp}\r\na=3ge2ae:requested\r\n"
    ).encode()


def answer(port: int) -> bytes:
    return (
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=message {port} TCP/MSRP *\r\na=setup:passive\r\n"
    ).encode()


class Lab:
    def __init__(self) -> None:
        self.cleanups: list[Callable[[], Any]] = []

    def alg(self, policy: Policy) -> tuple[E2aeMediaHandler, Control, int]:
        ctrl = IqController(
            mid="[127.0.0.1]:0", timeout=policy.iq_timeout, **plain_iq("<agw1>", "<agw2>", "<mute>")
        )
        port = ctrl.listen(0, "127.0.0.1")
        self.cleanups += [port.stopListening, ctrl.stop]
        handler = E2aeMediaHandler(ctrl, policy)
        self.cleanups.append(handler.stop)
        control = Control()
        handler.attach(control)
        return handler, control, port.getHost().port

    def agw(self, iq_port: int, mid: str = "<agw1>", **kw: Any) -> AccessGateway:
        gw, _, agent = agw_iq.start(iq_port, reactor, mid=mid, **kw)
        self.cleanups += [agent.stop, gw.close]
        return gw

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.cleanups.append(port.stopListening)
        return int(port.getHost().port)


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    run_cleanups(lab.cleanups)


async def _sdp(handler: E2aeMediaHandler, context: MediaContext, body: bytes) -> Any:
    return await defer.maybeDeferred(handler.sdp, context, body)


@pytest_twisted.ensureDeferred
async def test_originating_call_pins_the_ue_and_relays_to_the_core(
    lab: Lab, tmp_path: Path
) -> None:
    ue, ue_path = identity("ue", tmp_path)
    _, other_path = identity("other", tmp_path)
    handler, control, iq_port = lab.alg(Policy())
    gw = lab.agw(iq_port)
    await wait_for(lambda: handler.controller.gateways_in_service() == ["<agw1>"])
    sink = SinkFactory()
    core_port = lab.listen(sink)
    dialog = DialogId("c1", "orig")

    to_core = await _sdp(
        handler, ctx(dialog, "offer", True), offer(ue.fingerprint("sha-256").value)
    )
    assert isinstance(to_core, Forward)
    assert len(gw.terminations) == 1
    assert b"TCP/MSRP" in to_core.body and b"fingerprint" not in to_core.body
    to_ue = await _sdp(handler, ctx(dialog, "answer", False), answer(core_port))
    assert isinstance(to_ue, Forward)
    sdp = SessionDescription.parse(to_ue.body)
    access_port = sdp.media[0].port
    assert sdp.media[0].attribute_values("fingerprint") == [gw.fingerprint().value]

    # a stranger first: refused, counted, the call carries on
    stranger = s_client(access_port, other_path)
    stranger.send(b"not for the core\n", close=True)
    await stranger.ended
    await wait_for(lambda: handler.table.stranger_failures == 1)
    assert control.ended == [] and len(gw.terminations) == 1

    real = s_client(access_port, ue_path)
    real.send(b"MSRP a786hjs2 SEND\r\n")
    await wait_for(lambda: sink.received == b"MSRP a786hjs2 SEND\r\n")
    await wait_for(lambda: handler.table.calls[dialog].streams[0].verified)
    real.kill()
    await real.ended

    handler.dialog_ended(dialog, "BYE")
    await wait_for(lambda: gw.terminations == [])
    assert control.ended == []


class Silent:
    """A gateway that never answers a Reserve (the ALG's Iq timeout must fire)."""

    def reserve(self, request: Any) -> defer.Deferred[Any]:
        return defer.Deferred()

    def configure(self, request: Any) -> Any:
        raise AssertionError("not reached")

    def release(self, request: Any) -> Any:
        return profile.ReleaseReply(request.context, ())


@pytest_twisted.ensureDeferred
async def test_iq_timeout_rejects_with_503(lab: Lab) -> None:
    handler, _, iq_port = lab.alg(Policy(iq_timeout=0.3))
    agent = IqAgent(Silent(), "127.0.0.1", iq_port, mid="<mute>", seed=1)
    agent.start()
    lab.cleanups.append(agent.stop)
    await agent.when_registered()
    result = await _sdp(
        handler,
        ctx(DialogId("c2", "orig"), "offer", True),
        offer("sha-256 " + ":".join(["AA"] * 32)),
    )
    assert isinstance(result, Reject) and result.status == 503
    assert "timeout" in result.warning
    assert handler.table.held() == {}


@pytest_twisted.ensureDeferred
async def test_calls_spread_round_robin_and_a_gateway_leaving_service(lab: Lab) -> None:
    handler, _, iq_port = lab.alg(Policy())
    gw1 = lab.agw(iq_port, "<agw1>")
    gw2 = lab.agw(iq_port, "<agw2>")
    await wait_for(lambda: len(handler.controller.gateways_in_service()) == 2)
    fp = "sha-256 " + ":".join(["AA"] * 32)
    for n in range(4):
        result = await _sdp(handler, ctx(DialogId(f"rr{n}", "orig"), "offer", True), offer(fp))
        assert isinstance(result, Forward)
    assert (len(gw1.terminations), len(gw2.terminations)) == (2, 2)
    for n in range(4):
        handler.dialog_ended(DialogId(f"rr{n}", "orig"), "BYE")
    await wait_for(lambda: gw1.terminations == [] == gw2.terminations)


@pytest_twisted.ensureDeferred
async def test_no_verified_session_in_time_ends_the_call(lab: Lab) -> None:
    handler, control, iq_port = lab.alg(Policy(tls_establishment_timeout=0.3))
    gw = lab.agw(iq_port)
    await wait_for(lambda: handler.controller.gateways_in_service() == ["<agw1>"])
    dialog = DialogId("c3", "orig")
    fp = "sha-256 " + ":".join(["AA"] * 32)
    assert isinstance(await _sdp(handler, ctx(dialog, "offer", True), offer(fp)), Forward)
    assert isinstance(await _sdp(handler, ctx(dialog, "answer", False), answer(9)), Forward)
    await wait_for(lambda: bool(control.ended))
    ((ended, cause, text),) = control.ended
    assert ended == dialog and cause == 488 and "no verified TLS session" in text
    await wait_for(lambda: gw.terminations == [])


@pytest_twisted.ensureDeferred
async def test_an_agw_shutting_down_ends_the_calls_it_carried(lab: Lab) -> None:
    handler, control, iq_port = lab.alg(Policy())
    gw, _, agent = agw_iq.start(iq_port, reactor, mid="<agw1>")
    lab.cleanups += [agent.stop, gw.close]
    await wait_for(lambda: handler.controller.gateways_in_service() == ["<agw1>"])
    dialog = DialogId("gone", "orig")
    fp = "sha-256 " + ":".join(["AA"] * 32)
    assert isinstance(await _sdp(handler, ctx(dialog, "offer", True), offer(fp)), Forward)
    assert isinstance(await _sdp(handler, ctx(dialog, "answer", False), answer(9)), Forward)
    await wait_for(lambda: not handler.in_flight)  # the Configure beside the answer is done
    assert gw.terminations != [] and control.ended == []
    # As `e2ae accessgw` stops: release everything, then ServiceChange Forced on Iq.
    gw.close()
    await agent.stop()
    await wait_for(lambda: bool(control.ended))
    ((ended, cause, text),) = control.ended
    assert ended == dialog and cause == 488 and "went out of service" in text
    assert handler.table.held() == {}


class LosesFirstRelease:
    """Reserves on an AccessGateway-less fake; the first Release gets no reply."""

    def __init__(self) -> None:
        self.releases: list[int] = []
        self.held: set[int] = set()

    def reserve(self, request: profile.ReserveRequest) -> profile.ReserveReply:
        fp = profile.Endpoint("127.0.0.1", 40000)
        context = 1 + len(self.held) + len(self.releases)
        self.held.add(context)
        streams = tuple(
            profile.ReservedStream(
                s.stream,
                f"acc/{s.stream}",
                f"core/{s.stream}",
                fp,
                fp,
                agw_iq._identity().fingerprint("sha-256"),
                s.access_setup,
                s.core_setup,
            )
            for s in request.streams
        )
        return profile.ReserveReply(context, streams)

    def configure(self, request: Any) -> Any:
        return profile.ConfigureReply(request.context)

    def release(self, request: profile.ReleaseRequest) -> Any:
        self.releases.append(request.context)
        if len(self.releases) == 1:
            return defer.Deferred()  # lost
        self.held.discard(request.context)
        return profile.ReleaseReply(request.context, ())


@pytest_twisted.ensureDeferred
async def test_a_release_without_reply_is_sent_again(lab: Lab) -> None:
    handler, _, iq_port = lab.alg(Policy(iq_timeout=0.2))
    gw = LosesFirstRelease()
    agent = IqAgent(gw, "127.0.0.1", iq_port, mid="<agw1>", seed=1)
    agent.start()
    lab.cleanups.append(agent.stop)
    await agent.when_registered()
    dialog = DialogId("c4", "orig")
    assert isinstance(
        await _sdp(handler, ctx(dialog, "offer", True), offer("sha-256 " + ":".join(["AA"] * 32))),
        Forward,
    )
    assert gw.held == {1}
    handler.dialog_ended(dialog, "BYE")
    await wait_for(lambda: not gw.held)
    assert gw.releases == [1, 1]
