"""The UE simulator and the core stub on real loopback sockets, through the real P-CSCF proxy.

Here the P-CSCF passes SDP through (no AGW): UE to UE the TLS is end to end, each UE checking
the other's certificate against the SDP fingerprint; UE to the plain core peer runs TCP/MSRP
and TCP/BFCP. The e2ae path (P-CSCF + AGW over Iq) is covered by the demo tests.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol

import certs
import lab.ue as lab_ue
from lab.core import CoreStub
from lab.uesim import CallFailed, UeSim
from pcscf.service import SipService
from pcscf.sip import Response, parse_datagram
from pcscf.sip.proxy import Peer, ProxyConfig

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in ("alice", "bob")}


def _lab(cleanup: list[Any], echo: bool = False) -> tuple[CoreStub, tuple[str, int]]:
    core = CoreStub(reactor, echo=echo)
    port = core.listen()
    cleanup.append(core.stop)
    service = SipService(
        ProxyConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=Peer("core", "udp", "127.0.0.1", port),
            network_mechanisms=frozenset({"msrp-tls", "bfcp-tls"}),
        ),
        reactor=reactor,
    )
    service.listen()
    cleanup.append(service.stop)
    return core, service.config.gm


async def _ue(cleanup: list[Any], name: str, identity: Any, gm: Any, **kw: Any) -> UeSim:
    ue = UeSim(reactor, name, identity, gm, **kw)
    await ue.start()
    cleanup.append(ue.stop)
    return ue


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest_twisted.ensureDeferred
async def test_ue_to_ue_end_to_end_tls_msrp_both_ways_and_floor(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any], transport: str
) -> None:
    core, gm = _lab(cleanup)
    alice = await _ue(cleanup, "alice", ids["alice"], gm, transport=transport)
    bob = await _ue(cleanup, "bob", ids["bob"], gm)
    reg = await alice.register()
    assert reg.status == 200
    assert "msrp-tls;mediasec" in ",".join(reg.get_all("Security-Server"))
    assert alice.ua is not None and alice.ua.network_mechanisms == {"msrp-tls", "bfcp-tls"}
    assert (await bob.register()).status == 200
    assert set(core.bindings) == {"sip:alice@lab.example", "sip:bob@lab.example"}
    assert all(b.path for b in core.bindings.values())

    incoming = bob.next_call()
    call = await alice.call("sip:bob@lab.example")
    answered = await incoming
    assert answered.call_id == call.call_id
    assert core.routed[-1].protos == ("TCP/TLS/MSRP", "TCP/TLS/BFCP")
    # mutual verification: each side matched the other's SDP fingerprint
    assert call.streams["msrp"].verified_fingerprint == ids["bob"].fingerprint("sha-256").value
    assert answered.streams["bfcp"].verified_fingerprint == (
        ids["alice"].fingerprint("sha-256").value
    )

    await call.msrp.send_message(b"hello bob")
    assert [m.body for m in await answered.msrp.wait_messages(1)] == [b"hello bob"]
    await answered.msrp.send_message(b"hi alice")
    assert [m.body for m in await call.msrp.wait_messages(1)] == [b"hi alice"]
    grant = await call.bfcp.request_floor(1)
    assert grant.floor_ids == (1,)

    bye = await alice.hangup(call)
    assert bye.status == 200  # through the spiral: P-CSCF, core, P-CSCF
    await answered.when_ended()
    assert answered.end_reason == "remote hung up"


@pytest_twisted.ensureDeferred
async def test_ue_to_plain_core_peer(ids: dict[str, certs.CertAndKey], cleanup: list[Any]) -> None:
    core, gm = _lab(cleanup, echo=True)
    alice = await _ue(cleanup, "alice", ids["alice"], gm, e2ae=False)
    await alice.register()
    call = await alice.call(core.peer_uri)
    await call.msrp.send_message(b"to the core")
    assert [m.body for m in await call.msrp.wait_messages(1)] == [b"echo: to the core"]
    await call.bfcp.request_floor(1)
    peer = core.peer_calls[call.call_id]
    assert peer.protos == ("TCP/MSRP", "TCP/BFCP")
    assert [m.body for m in peer.messages] == [b"to the core"]
    assert peer.grants == 1
    assert peer.msrp is not None and peer.msrp.bytes_received == call.msrp.bytes_sent
    assert (await alice.hangup(call)).status == 200


@pytest.mark.parametrize(
    ("present", "reason"),
    [("other", "certificate does not match the SDP fingerprint"), ("none", "no certificate")],
)
@pytest_twisted.ensureDeferred
async def test_callee_refuses_a_caller_with_another_or_no_certificate(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any], present: Any, reason: str
) -> None:
    _, gm = _lab(cleanup)
    alice = await _ue(cleanup, "alice", ids["alice"], gm, present=present, media_timeout=3)
    bob = await _ue(cleanup, "bob", ids["bob"], gm)
    await alice.register()
    await bob.register()
    # TLS 1.3: the client may be done with the handshake before the server checks its
    # certificate; bob then drops the connection without using a byte.
    try:
        placed = await alice.call("sip:bob@lab.example")
    except Exception as exc:  # or the handshake already fails on the client's side
        assert present == "none", exc
    else:
        await placed.msrp.when_closed()
        await placed.streams["bfcp"].connection.when_closed()
    call = next(iter(bob.calls.values()))
    attempts = [c for leg in call.streams.values() for c in leg.endpoint.connections]
    assert attempts and not any(c.verified for c in attempts)
    assert all(leg.connection is None for leg in call.streams.values())
    assert all(leg.endpoint.bytes_received == 0 for leg in call.streams.values())
    refused = [r.reason for leg in call.streams.values() for r in leg.endpoint.refused]
    if present == "other":  # a certificate was presented and compared
        assert refused and set(refused) == {reason}
    else:  # no certificate: the TLS handshake itself fails (peer certificate required)
        assert refused
        assert all("peer did not return a certificate" in r for r in refused), refused


@pytest_twisted.ensureDeferred
async def test_call_to_unknown_user_fails(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any]
) -> None:
    _, gm = _lab(cleanup)
    alice = await _ue(cleanup, "alice", ids["alice"], gm)
    await alice.register()
    with pytest.raises(CallFailed) as info:
        await alice.call("sip:nobody@lab.example")
    assert info.value.status == 404


class FirstCopyLost(DatagramProtocol):
    """A UDP hop between a UE and the P-CSCF that loses the first copy of every datagram, both
    ways: only retransmissions get through."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.ue: tuple[str, int] | None = None
        self.seen: set[bytes] = set()
        self.lost = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if tuple(addr) != self.target:
            self.ue = tuple(addr)
            dest: tuple[str, int] | None = self.target
        else:
            dest = self.ue
        if dest is None:
            return
        if data not in self.seen:
            self.seen.add(data)
            self.lost += 1
            return
        self.transport.write(data, dest)


@pytest_twisted.ensureDeferred
async def test_a_call_over_a_link_that_loses_every_first_datagram(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any]
) -> None:
    """Over UDP the UE retransmits its requests, re-sends the same ACK for a 2xx that comes
    again, and (callee) repeats its 2xx until the ACK: a call goes through a link that loses
    the first copy of everything alice and the P-CSCF send each other."""
    _, gm = _lab(cleanup)
    hop = FirstCopyLost(gm)
    port = reactor.listenUDP(0, hop, interface="127.0.0.1")  # type: ignore[attr-defined]
    cleanup.append(port.stopListening)
    alice = await _ue(cleanup, "alice", ids["alice"], ("127.0.0.1", port.getHost().port))
    bob = await _ue(cleanup, "bob", ids["bob"], gm)
    assert (await alice.register()).status == 200
    assert (await bob.register()).status == 200
    incoming = bob.next_call()
    call = await alice.call("sip:bob@lab.example")
    answered = await incoming
    await call.msrp.send_message(b"through the lossy hop")
    assert [m.body for m in await answered.msrp.wait_messages(1)] == [b"through the lossy hop"]
    assert (await alice.hangup(call)).status == 200
    await answered.when_ended()
    assert len(bob.calls) == 1
    # REGISTER, its 200, INVITE, 100, 200, ACK, BYE and its 200 were each lost once at least
    assert hop.lost >= 8, hop.lost


class FakeProxy(DatagramProtocol):
    """The test as the callee's P-CSCF: sends datagrams to the UE, keeps what comes back."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.got.append(data)

    def responses(self, status: int) -> list[bytes]:
        return [d for d in self.got if d.startswith(f"SIP/2.0 {status} ".encode())]


@pytest_twisted.ensureDeferred
async def test_callee_answers_a_repeated_invite_once_and_repeats_its_2xx_until_the_ack(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any]
) -> None:
    proxy = FakeProxy()
    port = reactor.listenUDP(0, proxy, interface="127.0.0.1")  # type: ignore[attr-defined]
    cleanup.append(port.stopListening)
    bob = await _ue(cleanup, "bob", ids["bob"], ("127.0.0.1", port.getHost().port))
    bob_addr = ("127.0.0.1", bob.node.port)
    caller = lab_ue.UserAgent("sip:carol@lab.example", "127.0.0.1", port.getHost().port, bob_addr)
    plan = lab_ue.MediaPlan("127.0.0.1", ids["alice"].fingerprint(), 9, tls=False, e2ae=False)
    invite, dialog = caller.invite("sip:bob@lab.example", lab_ue.build_sdp(plan, username="c"))
    wire = invite.serialise()
    for _ in range(2):  # the INVITE, then its retransmission
        port.write(wire, bob_addr)
        await task.deferLater(reactor, 0.1, lambda: None)
    assert len(bob.calls) == 1
    oks = proxy.responses(200)
    assert len(oks) == 2 and oks[0] == oks[1]  # the same answer, not a second call
    await task.deferLater(reactor, 0.8, lambda: None)  # T1 (0.5 s) passed without an ACK
    assert len(proxy.responses(200)) >= 3 and set(proxy.responses(200)) == {oks[0]}
    answered = parse_datagram(oks[0])
    assert isinstance(answered, Response)
    caller.invite_answered(answered)
    port.write(caller.ack(dialog).serialise(), bob_addr)
    await task.deferLater(reactor, 0.2, lambda: None)
    count = len(proxy.responses(200))
    await task.deferLater(reactor, 1.2, lambda: None)  # past the next 2xx retransmission
    assert len(proxy.responses(200)) == count
    assert next(iter(bob.calls.values())).acked
