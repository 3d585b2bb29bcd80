"""The access leg: TLS towards the UE over a plain Twisted TCP transport (Twisted edge).

The AGW builds its own :class:`OpenSSL.SSL.Connection` (memory BIOs) from the 3GPP profile
context, so that it decides when ciphertext is decrypted: the UE's certificate is checked during
the handshake (verify callback: a wrong one gets a TLS alert) and again at handshake completion
(the authoritative check), and not one application byte is decrypted, let alone relayed, before
the termination has accepted the session. Until then the socket is paused: the kernel holds what
the UE sends (bounded, TCP flow control), nothing is dropped.

Speed and memory: each socket read goes to OpenSSL in one piece and comes out as one write
towards the core (and the other way round); the per-record loops are C calls
(:mod:`accessgw.bio`). OpenSSL's memory BIOs keep the largest amount they ever held, though,
so a connection that moved more than one record through them gets fresh, empty BIOs
(:func:`accessgw.bio.renew_bios`) at the end of a burst:
both BIOs drained and the last read shorter than the read size (the socket had no more). Not
after every read of a bulk transfer (each renewal frees and allocates a read's worth: a
quarter more CPU per GiB), and not later on a timer (freed late, the buffers of many sessions
scatter through the heap and stay resident). The context releases its record buffers when
idle (``SSL_MODE_RELEASE_BUFFERS``). An idle session after a burst therefore keeps a few tens
of KiB, not a multiple of the burst. What OpenSSL has to send goes to the socket at once when
nothing is queued before it (:mod:`accessgw.writethrough`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from OpenSSL import SSL, crypto
from twisted.internet import interfaces
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from accessgw import writethrough
from accessgw.bio import PLAIN_SIZE, drain_output, read_plaintext, renew_bios
from certs.tls import peer_certificate_der

#: Bytes through the memory BIOs since they were last renewed above which they are renewed.
RENEW_AFTER = PLAIN_SIZE + 325


_CONNECTION_DONE = Failure(ConnectionDone())


def verify_leaf(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    """The verify callback of the AGW's contexts: asks the access leg the connection belongs
    to (its app data). One callback per context rather than one per connection: pyOpenSSL
    builds a C callback for every ``set_verify``. A connection without a leg is refused."""
    leg = conn.get_app_data()
    if not isinstance(leg, AccessTLSProtocol):
        return False
    return leg._verify(conn, cert, errno, depth, ok)


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
        self._leaf_verdict: bool | None = None

    # -- connection set-up --

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = f"{peer.host}:{peer.port}"
        self.transport.setTcpNoDelay(True)
        self.transport.bufferSize = self.read_size
        tls = SSL.Connection(self.context, None)
        tls.set_app_data(self)  # for verify_leaf, the contexts' verify callback
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
        if self._leaf_verdict is None:  # OpenSSL may ask twice about the same leaf
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
            self._leaf_verdict = self.owner.certificate_presented(self, der)
        return self._leaf_verdict

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
        # One write towards the core per read from the UE, not one per TLS record.
        try:
            data, eof = read_plaintext(self.tls)
        except SSL.Error as exc:
            self._flush()
            self.owner.handshake_failed(self, _reasons(exc))
            self.transport.abortConnection()
            return
        self._into_empty = not eof
        self._flush()
        if data:
            self._sink(data)
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
        out = drain_output(self.tls)
        if out:
            writethrough.write(self.transport, out)

    def _maybe_renew(self) -> None:
        # Both BIOs are empty here: the read BIO when the last recv wanted more (nothing is fed
        # but what is then decrypted, except while a session waits to be accepted), the write
        # BIO after every _flush. Fresh ones lose nothing and free the grown buffers.
        if self._through_bios > RENEW_AFTER and self._into_empty and self.tls is not None:
            if renew_bios(self.tls):
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
        if self.tls is not None:
            self.tls.set_app_data(None)
        self.owner.leg_lost(self, reason)
