"""Private Twisted and pyOpenSSL API that the Access Gateway relies on, checked on this install.

Where no public API does the job (each use site says why), the AGW uses a private attribute of
Twisted (``accessgw/gateway.py``, ``accessgw/writethrough.py``) or of pyOpenSSL
(``accessgw/bio.py``). A release may rename one or change what it holds without notice; the
code would then fail in the middle of a relay, or quietly lose its speed, or (write-through)
send bytes out of order. Each test here checks one attribute on a real object built the way the
AGW builds it, and fails with a message naming the attribute and the module that relies on it.
A failure after an upgrade means: adapt that module to the new release (or fall back to the
public API there), then this test, then the supported version range.
"""

from __future__ import annotations

import datetime
import inspect
import socket
from collections.abc import Iterator
from typing import Any

import OpenSSL
import pytest
import pytest_twisted
import twisted
from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor, task, tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

import accessgw.bio as bio
import certs
from accessgw import writethrough
from accessgw.gateway import IP_BIND_ADDRESS_NO_PORT, AccessGateway, _CoreClient, _CoreConnector

NOW = datetime.datetime.now(datetime.UTC)
GATEWAY = "accessgw/gateway.py"
WRITETHROUGH = "accessgw/writethrough.py"
BIO = "accessgw/bio.py"


def _require(ok: object, attribute: str, user: str, what: str) -> None:
    """Fail loudly, naming the attribute, who relies on it and the versions installed."""
    if not ok:
        pytest.fail(
            f"{attribute} {what}; {user} relies on it"
            f" (Twisted {twisted.__version__}, pyOpenSSL {OpenSSL.__version__})",
            pytrace=False,
        )


def _turn(delay: float = 0) -> defer.Deferred[None]:
    return task.deferLater(reactor, delay, lambda: None)


async def _until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await _turn(0.01)
    pytest.fail(f"timed out waiting for {what}")


class _Peer(protocol.Protocol):
    transport: Any

    def __init__(self, peers: list[_Peer]) -> None:
        self.data = bytearray()
        peers.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class _PeerFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self) -> None:
        self.peers: list[_Peer] = []

    def buildProtocol(self, addr: Any) -> _Peer:
        return _Peer(self.peers)


@pytest.fixture
def gateway() -> Iterator[AccessGateway]:
    gw = AccessGateway("127.0.0.1", "127.0.0.1", certs.generate("agw", now=NOW), reactor=reactor)
    yield gw
    gw.close()


class _Legs:
    """A termination port of the AGW (``_TerminationPort``, as ``AccessGateway._listen_on``
    makes it) with one connection from a ``_CoreConnector`` (as the core leg connects)."""

    def __init__(self, gw: AccessGateway) -> None:
        self.server_factory = _PeerFactory()
        self.client_factory = _PeerFactory()
        self.port = gw._listen_on(0, self.server_factory, "127.0.0.1")
        self.number = int(self.port.getHost().port)
        self.connector = _CoreConnector(
            "127.0.0.1",
            self.number,
            self.client_factory,
            timeout=10,
            bindAddress=("127.0.0.1", 0),
            reactor=reactor,
        )

    async def connect(self) -> tuple[Any, Any]:
        self.connector.connect()
        await _until(
            lambda: self.server_factory.peers and self.client_factory.peers, "the connection"
        )
        return self.client_factory.peers[0].transport, self.server_factory.peers[0].transport

    def close(self) -> defer.Deferred[Any]:
        for peer in self.server_factory.peers + self.client_factory.peers:
            peer.transport.abortConnection()
        return defer.maybeDeferred(self.port.stopListening)


@pytest.fixture
def legs(gateway: AccessGateway) -> Iterator[_Legs]:
    pair = _Legs(gateway)
    yield pair
    pytest_twisted.blockon(pair.close())
    pytest_twisted.blockon(_turn(0.05))


# -- accessgw/gateway.py --


@pytest_twisted.ensureDeferred
async def test_connector_builds_its_transport_with__makeTransport(legs: _Legs) -> None:
    user = f"{GATEWAY} (_CoreConnector, the core leg's IP_BIND_ADDRESS_NO_PORT)"
    _require(
        callable(getattr(tcp.Connector, "_makeTransport", None)),
        "twisted.internet.tcp.Connector._makeTransport",
        user,
        "is gone or not a method",
    )
    client, _ = await legs.connect()
    _require(
        isinstance(legs.connector.transport, _CoreClient) and client is legs.connector.transport,
        "twisted.internet.tcp.Connector._makeTransport",
        user,
        "is no longer what Connector.connect() builds its transport with",
    )
    assert client.getHost().host == "127.0.0.1"
    with_option = client.socket.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT)
    if hasattr(socket, "IP_BIND_ADDRESS_NO_PORT"):  # Linux
        assert with_option == 1


@pytest_twisted.ensureDeferred
async def test_client_resolution_attributes(legs: _Legs) -> None:
    user = f"{GATEWAY} (_CoreClient.resolveAddress, connecting to an IP address at once)"
    client, _ = await legs.connect()
    _require(
        getattr(client, "_requiresResolution", None) is False,
        "twisted.internet.tcp.Client._requiresResolution",
        user,
        "is no longer False on a client built for an IP address",
    )
    by_name = tcp.Client("localhost", 1, None, legs.connector, MemoryReactorClock())
    try:
        _require(
            getattr(by_name, "_requiresResolution", None) is True,
            "twisted.internet.tcp.Client._requiresResolution",
            user,
            "is no longer True on a client built for a host name",
        )
    finally:
        by_name.socket.close()
    set_real = getattr(client, "_setRealAddress", None)
    _require(
        callable(set_real) and list(inspect.signature(set_real).parameters) == ["address"],
        "twisted.internet.tcp.Client._setRealAddress",
        user,
        "is gone or no longer takes one address",
    )
    _require(
        getattr(client, "realAddress", None) == ("127.0.0.1", legs.number),
        "twisted.internet.tcp.Client._setRealAddress",
        user,
        "no longer sets realAddress, the address connect() uses",
    )


@pytest_twisted.ensureDeferred
async def test_port_close_is_logged_through__logConnectionLostMsg(
    gateway: AccessGateway,
) -> None:
    user = f"{GATEWAY} (_TerminationPort, no '(TCP Port N Closed)' line per stream)"
    _require(
        callable(getattr(tcp.Port, "_logConnectionLostMsg", None)),
        "twisted.internet.tcp.Port._logConnectionLostMsg",
        user,
        "is gone or not a method",
    )
    lines: list[str] = []

    def observe(event: Any) -> None:
        lines.append(formatEvent(event))

    plain = tcp.Port(0, _PeerFactory(), interface="127.0.0.1", reactor=reactor)
    plain.startListening()
    plain_number = plain.getHost().port
    ours = gateway._listen_on(0, _PeerFactory(), "127.0.0.1")
    ours_number = ours.getHost().port
    globalLogPublisher.addObserver(observe)
    try:
        await plain.stopListening()
        await ours.stopListening()
    finally:
        globalLogPublisher.removeObserver(observe)
    # Twisted's own port logs its close through the hook ...
    assert any(f"Port {plain_number} Closed" in line for line in lines), lines
    # ... so a port that overrides the hook logs nothing.
    _require(
        not any(f"Port {ours_number} Closed" in line for line in lines),
        "twisted.internet.tcp.Port._logConnectionLostMsg",
        user,
        "is no longer where Port.connectionLost logs the close",
    )


@pytest_twisted.ensureDeferred
async def test_port_numberAccepts_bounds_the_accepts_per_read(legs: _Legs) -> None:
    user = f"{GATEWAY} (AccessGateway._listen_on, one accept() per readiness)"
    port = legs.port
    _require(
        port.numberAccepts == 1,
        "twisted.internet.tcp.Port.numberAccepts",
        user,
        "is not an int attribute that can be set",
    )
    waiting = [socket.create_connection(("127.0.0.1", legs.number)) for _ in range(3)]
    try:
        port.doRead()  # three connections queued, no reactor turn in between
        _require(
            len(legs.server_factory.peers) == 1,
            "twisted.internet.tcp.Port.numberAccepts",
            user,
            "no longer bounds how many connections one doRead() accepts",
        )
        _require(
            isinstance(port.numberAccepts, int) and port.numberAccepts > 1,
            "twisted.internet.tcp.Port.numberAccepts",
            user,
            "is no longer raised by Twisted when connections queue up",
        )
    finally:
        for sock in waiting:
            sock.close()


class _RecvSpy:
    """A socket stand-in that records the size of every recv (all else goes to the socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sizes: list[int] = []

    def recv(self, size: int) -> bytes:
        self.sizes.append(size)
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest_twisted.ensureDeferred
async def test_bufferSize_is_the_size_of_each_socket_read(legs: _Legs) -> None:
    user = f"{GATEWAY} and accessgw/tlsleg.py (the read size, transport.bufferSize)"
    client, server = await legs.connect()
    server.bufferSize = 4321  # as the legs' connectionMade set the read size
    spy = _RecvSpy(server.socket)
    server.socket = spy
    try:
        client.write(b"x" * 10_000)
        peer = legs.server_factory.peers[0]
        await _until(lambda: len(peer.data) == 10_000, "the bytes")
    finally:
        server.socket = spy._sock
    _require(
        spy.sizes and set(spy.sizes) == {4321},
        "twisted.internet.abstract.FileDescriptor.bufferSize",
        user,
        f"is no longer the size tcp.Connection.doRead asks recv() for (saw {spy.sizes})",
    )


# -- accessgw/writethrough.py --


@pytest.mark.parametrize("side", ["core connector's client", "termination port's server"])
@pytest_twisted.ensureDeferred
async def test_write_queue_and_half_close_state(legs: _Legs, side: str) -> None:
    user = f"{WRITETHROUGH} (writing to the socket only when nothing is queued)"
    client, server = await legs.connect()
    transport, peer = (
        (client, legs.server_factory.peers[0])
        if side.startswith("core")
        else (server, legs.client_factory.peers[0])
    )
    name = "twisted.internet.abstract.FileDescriptor"
    _require(
        getattr(transport, "_tempDataBuffer", None) == [],
        f"{name}._tempDataBuffer",
        user,
        "is no longer an empty list on an idle transport",
    )
    _require(
        getattr(transport, "_writeDisconnecting", None) is False,
        f"{name}._writeDisconnecting",
        user,
        "is no longer False on an open transport",
    )
    _require(
        isinstance(transport.dataBuffer, bytes)
        and isinstance(transport.offset, int)
        and transport.offset == len(transport.dataBuffer),
        f"{name}.dataBuffer/offset",
        user,
        "no longer say that nothing is queued on an idle transport",
    )
    transport.write(b"first")
    _require(
        transport._tempDataBuffer == [b"first"],
        f"{name}._tempDataBuffer",
        user,
        "is no longer where write() queues bytes until the next doWrite",
    )
    writethrough.write(transport, b" second")  # behind the queued bytes
    await _until(lambda: bytes(peer.data) == b"first second", "the bytes in order")
    _require(
        transport._tempDataBuffer == [] and transport.offset == len(transport.dataBuffer),
        f"{name}._tempDataBuffer",
        user,
        "is not emptied once doWrite has sent everything",
    )
    transport.loseWriteConnection()
    _require(
        transport._writeDisconnecting is True and not transport.disconnecting,
        f"{name}._writeDisconnecting",
        user,
        "is no longer what loseWriteConnection() sets",
    )


# -- accessgw/bio.py (pyOpenSSL) --


def test_openssl_binding_has_what_the_fast_path_calls() -> None:
    user = f"{BIO} (plaintext and ciphertext in a few C calls, BIO renewal)"
    try:
        from OpenSSL import _util
    except ImportError:
        pytest.fail(f"OpenSSL._util cannot be imported; {user} relies on it", pytrace=False)
    for name in ("ffi", "lib", "exception_from_error_queue"):
        _require(hasattr(_util, name), f"OpenSSL._util.{name}", user, "is gone")
    for name in bio._NEEDED:
        _require(hasattr(_util.lib, name), f"OpenSSL._util.lib.{name}", user, "is gone")
    _require(bio.FAST, "OpenSSL._util", user, "does not give the fast path (bio.FAST is false)")


def _access_connection(gw: AccessGateway, role: str) -> SSL.Connection:
    """An access leg's TLS connection, as AccessTLSProtocol.connectionMade builds it."""
    ctx = gw.server_context if role == "server" else gw.client_context
    tls = SSL.Connection(ctx, None)
    if role == "server":
        tls.set_accept_state()
    else:
        tls.set_connect_state()
    return tls


def _bio_read(into: Any) -> bytes:
    ffi, lib = bio._ffi, bio._lib
    buf = ffi.new("char[]", 65536)
    n = lib.BIO_read(into, buf, 65536)
    return ffi.buffer(buf, n)[:] if n > 0 else b""


def _check_bios(tls: Any, user: str) -> None:
    ffi, lib = bio._ffi, bio._lib
    for attribute in ("_into_ssl", "_from_ssl"):
        value = getattr(tls, attribute, None)
        _require(
            isinstance(value, ffi.CData)
            and ffi.typeof(value).cname == "BIO *"
            and value != ffi.NULL,
            f"OpenSSL.SSL.Connection.{attribute}",
            user,
            "is no longer a memory BIO pointer (BIO *)",
        )
    tls.bio_write(b"into")
    _require(
        _bio_read(tls._into_ssl) == b"into",
        "OpenSSL.SSL.Connection._into_ssl",
        user,
        "is no longer the BIO that bio_write() writes into",
    )
    lib.BIO_write(tls._from_ssl, b"from", 4)
    _require(
        tls.bio_read(1024) == b"from",
        "OpenSSL.SSL.Connection._from_ssl",
        user,
        "is no longer the BIO that bio_read() reads from",
    )


@pytest.mark.parametrize("role", ["client", "server"])
def test_connection_ssl_and_memory_bios(gateway: AccessGateway, role: str) -> None:
    user = f"{BIO} (read_plaintext, drain_output, renew_bios)"
    if not bio.FAST:
        pytest.fail(f"OpenSSL._util does not give the fast path; {user} relies on it")
    ffi, lib = bio._ffi, bio._lib
    tls: Any = _access_connection(gateway, role)
    ssl = getattr(tls, "_ssl", None)
    _require(
        isinstance(ssl, ffi.CData) and ffi.typeof(ssl).cname == "SSL *",
        "OpenSSL.SSL.Connection._ssl",
        user,
        "is no longer the connection's OpenSSL SSL pointer (SSL *)",
    )
    if role == "client":
        # The SSL behind _ssl writes into _from_ssl: a ClientHello, a TLS handshake record.
        lib.SSL_do_handshake(tls._ssl)
        _require(
            _bio_read(tls._from_ssl)[:1] == b"\x16",
            "OpenSSL.SSL.Connection._ssl",
            user,
            "is no longer the SSL that writes into _from_ssl",
        )
    _check_bios(tls, user)
    old = (tls._into_ssl, tls._from_ssl)
    assert bio.renew_bios(tls)
    assert (tls._into_ssl, tls._from_ssl) != old
    _check_bios(tls, user)  # bio_write and bio_read follow the renewed BIOs
