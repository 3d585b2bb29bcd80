"""Errors of the SIP layer: one root, split by who is at fault.

:class:`RemoteSipError` means the peer sent something we cannot accept; it carries the SIP
status and a reason phrase that says what is wrong (the proxy answers a request with it, or
drops a response). :class:`LocalSipError` means we were asked to build something impossible
(a bug or a bad configuration).
"""

from __future__ import annotations

from pcscf.errors import LocalPcscfError, PcscfError, RemotePcscfError


class SipError(PcscfError):
    """Root of every SIP-layer error (a :class:`~pcscf.errors.PcscfError`)."""


class RemoteSipError(SipError, RemotePcscfError):
    """The peer sent a message we cannot accept. ``status``/``reason`` form the SIP answer."""

    def __init__(self, status: int, reason: str, *, where: str = "") -> None:
        super().__init__(f"{status} {reason}" + (f" ({where})" if where else ""))
        self.status = status
        self.reason = reason
        self.where = where


class LocalSipError(SipError, LocalPcscfError):
    """We were asked to build or send something that cannot be expressed in SIP."""
