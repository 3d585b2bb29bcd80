"""The access leg: TLS towards the UE over a plain Twisted TCP transport (Twisted edge).

The AGW builds its own :class:`OpenSSL.SSL.Connection` (memory BIOs) from the 3GPP profile
context, so that it decides when ciphertext is decrypted: the UE's certificate is checked during
the handshake (verify callback: a wrong one gets a TLS alert) and again at handshake completion
(the authoritative check), and not one application byte is decrypted, let alone relayed, before
the termination has accepted the session. Until then the socket is paused: the kernel holds what
the UE sends (bounded, TCP flow control), nothing is dropped.

Memory: OpenSSL's memory BIOs keep the largest chunk they ever held. Ciphertext is therefore fed
to OpenSSL, and plaintext handed to it, in pieces of at most one TLS record (``FEED_SIZE``), and
the context releases its record buffers when idle (``SSL_MODE_RELEASE_BUFFERS``): an idle
session after a burst keeps a few tens of KiB, not a multiple of the burst.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from twisted.internet import interfaces
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.tls import peer_certificate_der

#: Largest piece of ciphertext written into / plaintext handed to OpenSSL at once: one record.
FEED_SIZE = 16384 + 325
PLAIN_SIZE = 16384
_DER = Encoding.DER
_CONNECTION_DONE = Failure(ConnectionDone())


class AccessLegOwner(Protocol):
    """What the gateway provides to an access leg (callbacks, all synchronous)."""

    def certificate_presented(self, leg: AccessTLSProtocol, der: bytes | None) -> bool: ...

    def handshake_done(self, leg: AccessTLSProtocol, der: bytes | None) -> None: ...

    def handshake_failed(self, leg: AccessTLSProtocol, reasons: list[str]) -> None: ...

    def leg_connected(self, leg: AccessTLSProtocol) -> None: ...

    def data_from_ue(self, leg: AccessTLSProtocol, data: bytes) -> None: ...

    def ue_eof(self, leg: AccessTLSProtocol) -> None: ...

    def leg_lost(self, leg: AccessTLSProtocol, reason: Failure) -> None: ...


def _reasons(exc: SSL.Error) -> list[str]:
    out: list[str] = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and item:
            out.append(str(item[-1]))
    return out or [str(exc)]


@implementer(interfaces.IHalfCloseableProtocol)
class AccessTLSProtocol(TwistedProtocol):
    """One TLS connection attempt on a termination's access side."""

    transport: Any

    def __init__(
        self,
        owner: AccessLegOwner,
        context: SSL.Context,
        role: str,
        *,
        read_size: int,
    ) -> None:
        self.owner = owner
        self.context = context
        self.role = role
        self.read_size = read_size
        self.attempt: int | None = None
        self.peer = ""
        self.tls: SSL.Connection | None = None
        self.handshake_complete = False
        self.relaying = False
        self.failed = False
        self.closing = False
        self._held: list[bytes] = []
        self._ue_eof = False
        self._eof_signalled = False
        self._write_done = False
        self._sink: Callable[[bytes], None] | None = None

    # -- connection set-up --

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = f"{peer.host}:{peer.port}"
        self.transport.setTcpNoDelay(True)
        self.transport.bufferSize = self.read_size
        tls = SSL.Connection(self.context, None)
        tls.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE,
            self._verify,
        )
        if self.role == "server":
            tls.set_accept_state()
        else:
            tls.set_connect_state()
        self.tls = tls
        self.owner.leg_connected(self)
        if self.failed:
            return
        self._handshake()

    def _verify(
        self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        if depth != 0:
            return True  # the chain is not judged; only the leaf's fingerprint counts
        der = cert.to_cryptography().public_bytes(_DER)
        return self.owner.certificate_presented(self, der)

    def _handshake(self) -> None:
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as exc:
            self._flush()
            self.failed = True
            self.owner.handshake_failed(self, _reasons(exc))
            self.transport.loseConnection()
            return
        self._flush()
        self.handshake_complete = True
        # Not one application byte is decrypted before the owner has decided.
        self.transport.pauseProducing()
        self.owner.handshake_done(self, peer_certificate_der(self.tls))

    # -- decisions from the owner --

    def refuse(self) -> None:
        """Close this attempt: close_notify if the handshake finished (the alert otherwise went
        with the failed handshake), then the socket. Nothing it sent is ever decrypted."""
        if self.closing:
            return
        self.failed = True
        self.closing = True
        self._held.clear()
        if self.tls is not None and self.handshake_complete:
            try:
                self.tls.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.transport.loseConnection()

    def start_relay(self, sink: Callable[[bytes], None]) -> None:
        """The session is accepted and the core leg is up: decrypt and deliver to ``sink``."""
        self._sink = sink
        self.relaying = True
        self._decrypt()  # what arrived with the Finished message
        held, self._held = self._held, []
        for chunk in held:
            if self.closing or self._eof_signalled:
                return
            self._feed(chunk)
        if self.closing:
            return
        if self._ue_eof:
            self._signal_eof()
            return
        self.transport.resumeProducing()

    def _signal_eof(self) -> None:
        self._ue_eof = True
        if not self._eof_signalled and self.relaying:
            self._eof_signalled = True
            self.owner.ue_eof(self)
            self._maybe_close()

    def _maybe_close(self) -> None:
        # Both directions are finished: the connection is over.
        if self._eof_signalled and self._write_done:
            self.transport.loseConnection()

    # -- bytes --

    def dataReceived(self, data: bytes) -> None:
        if self.failed or self.tls is None or self._eof_signalled:
            return  # nothing follows close_notify: whatever does is not kept
        if self.handshake_complete and not self.relaying:
            # Arrived with or after the Finished message: keep the ciphertext (bounded: the
            # transport is paused) until the session is accepted.
            self._held.append(data)
            self.transport.pauseProducing()
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        assert self.tls is not None
        view = memoryview(data)
        for start in range(0, len(view), FEED_SIZE):
            self.tls.bio_write(view[start : start + FEED_SIZE])
            if not self.handshake_complete:
                self._handshake()
                if self.failed:
                    return
                if self.handshake_complete and not self.relaying:
                    # Whatever followed the Finished message stays encrypted (in the BIO and
                    # here) until the owner accepts the session.
                    rest = bytes(view[start + FEED_SIZE :])
                    if rest:
                        self._held.append(rest)
                    return
                if not self.handshake_complete:
                    continue
            self._decrypt()
            if self.closing or self._eof_signalled:
                return

    def _decrypt(self) -> None:
        assert self.tls is not None and self._sink is not None
        # One write towards the core per piece fed, not one per TLS record.
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    plain = self.tls.recv(self.read_size)
                except SSL.WantReadError:
                    self._flush()
                    return
                except SSL.ZeroReturnError:
                    self._flush()
                    if chunks:
                        self._sink(b"".join(chunks))
                        chunks = []
                    self._signal_eof()
                    return
                except SSL.Error as exc:
                    chunks = []
                    self.owner.handshake_failed(self, _reasons(exc))
                    self.transport.abortConnection()
                    return
                if plain:
                    chunks.append(plain)
        finally:
            if chunks:
                self._sink(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def write_to_ue(self, data: bytes) -> None:
        """Encrypt and send plaintext from the core, one record at a time."""
        if self.tls is None or self.closing:
            return
        view = memoryview(data)
        for start in range(0, len(view), PLAIN_SIZE):
            try:
                self.tls.sendall(view[start : start + PLAIN_SIZE])
            except SSL.Error as exc:
                self.owner.handshake_failed(self, _reasons(exc))
                self.transport.abortConnection()
                return
            self._flush()

    def _flush(self) -> None:
        assert self.tls is not None
        while True:
            try:
                out = self.tls.bio_read(FEED_SIZE * 2)
            except SSL.WantReadError:
                return
            if not out:
                return
            self.transport.write(out)

    # -- closing --

    def half_close(self) -> None:
        """The core stopped sending: close_notify and a TCP half-close towards the UE."""
        if self.tls is None or self.closing:
            return
        try:
            self.tls.shutdown()
        except SSL.Error:
            pass
        self._flush()
        self.transport.loseWriteConnection()

    def close(self, *, abort: bool = False) -> None:
        if self.closing and not abort:
            return
        self.closing = True
        if abort:
            self.transport.abortConnection()
            return
        if self.tls is not None and self.handshake_complete:
            try:
                self.tls.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        # TCP FIN without close_notify: treated as the UE's end of data.
        if self.relaying:
            self._signal_eof()
            return
        self._ue_eof = True
        if not self.handshake_complete:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self._write_done = True
        self._maybe_close()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self.owner.leg_lost(self, reason)
