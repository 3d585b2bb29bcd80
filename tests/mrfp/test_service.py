"""The MRFP's Mp handler on real sockets (127.0.0.1): TLS-PSK and plain participants chat and
pass the floor through it; a wrong PSK, an unknown context and a suite not allowed are refused.
The handler is called directly, as the Mp agent calls it."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from certs.psk import psk_context
from e2ae import bfcp, msrp
from e2ae.bfcp import RequestStatusValue
from e2ae.tlsconn import ContextCreator
from iq.errors import RemoteIqError
from mp.profile import (
    ConnectRequest,
    Endpoint,
    JoinReply,
    JoinRequest,
    LeaveRequest,
    MpEvent,
    PskConfig,
    StartTlsRequest,
)
from mrfp.config import MrfpConfig
from mrfp.service import MrfpHandler

CONF = "sip:conf1@lab.example"
LOOPBACK = "127.0.0.1"
SUITES = ("PSK-AES128-GCM-SHA256",)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class Peer(protocol.Protocol):
    """A participant's connection: keeps what it receives."""

    def __init__(self) -> None:
        self.data = b""
        self.connected = False
        self.lost = False
        self.reason: Any = None

    def connectionMade(self) -> None:
        self.connected = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        self.reason = reason

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class PeerFactory(protocol.ClientFactory):
    def __init__(self) -> None:
        self.peers: list[Peer] = []

    def buildProtocol(self, addr: Any) -> Peer:
        peer = Peer()
        self.peers.append(peer)
        return peer


@pytest.fixture
def events() -> list[MpEvent]:
    return []


@pytest.fixture
def log_text() -> Iterator[list[str]]:
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def mrfp(events: list[MpEvent]) -> Iterator[MrfpHandler]:
    handler = MrfpHandler(
        MrfpConfig(media_ip=LOOPBACK, handshake_timeout=3.0),
        reactor=reactor,
        notify=events.append,
    )
    yield handler
    handler.stop()


def key_of(name: str) -> bytes:
    return name.encode().ljust(16, b"k")


def psk(name: str, suites: tuple[str, ...] = SUITES) -> PskConfig:
    config = PskConfig(key_of(name), b"e2ae-" + name.encode(), SUITES)
    if suites != SUITES:
        # past the profile's own check: the MRFP checks the suites again
        object.__setattr__(config, "ciphersuites", suites)
    return config


def join(
    mrfp: MrfpHandler,
    name: str,
    *,
    media: Any = "msrp",
    tls: bool = True,
    context: int | None = None,
    tcp_role: Any = "passive",
    tls_role: Any = "server",
    remote: Endpoint | None = None,
    user: int | None = None,
    suites: tuple[str, ...] = SUITES,
) -> JoinReply:
    return mrfp.join(
        JoinRequest(
            conference=CONF,
            context=context,
            participant=f"sip:{name}@lab.example",
            media=media,
            tcp_role=tcp_role,
            security="tls-psk" if tls else "plain",
            tls_role=tls_role if tls else None,
            psk=psk(name, suites) if tls else None,
            remote=remote,
            remote_path=(ue_uri(name),) if media == "msrp" else (),
            bfcp_user=user,
            floors=(1,) if media == "bfcp" else (),
            call_id=f"call-{name}",
        )
    )


def ue_uri(name: str) -> str:
    return f"msrp://127.0.0.1:7000/ue{name};tcp"


def dial(port: int, key: bytes | None, identity: bytes = b"") -> PeerFactory:
    """Connect to the MRFP's port, TLS-PSK client with ``key`` (plain with ``None``)."""
    factory = PeerFactory()
    if key is None:
        reactor.connectTCP(LOOPBACK, port, factory)
    else:
        ctx = psk_context("client", key, identity=identity, ciphers=SUITES)
        reactor.connectTCP(LOOPBACK, port, TLSMemoryBIOFactory(ContextCreator(ctx), True, factory))
    return factory


class Ue:
    """A participant's MSRP session over its connection to the MRFP."""

    def __init__(self, name: str, reply: JoinReply, factory: PeerFactory) -> None:
        assert reply.local_path is not None
        self.session = msrp.MsrpSession(ue_uri(name), (reply.local_path,))
        self.factory = factory
        self.got: list[bytes] = []
        self.seen = 0

    @property
    def peer(self) -> Peer:
        return self.factory.peers[0]

    def say(self, text: bytes) -> None:
        self.session.send_message(text)
        self.peer.send(self.session.data_to_send())

    def poll(self) -> list[bytes]:
        if self.factory.peers:
            new = self.peer.data[self.seen :]
            self.seen = len(self.peer.data)
            for event in self.session.receive_data(new):
                if isinstance(event, msrp.MessageReceived):
                    self.got.append(event.body)
            back = self.session.data_to_send()
            if back:
                self.peer.send(back)
        return self.got


def kinds(events: list[MpEvent], termination: str) -> list[str]:
    return [e.kind for e in events if e.termination == termination]


@pytest_twisted.ensureDeferred
async def test_three_participants_chat_two_tls_psk_one_plain(
    mrfp: MrfpHandler, events: list[MpEvent], log_text: list[str]
) -> None:
    ra = join(mrfp, "alice")
    rb = join(mrfp, "bob", context=ra.context)
    rc = join(mrfp, "carol", context=ra.context, tls=False)
    assert ra.context == rb.context == rc.context
    assert ra.local.ip == LOOPBACK and ra.local_path and ra.local_path.startswith("msrp://")
    ues = {
        "alice": Ue("alice", ra, dial(ra.local.port, key_of("alice"), b"e2ae-alice")),
        "bob": Ue("bob", rb, dial(rb.local.port, key_of("bob"), b"e2ae-bob")),
        "carol": Ue("carol", rc, dial(rc.local.port, None)),
    }
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
    await wait_for(lambda: kinds(events, rb.termination)[-1:] == ["tls-established"])
    await wait_for(lambda: kinds(events, rc.termination) == ["tcp-established"])
    ues["alice"].say(b"hello from alice")
    ues["carol"].say(b"hello from carol")

    await wait_for(lambda: [len(u.poll()) for u in ues.values()] == [1, 2, 1])
    assert ues["bob"].got == [b"hello from alice", b"hello from carol"] or ues["bob"].got == [
        b"hello from carol",
        b"hello from alice",
    ]
    assert ues["alice"].got == [b"hello from carol"]
    assert ues["carol"].got == [b"hello from alice"]
    ues["bob"].say(b"and bob")
    await wait_for(lambda: b"and bob" in ues["alice"].poll() and b"and bob" in ues["carol"].poll())
    reply = mrfp.leave(LeaveRequest(ra.context, rb.termination))
    stats = reply.statistics
    assert stats.messages_in == 1 and stats.messages_out == 2
    assert stats.octets_in > 0 and stats.octets_out > 0
    await wait_for(lambda: ues["bob"].peer.lost)
    # no key bytes in any log line
    text = "\n".join(log_text)
    for name in ("alice", "bob"):
        assert key_of(name).hex() not in text and key_of(name).decode() not in text
    assert "sip:alice@lab.example" in text


@pytest_twisted.ensureDeferred
async def test_a_wrong_psk_is_refused_and_the_others_carry_on(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    ra = join(mrfp, "alice")
    rb = join(mrfp, "bob", context=ra.context)
    rm = join(mrfp, "mallory", context=ra.context)
    alice = Ue("alice", ra, dial(ra.local.port, key_of("alice"), b"e2ae-alice"))
    bob = Ue("bob", rb, dial(rb.local.port, key_of("bob"), b"e2ae-bob"))
    bad = dial(rm.local.port, b"not the right key", b"e2ae-mallory")
    await wait_for(lambda: "tls-failed" in kinds(events, rm.termination))
    await wait_for(lambda: bool(bad.peers) and bad.peers[0].lost)
    failed = [e for e in events if e.kind == "tls-failed"]
    assert failed[0].reason  # the TLS alert / error, for the MRFC
    assert isinstance(bad.peers[0].reason.value, SSL.Error)  # the client saw an alert
    assert bad.peers[0].data == b""
    await wait_for(lambda: kinds(events, rb.termination)[-1:] == ["tls-established"])
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
    alice.say(b"still on")
    await wait_for(lambda: bob.poll() == [b"still on"])


@pytest_twisted.ensureDeferred
async def test_a_wrong_identity_is_refused(mrfp: MrfpHandler, events: list[MpEvent]) -> None:
    ra = join(mrfp, "alice")
    bad = dial(ra.local.port, key_of("alice"), b"someone-else")
    await wait_for(lambda: "tls-failed" in kinds(events, ra.termination))
    await wait_for(lambda: bool(bad.peers) and bad.peers[0].lost)


class Listening:
    """A participant that listens (the MRFP is active); TLS server when ``key`` is given."""

    def __init__(self, key: bytes | None, identity: bytes = b"") -> None:
        self.factory = PeerFactory()
        server: Any = protocol.Factory.forProtocol(Peer)
        self.factory = PeerFactory()
        server = self.factory
        if key is not None:
            ctx = psk_context("server", key, identity=identity, ciphers=SUITES)
            server = TLSMemoryBIOFactory(ContextCreator(ctx), False, self.factory)
        self.port = reactor.listenTCP(0, server, interface=LOOPBACK)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(LOOPBACK, self.port.getHost().port)


@pytest_twisted.ensureDeferred
async def test_active_role_connects_and_start_tls_as_client(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    alice_side = Listening(key_of("alice"), b"e2ae-alice")
    try:
        ra = join(mrfp, "alice", tcp_role="active", tls_role="client")
        assert ra.local.port == 9
        rb = join(mrfp, "bob", context=ra.context, tls=False)
        bob = Ue("bob", rb, dial(rb.local.port, None))
        mrfp.connect(ConnectRequest(ra.context, ra.termination, alice_side.endpoint))
        await wait_for(lambda: kinds(events, ra.termination) == ["tcp-established"])
        await task.deferLater(reactor, 0.2, lambda: None)
        assert "tls-established" not in kinds(events, ra.termination)  # waits for start_tls
        mrfp.start_tls(StartTlsRequest(ra.context, ra.termination))
        await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
        alice = Ue("alice", ra, alice_side.factory)
        # the MRFP, the active end, bound the connection with an empty SEND (RFC 4975 5.4)
        await wait_for(lambda: b"SEND" in alice.peer.data)
        await wait_for(lambda: kinds(events, rb.termination) == ["tcp-established"])
        bob.say(b"to the listener")
        await wait_for(lambda: alice.poll() == [b"to the listener"])
        alice.say(b"back")
        await wait_for(lambda: bob.poll() == [b"back"])
    finally:
        await alice_side.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_active_role_with_the_remote_in_the_join(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    side = Listening(None)
    try:
        ra = join(mrfp, "alice", tcp_role="active", tls=False, remote=side.endpoint)
        await task.deferLater(reactor, 0.2, lambda: None)
        assert side.factory.peers == []  # the join does not connect: Connect does
        mrfp.connect(ConnectRequest(ra.context, ra.termination, side.endpoint))
        mrfp.connect(ConnectRequest(ra.context, ra.termination, side.endpoint))  # repeated
        await wait_for(lambda: kinds(events, ra.termination) == ["tcp-established"])
        mrfp.connect(ConnectRequest(ra.context, ra.termination, side.endpoint))
        with pytest.raises(RemoteIqError) as info:
            mrfp.connect(ConnectRequest(ra.context, ra.termination, Endpoint(LOOPBACK, 1)))
        assert info.value.code == 449
        await wait_for(lambda: bool(side.factory.peers) and b"SEND" in side.factory.peers[0].data)
    finally:
        await side.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_mrfp_as_tls_client_on_a_passive_stream(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    ra = join(mrfp, "alice", tls_role="client")
    factory = PeerFactory()
    ctx = psk_context("server", key_of("alice"), identity=b"e2ae-alice", ciphers=SUITES)
    reactor.connectTCP(
        LOOPBACK, ra.local.port, TLSMemoryBIOFactory(ContextCreator(ctx), False, factory)
    )
    await wait_for(lambda: kinds(events, ra.termination) == ["tcp-established"])
    mrfp.start_tls(StartTlsRequest(ra.context, ra.termination))
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])


@pytest_twisted.ensureDeferred
async def test_the_floor_passes_between_two(mrfp: MrfpHandler, events: list[MpEvent]) -> None:
    ra = join(mrfp, "alice", media="bfcp", user=1)
    rb = join(mrfp, "bob", media="bfcp", user=2, context=ra.context, tls=False)
    assert ra.local_path is None
    alice = dial(ra.local.port, key_of("alice"), b"e2ae-alice")
    bob = dial(rb.local.port, None)
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
    await wait_for(lambda: kinds(events, rb.termination) == ["tcp-established"])
    ca, cb = bfcp.FloorControlClient(5, 1), bfcp.FloorControlClient(5, 2)

    def statuses(peer: Peer) -> list[tuple[int, int, list[int]]]:
        framer = bfcp.BfcpFramer()
        framer.feed(peer.data)
        found = []
        while (m := framer.next_message()) is not None:
            rs = bfcp.request_status_of(m)
            if rs is not None:
                found.append(rs)
        return found

    alice.peers[0].send(ca.floor_request([1]).to_bytes())
    await wait_for(lambda: len(statuses(alice.peers[0])) == 1)
    frq, status, _ = statuses(alice.peers[0])[0]
    assert status == RequestStatusValue.GRANTED
    bob.peers[0].send(cb.floor_request([1]).to_bytes())
    await wait_for(lambda: len(statuses(bob.peers[0])) == 1)
    assert statuses(bob.peers[0])[0][1] == RequestStatusValue.PENDING
    alice.peers[0].send(ca.floor_release(frq).to_bytes())
    await wait_for(lambda: len(statuses(bob.peers[0])) == 2)
    assert statuses(bob.peers[0])[1][1] == RequestStatusValue.GRANTED
    assert statuses(alice.peers[0])[1][1] == RequestStatusValue.RELEASED


def test_unknown_context_and_termination(mrfp: MrfpHandler) -> None:
    with pytest.raises(RemoteIqError) as info:
        mrfp.connect(ConnectRequest(99, "msrp1", Endpoint(LOOPBACK, 1)))
    assert info.value.code == 411
    with pytest.raises(RemoteIqError) as info:
        join(mrfp, "alice", context=42)
    assert info.value.code == 411
    ra = join(mrfp, "alice")
    with pytest.raises(RemoteIqError) as info:
        mrfp.leave(LeaveRequest(ra.context, "msrp999"))
    assert info.value.code == 430
    with pytest.raises(RemoteIqError) as info:
        mrfp.start_tls(StartTlsRequest(ra.context + 1, ra.termination))
    assert info.value.code == 411


@pytest.mark.parametrize(
    "suites", [("ECDHE-PSK-AES128-CBC-SHA256",), ("AES128-GCM-SHA256",), ("PSK-NULL-SHA",), ()]
)
def test_suites_not_allowed_are_refused(mrfp: MrfpHandler, suites: tuple[str, ...]) -> None:
    with pytest.raises(RemoteIqError) as info:
        join(mrfp, "alice", suites=suites)
    assert info.value.code == 512
    assert mrfp.contexts == {}


def test_bad_joins(mrfp: MrfpHandler) -> None:
    with pytest.raises(RemoteIqError) as info:
        join(mrfp, "alice", media="bfcp")  # no BFCP user id
    assert info.value.code == 449
    assert mrfp.contexts == {}


def test_terminations_are_bounded(events: list[MpEvent]) -> None:
    handler = MrfpHandler(MrfpConfig(media_ip=LOOPBACK, max_terminations=2), reactor=reactor)
    try:
        join(handler, "a")
        join(handler, "b")
        with pytest.raises(RemoteIqError) as info:
            join(handler, "c")
        assert info.value.code == 510
    finally:
        handler.stop()


def renegotiating_client(key: bytes, identity: bytes) -> SSL.Context:
    """A TLS-PSK client context that may renegotiate (certs.psk forbids it on both ends)."""
    real = SSL.Context.set_options

    def without_no_renegotiation(self: SSL.Context, options: int) -> int:
        return real(self, options & ~SSL.OP_NO_RENEGOTIATION)

    SSL.Context.set_options = without_no_renegotiation  # type: ignore[method-assign]
    try:
        return psk_context("client", key, identity=identity, ciphers=SUITES)
    finally:
        SSL.Context.set_options = real  # type: ignore[method-assign]


@pytest_twisted.ensureDeferred
async def test_a_renegotiation_is_refused_and_reported(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    ra = join(mrfp, "alice")
    term = mrfp.contexts[ra.context].terminations[ra.termination]
    options = term.tls_context().set_options(0)
    assert options & SSL.OP_NO_RENEGOTIATION
    assert not options & 0x00040000  # SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION
    factory = PeerFactory()
    ctx = renegotiating_client(key_of("alice"), b"e2ae-alice")
    tls_factory = TLSMemoryBIOFactory(ContextCreator(ctx), True, factory)
    reactor.connectTCP(LOOPBACK, ra.local.port, tls_factory)
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
    wrapper: Any = factory.peers[0].transport
    conn: SSL.Connection = wrapper.getHandle()
    assert conn.renegotiate()
    # a renegotiating ClientHello: the MRFP answers no_renegotiation
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    wrapper._flushSendBIO()
    await wait_for(lambda: "renegotiation-refused" in kinds(events, ra.termination))
    # the client gives up (handshake_failure); the MRFP closes TCP and reports it
    await wait_for(lambda: kinds(events, ra.termination)[-1] == "closed")
    assert factory.peers[0].lost


@pytest_twisted.ensureDeferred
async def test_a_handshake_that_never_comes_times_out(events: list[MpEvent]) -> None:
    handler = MrfpHandler(
        MrfpConfig(media_ip=LOOPBACK, handshake_timeout=0.3), reactor=reactor, notify=events.append
    )
    try:
        ra = join(handler, "alice")
        silent = dial(ra.local.port, None)
        await wait_for(lambda: "tls-failed" in kinds(events, ra.termination))
        await wait_for(lambda: bool(silent.peers) and silent.peers[0].lost)
    finally:
        handler.stop()


@pytest_twisted.ensureDeferred
async def test_close_notify_closes_tcp_and_reports(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    ra = join(mrfp, "alice")
    alice = dial(ra.local.port, key_of("alice"), b"e2ae-alice")
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
    transport: Any = alice.peers[0].transport
    transport.loseConnection()  # close_notify
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["closed"])


def test_no_key_in_repr() -> None:
    request = JoinRequest(CONF, None, "a", "msrp", "passive", "tls-psk", "server", psk("alice"))
    assert key_of("alice").decode() not in repr(request)
    assert os.urandom(0) == b""


@pytest_twisted.ensureDeferred
async def test_a_notify_that_fails_is_logged_not_raised(log_text: list[str]) -> None:
    def failing(event: MpEvent) -> defer.Deferred[None]:
        return defer.fail(RuntimeError("link down"))

    handler = MrfpHandler(MrfpConfig(media_ip=LOOPBACK), reactor=reactor, notify=failing)
    try:
        ra = join(handler, "alice", tls=False)
        dial(ra.local.port, None)
        await wait_for(lambda: any("link down" in line for line in log_text))
    finally:
        handler.stop()


def _prf(secret: bytes, label: bytes, seed: bytes, size: int) -> bytes:
    """The TLS 1.2 PRF with SHA-256 (RFC 5246 section 5)."""
    out, a = b"", label + seed
    while len(out) < size:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + label + seed, hashlib.sha256).digest()
    return out[:size]


def _legacy_renegotiation(port: int, key: bytes, identity: bytes) -> bytes:
    """A TLS-PSK session with the MRFP, then a renegotiating ClientHello with neither
    renegotiation_info nor TLS_EMPTY_RENEGOTIATION_INFO_SCSV (what a client without RFC 5746
    sends), protected as the session's record layer protects it (AES-128-GCM, sequence 1).
    Returns the MRFP's answer, decrypted."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    sock.settimeout(None)  # pyOpenSSL wants a blocking socket
    try:
        conn = SSL.Connection(psk_context("client", key, identity=identity, ciphers=SUITES), sock)
        conn.set_connect_state()
        conn.do_handshake()
        assert conn.get_cipher_name() == "PSK-AES128-GCM-SHA256"
        block = _prf(
            conn.master_key(),
            b"key expansion",
            conn.server_random() + conn.client_random(),
            40,
        )
        client_key, server_key, client_iv, server_iv = (
            block[:16],
            block[16:32],
            block[32:36],
            block[36:40],
        )
        hello = (
            b"\x03\x03"
            + os.urandom(32)
            + b"\x00"  # no session id
            + b"\x00\x02\x00\xa8"  # TLS_PSK_WITH_AES_128_GCM_SHA256 only: no SCSV
            + b"\x01\x00"  # null compression; no extensions: no renegotiation_info
        )
        plain = b"\x01" + len(hello).to_bytes(3, "big") + hello
        seq = (1).to_bytes(8, "big")  # the client's Finished was 0
        aad = seq + b"\x16\x03\x03" + len(plain).to_bytes(2, "big")
        sealed = AESGCM(client_key).encrypt(client_iv + seq, plain, aad)
        sock.settimeout(5)
        sock.sendall(b"\x16\x03\x03" + (8 + len(sealed)).to_bytes(2, "big") + seq + sealed)
        data = b""
        while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data[:3] == b"\x15\x03\x03", data[:3]  # an alert record
        explicit, body = data[5:13], data[13 : 5 + int.from_bytes(data[3:5], "big")]
        aad = (1).to_bytes(8, "big") + b"\x15\x03\x03" + (len(body) - 16).to_bytes(2, "big")
        return AESGCM(server_key).decrypt(server_iv + explicit, body, aad)
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_a_legacy_renegotiation_without_rfc5746_is_refused(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    ra = join(mrfp, "alice")
    alert = await threads.deferToThread(
        _legacy_renegotiation, ra.local.port, key_of("alice"), b"e2ae-alice"
    )
    assert alert == b"\x01\x64"  # warning, no_renegotiation (RFC 5246 7.2.2)
    await wait_for(lambda: "renegotiation-refused" in kinds(events, ra.termination))


@pytest_twisted.ensureDeferred
async def test_a_participant_that_hangs_up_then_leaves(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    ra = join(mrfp, "alice", tls=False)
    rb = join(mrfp, "bob", tls=False, context=ra.context)
    alice = Ue("alice", ra, dial(ra.local.port, None))
    bob = Ue("bob", rb, dial(rb.local.port, None))
    await wait_for(lambda: kinds(events, rb.termination) == ["tcp-established"])
    await wait_for(lambda: kinds(events, ra.termination) == ["tcp-established"])
    alice.say(b"bye soon")
    await wait_for(lambda: bob.poll() == [b"bye soon"])
    transport: Any = alice.peer.transport
    transport.loseConnection()
    await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["closed"])
    stats = mrfp.leave(LeaveRequest(ra.context, ra.termination)).statistics
    assert (stats.messages_in, stats.messages_out) == (1, 0)
    assert stats.octets_in > 0
    bob.say(b"alone")  # the conference goes on without alice
    await task.deferLater(reactor, 0.1, lambda: None)
    assert mrfp.leave(LeaveRequest(rb.context, rb.termination)).statistics.messages_in == 1
    assert mrfp.contexts == {}


@pytest_twisted.ensureDeferred
async def test_the_mrfp_connects_and_is_tls_server(
    mrfp: MrfpHandler, events: list[MpEvent]
) -> None:
    """Active TCP, TLS server: the listening participant is the TLS client."""
    factory = PeerFactory()
    ctx = psk_context("client", key_of("alice"), identity=b"e2ae-alice", ciphers=SUITES)
    port = reactor.listenTCP(
        0, TLSMemoryBIOFactory(ContextCreator(ctx), True, factory), interface=LOOPBACK
    )
    try:
        ra = join(mrfp, "alice", tcp_role="active", tls_role="server")
        mrfp.connect(
            ConnectRequest(ra.context, ra.termination, Endpoint(LOOPBACK, port.getHost().port))
        )
        await wait_for(lambda: kinds(events, ra.termination)[-1:] == ["tls-established"])
        await wait_for(lambda: b"SEND" in factory.peers[0].data)  # the binding SEND, over TLS
    finally:
        await port.stopListening()
