"""The KMS as one Twisted service: :func:`build` wires it from a
:class:`~kms.config.KmsConfig`, :class:`KmsService` opens and closes it.

The parts: the state database (:class:`~kms.store.KmsStore`, with the file's users
provisioned into it), the decisions (:class:`~kms.core.KmsCore`) and the HTTPS listener
(:mod:`kms.edge`). Every request is logged with the client's address, the identity it
authenticated as, the outcome and the MIKEY error number; never a key. With ``metrics``
(``--metrics HOST:PORT``) it also serves Prometheus metrics, from start to stop
(docs/metrics.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from certs.errors import CertsError
from certs.generate import CertAndKey, load_pair
from kms.config import KmsConfig, KmsConfigError
from kms.core import KmsCore
from kms.edge import Reply, listen
from kms.http import Request
from kms.store import KmsStore, StoreError

if TYPE_CHECKING:
    from e2ae.metrics import MetricsServer
    from kms.metrics import KmsMetrics

log = Logger(namespace="e2ae.kms")

#: Media types a request body may be declared as (none declared is accepted too).
MIKEY_TYPES = ("application/mikey", "application/octet-stream")


class KmsService(Service):
    """A KMS put together by :func:`build`."""

    name = "kms"

    def __init__(
        self,
        config: KmsConfig,
        identity: CertAndKey,
        store: KmsStore,
        reactor: Any,
        metrics: MetricsServer | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.reactor = reactor
        self.core = KmsCore(
            config.identity,
            store,
            ticket_lifetime=config.ticket_lifetime,
            replay_window=config.replay_window,
        )
        self.port: IListeningPort | None = None
        self.requests = 0
        self.metrics = metrics
        self.counters: KmsMetrics | None = None
        if metrics is not None:
            from kms.metrics import KmsMetrics

            self.counters = KmsMetrics(metrics.registry)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where ``/metrics`` is served (its actual port once started); ``None``: metrics off."""
        return None if self.metrics is None else self.metrics.bound

    @property
    def address(self) -> tuple[str, int]:
        """Where the KMS listens (the port the system picked for port 0)."""
        if self.port is None:
            return self.config.listen
        host = self.port.getHost()
        return str(host.host), int(host.port)  # type: ignore[attr-defined]

    def startService(self) -> None:
        self.port, _ = listen(
            self.reactor, self.config, self.identity, self.serve, self.reactor.seconds
        )
        if self.metrics is not None:
            try:
                self.metrics.listen(self.reactor, "KMS")
            except Exception:
                self.port.stopListening()
                self.port = None
                raise
        host, port = self.address
        log.info(
            "KMS {kms} listening on {listen}: {users} users provisioned",
            kms=self.config.identity,
            listen=f"{host}:{port}",
            users=self.store.count("users"),
        )
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        done = port.stopListening() if port is not None else None
        if self.metrics is not None:
            self.metrics.stop()
        self.store.close()
        return done

    def serve(self, request: Request, identities: tuple[str, ...], now: float, peer: str) -> Reply:
        self.requests += 1
        declared = (request.header("content-type") or "").split(";")[0].strip().lower()
        if declared and declared not in MIKEY_TYPES:
            if self.counters is not None:
                self.counters.request(request.body, None, rejected=True)
            return Reply(415, b"the body must be a MIKEY message (application/mikey)", "text/plain")
        reply = self.core.handle(request.body, identities, now)
        if self.counters is not None:
            self.counters.request(request.body, reply.error)
        log.info(
            "KMS {outcome}",
            peer=peer,
            outcome=reply.outcome,
            identity=reply.identity,
            status=reply.status,
            mikey_error=None if reply.error is None else reply.error.name,
        )
        return Reply(reply.status, reply.body)


def provision(store: KmsStore, config: KmsConfig) -> int:
    """Add or update every user of the configuration in ``store``; how many."""
    for entry in config.users:
        store.put_user(entry.user)
    return len(config.users)


def build(
    config: KmsConfig,
    *,
    identity: CertAndKey | None = None,
    reactor: Any = None,
    metrics: tuple[str, int] | None = None,
) -> KmsService:
    """The KMS of ``config``: its state opened and its users provisioned; listening once
    started. ``metrics``: serve Prometheus metrics on this address (port 0: the system
    picks), in a registry of this KMS's own (docs/metrics.md; ``None``: none are kept).
    Raises :class:`~kms.config.KmsConfigError` for a file it cannot use."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        identity = identity or load_pair(config.cert, config.key)
    except CertsError as exc:
        raise KmsConfigError(f"KMS certificate: {exc}") from exc
    try:
        store = KmsStore(config.state)
        provision(store, config)
    except StoreError as exc:
        raise KmsConfigError(str(exc)) from exc
    server = None
    if metrics is not None:
        from e2ae.metrics import MetricsServer, new_registry

        server = MetricsServer(new_registry(), metrics)
    return KmsService(config, identity, store, reactor, server)


__all__ = ["KmsService", "build", "provision"]
