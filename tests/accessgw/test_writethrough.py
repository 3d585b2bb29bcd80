"""accessgw.writethrough: bytes go straight to the socket when nothing is queued, in order."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport

from accessgw import writethrough


class _Collect(protocol.Protocol):
    def __init__(self, expected: int, done: defer.Deferred[bytes]) -> None:
        self.expected = expected
        self.done = done
        self.chunks: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= self.expected and not self.done.called:
            self.done.callback(b"".join(self.chunks))


class _Pair:
    """A Twisted TCP client transport on 127.0.0.1 and the bytes its peer receives."""

    def __init__(self) -> None:
        self.client: Any = None
        self.server: _Collect | None = None
        self.listener: Any = None

    async def open(self, expected: int, *, read: bool = True) -> defer.Deferred[bytes]:
        received: defer.Deferred[bytes] = defer.Deferred()

        def build(addr: Any) -> _Collect:
            self.server = _Collect(expected, received)
            return self.server

        factory = protocol.Factory.forProtocol(protocol.Protocol)
        factory.buildProtocol = build  # type: ignore[method-assign]
        self.listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
        port = self.listener.getHost().port
        client = await protocol.ClientCreator(reactor, protocol.Protocol).connectTCP(
            "127.0.0.1", port
        )
        self.client = client.transport
        while self.server is None or self.server.transport is None:
            await _turn()
        if not read:
            self.server.transport.pauseProducing()
        return received

    def close(self) -> None:
        if self.client is not None:
            self.client.abortConnection()
        if self.server is not None and self.server.transport is not None:
            self.server.transport.abortConnection()
        if self.listener is not None:
            self.listener.stopListening()


async def _turn() -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    await d


def _queued(transport: Any) -> int:
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


@pytest.fixture
def pair() -> Any:
    p = _Pair()
    yield p
    p.close()


@pytest_twisted.ensureDeferred
async def test_an_idle_transport_sends_at_once(pair: _Pair) -> None:
    received = await pair.open(5)
    writethrough.write(pair.client, b"hello")
    assert _queued(pair.client) == 0  # nothing left for a later reactor pass
    assert pair.client not in reactor.getWriters()  # and no epoll registration for one
    assert await received == b"hello"


@pytest_twisted.ensureDeferred
async def test_bytes_queued_first_stay_first(pair: _Pair) -> None:
    received = await pair.open(11)
    pair.client.write(b"first")  # queued in the transport, not yet sent
    writethrough.write(pair.client, b" second")
    assert _queued(pair.client) == 12  # went behind the queued bytes, not around them
    assert await received == b"first second"


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_queued_in_order(pair: _Pair) -> None:
    payload = os.urandom(8 << 20)  # far more than loopback socket buffers hold
    received = await pair.open(len(payload), read=False)
    pair.client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    writethrough.write(pair.client, payload)
    queued = _queued(pair.client)
    assert 0 < queued < len(payload)  # part went out at once, the rest waits in the transport
    writethrough.write(pair.client, b"tail")  # behind the queue
    assert _queued(pair.client) == queued + 4
    assert pair.server is not None
    pair.server.expected = len(payload) + 4
    pair.server.transport.resumeProducing()
    assert await received == payload + b"tail"


class _Spy:
    """A socket stand-in that records direct sends (everything else goes to the socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self._sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest_twisted.ensureDeferred
async def test_a_half_closing_transport_is_not_written_behind_its_back(pair: _Pair) -> None:
    await pair.open(1)
    spy = _Spy(pair.client.socket)
    pair.client.socket = spy  # until the next reactor pass, only write-through could send
    try:
        pair.client.loseWriteConnection()  # pending: Twisted shuts down on its next pass
        writethrough.write(pair.client, b"late")
        assert spy.sends == 0  # the transport decides what happens to bytes after a close
    finally:
        pair.client.socket = spy._sock


def test_other_transports_get_their_own_write() -> None:
    transport = StringTransport()
    writethrough.write(transport, b"abc")
    assert transport.value() == b"abc"
