"""``e2ae.metrics``: a registry per service served as ``/metrics`` over plain HTTP on
127.0.0.1, and the listener's bounds (docs/metrics.md, "The listener")."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import Counter
from twisted.internet import error, reactor, task, threads

from e2ae import metrics
from e2ae.address import AddressError
from e2ae.metrics import MetricsServer, metrics_address, new_registry


def _get(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""


def _server(name: str, amount: float) -> MetricsServer:
    registry = new_registry()
    Counter(name, "a test counter", registry=registry).inc(amount)
    server = MetricsServer(registry, ("127.0.0.1", 0))
    server.listen(reactor, "test")
    return server


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes (b"" if it reset or sent nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got


@pytest_twisted.ensureDeferred
async def test_each_server_serves_its_own_registry_and_only_metrics() -> None:
    one, two = _server("e2ae_one", 3), _server("e2ae_two", 5)
    try:
        assert one.bound[1] != 0 and one.bound != two.bound
        status, kind, page = await threads.deferToThread(_get, one.bound[1])
        assert status == 200 and kind.startswith("text/plain; version=")
        assert "e2ae_one_total 3.0" in page and "e2ae_two" not in page
        assert "python_gc" not in page  # not the process-wide default registry
        _, _, other = await threads.deferToThread(_get, two.bound[1])
        assert "e2ae_two_total 5.0" in other and "e2ae_one" not in other
        for path in ("/", "/metrics/x", "/other"):
            assert (await threads.deferToThread(_get, one.bound[1], path))[0] == 404
    finally:
        await one.stop()
        await two.stop()


@pytest_twisted.ensureDeferred
async def test_the_listener_logs_where_and_stop_closes_it() -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server = _server("e2ae_logged", 1)
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("log_namespace") == "e2ae.metrics"]
    assert event["service"] == "test"
    assert event["metrics"] == f"127.0.0.1:{server.bound[1]}"
    port = server.bound[1]
    await server.stop()
    await task.deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_taken_address_cannot_be_listened_on() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = MetricsServer(new_registry(), ("127.0.0.1", busy.getsockname()[1]))
        with pytest.raises(error.CannotListenError):
            server.listen(reactor, "test")
        assert server.port is None


@pytest_twisted.ensureDeferred
async def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    server = _server("e2ae_bounded", 1)
    port = server.bound[1]
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
    try:
        await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        assert len(server._factory.protocols) == metrics.MAX_CONNECTIONS  # type: ignore[union-attr]
        extra = await threads.deferToThread(_exchange, port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert extra == b""
    finally:
        for sock in held:
            sock.close()
    await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
    status, _, page = await threads.deferToThread(_get, port)
    assert status == 200 and "e2ae_bounded_total 1.0" in page
    await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_request_with_a_body_or_too_big_a_head_is_cut_off() -> None:
    server = _server("e2ae_heads", 1)
    port = server.bound[1]
    try:
        body = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        assert await threads.deferToThread(_exchange, port, body) == b""
        chunked = b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert b"200 OK" not in await threads.deferToThread(_exchange, port, chunked)
        big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n"
        reply = await threads.deferToThread(_exchange, port, big)
        assert b"200 OK" not in reply and (reply == b"" or reply.startswith(b"HTTP/1.1 4"))
        many = b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40))
        reply = await threads.deferToThread(_exchange, port, many + b"\r\n")
        assert b"200 OK" not in reply
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_idle_connection_is_closed(monkeypatch: Any) -> None:
    monkeypatch.setattr(metrics, "IDLE_TIMEOUT", 0.2)
    server = _server("e2ae_idle", 1)
    try:
        with socket.create_connection(("127.0.0.1", server.bound[1]), timeout=5) as sock:
            sock.sendall(b"GET /metr")
            got = await threads.deferToThread(sock.recv, 100)
            assert got == b"" or b"408" in got
    finally:
        await server.stop()


def test_metrics_address() -> None:
    assert metrics_address(None) is None
    assert metrics_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert metrics_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert metrics_address("[::1]:9100") == ("::1", 9100)
    for bad in ("localhost:9100", "127.0.0.1", "127.0.0.1:70000"):
        with pytest.raises(AddressError, match="--metrics"):
            metrics_address(bad)
