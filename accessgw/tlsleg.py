"""The access leg: TLS towards the UE over a plain Twisted TCP transport (Twisted edge).

The AGW builds its own :class:`OpenSSL.SSL.Connection` (memory BIOs) from the 3GPP profile
context, so that it decides when ciphertext is decrypted: the UE's certificate is checked during
the handshake (verify callback: a wrong one gets a TLS alert) and again at handshake completion
(the authoritative check), and not one application byte is decrypted, let alone relayed, before
the termination has accepted the session. Until then the socket is paused: the kernel holds what
the UE sends (bounded, TCP flow control), nothing is dropped.

Speed and memory: each socket read goes to OpenSSL in one piece and comes out as one write
towards the core (and the other way round), so the per-record work stays in C. OpenSSL's
memory BIOs keep the largest amount they ever held, though, so a connection that moved more
than one record through them gets fresh, empty BIOs (``_renew_bios``) at the end of a burst:
both BIOs drained and the last read shorter than the read size (the socket had no more). Not
after every read of a bulk transfer (each renewal frees and allocates a read's worth: a
quarter more CPU per GiB), and not later on a timer (freed late, the buffers of many sessions
scatter through the heap and stay resident). The context releases its record buffers when
idle (``SSL_MODE_RELEASE_BUFFERS``). An idle session after a burst therefore keeps a few tens
of KiB, not a multiple of the burst.
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

#: Largest plaintext one TLS record carries (what one ``recv`` can return).
PLAIN_SIZE = 16384
#: Bytes through the memory BIOs since they were last renewed above which they are renewed.
RENEW_AFTER = PLAIN_SIZE + 325

try:
    # The binding pyOpenSSL itself uses: renewing a connection's memory BIOs needs it, and
    # pyOpenSSL has no public call for it. Without it the BIOs are kept (more memory, same
    # behaviour).
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _CAN_RENEW = all(hasattr(_lib, n) for n in ("BIO_new", "BIO_s_mem", "SSL_set_bio"))
except ImportError:  # pragma: no cover - depends on the pyOpenSSL version
    _CAN_RENEW = False


def _renew_bios(tls: SSL.Connection) -> bool:
    """Give ``tls`` new, empty memory BIOs; OpenSSL frees the old ones. Only when both are
    empty: nothing waits in the read BIO, everything in the write BIO has been sent."""
    if not _CAN_RENEW or getattr(tls, "_into_ssl", None) is None:
        return False
    into = _lib.BIO_new(_lib.BIO_s_mem())
    out = _lib.BIO_new(_lib.BIO_s_mem())
    if into == _ffi.NULL or out == _ffi.NULL:  # pragma: no cover - out of memory
        for bio in (into, out):
            if bio != _ffi.NULL:
                _lib.BIO_free(bio)
        return False
    _lib.SSL_set_bio(tls._ssl, into, out)
    tls._into_ssl, tls._from_ssl = into, out
    return True


_DER = Encoding.DER
#: Largest piece asked of the write BIO at once (below glibc's default mmap threshold).
_FLUSH_SIZE = 64 * 1024
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
        self._through_bios = 0  # bytes through the memory BIOs since they were renewed
        self._into_empty = True  # OpenSSL has taken everything written into its read BIO
        self._last_read_full = False  # the last read from the UE took all the read size

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
        self.tls.bio_write(data)
        self._into_empty = False
        self._through_bios += len(data)
        self._last_read_full = len(data) >= self.read_size
        if not self.handshake_complete:
            self._handshake()
            if self.failed or not self.handshake_complete or not self.relaying:
                # Whatever followed the Finished message stays encrypted in the BIO until
                # the owner accepts the session (start_relay).
                return
        self._decrypt()

    def _decrypt(self) -> None:
        assert self.tls is not None and self._sink is not None
        recv = self.tls.recv
        # One write towards the core per read from the UE, not one per TLS record.
        chunks: list[bytes] = []
        eof = False
        while True:
            try:
                chunks.append(recv(PLAIN_SIZE))
            except SSL.WantReadError:
                self._into_empty = True
                break
            except SSL.ZeroReturnError:
                eof = True
                break
            except SSL.Error as exc:
                self._flush()
                self.owner.handshake_failed(self, _reasons(exc))
                self.transport.abortConnection()
                return
        self._flush()
        if chunks:
            self._sink(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof:
            self._signal_eof()
        elif not self._last_read_full:
            self._maybe_renew()

    def write_to_ue(self, data: bytes) -> None:
        """Encrypt plaintext from the core (OpenSSL cuts it into records) and send it."""
        if self.tls is None or self.closing:
            return
        try:
            self.tls.sendall(data)
        except SSL.Error as exc:
            self.owner.handshake_failed(self, _reasons(exc))
            self.transport.abortConnection()
            return
        self._through_bios += len(data)
        self._flush()
        if len(data) < self.read_size:  # the core leg's read did not fill: a burst's end
            self._maybe_renew()

    def _flush(self) -> None:
        assert self.tls is not None
        out: list[bytes] = []
        while True:
            try:
                data = self.tls.bio_read(_FLUSH_SIZE)
            except SSL.WantReadError:
                break
            if not data:
                break
            out.append(data)
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _maybe_renew(self) -> None:
        # Both BIOs are empty here: the read BIO when the last recv wanted more (nothing is fed
        # but what is then decrypted, except while a session waits to be accepted), the write
        # BIO after every _flush. Fresh ones lose nothing and free the grown buffers.
        if self._through_bios > RENEW_AFTER and self._into_empty and self.tls is not None:
            if _renew_bios(self.tls):
                self._through_bios = 0

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
