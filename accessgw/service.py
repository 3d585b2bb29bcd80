"""The IMS Access Gateway as one Twisted service: :func:`build` wires it from an
:class:`~accessgw.config.AgwConfig`, :class:`AgwService` opens and closes it.

The one way an AGW is put together: ``e2ae accessgw`` (and so ``e2ae run``, which starts that
command) and ``e2ae demo`` all call :func:`build`. The parts:

- :class:`~accessgw.gateway.AccessGateway`: the media plane, with the AGW's certificate, the
  port range, the access TLS key log and the timers of the configuration;
- :class:`~accessgw.iqhandler.GatewayIqHandler`: the Iq operations on that gateway, and its
  events sent to the ALG as Notify;
- :class:`~iq.link.IqAgent`: the Iq link to the ALG (mutual TLS with the ALG's pinned
  certificate, or plain TCP with the explicit opt-in, which is logged as a warning).

The AGW listens on no port of its own at start: each termination binds its access and core
ports when the ALG reserves it (:attr:`AgwService.gateway` has them). :meth:`startService`
connects to the ALG (and keeps reconnecting); :meth:`stopService` releases every termination,
closing its ports, then deregisters (ServiceChange Forced) and closes the link. With
``metrics`` (``--metrics HOST:PORT``) it also serves Prometheus metrics, from start to stop
(docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from accessgw.config import AgwConfig, load_identity
from accessgw.gateway import AccessGateway
from accessgw.iqhandler import GatewayIqHandler
from accessgw.termination import Event
from certs.generate import CertAndKey
from iq.config import IqTlsConfig
from iq.link import DEFAULT_TIMEOUT, IqAgent
from iq.transactions import FaultPlan

if TYPE_CHECKING:
    from accessgw.metrics import AgwMetrics
    from e2ae.metrics import MetricsServer

log = Logger(namespace="accessgw")


class AgwService(Service):
    """An AGW put together by :func:`build`: its gateway, Iq handler and Iq agent."""

    name = "accessgw"

    def __init__(
        self,
        config: AgwConfig,
        gateway: AccessGateway,
        handler: GatewayIqHandler,
        agent: IqAgent,
        metrics: MetricsServer | None = None,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.handler = handler
        self.agent = agent
        self.metrics = metrics

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where ``/metrics`` is served (its actual port once started); ``None``: metrics off."""
        return None if self.metrics is None else self.metrics.bound

    @property
    def alg(self) -> tuple[str, int]:
        """The ALG's Iq address this AGW registers with."""
        return self.agent.host, self.agent.port

    def when_registered(self) -> defer.Deferred[None]:
        """Fires once the ALG has accepted the registration (now, if it already has)."""
        return self.agent.when_registered()

    def startService(self) -> None:
        """Connect to the ALG. Raises ``CannotListenError`` if the metrics address is taken."""
        if self.metrics is not None:
            self.metrics.listen(self.gateway.reactor, "AGW")
        if self.config.malloc_tuning:
            from accessgw.malloc import tune_malloc

            tune_malloc()
        if self.agent.tls is None:
            host, port = self.alg
            log.warn(
                "Iq to {alg} is PLAIN TCP (--iq-insecure): the ALG is not authenticated",
                alg=f"{host}:{port}",
            )
        self.agent.start()
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.gateway.close()
        if self.metrics is not None:
            self.metrics.stop()
        return self.agent.stop()


def build(
    config: AgwConfig,
    *,
    iq_tls: IqTlsConfig | None,
    iq_timeout: float = DEFAULT_TIMEOUT,
    faults: FaultPlan | None = None,
    identity: CertAndKey | None = None,
    observer: Callable[[Event], None] | None = None,
    reactor: Any = None,
    metrics: tuple[str, int] | None = None,
) -> AgwService:
    """The AGW of ``config``, not yet started. ``iq_tls`` secures the Iq link (``None``: plain
    TCP, which the caller has been told to opt into); ``identity`` is the AGW's certificate
    and key if already loaded (otherwise read from ``config.cert`` and ``config.key``);
    ``observer`` is called with every gateway event; ``metrics``: serve Prometheus metrics on
    this address (port 0: the system picks), in a registry of this AGW's own
    (docs/metrics.md; ``None``: none are kept). Raises
    :class:`~accessgw.errors.AccessGwError` for a certificate that cannot be loaded."""
    if identity is None:
        identity = load_identity(config.cert, config.key)
    gateway = AccessGateway(
        config.access_ip,
        config.core_ip,
        identity,
        ports=config.ports,
        reactor=reactor,
        keylog=config.keylog,
        timers=config.timers,
        early_policy="reject" if config.early_handshake == "reject" else "hold",
        observer=observer,
    )
    handler = GatewayIqHandler(gateway)
    server: MetricsServer | None = None
    counters: AgwMetrics | None = None
    if metrics is not None:
        from accessgw.metrics import AgwMetrics
        from e2ae.metrics import MetricsServer, new_registry

        server = MetricsServer(new_registry(), metrics)
        counters = AgwMetrics(server.registry, gateway)
        gateway.add_observer(counters.event)
    host, port = config.alg
    agent = IqAgent(
        handler,
        host,
        port,
        mid=config.mid,
        tls=iq_tls,
        timeout=iq_timeout,
        faults=faults,
        reactor=reactor,
        observer=None if counters is None else counters.iq_handled,
    )
    handler.attach(agent)
    return AgwService(config, gateway, handler, agent, server)
