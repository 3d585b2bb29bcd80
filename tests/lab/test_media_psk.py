"""The lab's media endpoints over TLS-PSK (TS 33.328 Annex H) on real loopback sockets.

Our endpoint against our endpoint with the same key on both TCP roles (MSRP and BFCP), through
a TCP tap that records the TLS records on the wire; a wrong key, which must fail the handshake
with an alert before a single application byte passes; and real peers, ``openssl s_server`` and
``openssl s_client`` in their TLS 1.2 PSK modes, carrying MSRP both ways.
"""

from __future__ import annotations

import re
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from certs.psk import DEFAULT_PSK_CIPHERS
from e2ae import bfcp, msrp
from lab.media import (
    ConnectionClosed,
    LocalMediaError,
    MediaEndpoint,
    MsrpConnection,
    PeerNotVerified,
    UePsk,
    bfcp_client_endpoint,
    bfcp_server_endpoint,
    msrp_endpoint,
)
from tests.conftest import require_tool

KEY = bytes.fromhex("c0ffee5eed0ddba11a5ca1ab1e0b5e55")  # a 128-bit TEK
OTHER_KEY = bytes.fromhex("0badc0de0badc0de0badc0de0badc0de")
UE_URI = "msrps://127.0.0.1:7394/ue9psk;tcp"
PEER_URI = "msrps://127.0.0.1:7395/peer9psk;tcp"
BIG = bytes(range(256)) * 400  # 100 KiB
CALL_ID = "psk-call-1@lab.example"

T = TypeVar("T")

T = TypeVar("T")

HANDSHAKE, CHANGE_CIPHER_SPEC, ALERT, APPLICATION_DATA = 22, 20, 21, 23


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        pytest_twisted.blockon(defer.maybeDeferred(thing))


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The log events emitted while the test runs."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def _soon(d: defer.Deferred[T], seconds: float = 10) -> defer.Deferred[T]:
    """``d``, failing with a timeout if the peer never gets there (no hung test)."""
    return d.addTimeout(seconds, reactor)


def _sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def _until(condition: Any, what: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await _sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _media_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if str(e.get("log_namespace", "")).startswith("lab.media")]


def _assert_key_never_logged(events: list[dict[str, Any]], *keys: bytes) -> None:
    from twisted.logger import formatEvent

    for event in events:
        text = formatEvent(event) + repr(event)
        for key in keys:
            for form in (key.hex(), key.hex().upper(), repr(key)):
                assert form not in text, event


# -- a TCP tap: what goes on the wire ------------------------------------------------------------


class _TapSide(Protocol):
    def __init__(self, tap: Tap, direction: str, other: _TapSide | None) -> None:
        self.tap = tap
        self.direction = direction
        self.other = other
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        if self.other is None:
            self.tap.open_target(self)
        else:
            self.other.other = self
            self.other.flush()

    def flush(self) -> None:
        assert self.other is not None
        for chunk in self.pending:
            self.other.transport.write(chunk)
        self.pending.clear()

    def dataReceived(self, data: bytes) -> None:
        self.tap.wire[self.direction] += data
        if self.other is None or self.other.transport is None:
            self.pending.append(data)
        else:
            self.other.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class Tap:
    """Listens; relays each connection to ``target`` and records the bytes both ways
    (``to_target``: from the side that connected to the tap)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.wire = {"to_target": b"", "from_target": b""}
        self.port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: _TapSide(self, "to_target", None)), interface="127.0.0.1"
        )

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)

    def open_target(self, first: _TapSide) -> None:
        factory = ClientFactory.forProtocol(lambda: _TapSide(self, "from_target", first))
        reactor.connectTCP("127.0.0.1", self.target, factory)

    def stop(self) -> Any:
        return self.port.stopListening()


def _records(data: bytes) -> list[tuple[int, bytes]]:
    """(content type, fragment) of each TLS record of one direction."""
    records = []
    while len(data) >= 5:
        kind, _version, length = struct.unpack("!BHH", data[:5])
        records.append((kind, data[5 : 5 + length]))
        data = data[5 + length :]
    return records


def _assert_handshake_first(wire: bytes) -> None:
    """Only handshake and ChangeCipherSpec records before the first application data record."""
    kinds = [kind for kind, _ in _records(wire)]
    assert APPLICATION_DATA in kinds, kinds
    first = kinds.index(APPLICATION_DATA)
    assert kinds[0] == HANDSHAKE and set(kinds[:first]) <= {HANDSHAKE, CHANGE_CIPHER_SPEC}, kinds


# -- our endpoint to our endpoint -----------------------------------------------------------------


def _pair(
    setup: str, *, ue_key: bytes = KEY, peer_key: bytes = KEY, keylog: Path | None = None
) -> tuple[MediaEndpoint[MsrpConnection], MediaEndpoint[MsrpConnection]]:
    ue = msrp_endpoint(
        reactor,
        local_uri=UE_URI,
        remote_path=[PEER_URI],
        tls=UePsk(ue_key, keylog=keylog),
        call_id=CALL_ID,
    )
    peer = msrp_endpoint(
        reactor, local_uri=PEER_URI, remote_path=[UE_URI], tls=UePsk(peer_key), call_id=CALL_ID
    )
    return ue, peer


@pytest.mark.parametrize("setup", ["active", "passive"])
@pytest_twisted.ensureDeferred
async def test_msrp_over_tls_psk_between_our_endpoints(
    setup: str, cleanup: list[Any], events: list[dict[str, Any]], tmp_path: Path
) -> None:
    keylog = tmp_path / "keys.log"
    ue, peer = _pair(setup, keylog=keylog)
    cleanup += [ue.stop, peer.stop]
    if setup == "active":  # the UE is the TCP and TLS client
        tap = Tap(peer.listen())
        ue_conn = await _soon(ue.connect("127.0.0.1", tap.number))
        peer_conn = await _soon(peer.accepted())
        to_ue, from_ue = "from_target", "to_target"
    else:
        tap = Tap(ue.listen())
        accepted = ue.accepted()
        peer_conn = await _soon(peer.connect("127.0.0.1", tap.number))
        ue_conn = await _soon(accepted)
        to_ue, from_ue = "to_target", "from_target"
    cleanup.append(tap.stop)
    assert ue_conn.verified and peer_conn.verified
    assert ue_conn.peer_fingerprint is None  # no certificate: the key is the proof
    handle = ue_conn.transport.getHandle()  # type: ignore[union-attr]
    assert handle.get_protocol_version_name() == "TLSv1.2"
    assert handle.get_cipher_name() in DEFAULT_PSK_CIPHERS
    assert handle.get_peer_certificate() is None

    await _soon(ue_conn.send_message(b"hello over TLS-PSK"))
    await _soon(ue_conn.send_message(BIG, "application/octet-stream", chunk_size=10000))
    got = await _soon(peer_conn.wait_messages(2))
    assert [m.body for m in got] == [b"hello over TLS-PSK", BIG]
    await _soon(peer_conn.send_message(b"and back", chunk_size=3))
    (back,) = await _soon(ue_conn.wait_messages(1))
    assert back.body == b"and back" and back.from_path == (PEER_URI,)

    assert ue_conn.bytes_sent == peer_conn.bytes_received > len(BIG)
    assert peer_conn.bytes_sent == ue_conn.bytes_received > 0
    assert ue.summary() == {
        "stream": "msrp",
        "tls": True,
        "connections": 1,
        "verified": 1,
        "refused": 0,
        "peer_fingerprints": [],
        "bytes_sent": ue_conn.bytes_sent,
        "bytes_received": ue_conn.bytes_received,
    }
    # on the wire: the handshake, then only records; not one plaintext byte
    for direction in (to_ue, from_ue):
        _assert_handshake_first(tap.wire[direction])
        assert b"MSRP " not in tap.wire[direction] and b"hello over" not in tap.wire[direction]
    sealed = sum(len(f) for kind, f in _records(tap.wire[from_ue]) if kind == APPLICATION_DATA)
    assert sealed > len(BIG)
    # the key log has the TLS 1.2 master secret, not the PSK
    log = keylog.read_bytes()
    assert log.startswith(b"CLIENT_RANDOM ") and KEY.hex().encode() not in log.lower()

    media = _media_events(events)
    verified = [e for e in media if "verified by the key" in e["log_format"]]
    assert len(verified) == 2, media
    for event in verified:
        assert event["call_id"] == CALL_ID and event["stream"] == "msrp"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", event["peer"])
        assert event["cipher"] in DEFAULT_PSK_CIPHERS and event["version"] == "TLSv1.2"
    listening = [e for e in media if "listening" in e["log_format"]]
    assert [e["security"] for e in listening] == ["TLS-PSK"]
    _assert_key_never_logged(events, KEY)


@pytest.mark.parametrize("server_connects", [True, False])
@pytest_twisted.ensureDeferred
async def test_bfcp_over_tls_psk_between_our_endpoints(
    server_connects: bool, cleanup: list[Any], events: list[dict[str, Any]]
) -> None:
    server_ep, server = bfcp_server_endpoint(reactor, conference_id=77, floors=[1], tls=UePsk(KEY))
    client_ep = bfcp_client_endpoint(
        reactor, conference_id=77, user_id=3, tls=UePsk(KEY), call_id=CALL_ID
    )
    cleanup += [server_ep.stop, client_ep.stop]
    if server_connects:  # a=setup:active on the floor control server's side
        tap = Tap(client_ep.listen())
        accepted = client_ep.accepted()
        await _soon(server_ep.connect("127.0.0.1", tap.number))
        participant = await _soon(accepted)
    else:
        tap = Tap(server_ep.listen())
        participant = await _soon(client_ep.connect("127.0.0.1", tap.number))
    cleanup.append(tap.stop)
    ack = await _soon(participant.hello())
    assert ack.primitive == bfcp.Primitive.HELLO_ACK
    grant = await _soon(participant.request_floor(1))
    assert grant.floor_ids == (1,) and server.granted[grant.floor_request_id].user_id == 3
    released = await _soon(participant.release_floor(grant.floor_request_id))
    assert bfcp.request_status_of(released) == (
        grant.floor_request_id,
        bfcp.RequestStatusValue.RELEASED,
        [1],
    )
    bye = await _soon(participant.goodbye())
    assert bye.primitive == bfcp.Primitive.GOODBYE_ACK
    assert participant.bytes_received > participant.bytes_sent > 0
    assert participant.peer_fingerprint is None
    hello = bfcp.FloorControlClient(77, 3).hello().to_bytes()
    for wire in tap.wire.values():
        _assert_handshake_first(wire)
        assert hello[4:12] not in wire  # conference and transaction ids in plaintext
    _assert_key_never_logged(events, KEY)


@pytest.mark.parametrize("setup", ["active", "passive"])
@pytest_twisted.ensureDeferred
async def test_a_wrong_key_fails_the_handshake_with_an_alert_and_delivers_nothing(
    setup: str, cleanup: list[Any], events: list[dict[str, Any]]
) -> None:
    ue, peer = _pair(setup, peer_key=OTHER_KEY)
    cleanup += [ue.stop, peer.stop]
    listener, connector = (peer, ue) if setup == "active" else (ue, peer)
    tap = Tap(listener.listen())
    cleanup.append(tap.stop)
    accepted = listener.accepted()
    with pytest.raises(PeerNotVerified, match="TLS-PSK handshake failed") as info:
        await _soon(connector.connect("127.0.0.1", tap.number))
    # the TLS server cannot check the client's Finished and says so with an alert
    assert "alert bad record mac" in info.value.reason and info.value.fingerprint is None
    await _until(lambda: listener.refused, "the listener to refuse the peer")
    assert not accepted.called
    assert "TLS-PSK handshake failed" in listener.refused[0].reason
    assert len(connector.refused) == 1
    for endpoint in (ue, peer):
        assert endpoint.bytes_sent == endpoint.bytes_received == 0
        assert [c.verified for c in endpoint.connections] == [False]
        with pytest.raises(LocalMediaError):
            endpoint.connections[0].write(b"MSRP a1 SEND\r\n")
    from_server = _records(tap.wire["from_target"])
    from_client = _records(tap.wire["to_target"])
    # a fatal (2) bad_record_mac (20) alert, in the clear: the server never switched to the keys
    assert (ALERT, b"\x02\x14") in from_server, from_server
    assert APPLICATION_DATA not in [kind for kind, _ in from_server + from_client]
    refusals = [e for e in _media_events(events) if "refused" in e["log_format"]]
    assert len(refusals) == 2
    for event in refusals:
        assert event["call_id"] == CALL_ID and event["stream"] == "msrp"
        assert event["security"] == "TLS-PSK" and event["peer"].startswith("127.0.0.1:")
    _assert_key_never_logged(events, KEY, OTHER_KEY)

    # the listening side goes on waiting: the right key is then accepted
    here, there, key = (
        (UE_URI, PEER_URI, OTHER_KEY) if setup == "active" else (PEER_URI, UE_URI, KEY)
    )
    good = msrp_endpoint(reactor, local_uri=here, remote_path=[there], tls=UePsk(key))
    cleanup.append(good.stop)
    conn = await _soon(good.connect("127.0.0.1", listener.port or 0))
    await _soon(conn.send_message(b"the right key"))
    good_conn = await _soon(accepted)
    assert [m.body for m in await _soon(good_conn.wait_messages(1))] == [b"the right key"]


def test_the_settings_never_show_the_key_and_refuse_bad_ones(tmp_path: Path) -> None:
    settings = UePsk(KEY, keylog=tmp_path / "k.log")
    assert KEY.hex() not in repr(settings) and repr(KEY) not in repr(settings)
    assert settings.keylog is not None and settings.keylog.path == tmp_path / "k.log"
    assert isinstance(settings.context("client"), SSL.Context)
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        UePsk(b"")
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        UePsk(bytes(65))
    with pytest.raises(TypeError):
        UePsk(KEY.hex())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DHE-PSK-AES128-GCM-SHA256"):
        UePsk(KEY, ciphers=("DHE-PSK-AES128-GCM-SHA256",))


# -- real peers: openssl s_server and s_client ----------------------------------------------------


class _Output:
    """A process's stdout, read by a thread, so that the test can wait for a pattern."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.data = bytearray()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            with self._cond:
                self.data += chunk
                self._cond.notify_all()

    def wait_for(self, pattern: bytes, timeout: float = 10) -> re.Match[bytes] | None:
        with self._cond:
            self._cond.wait_for(lambda: re.search(pattern, self.data), timeout)
            return re.search(pattern, self.data)

    def waiting(self, pattern: bytes) -> defer.Deferred[re.Match[bytes] | None]:
        return threads.deferToThread(self.wait_for, pattern)


def _s_server(key: bytes) -> tuple[subprocess.Popen[bytes], _Output, int]:
    openssl = require_tool("openssl")
    proc = subprocess.Popen(
        [
            *(openssl, "s_server", "-psk", key.hex(), "-nocert", "-tls1_2"),
            *("-accept", "127.0.0.1:0", "-naccept", "1"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = _Output(proc)
    accept = out.wait_for(rb"ACCEPT [^\n]*:(\d+)")
    if accept is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"s_server did not start: {bytes(out.data)!r}")
    return proc, out, int(accept.group(1))


def _s_client(
    port: int, key: bytes, identity: tuple[str, ...] = ("-psk_identity", "")
) -> tuple[subprocess.Popen[bytes], _Output]:
    openssl = require_tool("openssl")
    proc = subprocess.Popen(
        [
            *(openssl, "s_client", "-connect", f"127.0.0.1:{port}"),
            *("-psk", key.hex(), *identity, "-tls1_2", "-quiet"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, _Output(proc)


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()


def _their_send(tid: str) -> bytes:
    """An MSRP SEND as the openssl side writes it (from the peer's path to the UE's)."""
    return msrp.Request(
        tid,
        "SEND",
        (UE_URI,),
        (PEER_URI,),
        (("Message-ID", "opensslmsg1"), ("Byte-Range", "1-17/17")),
        "text/plain",
        b"hello from openss",
    ).to_bytes()


def _their_ok(frame: msrp.Request) -> bytes:
    return msrp.Response(frame.transaction_id, 200, (UE_URI,), (PEER_URI,), "OK").to_bytes()


_FRAME_END = rb"-------(\w+)\$\r\n"


def _frames_in(data: bytes) -> list[msrp.Frame]:
    start = data.find(b"MSRP ")
    end = data.rfind(b"$\r\n")
    return msrp.parse_frames(bytes(data[start : end + 3])) if start >= 0 and end > start else []


async def _exchange_msrp(conn: MsrpConnection, proc: subprocess.Popen[bytes], out: _Output) -> None:
    """Our SEND is read from openssl's stdout and acknowledged through its stdin; theirs,
    written to its stdin, arrives and our 200 comes out of its stdout."""
    delivered = conn.send_message(b"hello from the UE over TLS-PSK")
    assert await out.waiting(rb"hello from the UE over TLS-PSK\r\n" + _FRAME_END)
    (ours,) = _frames_in(bytes(out.data))
    assert isinstance(ours, msrp.Request) and ours.method == "SEND"
    assert ours.to_path == (PEER_URI,) and ours.from_path == (UE_URI,)
    assert ours.body == b"hello from the UE over TLS-PSK"
    _feed(proc, _their_ok(ours))
    await _soon(delivered)  # fires on the 200 that openssl carried
    mark = len(out.data)
    _feed(proc, _their_send("oss1tid"))
    (theirs,) = await _soon(conn.wait_messages(1))
    assert theirs.body == b"hello from openss" and theirs.message_id == "opensslmsg1"
    assert await out.waiting(rb"MSRP oss1tid 200")
    (answer,) = _frames_in(bytes(out.data[mark:]))
    assert isinstance(answer, msrp.Response) and answer.status == 200
    assert answer.to_path == (PEER_URI,)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.peer
@pytest_twisted.ensureDeferred
async def test_our_active_endpoint_against_openssl_s_server(
    cleanup: list[Any], events: list[dict[str, Any]]
) -> None:
    proc, out, port = _s_server(KEY)
    ue = msrp_endpoint(
        reactor, local_uri=UE_URI, remote_path=[PEER_URI], tls=UePsk(KEY), call_id=CALL_ID
    )
    cleanup.append(ue.stop)
    try:
        conn = await _soon(ue.connect("127.0.0.1", port))
        assert conn.transport.getHandle().get_cipher_name() in DEFAULT_PSK_CIPHERS  # type: ignore[union-attr]
        await _exchange_msrp(conn, proc, out)
        await _soon(conn.close())
        await threads.deferToThread(proc.wait, 10)
    finally:
        _stop(proc)
    # s_server got the empty PSK identity (Annex H.2) and says it was not its default one
    assert b"(got '' expected" in out.data, bytes(out.data)
    _assert_key_never_logged(events, KEY)


@pytest.mark.peer
@pytest_twisted.ensureDeferred
async def test_openssl_s_client_against_our_passive_endpoint(
    cleanup: list[Any], events: list[dict[str, Any]]
) -> None:
    ue = msrp_endpoint(
        reactor, local_uri=UE_URI, remote_path=[PEER_URI], tls=UePsk(KEY), call_id=CALL_ID
    )
    cleanup.append(ue.stop)
    accepted = ue.accepted()
    proc, out = _s_client(ue.listen(), KEY)
    try:
        conn = await _soon(accepted)
        await _exchange_msrp(conn, proc, out)
        await _soon(conn.close())
        await threads.deferToThread(proc.wait, 10)
    finally:
        _stop(proc)
    assert proc.returncode == 0, bytes(out.data)
    assert ue.summary()["verified"] == 1 and ue.refused == []
    _assert_key_never_logged(events, KEY)


@pytest.mark.peer
@pytest_twisted.ensureDeferred
async def test_openssl_s_server_with_another_key_fails_our_active_endpoint(
    cleanup: list[Any],
) -> None:
    proc, out, port = _s_server(OTHER_KEY)
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[PEER_URI], tls=UePsk(KEY))
    cleanup.append(ue.stop)
    try:
        with pytest.raises(PeerNotVerified, match="alert") as info:
            await _soon(ue.connect("127.0.0.1", port))
        await threads.deferToThread(proc.wait, 10)
    finally:
        _stop(proc)
    assert "TLS-PSK handshake failed" in info.value.reason
    assert b"decryption failed or bad record mac" in out.data, bytes(out.data)
    assert b"MSRP" not in out.data, bytes(out.data)
    assert ue.bytes_sent == ue.bytes_received == 0 and len(ue.refused) == 1


@pytest.mark.peer
@pytest.mark.parametrize(
    ("key", "identity", "alert"),
    [
        (OTHER_KEY, ("-psk_identity", ""), b"alert bad record mac"),
        # s_client's default identity, "Client_identity": not the empty one of Annex H.2
        (KEY, (), b"alert unknown psk identity"),
    ],
    ids=["other-key", "default-identity"],
)
@pytest_twisted.ensureDeferred
async def test_openssl_s_client_with_another_key_or_identity_is_refused_by_our_passive_endpoint(
    key: bytes, identity: tuple[str, ...], alert: bytes, cleanup: list[Any]
) -> None:
    ue = msrp_endpoint(reactor, local_uri=UE_URI, remote_path=[PEER_URI], tls=UePsk(KEY))
    cleanup.append(ue.stop)
    accepted = ue.accepted()
    proc, out = _s_client(ue.listen(), key, identity)
    try:
        _feed(proc, _their_send("oss3tid"))
        await threads.deferToThread(proc.wait, 10)
    finally:
        _stop(proc)
    await _until(lambda: ue.refused, "the endpoint to refuse openssl")
    assert proc.returncode != 0
    assert alert in out.data, bytes(out.data)
    assert b"MSRP" not in out.data
    assert not accepted.called and ue.bytes_sent == ue.bytes_received == 0
    assert "TLS-PSK handshake failed" in ue.refused[0].reason
    accepted.addErrback(lambda failure: failure.trap(ConnectionClosed))  # the endpoint stops
