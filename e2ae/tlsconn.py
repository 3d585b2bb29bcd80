"""A pyOpenSSL context as Twisted's TLS connection creator (Twisted edge).

Twisted's ``optionsForClientTLS`` / ``CertificateOptions`` build their own contexts; the
project's contexts (the certificate profile of :mod:`certs.tls`, the TLS-PSK contexts of
:mod:`certs.psk`) are made elsewhere and only need wrapping: :class:`ContextCreator` gives
``TLSMemoryBIOFactory`` one ``SSL.Connection`` per TCP connection, in the client or server
state."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from zope.interface import implementer


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class ContextCreator:
    """Connections of one ``SSL.Context`` for ``TLSMemoryBIOFactory`` (either role)."""

    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        conn.set_connect_state()
        return conn

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        conn.set_accept_state()
        return conn
