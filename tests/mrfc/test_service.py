"""The MRFC on real sockets (127.0.0.1): a KMS over HTTPS, the core stub and P-CSCF, UEs in
KMS mode, and a stand-in MRFP: an MpAgent over TLS whose handler records each Join and
terminates the stream's TLS-PSK (or plain TCP) itself, so a UE's handshake succeeds only with
the key the MRFC derived."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

import certs
from certs.psk import psk_context
from e2ae.tlsconn import ContextCreator
from iq.config import IqTlsConfig
from kms.config import KmsConfig, ProvisionedUser
from kms.service import KmsService
from kms.service import build as build_kms
from kms.store import User
from lab import ue as lab_ue
from lab.core import CoreStub
from lab.uesim import CallFailed, UeSim
from mp.link import MpAgent
from mp.profile import (
    AckReply,
    ConnectRequest,
    Endpoint,
    JoinReply,
    JoinRequest,
    LeaveReply,
    LeaveRequest,
    MpEvent,
    StartTlsRequest,
    StreamStatistics,
)
from mrfc import core
from mrfc.config import KmsLink, MpLink, MrfcConfig
from mrfc.service import DialOutFailed, MrfcService, build
from pcscf.sdp import SessionDescription
from pcscf.service import SipService
from pcscf.sip import Request
from pcscf.sip.message import parse_datagram
from pcscf.sip.proxy import Peer, ProxyConfig

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
USERS = ("alice", "bob", "carol")
CONF = f"sip:conf1@{DOMAIN}"
MRFC_ID = f"sip:mrfc@{DOMAIN}"
KMS_ID = "kms.e2ae.lab"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    names = (*USERS, "mrfc", "kms", "mrfp", "self-kms")
    return {name: certs.generate(name, now=NOW) for name in names}


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: os.urandom(16) for name in (*USERS, "mrfc")}


@pytest.fixture
def logs() -> Iterator[list[str]]:
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        seen.append(str(formatEvent(event)) + " " + repr(event.get("log_format")))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def _kms(
    name: str,
    tmp_path: Path,
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    cleanup: list[Any],
) -> KmsService:
    users = [ProvisionedUser(User(aor(n), keys[n]), (ids[n].fingerprint(),)) for n in USERS]
    users.append(
        ProvisionedUser(User(MRFC_ID, keys["mrfc"], groups=(CONF,)), (ids["mrfc"].fingerprint(),))
    )
    config = KmsConfig(
        identity=KMS_ID,
        listen=("127.0.0.1", 0),
        cert=Path("unused"),
        key=Path("unused"),
        state=tmp_path / f"{name}.sqlite",
        users=tuple(users),
    )
    service = build_kms(config, identity=ids[name], reactor=reactor)
    service.startService()
    cleanup.append(service.stopService)
    return service


@implementer(IHandshakeListener)
class _Stream(Protocol):
    def __init__(self, owner: FakeMrfp, term: tuple[int, str]) -> None:
        self.owner, self.term = owner, term

    def connectionMade(self) -> None:
        if self.owner.joins[self.term].security == "plain":
            self._event("tcp-established")

    def handshakeCompleted(self) -> None:
        self._event("tls-established")

    def _event(self, kind: Any) -> None:
        self.owner.events.append((self.term, kind))
        if self.owner.agent is not None:
            self.owner.agent.notify(MpEvent(*self.term, kind)).addErrback(lambda _: None)


class FakeMrfp:
    """Records the Mp requests; listens for each passive stream (TLS-PSK server with the
    Join's key, or plain TCP)."""

    def __init__(self) -> None:
        self.agent: MpAgent | None = None
        self.requests: list[Any] = []
        self.joins: dict[tuple[int, str], JoinRequest] = {}
        self.ports: dict[tuple[int, str], Any] = {}
        self.events: list[tuple[tuple[int, str], str]] = []
        self.next = 0
        #: Set: the next Join waits for it (a slow MRFP).
        self.hold: defer.Deferred[None] | None = None

    def join(self, request: JoinRequest) -> JoinReply | defer.Deferred[JoinReply]:
        if self.hold is not None:
            held, self.hold = self.hold, None
            return held.addCallback(lambda _: self.join(request))
        self.requests.append(request)
        self.next += 1
        context = request.context or 100
        term = (context, f"{request.media}/{self.next}")
        self.joins[term] = request
        owner = self

        class _F(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                return _Stream(owner, term)

        factory: Any = _F()
        if request.tcp_role == "active":  # it connects when told (Connect), nothing to listen on
            path = f"msrp://127.0.0.1:9/{self.next}x;tcp" if request.media == "msrp" else None
            return JoinReply(context, term[1], Endpoint("127.0.0.1", 9), path)
        if request.security == "tls-psk":
            assert request.psk is not None and request.tls_role == "server"
            ctx = psk_context(
                "server",
                request.psk.key,
                identity=request.psk.identity,
                ciphers=request.psk.ciphersuites,
            )
            factory = TLSMemoryBIOFactory(ContextCreator(ctx), False, factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports[term] = port
        number = port.getHost().port
        path = f"msrp://127.0.0.1:{number}/{self.next}x;tcp" if request.media == "msrp" else None
        return JoinReply(context, term[1], Endpoint("127.0.0.1", number), path)

    def connect(self, request: ConnectRequest) -> AckReply:
        self.requests.append(request)
        return AckReply()

    def start_tls(self, request: StartTlsRequest) -> AckReply:
        self.requests.append(request)
        return AckReply()

    def leave(self, request: LeaveRequest) -> LeaveReply:
        self.requests.append(request)
        port = self.ports.pop((request.context, request.termination), None)
        if port is not None:
            port.stopListening()
        return LeaveReply(StreamStatistics(1, 2, 3, 4))

    def stop(self) -> None:
        for port in self.ports.values():
            port.stopListening()
        self.ports.clear()

    def of(self, kind: type) -> list[Any]:
        return [r for r in self.requests if isinstance(r, kind)]


@pytest.fixture
def lab(
    tmp_path: Path,
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    cleanup: list[Any],
) -> dict[str, Any]:
    kms = _kms("kms", tmp_path, ids, keys, cleanup)
    self_kms = _kms("self-kms", tmp_path, ids, keys, cleanup)
    core_stub = CoreStub(reactor, domain=DOMAIN)
    core_port = core_stub.listen()
    cleanup.append(core_stub.stop)
    cert, key = certs.write(ids["mrfc"], tmp_path)
    config = MrfcConfig(
        sip=("127.0.0.1", 0),
        identity=MRFC_ID,
        kms=KmsLink(kms.address, ids["kms"].fingerprint(), keys["mrfc"], cert, key, KMS_ID),
        mp=MpLink(("127.0.0.1", 0), cert, key, ids["mrfp"].fingerprint()),
        conferences=(core.Conference(CONF, (aor("alice"), aor("bob")), floors=(1,)),),
        next_hop=("127.0.0.1", core_port),
    )
    return {
        "kms": kms,
        "self_kms": self_kms,
        "core": core_stub,
        "config": config,
        "tmp": tmp_path,
    }


async def _start(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    *,
    handler: Any = None,
    **changes: Any,
) -> tuple[MrfcService, FakeMrfp]:
    import attrs

    config = attrs.evolve(lab["config"], **changes)
    app = build(config, reactor=reactor, self_kms=lab["self_kms"])
    app.startService()
    cleanup.append(app.stopService)
    lab["core"].conference_server = app.address
    lab["core"].conference_uris = frozenset({CONF})
    mrfp = FakeMrfp()
    cleanup.append(mrfp.stop)
    assert app.mp_port
    agent = MpAgent(
        handler or mrfp,
        "127.0.0.1",
        app.mp_port,
        tls=IqTlsConfig(ids["mrfp"], (ids["mrfc"].fingerprint(),)),
        reactor=reactor,
    )
    mrfp.agent = agent
    if handler is not None:
        handler.notify = agent.notify
    agent.start()
    cleanup.append(agent.stop)
    await agent.when_registered()
    pcscf = SipService(
        ProxyConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=Peer("core", "udp", "127.0.0.1", lab["core"].port),
            network_mechanisms=frozenset({"msrp-tls", "bfcp-tls"}),
        ),
        reactor=reactor,
    )
    pcscf.listen()
    cleanup.append(pcscf.stop)
    lab["gm"] = pcscf.config.gm
    return app, mrfp


async def _ue(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    name: str,
    *,
    kms: KmsService | None = None,
    bfcp: bool = True,
) -> UeSim:
    kms = kms or lab["kms"]
    access = lab_ue.KmsAccess(kms.address, kms.identity.fingerprint(), keys[name])
    sim = UeSim(
        reactor, name, ids[name], lab["gm"], domain=DOMAIN, kms=access, media_timeout=5, bfcp=bfcp
    )
    await sim.start()
    cleanup.append(sim.stop)
    assert (await sim.register()).status == 200
    return sim


async def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d
    return bool(predicate())


def _no_keys(logs: list[str], mrfp: FakeMrfp) -> None:
    text = "\n".join(logs).lower()
    for join in mrfp.of(JoinRequest):
        if join.psk is not None:
            assert join.psk.key.hex() not in text


@pytest_twisted.ensureDeferred
async def test_a_kms_participant_dials_in_tls_psk_ends_at_the_mrfp_and_bye_leaves(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    logs: list[str],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids)
    alice = await _ue(lab, cleanup, ids, keys, "alice")
    call = await alice.call(CONF)  # TLS-PSK handshakes with the MRFP's keys succeeded

    assert app.kms_exchanges == ["RESOLVE_INIT_PSK"]
    joins = mrfp.of(JoinRequest)
    assert [j.media for j in joins] == ["msrp", "bfcp"]
    for j in joins:
        assert (j.security, j.tcp_role, j.tls_role) == ("tls-psk", "passive", "server")
        assert j.participant == aor("alice") and j.conference == CONF
        assert j.psk is not None and j.psk.ciphersuites == app.config.psk_suites
    assert joins[0].psk.key != joins[1].psk.key  # one crypto session per stream
    assert joins[0].context is None and joins[1].context == 100  # one context per conference
    assert joins[1].bfcp_user == 1 and joins[1].floors == (1,)
    assert call.streams["msrp"].tls_psk and call.streams["bfcp"].tls_psk
    answer = SessionDescription.parse(call.answer)
    assert answer.media[1].attribute_values("floorctrl") == ["s-only"]
    assert answer.media[0].attribute_values("path")[0].startswith("msrp://127.0.0.1:")
    assert await _wait(lambda: len(mrfp.events) == 2)

    # bob joins the same context; the core routed both to the MRFC
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    await bob.call(CONF)
    assert {j.context for j in mrfp.of(JoinRequest)[2:]} == {100}
    assert mrfp.of(JoinRequest)[3].bfcp_user == 2

    response = await alice.hangup(call)
    assert response.status == 200
    assert await _wait(lambda: len(app.left) == 2)
    assert len(mrfp.of(LeaveRequest)) == 2 and len(app.participants) == 1
    assert [m for _, m, _ in app.left] == ["msrp", "bfcp"]
    assert app.left[0][2] == StreamStatistics(1, 2, 3, 4)
    _no_keys(logs, mrfp)


@pytest_twisted.ensureDeferred
async def test_an_unauthorized_participant_is_refused_403_and_nothing_joins(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    logs: list[str],
) -> None:
    _app, mrfp = await _start(lab, cleanup, ids)
    carol = await _ue(lab, cleanup, ids, keys, "carol")
    with pytest.raises(CallFailed) as info:
        await carol.call(CONF)
    assert info.value.status == 403
    assert "not authorized" in str(info.value)
    assert mrfp.of(JoinRequest) == []
    assert any("refused 403" in line and aor("carol") in line for line in logs)


class _SipPeer(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[Any] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = parse_datagram(data)
        self.received.append(message)

    async def final(self, method: str = "INVITE") -> Any:
        def found() -> Any:
            return next(
                (
                    m
                    for m in self.received
                    if getattr(m, "status", 0) >= 200 and m.cseq[1] == method
                ),
                None,
            )

        assert await _wait(lambda: found() is not None), f"no final to {method}: {self.received}"
        return found()


def _plain_invite(port: int, mrfc: tuple[str, int], listen_port: int, who: str) -> Request:
    sdp = (
        "v=0\r\no=agw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=message 9 TCP/MSRP *\r\na=accept-types:text/plain\r\n"
        f"a=path:msrp://127.0.0.1:9/agw;tcp\r\na=setup:active\r\n"
        f"m=application {listen_port} TCP/BFCP *\r\na=floorctrl:c-only\r\na=setup:passive\r\n"
    ).encode()
    headers = (
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKplain{who}"),
        ("Max-Forwards", "70"),
        ("From", f"<{aor(who)}>;tag=pl1"),
        ("To", f"<{CONF}>"),
        ("Call-ID", f"plain-{who}@test"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:{who}@127.0.0.1:{port}>"),
        ("P-Asserted-Identity", f"<{aor(who)}>"),
        ("Content-Type", "application/sdp"),
    )
    return Request(headers, sdp, "INVITE", CONF)


@pytest_twisted.ensureDeferred
async def test_a_plain_e2ae_offer_joins_plain_and_its_active_stream_is_connected_after_ack(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids)
    peer = _SipPeer()
    udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
    cleanup.append(udp.stopListening)
    port = udp.getHost().port
    invite = _plain_invite(port, app.address, 7001, "alice")
    udp.write(invite.serialise(), app.address)
    ok = await peer.final()
    assert ok.status == 200
    joins = mrfp.of(JoinRequest)
    assert [(j.media, j.security, j.tcp_role, j.tls_role, j.psk) for j in joins] == [
        ("msrp", "plain", "passive", None, None),
        ("bfcp", "plain", "active", None, None),
    ]
    assert joins[1].remote == Endpoint("127.0.0.1", 7001)
    sdp = SessionDescription.parse(ok.body)
    assert [m.proto for m in sdp.media] == ["TCP/MSRP", "TCP/BFCP"]
    assert [m.attribute_values("setup") for m in sdp.media] == [["passive"], ["active"]]
    assert sdp.key_mgmt() == []
    ack = Request(
        (
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKack1"),
            ("From", f"<{aor('alice')}>;tag=pl1"),
            ("To", ok.get("To")),
            ("Call-ID", "plain-alice@test"),
            ("CSeq", "1 ACK"),
        ),
        b"",
        "ACK",
        CONF,
    )
    udp.write(ack.serialise(), app.address)
    assert await _wait(lambda: len(mrfp.of(ConnectRequest)) == 1)
    assert mrfp.of(ConnectRequest)[0].remote == Endpoint("127.0.0.1", 7001)
    assert mrfp.of(StartTlsRequest) == []  # plain: no TLS to start
    bye = Request(
        (
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbye1"),
            ("From", f"<{aor('alice')}>;tag=pl1"),
            ("To", ok.get("To")),
            ("Call-ID", "plain-alice@test"),
            ("CSeq", "2 BYE"),
        ),
        b"",
        "BYE",
        CONF,
    )
    udp.write(bye.serialise(), app.address)
    assert (await peer.final("BYE")).status == 200
    assert await _wait(lambda: len(mrfp.of(LeaveRequest)) == 2)


@pytest_twisted.ensureDeferred
async def test_a_plain_offer_is_488_where_the_conference_takes_tls_psk_only(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
) -> None:
    conference = core.Conference(CONF, (aor("alice"),), allow_plain=False)
    app, mrfp = await _start(lab, cleanup, ids, conferences=(conference,))
    peer = _SipPeer()
    udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
    cleanup.append(udp.stopListening)
    udp.write(
        _plain_invite(udp.getHost().port, app.address, 7002, "alice").serialise(), app.address
    )
    refused = await peer.final()
    assert refused.status == 488 and "TLS-PSK" in (refused.get("Warning") or "")
    assert mrfp.of(JoinRequest) == []


@pytest_twisted.ensureDeferred
async def test_a_tls_failure_at_the_mrfp_ends_that_participant_only(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids)
    alice = await _ue(lab, cleanup, ids, keys, "alice")
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    a_call = await alice.call(CONF)
    await bob.call(CONF)
    term = next(t for t, j in mrfp.joins.items() if j.participant == aor("alice"))
    assert mrfp.agent is not None
    await mrfp.agent.notify(MpEvent(term[0], term[1], "tls-failed", "bad record mac"))
    assert await _wait(lambda: a_call.call_id not in app.participants)
    ended = a_call.when_ended()
    await ended  # alice got the MRFC's BYE
    assert [p.identity for p in app.participants.values()] == [aor("bob")]


@pytest.mark.parametrize("source", ["kms", "self"])
@pytest_twisted.ensureDeferred
async def test_dial_out_with_a_ticket_from_the_kms_or_the_mrfcs_own(
    source: str,
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    logs: list[str],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids, ticket_source=source)
    kms = lab["kms"] if source == "kms" else lab["self_kms"]
    bob = await _ue(lab, cleanup, ids, keys, "bob", kms=kms, bfcp=False)
    incoming = bob.next_call()
    p = await app.dial_out(CONF, aor("bob"))
    answered = await incoming  # bob resolved at the KMS that made the ticket, TLS-PSK is up
    assert answered.streams["msrp"].tls_psk
    assert p.identity == aor("bob") and p.dialog.call_id in app.participants
    (join,) = mrfp.of(JoinRequest)
    assert (join.tcp_role, join.tls_role, join.security) == ("passive", "server", "tls-psk")
    assert app.kms_exchanges == ["REQUEST_INIT_PSK"]
    assert bob.kms_exchanges == ["RESOLVE_INIT_PSK"]
    offer = SessionDescription.parse(answered.offer)
    assert [m.proto for m in offer.media] == ["TCP/TLS/MSRP"]
    _no_keys(logs, mrfp)


@pytest_twisted.ensureDeferred
async def test_dial_out_to_someone_not_on_the_list_or_who_refuses_fails(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids)
    with pytest.raises(core.Refused):
        await app.dial_out(CONF, aor("carol"))
    # bob's UE knows another KMS: it cannot resolve the ticket and refuses 488
    bob = await _ue(lab, cleanup, ids, keys, "bob", kms=lab["self_kms"], bfcp=False)
    assert bob
    with pytest.raises(DialOutFailed, match="488"):
        await app.dial_out(CONF, aor("bob"))
    assert await _wait(lambda: len(mrfp.of(LeaveRequest)) == 1)
    assert app.participants == {}


@pytest_twisted.ensureDeferred
async def test_a_passive_keyed_offer_has_the_mrfp_connect_then_start_tls_with_alices_key(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    tmp_path: Path,
) -> None:
    """Alice made by hand: her ticket for the conference, a TRANSFER_INIT in an offer with
    a=setup:passive. The MRFP is then TCP active and TLS client; the PSK it gets is the one
    alice derives herself, and the TRANSFER_RESP verifies with her MPK."""
    from twisted.internet import threads

    from kms import client as kms_client
    from kms.cli import post
    from mikey import decode, transfer

    app, mrfp = await _start(lab, cleanup, ids)
    kms: KmsService = lab["kms"]
    me = aor("alice")
    (tmp_path / "alice").mkdir()
    cert, key_file = certs.write(ids["alice"], tmp_path / "alice")
    now = float(reactor.seconds())
    request = kms_client.request_init(me, keys["alice"], (CONF,), now, kms=KMS_ID)
    _, body = await threads.deferToThread(
        post, kms.address, kms.identity.fingerprint(), cert, key_file, request.encode(), 10.0
    )
    reply, got = kms_client.open_reply(body, keys["alice"], request)
    mpk, tgks = kms_client.ticket_keys(got)
    ticket = kms_client.ticket_of(reply)
    init = transfer.transfer_init(
        me, CONF, ticket, mpk, [kms_client.tgk_spi(1)], now, csb_id=reply.header.csb_id
    )
    psk = transfer.session_psks(init, tgks, ticket_flags=ticket.policy.flags)[1]
    from mrfc.service import key_mgmt_value

    sdp = (
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"a=key-mgmt:{key_mgmt_value(init)}\r\n"
        "m=message 7100 TCP/TLS/MSRP *\r\na=accept-types:text/plain\r\n"
        "a=path:msrps://127.0.0.1:7100/al;tcp\r\na=setup:passive\r\n"
    ).encode()
    peer = _SipPeer()
    udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
    cleanup.append(udp.stopListening)
    port = udp.getHost().port
    invite = _plain_invite(port, app.address, 1, "alice")
    invite = Request(
        tuple((n, v) for n, v in invite.headers if n != "P-Asserted-Identity"), sdp, "INVITE", CONF
    )
    udp.write(invite.serialise(), app.address)
    ok = await peer.final()
    assert ok.status == 200, ok
    (join,) = mrfp.of(JoinRequest)
    assert (join.tcp_role, join.tls_role, join.security) == ("active", "client", "tls-psk")
    assert join.psk is not None and join.psk.key == psk
    assert join.remote == Endpoint("127.0.0.1", 7100)
    assert join.remote_path == ("msrps://127.0.0.1:7100/al;tcp",)
    resp = decode(SessionDescription.parse(ok.body).tls_key_mgmt("mikey"))
    transfer.verify_transfer_resp(resp, init, mpk)
    assert SessionDescription.parse(ok.body).media[0].attribute_values("setup") == ["active"]
    ack = Request(
        (
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKack2"),
            ("From", f"<{me}>;tag=pl1"),
            ("To", ok.get("To")),
            ("Call-ID", "plain-alice@test"),
            ("CSeq", "1 ACK"),
        ),
        b"",
        "ACK",
        CONF,
    )
    udp.write(ack.serialise(), app.address)
    assert await _wait(lambda: len(mrfp.of(ConnectRequest)) == 1)
    assert mrfp.of(StartTlsRequest) == []  # not before TCP is up
    (term,) = mrfp.joins
    assert mrfp.agent is not None
    await mrfp.agent.notify(MpEvent(term[0], term[1], "tcp-established"))
    assert await _wait(lambda: len(mrfp.of(StartTlsRequest)) == 1)
    assert mrfp.of(StartTlsRequest)[0] == StartTlsRequest(term[0], term[1])


@pytest_twisted.ensureDeferred
async def test_with_the_real_mrfp_alice_and_bob_chat_and_take_the_floor(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    logs: list[str],
) -> None:
    from mrfp.config import MrfpConfig
    from mrfp.service import MrfpHandler

    handler = MrfpHandler(MrfpConfig("127.0.0.1"), reactor=reactor)
    cleanup.append(handler.stop)
    app, _ = await _start(lab, cleanup, ids, handler=handler)
    alice = await _ue(lab, cleanup, ids, keys, "alice")
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    a_call = await alice.call(CONF)
    b_call = await bob.call(CONF)
    assert a_call.streams["msrp"].tls_psk and b_call.streams["bfcp"].tls_psk
    assert len(handler.contexts) == 1  # one context for the conference
    psks = [
        t.request.psk.key.hex()
        for c in handler.contexts.values()
        for t in c.terminations.values()
        if t.request.psk is not None
    ]
    assert len(psks) == 4
    await a_call.msrp.send_message(b"hello conference")
    assert [m.body for m in await b_call.msrp.wait_messages(1)] == [b"hello conference"]
    assert (await b_call.bfcp.request_floor(1)).floor_ids == (1,)
    assert (await alice.hangup(a_call)).status == 200
    assert await _wait(lambda: len(app.left) == 2)
    assert app.left[0][2].messages_in >= 1
    text = "\n".join(logs).lower()
    assert not any(k in text for k in psks)


@pytest_twisted.ensureDeferred
async def test_cancel_while_the_mrfp_joins_is_487_and_what_joined_leaves(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids)
    gate: defer.Deferred[None] = defer.Deferred()
    mrfp.hold = gate
    peer = _SipPeer()
    udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
    cleanup.append(udp.stopListening)
    port = udp.getHost().port
    invite = _plain_invite(port, app.address, 7003, "bob")
    udp.write(invite.serialise(), app.address)
    assert await _wait(lambda: any(getattr(m, "status", 0) == 100 for m in peer.received))
    assert await _wait(lambda: mrfp.hold is None)  # the first Join is at the MRFP, waiting
    keep = ("via", "from", "to", "call-id")
    cancel = Request(
        (*((n, v) for n, v in invite.headers if n.lower() in keep), ("CSeq", "1 CANCEL")),
        b"",
        "CANCEL",
        CONF,
    )
    udp.write(cancel.serialise(), app.address)
    assert (await peer.final("CANCEL")).status == 200
    assert (await peer.final()).status == 487
    assert app.participants == {}
    # the Join completes late: the MRFC leaves it and joins nothing more for bob
    gate.callback(None)
    assert await _wait(lambda: len(mrfp.of(LeaveRequest)) == 1)
    assert [j.media for j in mrfp.of(JoinRequest)] == ["msrp"]
    assert [r.status for r in peer.received if getattr(r, "status", 0) >= 200] == [200, 487]


class _Answerer(_SipPeer):
    """A participant that answers every INVITE 200 with ``body`` and every BYE 200."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        super().datagramReceived(data, addr)
        message = self.received[-1]
        if isinstance(message, Request) and message.method in ("INVITE", "BYE"):
            from pcscf.sip import make_response

            host, port = self.transport.getHost().host, self.transport.getHost().port
            extra = [("Contact", f"<sip:bob@{host}:{port}>")]
            if message.method == "INVITE":
                extra.append(("Content-Type", "application/sdp"))
            body = self.body if message.method == "INVITE" else b""
            response = make_response(message, 200, to_tag="bobtag", extra=extra, body=body)
            self.transport.write(response.serialise(), message.top_via.response_address())


@pytest.mark.parametrize(
    "key_mgmt", ["", "a=key-mgmt:mikey AQID\r\n"], ids=["no-transfer-resp", "bad-transfer-resp"]
)
@pytest_twisted.ensureDeferred
async def test_dial_out_answered_without_a_good_transfer_resp_is_acked_then_byed(
    key_mgmt: str,
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
) -> None:
    body = (
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"{key_mgmt}m=message 9 TCP/TLS/MSRP *\r\na=path:msrps://127.0.0.1:9/b;tcp\r\n"
        "a=setup:active\r\n"
    ).encode()
    bob = _Answerer(body)
    udp = reactor.listenUDP(0, bob, interface="127.0.0.1")
    cleanup.append(udp.stopListening)
    app, mrfp = await _start(lab, cleanup, ids, next_hop=("127.0.0.1", udp.getHost().port))
    with pytest.raises(DialOutFailed, match=r"TRANSFER_RESP refused|a=key-mgmt"):
        await app.dial_out(CONF, aor("bob"))
    assert await _wait(
        lambda: [m.method for m in bob.received if isinstance(m, Request)][-1:] == ["BYE"]
    )
    methods = [m.method for m in bob.received if isinstance(m, Request)]
    assert methods[:2] == ["INVITE", "ACK"] and methods[-1] == "BYE"
    assert await _wait(lambda: len(mrfp.of(LeaveRequest)) == 1)
    assert app.participants == {}


@pytest_twisted.ensureDeferred
async def test_a_full_conference_is_486_and_too_many_set_ups_503_without_disturbing_others(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
) -> None:
    app, mrfp = await _start(lab, cleanup, ids, max_participants=2, max_setups=1)
    peers = {}
    for who in ("alice", "bob"):
        peers[who] = _SipPeer()
        udp = reactor.listenUDP(0, peers[who], interface="127.0.0.1")
        cleanup.append(udp.stopListening)
        peers[who].port = udp
    # alice's set-up is held at the MRFP: bob's INVITE meanwhile is one set-up too many
    gate: defer.Deferred[None] = defer.Deferred()
    mrfp.hold = gate
    alice, bob = peers["alice"], peers["bob"]
    a_port, b_port = alice.port.getHost().port, bob.port.getHost().port
    alice.port.write(_plain_invite(a_port, app.address, 7004, "alice").serialise(), app.address)
    assert await _wait(lambda: mrfp.hold is None)
    bob.port.write(_plain_invite(b_port, app.address, 7005, "bob").serialise(), app.address)
    busy = await bob.final()
    assert busy.status == 503 and busy.get("Retry-After") == "5"
    assert "set-ups in progress" in (busy.get("Warning") or "")
    gate.callback(None)
    assert (await alice.final()).status == 200  # alice's call was not disturbed
    # bob tries again (a new Call-ID) and joins: two participants, the conference's limit
    assert (await _retry(bob, b_port, app.address, "bob", 7005)).status == 200
    # alice once more (a new Call-ID): 486; a dial-out fails the same way, nothing joins
    full = await _retry(alice, a_port, app.address, "alice", 7006)
    assert full.status == 486 and f"{CONF} is full: 2" in (full.get("Warning") or "")
    with pytest.raises(DialOutFailed, match="is full"):
        await app.dial_out(CONF, aor("bob"))
    joined = [j.participant for j in mrfp.of(JoinRequest)]
    assert joined == [aor("alice"), aor("alice"), aor("bob"), aor("bob")]
    assert sorted(app.participants) == ["again-bob@test", "plain-alice@test"]


async def _retry(peer: Any, port: int, mrfc: Any, who: str, listen_port: int) -> Any:
    """A second INVITE from ``who`` (Call-ID ``again-<who>@test``, its own branch)."""
    peer.received.clear()
    invite = _plain_invite(port, mrfc, listen_port, who)
    again = Request(
        tuple(
            (n, f"again-{who}@test" if n == "Call-ID" else v.replace("plain", "again"))
            for n, v in invite.headers
        ),
        invite.body,
        "INVITE",
        CONF,
    )
    peer.port.write(again.serialise(), mrfc)
    return await peer.final()


class _SlowAnswerer(_Answerer):
    """An :class:`_Answerer` that answers an INVITE only once ``release`` has fired."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.release: defer.Deferred[None] = defer.Deferred()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = parse_datagram(data)
        if isinstance(message, Request) and message.method == "INVITE":
            self.release.addCallback(lambda _: _Answerer.datagramReceived(self, data, addr))
            return
        super().datagramReceived(data, addr)


@pytest_twisted.ensureDeferred
async def test_a_dial_out_in_progress_counts_once_toward_the_conference_limit(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
) -> None:
    bob = _SlowAnswerer(b"v=0\r\n")
    udp = reactor.listenUDP(0, bob, interface="127.0.0.1")
    cleanup.append(udp.stopListening)
    app, _ = await _start(
        lab, cleanup, ids, next_hop=("127.0.0.1", udp.getHost().port), max_participants=2
    )
    dialling = defer.Deferred.fromCoroutine(app.dial_out(CONF, aor("bob")))
    dialling.addErrback(lambda _: None)  # bob's answer is not a good one: not what is tested
    assert await _wait(lambda: len(app.participants) == 1)  # bob's INVITE is out, unanswered
    assert app._count(lab["config"].conference(CONF)) == 1
    alice = _SipPeer()
    port = reactor.listenUDP(0, alice, interface="127.0.0.1")
    cleanup.append(port.stopListening)
    invite = _plain_invite(port.getHost().port, app.address, 7007, "alice")
    port.write(invite.serialise(), app.address)
    assert (await alice.final()).status == 200  # bob and alice: two, the limit
    bob.release.callback(None)
    await dialling
