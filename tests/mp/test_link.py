"""The Mp link end to end: an MpController (MRFC) and an MpAgent (MRFP) over real loopback TLS
with pinned certificates, against a fake media processor."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher

import certs
from iq.config import IqTlsConfig
from iq.errors import LinkLost, LocalIqError, NotInService, RemoteIqError, RequestFailed
from mp.link import MpAgent, MpController
from mp.profile import (
    AckReply,
    ConnectRequest,
    Endpoint,
    JoinReply,
    JoinRequest,
    LeaveReply,
    LeaveRequest,
    MpEvent,
    PskConfig,
    StartTlsRequest,
    StreamStatistics,
)
from tests.conftest import run_cleanups

NOW = datetime.datetime.now(datetime.UTC)
KEY = bytes.fromhex("5f0c9a11d2e34b7788aa01f2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6")
CONF = "sip:conf1@mrfc.example.net"
ALICE = "sip:alice@example.net"


def _join(context: int | None = None, key: bytes = KEY) -> JoinRequest:
    return JoinRequest(
        conference=CONF,
        context=context,
        participant=ALICE,
        media="msrp",
        tcp_role="passive",
        security="tls-psk",
        tls_role="server",
        psk=PskConfig(key, b"e2ae-cs1", ("PSK-AES128-GCM-SHA256",)),
        remote=Endpoint("127.0.0.1", 5000),
        remote_path=("msrp://127.0.0.1:5000/alice;tcp",),
        call_id="call-1",
    )


class FakeMrfp:
    """An MpHandler: one context per conference, terminations msrp/<n>."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.contexts: dict[int, set[str]] = {}
        self.next = 1
        self.refuse: Exception | None = None

    def _check(self, context: int, termination: str) -> None:
        if context not in self.contexts:
            raise RemoteIqError(f"no context {context}", code=411)
        if termination not in self.contexts[context]:
            raise RemoteIqError(f"no termination {termination}", code=430)

    def join(self, request: JoinRequest) -> JoinReply:
        self.calls.append(request)
        if self.refuse is not None:
            raise self.refuse
        if request.context is None:
            context = 100 + self.next
        else:
            context = request.context
            if context not in self.contexts:
                raise RemoteIqError(f"no context {context}", code=411)
        term = f"msrp/{self.next}"
        self.next += 1
        self.contexts.setdefault(context, set()).add(term)
        return JoinReply(
            context, term, Endpoint("127.0.0.1", 40000), "msrp://127.0.0.1:40000/s1;tcp"
        )

    def connect(self, request: ConnectRequest) -> AckReply:
        self.calls.append(request)
        self._check(request.context, request.termination)
        return AckReply()

    def start_tls(self, request: StartTlsRequest) -> defer.Deferred[AckReply]:
        self.calls.append(request)
        self._check(request.context, request.termination)
        return task.deferLater(reactor, 0.01, AckReply)

    def leave(self, request: LeaveRequest) -> LeaveReply:
        self.calls.append(request)
        self._check(request.context, request.termination)
        self.contexts[request.context].discard(request.termination)
        return LeaveReply(StreamStatistics(10, 20, 1, 2))


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


@pytest.fixture(scope="module")
def pairs() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in ("mrfc", "mrfp", "stranger")}


class Lab:
    def __init__(self, pairs: dict[str, certs.CertAndKey]) -> None:
        self.pairs = pairs
        self.cleanups: list[Callable[[], Any]] = []
        self.events: list[MpEvent] = []
        self.log: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.log.append)
        self.cleanups.append(lambda: globalLogPublisher.removeObserver(self.log.append))

    def controller(self, **kwargs: Any) -> tuple[MpController, int]:
        p = self.pairs
        kwargs.setdefault("tls", IqTlsConfig(p["mrfc"], (p["mrfp"].fingerprint(),)))
        ctrl = MpController("127.0.0.1", 0, on_event=self.events.append, **kwargs)
        port = ctrl.listen()
        self.cleanups.append(ctrl.stop)
        return ctrl, port

    def agent(self, handler: Any, port: int, *, who: str = "mrfp", **kwargs: Any) -> MpAgent:
        p = self.pairs
        kwargs.setdefault("tls", IqTlsConfig(p[who], (p["mrfc"].fingerprint(),)))
        agent = MpAgent(handler, "127.0.0.1", port, **kwargs)
        agent.start()
        self.cleanups.append(agent.stop)
        return agent


@pytest.fixture
def lab(pairs: dict[str, certs.CertAndKey]) -> Iterator[Lab]:
    lab = Lab(pairs)
    yield lab
    run_cleanups(lab.cleanups)


def _texts(events: list[dict[str, Any]]) -> str:
    out = []
    for ev in events:
        out.append(repr(ev))
        fmt = ev.get("log_format")
        if fmt:
            try:
                out.append(fmt.format(**ev))
            except Exception:
                out.append(fmt)
    return "\n".join(out)


@pytest_twisted.ensureDeferred
async def test_join_connect_start_tls_leave_round_trip_over_pinned_tls(lab: Lab) -> None:
    ctrl, port = lab.controller()
    mrfp = FakeMrfp()
    agent = lab.agent(mrfp, port)
    await agent.when_registered()
    gateway = await ctrl.when_gateway()
    assert gateway == "<mrfp>"
    reply = await ctrl.join(None, _join())
    assert reply == JoinReply(
        101, "msrp/1", Endpoint("127.0.0.1", 40000), "msrp://127.0.0.1:40000/s1;tcp"
    )
    assert mrfp.calls[0] == _join()  # the PSK arrived whole
    assert mrfp.calls[0].psk.key == KEY
    second = await ctrl.join(gateway, _join(context=101))
    assert second.context == 101 and second.termination == "msrp/2"
    assert (
        await ctrl.connect(gateway, ConnectRequest(101, "msrp/1", Endpoint("127.0.0.1", 5000)))
        == AckReply()
    )
    assert await ctrl.start_tls(gateway, StartTlsRequest(101, "msrp/1")) == AckReply()
    left = await ctrl.leave(gateway, LeaveRequest(101, "msrp/1"))
    assert left == LeaveReply(StreamStatistics(10, 20, 1, 2))
    assert [type(c).__name__ for c in mrfp.calls] == [
        "JoinRequest",
        "JoinRequest",
        "ConnectRequest",
        "StartTlsRequest",
        "LeaveRequest",
    ]


@pytest_twisted.ensureDeferred
async def test_an_error_of_the_handler_reaches_the_controller_with_its_code(lab: Lab) -> None:
    ctrl, port = lab.controller()
    mrfp = FakeMrfp()
    await lab.agent(mrfp, port).when_registered()
    mrfp.refuse = RemoteIqError("no ports left", code=510)
    with pytest.raises(RequestFailed) as info:
        await ctrl.join(None, _join())
    assert info.value.code == 510
    mrfp.refuse = RuntimeError("bug")
    with pytest.raises(RequestFailed) as info:
        await ctrl.join(None, _join())
    assert info.value.code == 500


@pytest_twisted.ensureDeferred
async def test_a_command_for_an_unknown_context_is_411(lab: Lab) -> None:
    ctrl, port = lab.controller()
    await lab.agent(FakeMrfp(), port).when_registered()
    with pytest.raises(RequestFailed) as info:
        await ctrl.start_tls(None, StartTlsRequest(999, "msrp/1"))
    assert info.value.code == 411
    with pytest.raises(RequestFailed) as info:
        await ctrl.join(None, _join(context=999))
    assert info.value.code == 411


@pytest_twisted.ensureDeferred
async def test_a_notify_reaches_on_event_and_one_for_an_unknown_context_is_refused(
    lab: Lab,
) -> None:
    ctrl, port = lab.controller()
    agent = lab.agent(FakeMrfp(), port)
    await agent.when_registered()
    reply = await ctrl.join(None, _join())
    event = MpEvent(reply.context, reply.termination, "tls-established")
    await agent.notify(event)
    failed = MpEvent(reply.context, reply.termination, "tls-failed", 'bad "binder"')
    await agent.notify(failed)
    assert lab.events == [event, failed]
    with pytest.raises(RequestFailed) as info:
        await agent.notify(MpEvent(4242, "msrp/9", "closed"))
    assert info.value.code == 411
    assert len(lab.events) == 2
    logged = [e for e in lab.log if e.get("kind") == "tls-established" and "conference" in e]
    assert logged and all(
        e["conference"] == CONF and e["participant"] == ALICE and e["context"] == reply.context
        for e in logged
    )


@pytest_twisted.ensureDeferred
async def test_an_unpinned_mrfp_is_refused(lab: Lab) -> None:
    ctrl, port = lab.controller()
    stranger = lab.agent(FakeMrfp(), port, who="stranger")
    await wait_for(lambda: ctrl.unverified_links >= 1)
    assert not stranger.registered
    assert ctrl.gateways_in_service() == []
    with pytest.raises(NotInService):
        await ctrl.join(None, _join())


@pytest_twisted.ensureDeferred
async def test_a_second_mrfp_with_the_same_mid_is_refused(lab: Lab) -> None:
    ctrl, port = lab.controller()
    first = lab.agent(FakeMrfp(), port)
    await first.when_registered()
    second = lab.agent(FakeMrfp(), port)
    await task.deferLater(reactor, 0.3, lambda: None)
    assert not second.registered
    assert first.registered
    assert ctrl.gateways_in_service() == ["<mrfp>"]


@pytest_twisted.ensureDeferred
async def test_the_psk_never_appears_in_any_log_event(lab: Lab) -> None:
    ctrl, port = lab.controller()
    mrfp = FakeMrfp()
    agent = lab.agent(mrfp, port)
    await agent.when_registered()
    reply = await ctrl.join(None, _join())
    mrfp.refuse = RemoteIqError(f"refused {KEY.hex()}", code=510)
    with pytest.raises(RequestFailed):
        await ctrl.join(None, _join())
    mrfp.refuse = RuntimeError(f"bug with {KEY.hex()}")
    with pytest.raises(RequestFailed) as info:
        await ctrl.join(None, _join())
    assert info.value.code == 500
    await agent.notify(MpEvent(reply.context, reply.termination, "tls-failed", KEY.hex()))
    await ctrl.leave(None, LeaveRequest(reply.context, reply.termination))
    text = _texts(lab.log)
    assert "Mp join to" in text  # the capture works
    assert KEY.hex() not in text.lower()
    assert KEY.hex()[:16] not in text.lower()


@pytest_twisted.ensureDeferred
async def test_the_link_going_down_takes_the_mrfp_out_of_service(lab: Lab) -> None:
    ctrl, port = lab.controller()
    agent = lab.agent(FakeMrfp(), port)
    await agent.when_registered()
    await agent.stop()
    await wait_for(lambda: ctrl.gateways_in_service() == [])
    with pytest.raises(NotInService):
        await ctrl.join(None, _join())
    with pytest.raises(LinkLost):
        await agent.notify(MpEvent(1, "msrp/1", "closed"))


@pytest_twisted.ensureDeferred
async def test_notifications_while_the_link_is_down_wait_for_the_warm_restart(lab: Lab) -> None:
    ctrl, port = lab.controller()
    agent = lab.agent(FakeMrfp(), port, backoff_initial=0.2)
    await agent.when_registered()
    reply = await ctrl.join(None, _join())
    agent._link.transport.abortConnection()  # type: ignore[union-attr]
    await wait_for(lambda: not agent.registered)
    agent.notify_backlog = 2
    events = [
        MpEvent(reply.context, reply.termination, kind)
        for kind in ("tls-established", "tls-failed", "closed")
    ]
    held = [agent.notify(e) for e in events]
    with pytest.raises(LinkLost, match="MRFC is not up and 2 notifications are already waiting"):
        await held[2]
    assert not held[0].called and not held[1].called and lab.events == []
    await defer.gatherResults(held[:2])  # sent, in order, after the warm restart
    assert agent.registrations == 2
    assert lab.events == events[:2]  # the MRFC kept the stream: it knows whose they are


@pytest_twisted.ensureDeferred
async def test_held_mp_notifications_fail_when_the_agent_stops(lab: Lab) -> None:
    _, port = lab.controller()
    agent = lab.agent(FakeMrfp(), port, backoff_initial=5.0)
    await agent.when_registered()
    agent._link.transport.abortConnection()  # type: ignore[union-attr]
    await wait_for(lambda: not agent.registered)
    held = agent.notify(MpEvent(1, "msrp/1", "closed"))
    await agent.stop()
    with pytest.raises(LinkLost, match="Mp agent stopped"):
        await held
    assert lab.events == []


def test_plain_tcp_mp_is_an_explicit_opt_in(pairs: dict[str, certs.CertAndKey]) -> None:
    with pytest.raises(LocalIqError):
        MpController(tls=None)
    with pytest.raises(LocalIqError):
        MpAgent(FakeMrfp(), "127.0.0.1", 1, tls=None)
    MpAgent(FakeMrfp(), "127.0.0.1", 1, tls=None, insecure=True)


@pytest_twisted.ensureDeferred
async def test_plain_tcp_mp_works_when_opted_in_and_says_so(lab: Lab) -> None:
    ctrl, port = lab.controller(tls=None, insecure=True, allow=["<mrfp>@127.0.0.1"])
    agent = lab.agent(FakeMrfp(), port, tls=None, insecure=True)
    await agent.when_registered()
    assert (await ctrl.join(None, _join())).termination == "msrp/1"
    warnings = _texts([e for e in lab.log if "PLAIN TCP" in str(e.get("log_format"))])
    assert "insecure opt-in" in warnings


@pytest_twisted.ensureDeferred
async def test_a_message_that_does_not_parse_is_logged_without_the_key(lab: Lab) -> None:
    from iq import tpkt

    _, port = lab.controller()
    agent = lab.agent(FakeMrfp(), port)
    await agent.when_registered()
    link = agent._link
    assert link is not None
    broken = (
        "MEGACO/3 <mrfp>\nTransaction = 5 { Context = $ { Add = msrp/$ { Media { Stream = 1 {"
        f' LocalControl {{ e2aepsk/key = "{KEY.hex()}\x01" }} }} }} }} }} }}'
    )
    link.transport.write(tpkt.frame(broken.encode()))  # type: ignore[union-attr]
    await wait_for(lambda: any("refused" in str(e.get("log_format")) for e in lab.log))
    await task.deferLater(reactor, 0.1, lambda: None)
    text = _texts(lab.log).lower()
    assert "refused" in text
    assert KEY.hex()[:16] not in text


@pytest_twisted.ensureDeferred
async def test_a_join_sent_as_soon_as_the_mrfp_is_in_service_is_served(lab: Lab) -> None:
    """when_gateway fires once the ServiceChange reply is on the wire, so a request sent from
    its callback reaches an MRFP that knows it is registered (not 505)."""
    ctrl, port = lab.controller()
    mrfp = FakeMrfp()
    waiting = ctrl.when_gateway()  # before the MRFP connects
    replies: list[Any] = []
    waiting.addCallback(lambda gw: ctrl.join(gw, _join())).addBoth(replies.append)
    lab.agent(mrfp, port)
    await wait_for(lambda: bool(replies))
    assert isinstance(replies[0], JoinReply), replies
