"""Errors of the Access Gateway.

Split as h11 does: :class:`RemoteAccessGwError` is a request from the ALG (over Iq) that cannot be
honoured as asked (an unknown termination, a fingerprint it should not have sent);
:class:`LocalAccessGwError` is a bad configuration or a bug. :class:`PortsExhausted` is neither: the
configured port range has no free port left (H.248 error 510, insufficient resources).
"""

from __future__ import annotations


class AccessGwError(Exception):
    """Root of every error raised by :mod:`accessgw`. The Iq side answers each with an H.248
    error (:func:`accessgw.iqhandler.to_iq_error` maps the type to its ``code``)."""


class RemoteAccessGwError(AccessGwError, ValueError):
    """The ALG asked for something this gateway cannot do as asked."""


class UnknownTermination(RemoteAccessGwError):
    """A termination id that is not (or no longer) reserved (H.248 430)."""

    def __init__(self, termination: str) -> None:
        super().__init__(f"unknown termination {termination!r}")
        self.termination = termination


class InvalidRequest(RemoteAccessGwError):
    """A request whose value does not fit the termination's state or role."""

    def __init__(self, termination: str, value: object, reason: str) -> None:
        super().__init__(f"termination {termination!r}: {reason} (got {value!r})")
        self.termination = termination
        self.value = value
        self.reason = reason


class LocalAccessGwError(AccessGwError):
    """A configuration that cannot work (bad port range, bad address, bad file)."""


class PortsExhausted(AccessGwError):
    """No free port is left in the configured range (H.248 510, insufficient resources)."""

    def __init__(self, address: str, low: int, high: int) -> None:
        super().__init__(f"no free port left in {low}-{high} on {address}")
        self.address = address
        self.low = low
        self.high = high
