"""The KMS's HTTPS listener (Twisted): mutual certificates, the client's certificate pinned in
the handshake, requests parsed by :mod:`kms.http` and answered by a handler.

A client whose certificate matches no provisioned user's fingerprint is refused with a TLS
alert during the handshake: none of its bytes reaches the parser. The handler learns which
provisioned identities the verified certificate may speak for, so a MIKEY message naming
another user can be refused (docs/kms.md, "Who may ask").

Bounds (docs/kms.md, "Bounds"): ``max_connections`` at once (one more is closed before any byte
is read), ``idle_timeout`` seconds without a complete request (the TLS handshake included),
``max_body`` bytes per request and :class:`kms.http.HttpLimits` for the header block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import attrs
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IReactorTCP,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.fingerprint import matches_any
from certs.generate import CertAndKey
from certs.tls import KeyLogWriter, make_context, peer_certificate_der
from kms.config import KmsConfig
from kms.http import (
    CONTINUE,
    BadRequest,
    ContinueNeeded,
    HttpConnection,
    HttpLimits,
    Request,
    response,
)

log = Logger(namespace="e2ae.kms")


@attrs.frozen
class Reply:
    status: int
    body: bytes
    content_type: str = "application/mikey"


#: Serves one request: the request, the identities the client may speak for, the time, and
#: the client's address (HOST:PORT, for the log).
Handler = Callable[[Request, tuple[str, ...], float, str], Reply]


@implementer(IHandshakeListener)
class KmsHttpProtocol(Protocol, TimeoutMixin):
    def __init__(self, factory: KmsHttpFactory) -> None:
        self.factory = factory
        self.http = HttpConnection(factory.limits)
        self.identities: tuple[str, ...] = ()
        self.verified = False
        self.peer = "?"

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.factory.open.add(self)
        self.setTimeout(self.factory.idle_timeout)

    def handshakeCompleted(self) -> None:
        conn = cast(SSL.Connection, self.transport.getHandle())  # type: ignore[union-attr]
        der = peer_certificate_der(conn)
        identities = () if der is None else self.factory.config.identities_for(der)
        if not identities:
            # The verify callback refused every other certificate; this is defence in depth.
            log.warn("KMS client {peer} refused: no provisioned user", peer=self.peer)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.identities = identities
        self.verified = True
        log.info(
            "KMS client {peer} verified as {identities}",
            peer=self.peer,
            identities=", ".join(identities),
        )

    def dataReceived(self, data: bytes) -> None:
        if not self.verified:  # cannot happen over TLS: no data before the handshake ends
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.http.receive_data(data)
        while (event := self.http.next_event()) is not None:
            if isinstance(event, ContinueNeeded):
                self.transport.write(CONTINUE)  # type: ignore[union-attr]
            elif isinstance(event, BadRequest):
                log.warn(
                    "KMS client {peer}: HTTP {status} ({reason})",
                    peer=self.peer,
                    status=event.status,
                    reason=event.reason,
                )
                self._write(response(event.status, event.reason.encode(), close=True))
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            else:
                self.resetTimeout()
                self._serve(event)
                if not event.keep_alive:
                    self.transport.loseConnection()  # type: ignore[union-attr]
                    return

    def _serve(self, request: Request) -> None:
        now = self.factory.clock()
        try:
            reply = self.factory.handler(request, self.identities, now, self.peer)
        except Exception:
            log.failure("KMS request from {peer} failed", peer=self.peer)
            reply = Reply(500, b"internal error", "text/plain; charset=utf-8")
        self._write(
            response(
                reply.status,
                reply.body,
                content_type=reply.content_type,
                close=not request.keep_alive,
            )
        )

    def _write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def timeoutConnection(self) -> None:
        log.info(
            "KMS client {peer}: idle for {seconds} s, closed",
            peer=self.peer,
            seconds=self.factory.idle_timeout,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self.factory.open.discard(self)


class KmsHttpFactory(Factory):
    noisy = False

    def __init__(self, config: KmsConfig, handler: Handler, clock: Callable[[], float]) -> None:
        self.config = config
        self.handler = handler
        self.clock = clock
        self.limits = HttpLimits(max_body=config.max_body)
        self.idle_timeout = config.idle_timeout
        self.open: set[KmsHttpProtocol] = set()

    def buildProtocol(self, addr: Any) -> KmsHttpProtocol:
        return KmsHttpProtocol(self)


class _BoundedTlsFactory(TLSMemoryBIOFactory):
    """TLS around the HTTP factory, refusing a connection beyond ``max_connections`` before
    the handshake: returning None makes the listening port close the socket at once."""

    def __init__(self, creator: _Creator, http: KmsHttpFactory) -> None:
        super().__init__(creator, False, http)  # type: ignore[arg-type]
        self.http = http

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.http.open) >= self.http.config.max_connections:
            log.warn(
                "KMS connection from {peer} refused: {count} open (max_connections)",
                peer=f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}",
                count=len(self.http.open),
            )
            return None
        return super().buildProtocol(addr)


@implementer(IOpenSSLServerConnectionCreator)
class _Creator:
    """Connections of one prepared server context."""

    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)


def server_context(
    config: KmsConfig, identity: CertAndKey, keylog: KeyLogWriter | None = None
) -> SSL.Context:
    """The 3GPP TLS profile, server side, refusing in the handshake any client certificate
    that matches no provisioned user."""
    pinned = config.pinned()

    def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if depth != 0:
            return True  # the chain is not judged: the leaf's fingerprint is the trust
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        return matches_any(der, pinned)

    return make_context(identity, "server", keylog=keylog, verify=verify)


def listen(
    reactor: IReactorTCP,
    config: KmsConfig,
    identity: CertAndKey,
    handler: Handler,
    clock: Callable[[], float],
    keylog: KeyLogWriter | None = None,
) -> tuple[IListeningPort, KmsHttpFactory]:
    """Listen on ``config.listen`` (port 0: the system picks; read it from the port)."""
    http = KmsHttpFactory(config, handler, clock)
    tls = _BoundedTlsFactory(_Creator(server_context(config, identity, keylog)), http)
    host, port = config.listen
    return reactor.listenTCP(port, tls, interface=host), http


__all__ = ["Handler", "KmsHttpFactory", "KmsHttpProtocol", "Reply", "listen", "server_context"]
