"""The P-CSCF's Prometheus metrics (docs/metrics.md): calls by outcome and cause, SIP responses
by code, Iq transactions with their latency, the registrations, e2ae calls and SIP transactions
held.

:mod:`pcscf.service` counts the actions of the proxy core as it carries them out, and the Iq
controller tells :meth:`PcscfMetrics.iq_transaction` of every request; the gauges read the
registrar and the call table on each scrape. Without ``--metrics`` there is no
:class:`PcscfMetrics` and nothing is counted. The label children are made once per label value
and kept, so counting a SIP response is a dictionary lookup and an increment.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds, for the Iq round trips (a reply on a local link takes about a millisecond; the
#: default Iq timeout is 5 s).
IQ_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PcscfMetrics:
    """The P-CSCF's metric families, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._calls = Counter(
            "e2ae_pcscf_calls",
            "Calls (dialogs of an INVITE) ended, by outcome and cause",
            ("outcome", "reason"),
            registry=registry,
        )
        self._responses = Counter(
            "e2ae_pcscf_sip_responses",
            "SIP responses sent, by status code and origin (sent: made by the P-CSCF;"
            " relayed: passed on from the other side)",
            ("code", "origin"),
            registry=registry,
        )
        self._iq = Counter(
            "e2ae_pcscf_iq_transactions",
            "Iq requests made to the AGWs, by command and result",
            ("command", "result"),
            registry=registry,
        )
        self._iq_seconds = Histogram(
            "e2ae_pcscf_iq_transaction_seconds",
            "Seconds from an Iq request to its reply (or its failure), by command",
            ("command",),
            buckets=IQ_BUCKETS,
            registry=registry,
        )
        self._registrations = Gauge(
            "e2ae_pcscf_registrations",
            "Registered contacts (bindings) held",
            registry=registry,
        )
        self._e2ae_calls = Gauge(
            "e2ae_pcscf_e2ae_calls",
            "Calls holding e2ae streams on an AGW",
            registry=registry,
        )
        self._transactions = Gauge(
            "e2ae_pcscf_sip_transactions",
            "SIP transactions held, the finished ones kept for Timer J/K/D/L included, by kind"
            " (server: requests received, bounded by max_transactions; client: requests sent)",
            ("kind",),
            registry=registry,
        )
        self._call_children: dict[tuple[str, str], Counter] = {}
        self._response_children: dict[tuple[int, bool], Counter] = {}
        self._iq_children: dict[tuple[str, str], Counter] = {}
        self._iq_seconds_children: dict[str, Histogram] = {}

    def watch(
        self,
        registrations: Callable[[], int],
        e2ae_calls: Callable[[], int],
        transactions: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        """Read the gauges from these functions at each scrape (``transactions``: the server
        and client transactions held)."""
        self._registrations.set_function(lambda: float(registrations()))
        self._e2ae_calls.set_function(lambda: float(e2ae_calls()))
        if transactions is not None:
            self._transactions.labels("server").set_function(lambda: float(transactions()[0]))
            self._transactions.labels("client").set_function(lambda: float(transactions()[1]))

    def call_ended(self, outcome: str, reason: str) -> None:
        key = (outcome, reason)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self._calls.labels(outcome, reason)
        child.inc()

    def response(self, code: int, relayed: bool) -> None:
        key = (code, relayed)
        child = self._response_children.get(key)
        if child is None:
            origin = "relayed" if relayed else "sent"
            child = self._response_children[key] = self._responses.labels(str(code), origin)
        child.inc()

    def iq_transaction(self, command: str, result: str, seconds: float | None) -> None:
        """An Iq request ended (:data:`iq.link.TransactionObserver`); ``seconds`` ``None``: it
        was not sent (no AGW in service), and is counted but not timed."""
        key = (command, result)
        child = self._iq_children.get(key)
        if child is None:
            child = self._iq_children[key] = self._iq.labels(command, result)
        child.inc()
        if seconds is not None:
            timer = self._iq_seconds_children.get(command)
            if timer is None:
                timer = self._iq_seconds_children[command] = self._iq_seconds.labels(command)
            timer.observe(seconds)


__all__ = ["IQ_BUCKETS", "PcscfMetrics"]
