"""Helpers for the Access Gateway tests: a TCP sink for the core side, openssl as the UE."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

import certs
from tests.conftest import require_tool

NOW = datetime.datetime.now(datetime.UTC)


@implementer(IHalfCloseableProtocol)
class Sink(protocol.Protocol):
    """A core-side peer: records what it gets, optionally echoes, optionally reads slowly.

    At end of data it closes, unless the factory says ``stay_open`` (to answer after a
    half-close)."""

    factory: SinkFactory
    transport: Any

    def connectionMade(self) -> None:
        self.data = bytearray()
        self.count = 0
        self.eof = False
        self.lost: Failure | None = None
        self.factory.conns.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        if self.factory.keep:
            self.data += data
        if self.factory.echo:
            self.transport.write(data)
        if self.factory.slow is not None:
            self.transport.pauseProducing()
            reactor.callLater(self.factory.slow, self._resume)  # type: ignore[attr-defined]
        if self.factory.close_after is not None and self.count >= self.factory.close_after:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.eof = True
        if not self.factory.stay_open:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def _resume(self) -> None:
        if self.lost is None:
            self.transport.resumeProducing()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = reason


class SinkFactory(protocol.ClientFactory):
    protocol = Sink

    def __init__(
        self,
        *,
        echo: bool = False,
        close_after: int | None = None,
        slow: float | None = None,
        stay_open: bool = False,
        keep: bool = True,
    ) -> None:
        self.stay_open = stay_open
        self.keep = keep
        self.echo = echo
        self.close_after = close_after
        self.slow = slow
        self.conns: list[Sink] = []

    @property
    def received(self) -> bytes:
        return b"".join(bytes(c.data) for c in self.conns)


class Proc(protocol.ProcessProtocol):
    """A child process (openssl) with its output collected."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()
        self.rc: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.rc = getattr(reason.value, "exitCode", None)
        self.ended.callback(self.rc or 0)

    def send(self, data: bytes, *, close: bool = False) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if close:
            self.transport.closeStdin()

    def kill(self) -> None:
        if self.rc is None and self.transport is not None:
            self.transport.signalProcess("KILL")


def spawn(args: Sequence[str]) -> Proc:
    proc = Proc()
    reactor.spawnProcess(proc, args[0], list(args), env=None)  # type: ignore[attr-defined]
    return proc


def s_client(port: int, ident: Path | None, *extra: str) -> Proc:
    """``openssl s_client`` as the UE; ``ident`` is the path stem of NAME.crt/NAME.key."""
    openssl = require_tool("openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet"]
    if ident is not None:
        args += ["-cert", f"{ident}.crt", "-key", f"{ident}.key"]
    return spawn([*args, *extra])


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll until ``predicate()`` holds (a safety limit, not a timing assertion)."""
    steps = int(timeout / 0.01)
    for _ in range(steps):
        if predicate():
            return
        await task.deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
    raise AssertionError(f"condition not met within {timeout}s")


def identity(name: str, tmp: Path, **kw: Any) -> tuple[certs.CertAndKey, Path]:
    pair = certs.generate(name, now=NOW, **kw)
    certs.write(pair, tmp, force=True)
    return pair, tmp / name
