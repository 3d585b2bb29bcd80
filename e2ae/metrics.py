"""Prometheus metrics of a service (Twisted edge): a registry of its own, and the bounded plain
HTTP listener that serves it as ``/metrics`` (opt-in: ``--metrics HOST:PORT``).

Every service makes its own :class:`prometheus_client.CollectorRegistry` (:func:`new_registry`),
never the library's global one: the demo and the tests run several services in one process,
and each one's counters must stay its own. docs/metrics.md lists the metrics.

The page is rendered in the reactor thread, on each scrape, from the registry: the elements'
gauges read their state (bindings, terminations) when asked, and that state is the reactor's
alone. (``prometheus_client.twisted.MetricsResource`` renders in the reactor's thread pool,
which would read it from another thread, and it always takes the global reactor.)

The listener is bounded (docs/metrics.md, "The listener"): :data:`MAX_CONNECTIONS` connections
at once (one more is closed before any byte is read), :data:`IDLE_TIMEOUT` seconds without a
complete request, a request line and header block of at most :data:`MAX_HEADER_BYTES` bytes in
at most :data:`MAX_HEADERS` lines, and no request body (a request that announces one is cut
off). Only ``GET /metrics`` (and ``HEAD``) is served; any other path is 404. Nothing secret is
in the page: counts, never an address, a key or a fingerprint.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from e2ae.address import parse_host_port

log = Logger(namespace="e2ae.metrics")

#: Connections open at once on the metrics listener; one more is closed at once.
MAX_CONNECTIONS = 8
#: Seconds a connection may stay without completing a request.
IDLE_TIMEOUT = 10.0
#: Bytes of the request line and headers together, and the number of header lines.
MAX_HEADER_BYTES = 4096
MAX_HEADERS = 32


def metrics_address(text: str | None, what: str = "--metrics") -> tuple[str, int] | None:
    """The ``--metrics HOST:PORT`` of every service: an IP address to listen on (a wildcard
    too: the scraper may be on another host) and a port (0: the system picks); ``None`` when
    not given. Raises :class:`~e2ae.address.AddressError`."""
    if text is None:
        return None
    return parse_host_port(text, what, allow_wildcard=True)


def new_registry() -> CollectorRegistry:
    """A registry for one service (not the process-wide default one)."""
    return CollectorRegistry(auto_describe=True)


class _Page(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        if request.path != b"/metrics":
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found: the metrics are at /metrics\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)

    render_HEAD = render_GET


class _Request(Request):
    def gotLength(self, length: int | None) -> None:
        if length != 0:  # a body (or a chunked one): a scrape has none
            self.channel.transport.abortConnection()  # type: ignore[union-attr]
            return
        super().gotLength(length)


class _Channel(HTTPChannel):
    totalHeadersSize = MAX_HEADER_BYTES
    maxHeaders = MAX_HEADERS


class _Site(Site):
    noisy = False
    requestFactory = _Request
    protocol = _Channel

    def log(self, request: Any) -> None:
        """No access log line per scrape."""


class _Bounded(WrappingFactory):
    """At most :data:`MAX_CONNECTIONS` connections: beyond, ``None`` closes the socket."""

    noisy = False

    def __init__(self, site: Site, limit: int) -> None:
        super().__init__(site)
        self.limit = limit

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.limit:
            log.warn(
                "metrics connection from {peer} refused: {count} open (the limit)",
                peer=f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}",
                count=len(self.protocols),
            )
            return None
        return super().buildProtocol(addr)


def site(registry: CollectorRegistry, reactor: Any = None) -> WrappingFactory:
    """The bounded HTTP factory serving ``registry`` as ``/metrics``."""
    return _Bounded(_Site(_Page(registry), timeout=IDLE_TIMEOUT, reactor=reactor), MAX_CONNECTIONS)


class MetricsServer:
    """One service's registry and, once :meth:`listen` is called, its listener."""

    def __init__(self, registry: CollectorRegistry, address: tuple[str, int]) -> None:
        self.registry = registry
        self.address = address
        self.port: IListeningPort | None = None
        self._factory: WrappingFactory | None = None

    @property
    def bound(self) -> tuple[str, int]:
        """The address served (the port the system picked for port 0, once listening)."""
        if self.port is None:
            return self.address
        host = self.port.getHost()
        return str(host.host), int(host.port)  # type: ignore[attr-defined]

    def listen(self, reactor: Any, service: str) -> IListeningPort:
        """Serve ``/metrics`` on :attr:`address`; logs where. Raises ``CannotListenError``."""
        host, port = self.address
        self._factory = site(self.registry, reactor)
        self.port = reactor.listenTCP(port, self._factory, interface=host)
        bound_host, bound_port = self.bound
        where = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )
        log.info(
            "{service} metrics served on http://{metrics}/metrics",
            service=service,
            metrics=where,
        )
        return self.port

    def stop(self) -> Any:
        """Stop listening and close the connections open (a Deferred, or ``None`` if it was not
        listening)."""
        port, self.port = self.port, None
        if self._factory is not None:
            for conn in list(self._factory.protocols):
                conn.transport.abortConnection()  # type: ignore[union-attr]
        return port.stopListening() if port is not None else None


__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MetricsServer",
    "metrics_address",
    "new_registry",
    "site",
]
