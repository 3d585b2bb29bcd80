"""The lab's media endpoints through the real Access Gateway on loopback: UE (TLS, pinning the
AGW's fingerprint) -> AGW (pinning the UE's) -> core peer (plain TCP), in both TLS roles, with
an impostor trying the port of a live stream."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

import certs
from accessgw.gateway import AccessGateway
from accessgw.termination import Event, Timers, TlsEstablished, TlsFailure
from e2ae import bfcp
from lab.media import (
    ConnectionClosed,
    PeerNotVerified,
    UeTls,
    bfcp_client_endpoint,
    bfcp_server_endpoint,
    msrp_endpoint,
)

NOW = datetime.datetime.now(datetime.UTC)
UE_URI = "msrps://127.0.0.1:7394/ue4session;tcp"
CORE_URI = "msrp://127.0.0.1:12763/core5session;tcp"


class Net:
    def __init__(self) -> None:
        self.agw = certs.generate("agw", now=NOW)
        self.ue = certs.generate("ue", now=NOW)
        self.events: list[Event] = []
        self.gw = AccessGateway(
            "127.0.0.1",
            "127.0.0.1",
            self.agw,
            observer=self.events.append,
            timers=Timers(establishment=20, handshake=5, hold=5),
        )
        self.stops: list[Any] = []

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def tls(self, **kw: Any) -> UeTls:
        return UeTls(self.ue, (self.agw.fingerprint(),), **kw)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    yield n
    for stop in n.stops:
        pytest_twisted.blockon(defer.maybeDeferred(stop))
    n.gw.close()


async def _until(predicate: Any, limit: int = 1000) -> None:
    from twisted.internet.task import deferLater

    for _ in range(limit):
        if predicate():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met")


@pytest_twisted.ensureDeferred
async def test_ue_active_msrp_through_the_agw_and_an_impostor_refused(net: Net) -> None:
    core = msrp_endpoint(reactor, local_uri=CORE_URI)
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI], tls=net.tls())
    impostor = msrp_endpoint(
        reactor, local_uri=UE_URI, remote_path=[CORE_URI], tls=net.tls(present="other")
    )
    net.stops += [core.stop, ue.stop, impostor.stop]
    r = net.gw.reserve(fingerprints=[net.ue.fingerprint()], core_role="connect")
    assert r.access_port is not None and r.fingerprint == net.agw.fingerprint()
    net.gw.configure(r.termination, core_address=("127.0.0.1", core.listen()))

    # an impostor tries the access port first: refused, the stream stays open
    try:
        bad = await impostor.connect("127.0.0.1", r.access_port)
    except (ConnectionClosed, PeerNotVerified):
        pass
    else:
        await bad.when_closed()
    await _until(lambda: bool(net.of(TlsFailure)))
    assert net.of(TlsFailure)[0].cause == "fingerprint-mismatch"

    conn = await ue.connect("127.0.0.1", r.access_port)
    assert conn.peer_fingerprint == net.agw.fingerprint()
    body = bytes(range(256)) * 800
    await conn.send_message(b"hello through the AGW")
    await conn.send_message(body, "application/octet-stream", success_report=True)
    core_conn = await core.accepted()
    got = await core_conn.wait_messages(2)
    assert [m.body for m in got] == [b"hello through the AGW", body]
    await core_conn.send_message(b"hello back")
    assert (await conn.wait_messages(1))[0].body == b"hello back"
    await _until(lambda: len(conn.reports) == 1)
    [established] = net.of(TlsEstablished)
    assert established.fingerprint == net.ue.fingerprint()
    await conn.close()
    stats = net.gw.release(r.termination)
    assert stats.bytes_to_core == conn.bytes_sent == core_conn.bytes_received
    assert stats.bytes_to_ue == conn.bytes_received == core_conn.bytes_sent
    assert impostor.bytes_sent == 0 and impostor.bytes_received == 0


@pytest_twisted.ensureDeferred
async def test_ue_passive_bfcp_agw_as_tls_client(net: Net) -> None:
    # UE: a=setup:passive, floor participant; AGW: TLS client ("establish TLS session");
    # core: floor control server, connects to the AGW's core port
    ue = bfcp_client_endpoint(reactor, conference_id=77, user_id=3, tls=net.tls())
    server_ep, server = bfcp_server_endpoint(reactor, conference_id=77, floors=[1])
    net.stops += [ue.stop, server_ep.stop]
    ue_port = ue.listen()
    r = net.gw.reserve(fingerprints=[net.ue.fingerprint()], tls_role="client", core_role="listen")
    assert r.core_port is not None
    net.gw.configure(r.termination, ue_address=("127.0.0.1", ue_port), establish_tls=True)
    participant = await ue.accepted()
    assert participant.peer_fingerprint == net.agw.fingerprint()
    await server_ep.connect("127.0.0.1", r.core_port)
    ack = await participant.hello()
    assert ack.primitive == bfcp.Primitive.HELLO_ACK
    grant = await participant.request_floor(1)
    assert server.granted[grant.floor_request_id].user_id == 3
    await participant.release_floor(grant.floor_request_id)
    await participant.goodbye()
    stats = net.gw.release(r.termination)
    assert stats.bytes_to_core == participant.bytes_sent
    assert stats.bytes_to_ue == participant.bytes_received


@pytest_twisted.ensureDeferred
async def test_ue_refuses_an_agw_that_is_not_the_one_in_the_sdp(net: Net) -> None:
    core = msrp_endpoint(reactor, local_uri=CORE_URI)
    other = certs.generate("not-the-agw", now=NOW)
    ue = msrp_endpoint(
        reactor,
        local_uri=UE_URI,
        remote_path=[CORE_URI],
        tls=UeTls(net.ue, (other.fingerprint(),)),
    )
    net.stops += [core.stop, ue.stop]
    r = net.gw.reserve(fingerprints=[net.ue.fingerprint()], core_role="connect")
    assert r.access_port is not None
    net.gw.configure(r.termination, core_address=("127.0.0.1", core.listen()))
    with pytest.raises(PeerNotVerified):
        await ue.connect("127.0.0.1", r.access_port)
    stats = net.gw.release(r.termination)
    assert stats.bytes_to_core == 0 and ue.bytes_sent == 0
