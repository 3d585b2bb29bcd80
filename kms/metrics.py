"""The KMS's Prometheus metrics (docs/metrics.md): requests by message type and result,
tickets issued, resolves refused.

:class:`~kms.service.KmsService` counts each request it answers (:meth:`KmsMetrics.request`).
The message type is read from the MIKEY common header (its second byte, RFC 3830 section
6.1), the result is ``ok`` or the name of the MIKEY error the KMS answered with
(:class:`mikey.constants.ErrorNo`). Without ``--metrics`` there is no :class:`KmsMetrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from mikey.constants import DataType, ErrorNo

#: The ``message_type`` label of the two messages the KMS serves; anything else is ``other``.
MESSAGE_TYPES: dict[int, str] = {
    DataType.REQUEST_INIT_PSK: "request_init",
    DataType.RESOLVE_INIT_PSK: "resolve_init",
}


def message_type(body: bytes) -> str:
    """``request_init``, ``resolve_init`` or ``other``, from the MIKEY header of ``body``."""
    if len(body) < 2:
        return "other"
    return MESSAGE_TYPES.get(body[1], "other")


class KmsMetrics:
    """The KMS's metric families, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._requests = Counter(
            "e2ae_kms_requests",
            "Requests answered, by MIKEY message type and result (ok, or the MIKEY error"
            " name; unsupported_media_type for a body not declared as MIKEY)",
            ("message_type", "result"),
            registry=registry,
        )
        self._tickets = Counter(
            "e2ae_kms_tickets_issued", "Tickets issued (REQUEST_INIT answered)", registry=registry
        )
        self._refused = Counter(
            "e2ae_kms_resolves_refused",
            "RESOLVE_INIT requests refused (no key given)",
            registry=registry,
        )

    def request(self, body: bytes, error: ErrorNo | None, *, rejected: bool = False) -> None:
        """A request answered: ``error`` the MIKEY error of the answer (``None``: served);
        ``rejected``: refused before MIKEY (a body of another media type)."""
        kind = message_type(body)
        if rejected:
            result = "unsupported_media_type"
        else:
            result = "ok" if error is None else error.name
        self._requests.labels(kind, result).inc()
        if result == "ok" and kind == "request_init":
            self._tickets.inc()
        elif result != "ok" and kind == "resolve_init":
            self._refused.inc()


__all__ = ["MESSAGE_TYPES", "KmsMetrics", "message_type"]
