"""A termination's listening port (accessgw.gateway._TerminationPort) against Twisted's own
tcp.Port: its start without Twisted's "starting on" line (info lines off) and its stop at once
outside the accept loop leave the port, the socket and the reactor as Twisted's steps do."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor, task, tcp
from twisted.internet.error import CannotListenError
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

import e2ae.logsetup
from accessgw.gateway import _TerminationPort


class _Factory(protocol.Factory):
    noisy = False

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0

    def doStart(self) -> None:
        self.started += 1
        super().doStart()

    def doStop(self) -> None:
        self.stopped += 1
        super().doStop()


@pytest.fixture
def quiet() -> Iterator[None]:
    """Info lines off, as under ``--log-level warn``: the port's own steps run."""
    saved = e2ae.logsetup._threshold
    e2ae.logsetup._threshold = LogLevel.warn
    try:
        yield
    finally:
        e2ae.logsetup._threshold = saved


def _state(port: tcp.Port, factory: _Factory) -> dict[str, Any]:
    listening = getattr(port, "socket", None)
    state: dict[str, Any] = {
        "connected": port.connected,
        "disconnecting": port.disconnecting,
        "numberAccepts": getattr(port, "numberAccepts", None),
        "real_port": port._realPortNumber is not None,
        "reading": port in reactor.getReaders(),  # type: ignore[attr-defined]
        "started": factory.started,
        "stopped": factory.stopped,
        "socket": listening is not None,
    }
    if listening is not None:
        state["fileno"] = port.fileno() == listening.fileno()
        state["timeout"] = listening.gettimeout()
        state["reuse"] = listening.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        state["inheritable"] = listening.get_inheritable()
        state["family"] = (listening.family, listening.type)
        state["host"] = port.getHost().host
        state["bound"] = port.getHost().port == port._realPortNumber
    return state


def _pair(port_number: int) -> tuple[tcp.Port, _Factory, _TerminationPort, _Factory]:
    a, b = _Factory(), _Factory()
    return (
        tcp.Port(port_number, a, interface="127.0.0.1", reactor=reactor),
        a,
        _TerminationPort(port_number, b, interface="127.0.0.1", reactor=reactor),
        b,
    )


def _lines(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(busy=st.booleans())
def test_start_matches_twisted(quiet: None, busy: bool) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        number = taken if busy else 0
        twisted_port, tf, ours, of = _pair(number)
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        try:
            results = []
            for port in (twisted_port, ours):
                try:
                    port.startListening()
                    results.append(None)
                except CannotListenError as exc:
                    results.append((exc.interface, exc.port, type(exc.socketError)))
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert results[0] == results[1]
        assert _state(twisted_port, tf) == _state(ours, of)
        if not busy:
            assert ours.number == ours.getHost().port
            # Twisted's line for its own port, none for ours (no observer keeps info lines).
            assert sum("starting on" in line for line in _lines(events)) == 1
            for port in (twisted_port, ours):
                port.stopReading()
                port.socket.close()
    finally:
        holder.close()


def test_start_with_info_lines_is_twisted_own() -> None:
    """Info lines kept (no threshold: every event emitted): Twisted's method, line included."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    port = _TerminationPort(0, _Factory(), interface="127.0.0.1", reactor=reactor)
    try:
        port.startListening()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert sum("starting on" in line for line in _lines(events)) == 1
    assert port.number == port.getHost().port
    port.stopReading()
    port.socket.close()


@pytest_twisted.ensureDeferred
async def test_stop_outside_the_accept_loop_is_twisted_state_at_once(quiet: None) -> None:
    twisted_port, tf, ours, of = _pair(0)
    twisted_port.startListening()
    ours.startListening()
    fd = ours.socket.fileno()
    done = ours.stopListening()
    assert isinstance(done, defer.Deferred) and done.called
    stopped_now = _state(ours, of)
    await twisted_port.stopListening()
    assert stopped_now == _state(twisted_port, tf)
    assert stopped_now["stopped"] == 1 and not stopped_now["reading"]
    with pytest.raises(OSError):
        socket.socket(fileno=fd).getsockname()  # closed (or reused: then not listening here)


class _StopsItsPort(protocol.Protocol):
    def __init__(self, port: list[_TerminationPort]) -> None:
        self.port = port

    def connectionMade(self) -> None:
        self.port[0].stopListening()  # inside the port's accept loop: Twisted's deferral
        assert self.port[0].connected


@pytest_twisted.ensureDeferred
async def test_stop_inside_the_accept_loop_is_deferred(quiet: None) -> None:
    holder: list[_TerminationPort] = []
    factory = _Factory()
    factory.protocol = lambda: _StopsItsPort(holder)  # type: ignore[assignment,misc]
    port = _TerminationPort(0, factory, interface="127.0.0.1", reactor=reactor)
    holder.append(port)
    port.startListening()
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        for _ in range(200):
            if not port.connected:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        assert not port.connected and factory.stopped == 1
    finally:
        client.close()
