"""Errors of the certificate and fingerprint tooling.

Split as h11 does: :class:`RemoteCertsError` is something a peer gave us that is wrong (a
malformed or refused ``a=fingerprint`` value); :class:`LocalCertsError` is something we were
asked to build that cannot be built (a bad key type, a file that exists already).
"""

from __future__ import annotations


class CertsError(Exception):
    """Root of every error raised by :mod:`certs`."""


class RemoteCertsError(CertsError, ValueError):
    """Input from a peer (SDP, Iq) is not an acceptable fingerprint."""


class InvalidFingerprint(RemoteCertsError):
    """An ``a=fingerprint`` value does not follow RFC 8122 syntax."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"invalid fingerprint {value!r}: {reason}")
        self.value = value
        self.reason = reason


class UnsupportedHash(InvalidFingerprint):
    """The hash function is unknown, or refused (``md5``, ``md2``)."""

    def __init__(self, value: str, hash_func: str, reason: str) -> None:
        super().__init__(value, reason)
        self.hash_func = hash_func


class LocalCertsError(CertsError):
    """A request to generate or write certificates that cannot be satisfied."""
