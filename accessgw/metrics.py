"""The AGW's Prometheus metrics (docs/metrics.md): TLS handshakes on the access side by result,
bytes relayed each way, terminations held, Iq requests served.

The handshakes are counted from the gateway's events (:meth:`AgwMetrics.event`, a gateway
observer: one call per TLS outcome, not per byte); the Iq requests from the Iq agent
(:meth:`AgwMetrics.iq_handled`). The relayed bytes and the terminations held are read from
the gateway at each scrape: the relay's path gains no instruction. Without ``--metrics`` there
is no :class:`AgwMetrics` and nothing is counted.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from accessgw.gateway import AccessGateway
from accessgw.termination import Event, TlsEstablished, TlsFailure

#: The ``result`` label of a refused handshake, by its cause (:data:`accessgw.termination.
#: FailureCause`); a cause not named here is ``failed``.
TLS_RESULTS = {
    "fingerprint-mismatch": "fingerprint_mismatch",
    "handshake-timeout": "timeout",
}


class _Relayed(Collector):
    """``e2ae_agw_relayed_bytes_total``, read from the gateway when scraped."""

    def __init__(self, gateway: AccessGateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "e2ae_agw_relayed_bytes",
            "Bytes relayed between the UEs and the core, by direction",
            labels=("direction",),
        )
        to_core, to_ue = self.gateway.relayed_bytes()
        family.add_metric(("to_core",), float(to_core))
        family.add_metric(("to_ue",), float(to_ue))
        yield family


class AgwMetrics:
    """The AGW's metric families, in ``registry``, over ``gateway``."""

    def __init__(self, registry: CollectorRegistry, gateway: AccessGateway) -> None:
        self.registry = registry
        handshakes = Counter(
            "e2ae_agw_tls_handshakes",
            "TLS sessions with UEs on the access side, by result (verified,"
            " fingerprint_mismatch, timeout, failed)",
            ("result",),
            registry=registry,
        )
        self._handshakes = {
            result: handshakes.labels(result)
            for result in ("verified", "fingerprint_mismatch", "timeout", "failed")
        }
        self._iq = Counter(
            "e2ae_agw_iq_transactions",
            "Iq requests from the ALG served, by command and result",
            ("command", "result"),
            registry=registry,
        )
        self._iq_children: dict[tuple[str, str], Counter] = {}
        terminations = Gauge(
            "e2ae_agw_terminations",
            "Terminations (one per reserved stream) held",
            registry=registry,
        )
        terminations.set_function(lambda: float(len(gateway.terminations)))
        registry.register(_Relayed(gateway))

    def event(self, event: Event) -> None:
        """A gateway event (an observer of :class:`~accessgw.gateway.AccessGateway`)."""
        if isinstance(event, TlsEstablished):
            self._handshakes["verified"].inc()
        elif isinstance(event, TlsFailure):
            self._handshakes[TLS_RESULTS.get(event.cause, "failed")].inc()

    def iq_handled(self, command: str, result: str) -> None:
        """An Iq request served (:data:`iq.link.HandledObserver`)."""
        key = (command, result)
        child = self._iq_children.get(key)
        if child is None:
            child = self._iq_children[key] = self._iq.labels(command, result)
        child.inc()


__all__ = ["TLS_RESULTS", "AgwMetrics"]
