"""Iq as an attacker on the same host sees it: impostor gateways, forged Notifies, links that
never register, floods of links and requests, requests that cannot be encoded. Real loopback
sockets; the impostor is a raw TCP client speaking H.248 text."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor, threads

import certs
from iq import codec, profile, tpkt
from iq.admission import IqLimits
from iq.errors import LocalIqError, Overloaded
from iq.link import GatewayStatus, IqAgent, IqController, IqNotification, IqTlsConfig
from pcscf.e2ae import iq_controller
from tests.iq.test_link import MID, FakeGateway, Lab, _read_message, _reserve_request, wait_for

REAL = MID
IMPOSTOR = "<impostor.lab>"
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
def lab() -> Iterator[Lab]:
    from tests.conftest import run_cleanups

    lab = Lab()
    yield lab
    run_cleanups(lab.cleanups)


def _request(mid: str, tid: int, request: profile.IqRequest) -> bytes:
    message = codec.Message(mid, (codec.TransactionRequest(tid, profile.encode_request(request)),))
    return tpkt.frame(codec.encode(message))


_read = _read_message


def _error_of(message: codec.Message) -> codec.ErrorDescriptor | None:
    (reply,) = message.transactions
    assert isinstance(reply, codec.TransactionReply)
    return reply.error


def _impostor(port: int, *requests: bytes) -> list[codec.ErrorDescriptor | None]:
    """Send each request on one raw link and collect the error (None: accepted) of each."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        out = []
        for data in requests:
            sock.sendall(data)
            out.append(_error_of(_read(sock)))
        return out


async def _call_on_real_gateway(lab: Lab) -> tuple[IqController, int, IqAgent, int]:
    ctrl, port = lab.controller()
    agent = lab.agent(FakeGateway(), port)
    await agent.when_registered()
    reply = await ctrl.reserve(REAL, _reserve_request())
    return ctrl, port, agent, reply.context


def _status_events(lab: Lab) -> list[GatewayStatus]:
    return [e for e in lab.events if isinstance(e, GatewayStatus)]


@pytest_twisted.ensureDeferred
async def test_a_new_mid_outside_the_allow_list_is_not_put_in_service(lab: Lab) -> None:
    ctrl, port, _agent, _ = await _call_on_real_gateway(lab)
    (error,) = await threads.deferToThread(
        _impostor, port, _request(IMPOSTOR, 1, profile.ServiceChangeRequest("register"))
    )
    assert error is not None and error.code == 402 and "allow-list" in error.text
    assert ctrl.gateways_in_service() == [REAL]


@pytest.mark.parametrize("kind", ["restart", "register"])
@pytest_twisted.ensureDeferred
async def test_a_service_change_for_the_real_mid_from_another_link_moves_nothing(
    lab: Lab, kind: profile.ServiceChangeKind
) -> None:
    """902 Warm Boot would hand the impostor the contexts; 901 Cold Boot would end every call."""
    ctrl, port, agent, context = await _call_on_real_gateway(lab)
    before = list(lab.events)
    forged = profile.IqEvent(
        "tls-failure", context, "acc/1/1", 1, profile.timestamp(0), cause="fingerprint-mismatch"
    )
    change, notify = await threads.deferToThread(
        _impostor,
        port,
        _request(REAL, 1, profile.ServiceChangeRequest(kind)),
        _request(REAL, 2, profile.NotifyRequest(forged)),
    )
    assert change is not None and change.code == 402 and "another link" in change.text
    assert notify is not None and notify.code == 505
    assert lab.events == before  # no gateway status change, no notification
    assert ctrl.gateways_in_service() == [REAL]
    assert agent.registered and ctrl.call_id_of(REAL, context) == _reserve_request().call_id
    # the real gateway's link is still the one in use
    assert (await ctrl.release(REAL, profile.ReleaseRequest(context))).context == context


@pytest_twisted.ensureDeferred
async def test_a_notify_for_another_gateways_context_is_refused(lab: Lab) -> None:
    ctrl, port, _agent, context = await _call_on_real_gateway(lab)
    other = lab.agent(FakeGateway(), port, mid="<agw2.lab>")
    await other.when_registered()
    event = profile.IqEvent("connection-closed", context, "core/1/1", 1, profile.timestamp(0))
    with pytest.raises(Exception, match="411"):
        await other.notify(event)
    assert not [e for e in lab.events if isinstance(e, IqNotification)]
    assert ctrl.call_id_of(REAL, context) is not None


@pytest_twisted.ensureDeferred
async def test_a_registered_link_cannot_speak_for_another_mid(lab: Lab) -> None:
    _ctrl, port = lab.controller()
    errors = await threads.deferToThread(
        _impostor,
        port,
        _request(REAL, 1, profile.ServiceChangeRequest("register")),
        _request("<agw2.lab>", 2, profile.ServiceChangeRequest("register")),
    )
    assert errors[0] is None
    assert errors[1] is not None and errors[1].code == 402
    assert [e.gateway for e in _status_events(lab) if e.in_service] == [REAL]


@pytest_twisted.ensureDeferred
async def test_a_restarted_gateway_takes_its_mid_back_from_the_same_address(lab: Lab) -> None:
    ctrl, port, agent, context = await _call_on_real_gateway(lab)
    await agent.stop()
    again = lab.agent(FakeGateway(), port)
    await again.when_registered()
    assert ctrl.gateways_in_service() == [REAL]
    assert ctrl.call_id_of(REAL, context) is None  # a new agent boots cold: contexts gone


@pytest_twisted.ensureDeferred
async def test_a_link_that_never_registers_is_closed(lab: Lab) -> None:
    _ctrl, port = lab.controller(limits=IqLimits(register_timeout=0.3))

    def silent() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                return sock.recv(10)  # b"" once the controller closes the link
            except ConnectionResetError:
                return b""  # or reset, as an aborted connection is

    assert await threads.deferToThread(silent) == b""


@pytest_twisted.ensureDeferred
async def test_links_beyond_max_links_are_closed_at_once(lab: Lab) -> None:
    _ctrl, port = lab.controller(limits=IqLimits(max_links=2))

    def flood() -> list[bytes]:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            # the first two are held open: a short recv times out
            for sock in socks[:2]:
                sock.settimeout(0.5)
            out = []
            for sock in socks:
                try:
                    out.append(sock.recv(10))
                except TimeoutError:
                    out.append(b"held")
            return out
        finally:
            for sock in socks:
                sock.close()

    assert await threads.deferToThread(flood) == [b"held", b"held", b""]


@pytest_twisted.ensureDeferred
async def test_gateways_beyond_max_gateways_are_refused(lab: Lab) -> None:
    ctrl, port = lab.controller(limits=IqLimits(max_gateways=1))
    agent = lab.agent(FakeGateway(), port)
    await agent.when_registered()
    (error,) = await threads.deferToThread(
        _impostor, port, _request("<agw2.lab>", 1, profile.ServiceChangeRequest("register"))
    )
    assert error is not None and error.code == 510
    assert ctrl.gateways_in_service() == [REAL]


@pytest_twisted.ensureDeferred
async def test_requests_beyond_max_pending_fail_at_once(lab: Lab) -> None:
    ctrl, port = lab.controller(limits=IqLimits(max_pending=1))
    gw = FakeGateway()
    gw.holding = True
    agent = lab.agent(gw, port)
    await agent.when_registered()
    first = ctrl.reserve(REAL, _reserve_request())
    with pytest.raises(Overloaded):
        await ctrl.reserve(REAL, _reserve_request())
    await wait_for(lambda: bool(gw.hold))
    gw.hold[0].callback(None)
    assert (await first).context == 1


@pytest_twisted.ensureDeferred
async def test_a_release_is_sent_even_when_max_pending_requests_wait(lab: Lab) -> None:
    # Refusing it would leave the gateway holding the context's terminations for good.
    ctrl, port = lab.controller(limits=IqLimits(max_pending=1))
    gw = FakeGateway()
    agent = lab.agent(gw, port)
    await agent.when_registered()
    reserved = await ctrl.reserve(REAL, _reserve_request())
    gw.holding = True
    waiting = ctrl.reserve(REAL, _reserve_request())
    await wait_for(lambda: len(gw.hold) == 1)
    with pytest.raises(Overloaded):
        await ctrl.reserve(REAL, _reserve_request())
    gw.holding = False
    await ctrl.release(REAL, profile.ReleaseRequest(reserved.context))
    assert not gw.contexts.get(reserved.context)
    gw.hold[0].callback(None)
    assert (await waiting).context == reserved.context + 1


def _huge_reserve() -> profile.ReserveRequest:
    """2,000 streams: far more than one TPKT packet (65,531 bytes) can carry."""
    base = _reserve_request()
    (stream,) = base.streams
    streams = tuple(attrs.evolve(stream, stream=n) for n in range(1, 2001))
    return profile.ReserveRequest(base.call_id, streams)


@pytest_twisted.ensureDeferred
async def test_a_request_that_cannot_be_encoded_leaves_nothing_behind(lab: Lab) -> None:
    ctrl, port = lab.controller()
    agent = lab.agent(FakeGateway(), port)
    await agent.when_registered()
    before = len(reactor.getDelayedCalls())  # type: ignore[attr-defined]
    with pytest.raises(LocalIqError, match="TPKT maximum"):
        await ctrl.reserve(REAL, _huge_reserve())
    (link,) = ctrl._links
    assert link.pending_count == 0
    assert len(reactor.getDelayedCalls()) == before  # type: ignore[attr-defined]
    # the link is still fine for the next call
    assert (await ctrl.reserve(REAL, _reserve_request())).context == 1


def test_plain_tcp_iq_is_an_explicit_opt_in_with_an_allow_list() -> None:
    with pytest.raises(LocalIqError, match="insecure"):
        IqController()
    with pytest.raises(LocalIqError, match="allow-list"):
        IqController(insecure=True)
    with pytest.raises(LocalIqError, match="MID@ADDRESS"):
        IqController(insecure=True, allow=["127.0.0.1"])
    IqController(insecure=True, allow=["<agw>@127.0.0.1"])


def test_the_pcscf_builds_tls_iq_from_its_configuration(tmp_path: Path) -> None:
    from pcscf.config import ConfigError, build_config

    pair = certs.generate("pcscf", now=NOW)
    certs.write(pair, tmp_path)
    agw = certs.generate("agw", now=NOW).fingerprint().value
    base = {"gm": "127.0.0.1:0", "core": "127.0.0.1:0", "next_hop": "127.0.0.1:5080"}
    with pytest.raises(ConfigError, match="insecure"):
        build_config({**base, "iq": "127.0.0.1:0"})
    with pytest.raises(ConfigError, match="allow-list"):
        build_config({**base, "iq": "127.0.0.1:0", "iq_insecure": True})
    with pytest.raises(ConfigError, match="iq_peers"):
        build_config({**base, "iq": "127.0.0.1:0", "iq_tls": "pcscf"}, base=tmp_path)
    config = build_config(
        {**base, "iq": "127.0.0.1:0", "iq_tls": "pcscf", "iq_peers": [agw], "iq_max_links": 3},
        base=tmp_path,
    )
    ctrl = iq_controller(config)
    assert isinstance(ctrl.tls, IqTlsConfig)
    assert ctrl.admission.authenticated and ctrl.limits.max_links == 3
