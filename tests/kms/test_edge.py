"""The KMS's HTTPS listener on real loopback sockets, with Python's ssl module as the client:
pinned client certificates in the handshake, persistent connections, and its bounds."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from certs.generate import CertAndKey, generate
from kms.config import KmsConfig, ProvisionedUser
from kms.edge import KmsHttpFactory, Reply, listen
from kms.http import Request
from kms.store import User
from tests.agw_helpers import wait_for
from tests.conftest import require_tool

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
KMS = generate("kms.e2ae.lab", now=NOW)
ALICE = generate("alice", now=NOW)
STRANGER = generate("stranger", now=NOW)


def _write(tmp: Path, pair: CertAndKey) -> tuple[str, str]:
    cert, key = tmp / f"{pair.name}.crt", tmp / f"{pair.name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return str(cert), str(key)


def _config(**changes: object) -> KmsConfig:
    values: dict[str, object] = {
        "identity": "kms.e2ae.lab",
        "listen": ("127.0.0.1", 0),
        "cert": Path("unused"),
        "key": Path("unused"),
        "state": Path("unused"),
        "users": (ProvisionedUser(User("sip:alice@e2ae.lab", bytes(16)), (ALICE.fingerprint(),)),),
    }
    values.update(changes)
    return KmsConfig(**values)  # type: ignore[arg-type]


class Served:
    def __init__(self) -> None:
        self.requests: list[tuple[Request, tuple[str, ...]]] = []
        self.peers: list[str] = []

    def __call__(
        self, request: Request, identities: tuple[str, ...], now: float, peer: str
    ) -> Reply:
        self.requests.append((request, identities))
        self.peers.append(peer)
        return Reply(200, b"reply to " + request.body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Served, KmsHttpFactory, Path]]:
    yield from _server(tmp_path, _config())


def _server(
    tmp_path: Path, config: KmsConfig
) -> Iterator[tuple[int, Served, KmsHttpFactory, Path]]:
    served = Served()
    port, factory = listen(reactor, config, KMS, served, reactor.seconds)  # type: ignore[arg-type]
    yield port.getHost().port, served, factory, tmp_path
    port.stopListening()
    for proto in list(factory.open):
        proto.transport.abortConnection()  # type: ignore[union-attr]


def _client(tmp: Path, pair: CertAndKey | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test pins the KMS's certificate below
    if pair is not None:
        ctx.load_cert_chain(*_write(tmp, pair))
    return ctx


def _exchange(port: int, ctx: ssl.SSLContext, *requests: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            assert tls.getpeercert(binary_form=True) == KMS.cert_der
            for request in requests:
                tls.sendall(request)
            out = b""
            while chunk := tls.recv(65536):
                out += chunk
            return out


def _post(body: bytes, *extra: str) -> bytes:
    head = ["POST /mikey HTTP/1.1", "Host: kms", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest_twisted.ensureDeferred
async def test_a_pinned_client_is_served_with_its_identities(server: tuple) -> None:
    port, served, _, tmp = server
    ctx = _client(tmp, ALICE)
    out = await threads.deferToThread(
        _exchange, port, ctx, _post(b"one"), _post(b"two", "Connection: close")
    )
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert b"reply to one" in out and out.endswith(b"reply to two")
    assert [(r.body, ids) for r, ids in served.requests] == [
        (b"one", ("sip:alice@e2ae.lab",)),
        (b"two", ("sip:alice@e2ae.lab",)),
    ]
    # Both on one connection, from the loopback client's own port.
    assert len(set(served.peers)) == 1 and served.peers[0].startswith("127.0.0.1:")


@pytest.mark.parametrize("who", ["stranger", "no certificate"])
@pytest_twisted.ensureDeferred
async def test_an_unpinned_client_fails_the_handshake(server: tuple, who: str) -> None:
    port, served, _, tmp = server
    ctx = _client(tmp, STRANGER if who == "stranger" else None)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await threads.deferToThread(_exchange, port, ctx, _post(b"x", "Connection: close"))
    assert served.requests == []


@pytest_twisted.ensureDeferred
async def test_a_bad_request_is_answered_and_closed(server: tuple) -> None:
    port, served, _, tmp = server
    out = await threads.deferToThread(
        _exchange, port, _client(tmp, ALICE), b"GET / HTTP/1.1\r\nHost: kms\r\n\r\n" + _post(b"x")
    )
    assert out.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Connection: close" in out and served.requests == []


@pytest_twisted.ensureDeferred
async def test_connections_beyond_the_limit_are_closed_before_the_handshake(
    tmp_path: Path,
) -> None:
    gen = _server(tmp_path, _config(max_connections=1))
    port, _served, factory, _ = next(gen)
    try:
        first = socket.create_connection(("127.0.0.1", port))
        await wait_for(lambda: len(factory.open) == 1)
        second = socket.create_connection(("127.0.0.1", port), timeout=5)
        got = await threads.deferToThread(_recv_or_reset, second)
        assert got == b"" and len(factory.open) == 1
        first.close()
        second.close()
    finally:
        list(gen)


@pytest_twisted.ensureDeferred
async def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    gen = _server(tmp_path, _config(idle_timeout=0.2))
    port, _, factory, _ = next(gen)
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        await wait_for(lambda: len(factory.open) == 1)
        assert await threads.deferToThread(_recv_or_reset, silent) == b""
        await wait_for(lambda: not factory.open)
        silent.close()
    finally:
        list(gen)


def _recv_or_reset(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return b""


@pytest.mark.peer
@pytest_twisted.ensureDeferred
async def test_openssl_s_client_with_a_pinned_certificate_is_served(server: tuple) -> None:
    port, served, _, tmp = server
    openssl = require_tool("openssl")
    cert, key = _write(tmp, ALICE)
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-cert", cert]
    result = await threads.deferToThread(
        subprocess.run,
        [*args, "-key", key],
        input=_post(b"\x01mikey", "Connection: close"),
        capture_output=True,
        timeout=20,
    )
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n"), result.stderr
    assert result.stdout.endswith(b"reply to \x01mikey")
    assert served.requests[0][1] == ("sip:alice@e2ae.lab",)
