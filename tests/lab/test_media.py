"""The lab's media endpoints on real loopback sockets.

The core peers talk plain TCP to each other; the UE's TLS endpoint is tested through a tiny
in-test TLS<->TCP relay playing the AGW's access leg (it pins the UE's fingerprint like the AGW
does), and against real ``openssl s_server`` / ``s_client`` peers.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

import certs
from certs.tls import KeyLogWriter, make_context, peer_certificate_der
from e2ae import bfcp
from e2ae.tlsconn import ContextCreator
from lab.media import (
    BfcpClientConnection,
    ConnectionClosed,
    MsrpConnection,
    PeerNotVerified,
    UeTls,
    bfcp_client_endpoint,
    bfcp_server_endpoint,
    msrp_endpoint,
)
from tests.conftest import require_tool

NOW = datetime.datetime.now(datetime.UTC)
UE_URI = "msrps://127.0.0.1:7394/jshA7we;tcp"
CORE_URI = "msrp://127.0.0.1:12763/kjhd37s2s20w2a;tcp"
BIG = bytes(range(256)) * 1200  # 300 KiB


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in ("ue", "agw", "other")}


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        pytest_twisted.blockon(defer.maybeDeferred(thing))


# -- a miniature AGW access leg ----------------------------------------------------------------


@implementer(IHandshakeListener)
class _Side(Protocol):
    def __init__(self, relay: Relay, tls: bool, other: _Side | None) -> None:
        self.relay = relay
        self.tls = tls
        self.other = other
        self.ok = not tls
        self.linked = False
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        if self.ok:
            self._ready()

    def handshakeCompleted(self) -> None:
        der = peer_certificate_der(self.transport.getHandle())
        if self.relay.pinned is not None and (
            der is None or not certs.matches_any(der, self.relay.pinned)
        ):
            self.relay.refused += 1
            self.transport.abortConnection()
            return
        self.ok = True
        self._ready()

    def _ready(self) -> None:
        if self.other is None:
            self.relay.open_other(self)
        else:
            self.other.other = self
            for side in (self, self.other):
                side.linked = True
            for side in (self, self.other):
                for chunk in side.pending:
                    side.forward(chunk)
                side.pending.clear()

    def forward(self, data: bytes) -> None:
        assert self.other is not None
        if self.tls:
            self.relay.to_core += len(data)
        else:
            self.relay.to_ue += len(data)
        self.other.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if not self.ok:
            self.transport.abortConnection()
        elif self.linked:
            self.forward(data)
        else:
            self.pending.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class Relay:
    """TLS (presenting ``identity``, pinning ``pinned`` when given) on the UE side, plain TCP on
    the core side. ``tls_listens``: the UE connects (active) or the relay connects to it."""

    def __init__(
        self, identity: certs.CertAndKey, pinned: list[certs.Fingerprint] | None, target: int
    ) -> None:
        self.identity = identity
        self.pinned = pinned
        self.target = target
        self.refused = 0
        self.to_core = 0
        self.to_ue = 0
        self.port: Any = None

    def _tls_factory(self, role: str, inner: Factory) -> TLSMemoryBIOFactory:
        creator = ContextCreator(make_context(self.identity, role))  # type: ignore[arg-type]
        return TLSMemoryBIOFactory(creator, role == "client", inner)

    def listen(self, *, tls: bool) -> int:
        self.tls_listens = tls
        inner = Factory.forProtocol(lambda: _Side(self, tls, None))
        factory = self._tls_factory("server", inner) if tls else inner
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        return int(self.port.getHost().port)

    def open_other(self, first: _Side) -> None:
        inner = ClientFactory.forProtocol(lambda: _Side(self, not first.tls, first))
        factory = inner if first.tls else self._tls_factory("client", inner)
        reactor.connectTCP("127.0.0.1", self.target, factory)

    def stop(self) -> Any:
        return self.port.stopListening()


def _ue_tls(ids: dict[str, certs.CertAndKey], peer: str = "agw", **kw: Any) -> UeTls:
    return UeTls(ids["ue"], (ids[peer].fingerprint("sha-256"),), **kw)


# -- core peers, plain TCP ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_core_msrp_peers_both_ways_with_chunking(cleanup: list[Any]) -> None:
    listener = msrp_endpoint(reactor, local_uri=CORE_URI)
    caller = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI], chunk_size=1000)
    cleanup += [listener.stop, caller.stop]
    port = listener.listen()
    a: MsrpConnection = await caller.connect("127.0.0.1", port)
    b: MsrpConnection = await listener.accepted()
    await a.send_message(b"hello core")
    await a.send_message(BIG, "application/octet-stream", success_report=True)
    got = await b.wait_messages(2)
    assert [m.body for m in got] == [b"hello core", BIG]
    assert got[1].content_type == "application/octet-stream"
    # the core learnt the UE's path from the first SEND and answers back
    await b.send_message(b"hello UE", chunk_size=3)
    (back,) = await a.wait_messages(1)
    assert back.body == b"hello UE" and back.from_path == (CORE_URI,)
    assert len(a.reports) == 1 and a.reports[0].byte_range.total == len(BIG)
    assert a.bytes_sent == b.bytes_received > len(BIG)
    assert b.bytes_sent == a.bytes_received > 0
    assert caller.bytes_sent == a.bytes_sent and listener.bytes_received == b.bytes_received
    await b.close()
    await a.when_closed()
    with pytest.raises(ConnectionClosed):
        await a.send_message(b"too late")


@pytest_twisted.ensureDeferred
async def test_core_bfcp_server_grants_a_floor(cleanup: list[Any]) -> None:
    server_ep, server = bfcp_server_endpoint(reactor, conference_id=4321, floors=[1, 2])
    client_ep = bfcp_client_endpoint(reactor, conference_id=4321, user_id=7)
    cleanup += [server_ep.stop, client_ep.stop]
    # the floor control server connects (a=setup:active on its side), the participant listens
    port = client_ep.listen()
    server_ep.connect("127.0.0.1", port)
    client: BfcpClientConnection = await client_ep.accepted()
    ack = await client.hello()
    assert ack.primitive == bfcp.Primitive.HELLO_ACK
    grant = await client.request_floor(2)
    assert grant.floor_ids == (2,) and list(server.granted) == [grant.floor_request_id]
    released = await client.release_floor(grant.floor_request_id)
    assert bfcp.request_status_of(released) == (
        grant.floor_request_id,
        bfcp.RequestStatusValue.RELEASED,
        [2],
    )
    with pytest.raises(Exception, match="error 6"):
        await client.request_floor(9)
    bye = await client.goodbye()
    assert bye.primitive == bfcp.Primitive.GOODBYE_ACK
    assert client.bytes_sent > 0 and client.bytes_received > client.bytes_sent


# -- the UE over TLS, through the relay --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ue_active_tls_msrp_and_bfcp_through_relay(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any], tmp_path: Path
) -> None:
    core = msrp_endpoint(reactor, local_uri=CORE_URI)
    relay = Relay(ids["agw"], [ids["ue"].fingerprint()], core.listen())
    keylog = KeyLogWriter(tmp_path / "keys.log")
    ue = msrp_endpoint(
        reactor,
        local_uri=UE_URI,
        remote_path=[CORE_URI],
        tls=_ue_tls(ids, keylog=keylog),
    )
    cleanup += [core.stop, ue.stop, relay.stop]
    conn = await ue.connect("127.0.0.1", relay.listen(tls=True))
    assert conn.peer_fingerprint == ids["agw"].fingerprint()
    await conn.send_message(b"over TLS")
    await conn.send_message(BIG)
    core_conn = await core.accepted()
    got = await core_conn.wait_messages(2)
    assert [m.body for m in got] == [b"over TLS", BIG]
    await core_conn.send_message(b"and back")
    (back,) = await conn.wait_messages(1)
    assert back.body == b"and back"
    assert relay.to_core == conn.bytes_sent == core_conn.bytes_received
    assert relay.to_ue == conn.bytes_received == core_conn.bytes_sent
    assert b"CLIENT_TRAFFIC_SECRET_0" in (tmp_path / "keys.log").read_bytes()
    assert ue.summary() == {
        "stream": "msrp",
        "tls": True,
        "connections": 1,
        "verified": 1,
        "refused": 0,
        "peer_fingerprints": [ids["agw"].fingerprint().value],
        "bytes_sent": relay.to_core,
        "bytes_received": relay.to_ue,
    }

    # BFCP over TLS the same way: UE active, floor control server in the core
    server_ep, server = bfcp_server_endpoint(reactor, conference_id=1)
    bfcp_relay = Relay(ids["agw"], [ids["ue"].fingerprint()], server_ep.listen())
    ue_bfcp = bfcp_client_endpoint(reactor, conference_id=1, user_id=2, tls=_ue_tls(ids))
    cleanup += [server_ep.stop, ue_bfcp.stop, bfcp_relay.stop]
    participant = await ue_bfcp.connect("127.0.0.1", bfcp_relay.listen(tls=True))
    await participant.hello()
    grant = await participant.request_floor(1)
    assert server.granted[grant.floor_request_id].user_id == 2


@pytest_twisted.ensureDeferred
async def test_ue_passive_tls_refuses_strangers_then_accepts_the_agw(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any]
) -> None:
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI], tls=_ue_tls(ids))
    ue_port = ue.listen()
    impostor = Relay(ids["other"], None, ue_port)
    relay = Relay(ids["agw"], [ids["ue"].fingerprint()], ue_port)
    core = msrp_endpoint(reactor, local_uri=CORE_URI, remote_path=[UE_URI])
    cleanup += [ue.stop, core.stop, relay.stop, impostor.stop]
    accepted = ue.accepted()
    # a stranger with another certificate reaches the UE's port first
    stranger = core.connect("127.0.0.1", impostor.listen(tls=False))
    stranger_conn = await stranger
    await stranger_conn.when_closed()
    assert len(ue.refused) == 1 and not accepted.called
    assert ue.refused[0].fingerprint == ids["other"].fingerprint().value
    assert ue.bytes_received == 0
    # the real AGW (relay) connects; the core sends through it
    core_conn = await core.connect("127.0.0.1", relay.listen(tls=False))
    ue_conn = await accepted
    await core_conn.send_message(b"to the passive UE", chunk_size=5)
    (got,) = await ue_conn.wait_messages(1)
    assert got.body == b"to the passive UE"
    await ue_conn.send_message(b"reply")
    assert (await core_conn.wait_messages(1))[0].body == b"reply"


@pytest_twisted.ensureDeferred
async def test_ue_refuses_an_agw_whose_certificate_is_not_in_the_sdp(
    ids: dict[str, certs.CertAndKey], cleanup: list[Any]
) -> None:
    core = msrp_endpoint(reactor, local_uri=CORE_URI)
    relay = Relay(ids["other"], [ids["ue"].fingerprint()], core.listen())
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI], tls=_ue_tls(ids))
    cleanup += [core.stop, ue.stop, relay.stop]
    with pytest.raises(PeerNotVerified, match="does not match") as info:
        await ue.connect("127.0.0.1", relay.listen(tls=True))
    assert info.value.fingerprint == ids["other"].fingerprint().value
    assert ue.bytes_sent == 0 and relay.to_core == 0
    assert ue.connections[0].bytes_sent == 0


@pytest.mark.parametrize(("present", "expect"), [("other", ConnectionClosed), ("none", Exception)])
@pytest_twisted.ensureDeferred
async def test_misbehaving_ue_is_refused_by_the_access_side(
    present: str, expect: type[Exception], ids: dict[str, certs.CertAndKey], cleanup: list[Any]
) -> None:
    core = msrp_endpoint(reactor, local_uri=CORE_URI)
    relay = Relay(ids["agw"], [ids["ue"].fingerprint()], core.listen())
    ue = msrp_endpoint(
        reactor,
        local_uri=UE_URI,
        remote_path=[CORE_URI],
        tls=_ue_tls(ids, present=present),  # type: ignore[arg-type]
    )
    cleanup += [core.stop, ue.stop, relay.stop]
    try:
        conn = await ue.connect("127.0.0.1", relay.listen(tls=True))
    except expect:
        pass
    else:
        # TLS 1.3: the client finishes before the server judges its certificate
        with pytest.raises(ConnectionClosed):
            await conn.wait_messages(1)
    assert relay.to_core == 0 and core.connections == []
    if present == "other":
        assert relay.refused == 1


# -- real peers: openssl s_server and s_client -----------------------------------------------


def _write_pair(pair: certs.CertAndKey, directory: Path) -> tuple[str, str]:
    cert, key = directory / f"{pair.name}.pem", directory / f"{pair.name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return str(cert), str(key)


def _s_server(ids: dict[str, certs.CertAndKey], who: str, tmp_path: Path) -> tuple[Any, int]:
    openssl = require_tool("openssl")
    cert, key = _write_pair(ids[who], tmp_path)
    args = ["-accept", "127.0.0.1:0", "-cert", cert, "-key", key, "-Verify", "1", "-naccept", "1"]
    proc = subprocess.Popen(
        [openssl, "s_server", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    for _ in range(10):
        line = proc.stdout.readline().decode()
        if line.startswith("ACCEPT"):
            return proc, int(line.rsplit(":", 1)[1])
    proc.kill()
    raise AssertionError("openssl s_server did not start")


@pytest.mark.peer
@pytest.mark.parametrize("agw", ["agw", "other"])
@pytest_twisted.ensureDeferred
async def test_ue_against_openssl_s_server(
    agw: str, ids: dict[str, certs.CertAndKey], cleanup: list[Any], tmp_path: Path
) -> None:
    proc, port = _s_server(ids, agw, tmp_path)
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI], tls=_ue_tls(ids))
    cleanup.append(ue.stop)
    try:
        if agw == "agw":
            conn = await ue.connect("127.0.0.1", port)
            conn.send_message(b"hello openssl", failure_report="no")
            await conn.close()
        else:
            with pytest.raises(PeerNotVerified):
                await ue.connect("127.0.0.1", port)
        out, err = await threads.deferToThread(proc.communicate, None, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    if agw == "agw":
        assert b"MSRP " in out and b" SEND\r\n" in out and b"hello openssl" in out
        assert b"depth=0 CN = ue" in err  # s_server saw the UE's certificate
    else:
        assert b"SEND" not in out
        assert ue.bytes_sent == 0


@pytest.mark.peer
@pytest.mark.parametrize("presented", ["other", "none"])
@pytest_twisted.ensureDeferred
async def test_openssl_s_client_with_a_wrong_or_no_certificate_is_refused(
    presented: str, ids: dict[str, certs.CertAndKey], cleanup: list[Any], tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI], tls=_ue_tls(ids))
    cleanup.append(ue.stop)
    port = ue.listen()
    accepted = ue.accepted()
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}"]
    if presented == "other":
        cert, key = _write_pair(ids["other"], tmp_path)
        args += ["-cert", cert, "-key", key]
    await threads.deferToThread(
        subprocess.run,
        args,
        input=b"MSRP abcd1234 SEND\r\n",
        capture_output=True,
        timeout=20,
        check=False,
    )
    for _ in range(500):
        if ue.refused:
            break
        await _sleep(0.01)
    assert len(ue.refused) == 1 and not accepted.called
    expected = "does not match" if presented == "other" else "handshake failed"
    assert expected in ue.refused[0].reason
    assert ue.bytes_received == 0 and ue.connections[0].bytes_sent == 0


# -- bad input never disturbs other sessions ---------------------------------------------------


class _Raw(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


async def _raw(port: int) -> _Raw:
    # (twisted.internet.endpoints would import service_identity, which is not installed)
    proto = _Raw()
    connected: defer.Deferred[None] = defer.Deferred()

    class _Once(ClientFactory):
        def buildProtocol(self, addr: Any) -> _Raw:
            reactor.callLater(0, connected.callback, None)
            return proto

    reactor.connectTCP("127.0.0.1", port, _Once())
    await connected
    return proto


@pytest_twisted.ensureDeferred
async def test_garbage_closes_only_its_own_msrp_connection(cleanup: list[Any]) -> None:
    core = msrp_endpoint(reactor, local_uri=CORE_URI)
    good = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[CORE_URI])
    cleanup += [core.stop, good.stop]
    port = core.listen()
    conn = await good.connect("127.0.0.1", port)
    await conn.send_message(b"before")
    raw = await _raw(port)
    # a skippable bad frame (no Message-ID) is answered 400 and the connection stays up
    raw.transport.write(
        b"MSRP bad00001 SEND\r\nTo-Path: "
        + CORE_URI.encode()
        + b"\r\nFrom-Path: "
        + UE_URI.encode()
        + b"\r\n-------bad00001$\r\n"
    )
    for _ in range(500):
        if b"-------bad00001$" in raw.data:
            break
        await _sleep(0.01)
    assert raw.data.startswith(b"MSRP bad00001 400 ")
    # garbage that cannot be resynchronised closes that connection only
    raw.transport.write(b"GET / HTTP/1.1\r\n\r\n")
    await raw.closed
    await conn.send_message(b"after")
    core_conn = core.connections[0]
    assert [m.body for m in await core_conn.wait_messages(2)] == [b"before", b"after"]
    assert len(core.connections[1].peer_errors) == 2


@pytest_twisted.ensureDeferred
async def test_bfcp_server_answers_bad_messages_with_error(cleanup: list[Any]) -> None:
    server_ep, server = bfcp_server_endpoint(reactor, conference_id=5)
    cleanup.append(server_ep.stop)
    raw = await _raw(server_ep.listen())
    unknown_primitive = bytes.fromhex("20 63 0000 00000005 0009 0001".replace(" ", ""))
    hello = bfcp.FloorControlClient(5, 1).hello()
    raw.transport.write(unknown_primitive + hello.to_bytes())
    framer = bfcp.BfcpFramer()
    replies: list[bfcp.Message] = []
    for _ in range(500):
        if len(replies) >= 2:
            break
        await _sleep(0.01)
        framer.feed(raw.data)
        raw.data = b""
        while (msg := framer.next_message()) is not None:
            replies.append(msg)
    error, ack = replies
    assert error.primitive == bfcp.Primitive.ERROR and error.transaction_id == 9
    code = error.first(bfcp.AttrType.ERROR_CODE)
    assert isinstance(code, bfcp.ErrorCode) and code.code == bfcp.ErrorCodeValue.UNKNOWN_PRIMITIVE
    assert ack.primitive == bfcp.Primitive.HELLO_ACK
    raw.transport.write(b"\xff" * 12)  # version 7: cannot resynchronise -> closed
    await raw.closed
    assert server.granted == {}


def _sleep(seconds: float) -> defer.Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
