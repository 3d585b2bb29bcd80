"""The Iq link end to end: an IqController and IqAgents over real loopback TCP and TLS."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

import certs
from iq import codec, profile, samples, tpkt
from iq.errors import (
    InsufficientResources,
    IqTimeout,
    LinkLost,
    NotInService,
    RequestFailed,
    UnknownTermination,
)
from iq.link import GatewayStatus, IqAgent, IqController, IqNotification, IqTlsConfig
from iq.transactions import FaultPlan
from tests.conftest import plain_iq, run_cleanups

NOW = datetime.datetime.now(datetime.UTC)
MID = "<agw1.lab>"


def _reserve_request() -> profile.ReserveRequest:
    step = samples.originating()[0]
    assert isinstance(step.request, profile.ReserveRequest)
    return step.request


class FakeGateway:
    """A GatewayHandler that allocates terminations and counts what it was asked."""

    def __init__(self) -> None:
        self.calls: list[profile.IqRequest] = []
        self.next_context = 1
        self.contexts: dict[int, set[str]] = {}
        self.hold: list[defer.Deferred[Any]] = []
        self.holding = False
        self.refuse: Exception | None = None

    def _maybe_hold(self, reply: Any) -> Any:
        if self.holding:
            d: defer.Deferred[Any] = defer.Deferred()
            self.hold.append(d)
            return d.addCallback(lambda _: reply)
        return reply

    def reserve(self, request: profile.ReserveRequest) -> Any:
        self.calls.append(request)
        if self.refuse is not None:
            raise self.refuse
        ctx = request.context or self.next_context
        self.next_context += 1
        streams = []
        for s in request.streams:
            acc, core = f"acc/{ctx}/{s.stream}", f"core/{ctx}/{s.stream}"
            self.contexts.setdefault(ctx, set()).update((acc, core))
            streams.append(
                profile.ReservedStream(
                    s.stream,
                    acc,
                    core,
                    profile.Endpoint("127.0.0.1", 40000 + s.stream),
                    profile.Endpoint("127.0.0.1", 41000 + s.stream),
                    samples.AGW_FP,
                    s.access_setup,
                    s.core_setup,
                )
            )
        return self._maybe_hold(profile.ReserveReply(ctx, tuple(streams)))

    def configure(self, request: profile.ConfigureRequest) -> Any:
        self.calls.append(request)
        for s in request.streams:
            for term in (s.access_termination, s.core_termination):
                if term and term not in self.contexts.get(request.context, set()):
                    raise UnknownTermination(f"no termination {term}", where=term)
        return profile.ConfigureReply(request.context)

    def release(self, request: profile.ReleaseRequest) -> Any:
        self.calls.append(request)
        terms = request.terminations or tuple(sorted(self.contexts.get(request.context, ())))
        for term in terms:
            self.contexts.get(request.context, set()).discard(term)
        stats = tuple(
            profile.TerminationStatistics(
                t, 10, 20, 1, 2, "established" if t.startswith("acc") else None
            )
            for t in terms
        )
        return profile.ReleaseReply(request.context, stats)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class Lab:
    def __init__(self) -> None:
        self.cleanups: list[Callable[[], Any]] = []
        self.events: list[Any] = []

    def controller(self, **kwargs: Any) -> tuple[IqController, int]:
        if kwargs.get("tls") is None:
            for key, value in plain_iq(MID, "<agw2.lab>", "<agw3.lab>", samples.AGW_MID).items():
                kwargs.setdefault(key, value)
        ctrl = IqController(**kwargs)
        port = ctrl.listen(0, "127.0.0.1")
        self.cleanups.append(port.stopListening)
        self.cleanups.append(ctrl.stop)
        ctrl.subscribe(self.events.append)
        return ctrl, port.getHost().port

    def agent(self, handler: Any, port: int, **kwargs: Any) -> IqAgent:
        kwargs.setdefault("mid", MID)
        agent = IqAgent(handler, "127.0.0.1", port, seed=1, **kwargs)
        agent.start()
        self.cleanups.append(agent.stop)
        return agent


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    run_cleanups(lab.cleanups)


async def _full_call(lab: Lab, ctrl: IqController, agent: IqAgent, gw: FakeGateway) -> None:
    await agent.when_registered()
    assert ctrl.gateways_in_service() == [MID]
    reserve = _reserve_request()
    reply = await ctrl.reserve(MID, reserve)
    assert reply.context == 1
    (stream,) = reply.streams
    assert stream.access_termination == "acc/1/1"
    assert stream.agw_fingerprint == samples.AGW_FP
    assert stream.access == profile.Endpoint("127.0.0.1", 40001)
    assert gw.calls == [reserve]
    configure = profile.ConfigureRequest(
        1,
        (
            profile.StreamConfiguration(
                1,
                "message",
                "acc/1/1",
                "core/1/1",
                core_address=profile.Endpoint("127.0.0.1", 5000),
                core_remote_setup="passive",
            ),
        ),
    )
    assert await ctrl.configure(MID, configure) == profile.ConfigureReply(1)
    event = profile.IqEvent(
        "tls-established", 1, "acc/1/1", 1, profile.timestamp(0), peer="127.0.0.1:9"
    )
    await agent.notify(event)
    notes = [e for e in lab.events if isinstance(e, IqNotification)]
    assert notes == [IqNotification(MID, reserve.call_id, event)]
    assert ctrl.call_id_of(MID, 1) == reserve.call_id
    released = await ctrl.release(MID, profile.ReleaseRequest(1, ("acc/1/1", "core/1/1")))
    assert [s.termination for s in released.statistics] == ["acc/1/1", "core/1/1"]
    assert released.statistics[0].tls == "established"
    assert released.statistics[1].octets_received == 20
    assert ctrl.call_id_of(MID, 1) is None


@pytest_twisted.ensureDeferred
async def test_call_over_tcp(lab: Lab) -> None:
    ctrl, port = lab.controller()
    gw = FakeGateway()
    agent = lab.agent(gw, port)
    await _full_call(lab, ctrl, agent, gw)
    assert GatewayStatus(MID, True, "register") in lab.events


@pytest.fixture(scope="module")
def identities() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in ("alg", "agw", "stranger")}


@pytest_twisted.ensureDeferred
async def test_call_over_mutual_tls(
    lab: Lab, identities: dict[str, certs.CertAndKey], tmp_path: Any
) -> None:
    alg, agw = identities["alg"], identities["agw"]
    keylog = tmp_path / "keys.log"
    ctrl, port = lab.controller(tls=IqTlsConfig(alg, (agw.fingerprint(),), keylog=keylog))
    gw = FakeGateway()
    agent = lab.agent(gw, port, tls=IqTlsConfig(agw, (alg.fingerprint("sha-384"),)))
    await _full_call(lab, ctrl, agent, gw)
    assert b"CLIENT_" in keylog.read_bytes() or b"SERVER_" in keylog.read_bytes()


@pytest_twisted.ensureDeferred
async def test_tls_peer_with_unpinned_certificate_is_refused(
    lab: Lab, identities: dict[str, certs.CertAndKey]
) -> None:
    alg, agw, stranger = identities["alg"], identities["agw"], identities["stranger"]
    ctrl, port = lab.controller(tls=IqTlsConfig(alg, (agw.fingerprint(),)))
    agent = lab.agent(FakeGateway(), port, tls=IqTlsConfig(stranger, (alg.fingerprint(),)))
    # and an AGW that pins another ALG refuses the real one
    wary = lab.agent(
        FakeGateway(), port, mid="<agw2.lab>", tls=IqTlsConfig(agw, (stranger.fingerprint(),))
    )
    await task.deferLater(reactor, 0.5, lambda: None)
    assert not agent.registered and not wary.registered
    assert ctrl.gateways_in_service() == []


@pytest_twisted.ensureDeferred
async def test_timeout_then_late_reserve_reply_is_released(lab: Lab) -> None:
    ctrl, port = lab.controller(timeout=0.3)
    gw = FakeGateway()
    agent = lab.agent(gw, port)
    await agent.when_registered()
    gw.holding = True
    with pytest.raises(IqTimeout):
        await ctrl.reserve(MID, _reserve_request())
    assert gw.contexts[1]  # the gateway did reserve, only too late
    # The late reply arrives for a transaction the caller gave up: nobody will ever release
    # what it reserved, so the controller releases the context itself.
    gw.holding = False
    gw.hold.pop().callback(None)
    await wait_for(lambda: any(isinstance(c, profile.ReleaseRequest) for c in gw.calls))
    [release] = [c for c in gw.calls if isinstance(c, profile.ReleaseRequest)]
    assert release == profile.ReleaseRequest(1)
    assert gw.contexts[1] == set()
    assert ctrl.call_id_of(MID, 1) is None
    reply = await ctrl.reserve(MID, _reserve_request(), timeout=2)
    assert reply.context == 2


@pytest_twisted.ensureDeferred
async def test_duplicates_are_served_once(lab: Lab) -> None:
    # every message of both ends is sent twice
    ctrl, port = lab.controller(faults=FaultPlan(seed=3, duplicate_rate=1.0))
    gw = FakeGateway()
    agent = lab.agent(gw, port, faults=FaultPlan(seed=4, duplicate_rate=1.0))
    await agent.when_registered()
    for expected_context in (1, 2, 3):
        reply = await ctrl.reserve(MID, _reserve_request())
        assert reply.context == expected_context
    await wait_for(lambda: len(gw.calls) >= 3)
    await task.deferLater(reactor, 0.1, lambda: None)
    assert len(gw.calls) == 3  # at-most-once: the duplicate got the cached reply


@pytest_twisted.ensureDeferred
async def test_slow_request_kept_alive_by_pending(lab: Lab) -> None:
    ctrl, port = lab.controller(timeout=0.4)
    gw = FakeGateway()
    agent = lab.agent(gw, port)
    await agent.when_registered()
    assert agent._link is not None
    agent._link.pending_interval = 0.1
    gw.holding = True
    d = ctrl.reserve(MID, _reserve_request())
    await wait_for(lambda: len(gw.hold) == 1)
    # served after twice the requester's timeout: Pending kept the request alive
    await task.deferLater(reactor, 0.8, lambda: None)
    assert not d.called
    gw.hold.pop().callback(None)
    reply = await d
    assert reply.context == 1 and len(gw.calls) == 1
    # without Pending the same wait is a timeout
    agent._link.pending_interval = 10
    gw.holding = True
    d = ctrl.reserve(MID, _reserve_request())
    with pytest.raises(IqTimeout):
        await d


@pytest_twisted.ensureDeferred
async def test_loss_gives_timeouts_seeded(lab: Lab) -> None:
    ctrl, port = lab.controller(timeout=0.3)
    gw = FakeGateway()
    agent = lab.agent(gw, port)
    await agent.when_registered()
    # now make the controller lose half of what it sends, reproducibly
    link = next(iter(ctrl._links))
    from iq.transactions import FaultInjector

    link.faults = FaultInjector(FaultPlan(seed=7, drop_rate=0.5))
    outcomes = []
    for _ in range(8):
        try:
            await ctrl.reserve(MID, _reserve_request())
            outcomes.append("ok")
        except IqTimeout:
            outcomes.append("lost")
    assert "ok" in outcomes and "lost" in outcomes
    assert len(gw.calls) == outcomes.count("ok")


@pytest_twisted.ensureDeferred
async def test_link_drop_fails_all_pending_and_agent_reregisters(lab: Lab) -> None:
    ctrl, port = lab.controller(timeout=10)
    gw = FakeGateway()
    agent = lab.agent(gw, port, backoff_initial=0.05)
    await agent.when_registered()
    gw.holding = True
    pending = [ctrl.reserve(MID, _reserve_request()) for _ in range(3)]
    await wait_for(lambda: len(gw.hold) == 3)
    agent._link.transport.abortConnection()  # type: ignore[union-attr]
    results = await defer.DeferredList(pending, consumeErrors=True)
    assert all(not ok and failure.check(LinkLost) for ok, failure in results)
    assert GatewayStatus(MID, False, "link lost") in lab.events
    with pytest.raises(NotInService):
        await ctrl.reserve(MID, _reserve_request())
    await wait_for(lambda: agent.registrations == 2)
    assert GatewayStatus(MID, True, "restart") in lab.events
    assert ctrl.gateways_in_service() == [MID]
    gw.holding = False
    for d in gw.hold:
        d.callback(None)  # the answers of the dead link go nowhere
    reply = await ctrl.reserve(MID, _reserve_request())
    assert reply.context == 4


@pytest_twisted.ensureDeferred
async def test_disconnect_after_n_messages_then_reconnect(lab: Lab) -> None:
    ctrl, port = lab.controller(timeout=2)
    gw = FakeGateway()
    # the agent cuts its link after its 3rd message: ServiceChange, then two replies
    agent = lab.agent(gw, port, faults=FaultPlan(disconnect_after=3), backoff_initial=0.05)
    await agent.when_registered()
    await ctrl.reserve(MID, _reserve_request())
    with pytest.raises(LinkLost):
        await ctrl.reserve(MID, _reserve_request())
    await wait_for(lambda: agent.registrations == 2)


@pytest_twisted.ensureDeferred
async def test_handler_errors_become_h248_errors(lab: Lab) -> None:
    ctrl, port = lab.controller()
    gw = FakeGateway()
    agent = lab.agent(gw, port)
    await agent.when_registered()
    gw.refuse = InsufficientResources("port range exhausted")
    with pytest.raises(RequestFailed) as info:
        await ctrl.reserve(MID, _reserve_request())
    assert info.value.code == 510 and "exhausted" in info.value.reason
    gw.refuse = RuntimeError("bug")
    with pytest.raises(RequestFailed) as info:
        await ctrl.reserve(MID, _reserve_request())
    assert info.value.code == 500
    bad = profile.ConfigureRequest(
        9, (profile.StreamConfiguration(1, "message", "acc/9/1", "", establish_tls=True),)
    )
    with pytest.raises(RequestFailed) as info:
        await ctrl.configure(MID, bad)
    assert (info.value.code, info.value.where) == (430, "")
    assert "acc/9/1" in info.value.reason


@pytest_twisted.ensureDeferred
async def test_forced_shutdown_takes_gateway_out_of_service(lab: Lab) -> None:
    ctrl, port = lab.controller()
    agent = lab.agent(FakeGateway(), port)
    await agent.when_registered()
    await agent.stop()
    await wait_for(lambda: GatewayStatus(MID, False, "forced") in lab.events)
    assert ctrl.gateways_in_service() == []
    await task.deferLater(reactor, 0.3, lambda: None)
    assert not agent.registered  # no reconnection after stop


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _read_message(sock: socket.socket) -> codec.Message:
    decoder = tpkt.TpktDecoder()
    while True:
        data = sock.recv(65536)
        assert data, "connection closed"
        got = decoder.feed(data)
        if got:
            return codec.decode(got[0])


@pytest_twisted.ensureDeferred
async def test_garbage_gets_error_and_link_stays_up(lab: Lab) -> None:
    ctrl, port = lab.controller()

    def talk() -> list[codec.Message]:
        with _raw(port) as sock:
            out = []
            sock.sendall(tpkt.frame(b"this is not megaco"))
            out.append(_read_message(sock))
            sock.sendall(
                tpkt.frame(b"MEGACO/3 <raw> Transaction = 8 { Context = 1 { Bogus = x } }")
            )
            out.append(_read_message(sock))
            # a reply to a transaction nobody sent: dropped silently
            sock.sendall(tpkt.frame(b"MEGACO/3 <raw> Reply = 77 { Context = 1 { Notify = a } }"))
            # Notify before registering: 505
            notify = samples.originating()[4].message
            sock.sendall(tpkt.frame(codec.encode(notify)))
            out.append(_read_message(sock))
            register = samples.registration()[0].message
            sock.sendall(tpkt.frame(codec.encode(register)))
            out.append(_read_message(sock))
            return out

    from twisted.internet import threads

    garbage, bad_command, early, registered = await threads.deferToThread(talk)
    assert garbage.error is not None and garbage.error.code == 400
    (t,) = bad_command.transactions
    assert isinstance(t, codec.TransactionReply) and t.transaction_id == 8
    assert t.error is not None and t.error.code == 422
    (t,) = early.transactions
    assert isinstance(t, codec.TransactionReply) and t.error is not None and t.error.code == 505
    (t,) = registered.transactions
    assert isinstance(t, codec.TransactionReply) and t.error is None
    assert registered.mid == ctrl.mid


@pytest_twisted.ensureDeferred
async def test_silent_tls_peer_is_dropped_after_handshake_timeout(
    lab: Lab, identities: dict[str, certs.CertAndKey]
) -> None:
    alg, agw = identities["alg"], identities["agw"]
    _, port = lab.controller(tls=IqTlsConfig(alg, (agw.fingerprint(),)), handshake_timeout=0.3)

    def silent() -> str:
        with _raw(port) as sock:  # connects, never starts the handshake
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                return "closed"
            return "closed" if data == b"" else "data"

    from twisted.internet import threads

    # the controller cuts the connection (else recv would time out after 5 s and raise)
    assert await threads.deferToThread(silent) == "closed"


@pytest_twisted.ensureDeferred
async def test_warm_restart_keeps_contexts_and_call_ids(lab: Lab) -> None:
    ctrl, port = lab.controller()
    gw = FakeGateway()
    agent = lab.agent(gw, port, backoff_initial=0.05)
    await agent.when_registered()
    reserve = _reserve_request()
    reply = await ctrl.reserve(MID, reserve)
    agent._link.transport.abortConnection()  # type: ignore[union-attr]
    await wait_for(lambda: agent.registrations == 2)
    assert ctrl.call_id_of(MID, reply.context) == reserve.call_id
    event = profile.IqEvent("connection-closed", reply.context, "core/1/1", 1, "20260101T00000000")
    await agent.notify(event)
    assert IqNotification(MID, reserve.call_id, event) in lab.events


@pytest_twisted.ensureDeferred
async def test_notifications_while_the_link_is_down_wait_for_the_reconnection(lab: Lab) -> None:
    ctrl, port = lab.controller()
    gw = FakeGateway()
    agent = lab.agent(gw, port, backoff_initial=0.2)
    await agent.when_registered()
    reply = await ctrl.reserve(MID, _reserve_request())
    agent._link.transport.abortConnection()  # type: ignore[union-attr]
    await wait_for(lambda: not agent.registered)
    agent.notify_backlog = 2
    events = [
        profile.IqEvent("connection-closed", reply.context, "acc/1/1", n, "20260101T00000000")
        for n in (1, 2, 3)
    ]
    held = [agent.notify(e) for e in events]
    with pytest.raises(LinkLost, match="2 notifications are already waiting"):
        await held[2]
    assert not held[0].called and not held[1].called
    await defer.gatherResults(held[:2])  # sent, in order, after the warm reconnection
    assert agent.registrations == 2
    got = [e.event for e in lab.events if isinstance(e, IqNotification)]
    assert got == events[:2]


@pytest_twisted.ensureDeferred
async def test_held_notifications_fail_when_the_agent_stops(lab: Lab) -> None:
    _, port = lab.controller()
    agent = lab.agent(FakeGateway(), port, backoff_initial=5.0)
    await agent.when_registered()
    agent._link.transport.abortConnection()  # type: ignore[union-attr]
    await wait_for(lambda: not agent.registered)
    held = agent.notify(profile.IqEvent("connection-closed", 1, "core/1/1", 1, "20260101T0"))
    await agent.stop()
    with pytest.raises(LinkLost, match="stopped"):
        await held


@pytest_twisted.ensureDeferred
async def test_several_gateways_in_service_in_registration_order(lab: Lab) -> None:
    # Which gateway a call uses is the call table's round robin (pcscf.calls.pick_gateway).
    ctrl, port = lab.controller()
    assert ctrl.gateways_in_service() == []
    gws = {}
    for name in ("<agw1.lab>", "<agw2.lab>", "<agw3.lab>"):
        gws[name] = FakeGateway()
        agent = lab.agent(gws[name], port, mid=name)
        await agent.when_registered()
    assert ctrl.gateways_in_service() == ["<agw1.lab>", "<agw2.lab>", "<agw3.lab>"]
    for name in ctrl.gateways_in_service():
        await ctrl.reserve(name, _reserve_request())
    assert all(len(gw.calls) == 1 for gw in gws.values())
