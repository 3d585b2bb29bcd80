"""The lab's media endpoints over Twisted: MSRP and BFCP, over TLS (UE side) or plain TCP (core).

Thin edges around :mod:`e2ae.msrp` and :mod:`e2ae.bfcp`. One :class:`MediaEndpoint` connects
(``a=setup:active``: TCP and TLS client) or listens (``passive``: TCP and TLS server) and
hands out connections once they are usable:

- plain TCP (the core stub): as soon as TCP is up;
- TLS (a UE, :class:`UeTls`): after the handshake, when the certificate the peer presented
  matches one of the fingerprints of the SDP the UE received (``certs.matching_fingerprint``,
  constant-time). A peer without a certificate or with another one is dropped before a single
  application byte is sent or used; a listening UE goes on waiting for the right peer.
- TLS-PSK (a UE whose stream is protected end to end with keys from the KMS, :class:`UePsk`,
  TS 33.328 Annex H): after the handshake, which only a peer holding the same pre-shared key (the
  TEK) can complete (``certs.psk``: TLS 1.2, plain PSK AEAD suites, empty PSK identity, no
  certificate). A wrong key fails the handshake with an alert before a single application byte
  is sent or used; a listening UE goes on waiting for the right peer. The key is never logged
  and never in a ``repr``.

Connections: :class:`MsrpConnection` (send a message, wait for N messages, 200s and REPORTs
answered automatically), :class:`BfcpClientConnection` (Hello, request/release a floor,
Goodbye), :class:`BfcpServerConnection` (a floor control server that grants every request).
Each counts application bytes both ways; the endpoint sums them over its connections.

Misbehaviour knobs for negative tests (:class:`UeTls` ``present``): ``"other"`` presents a
certificate that is not the one in the SDP, ``"none"`` presents no certificate at all.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import attrs
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

import certs
from certs.psk import ALLOWED_PSK_CIPHERS, DEFAULT_PSK_CIPHERS, psk_context
from certs.tls import KeyLogWriter, make_context, peer_certificate_der
from e2ae import bfcp, msrp
from e2ae.tcpmedia import TlsRole
from e2ae.tlsconn import ContextCreator

Present = Literal["own", "other", "none"]


class MediaError(Exception):
    """Root of the media endpoint errors."""


class RemoteMediaError(MediaError):
    """The peer did something wrong (bad certificate, malformed MSRP/BFCP, refused request)."""


class PeerNotVerified(RemoteMediaError):
    """The TLS peer presented no certificate or one that matches no SDP fingerprint, or (TLS-PSK)
    the handshake failed: the peer does not hold the same key."""

    def __init__(self, reason: str, *, peer: str, fingerprint: str | None) -> None:
        super().__init__(f"TLS peer {peer} refused: {reason} (presented {fingerprint or 'none'})")
        self.reason = reason
        self.peer = peer
        self.fingerprint = fingerprint


class ConnectionClosed(MediaError):
    """The connection ended before what was waited for happened."""


class DeliveryFailed(RemoteMediaError):
    """The MSRP peer answered a chunk of our message with an error status."""

    def __init__(self, message_id: str, status: int, comment: str | None) -> None:
        super().__init__(f"message {message_id} refused: {status} {comment or ''}".rstrip())
        self.message_id = message_id
        self.status = status
        self.comment = comment


class FloorNotGranted(RemoteMediaError):
    """The floor control server answered with an Error, or a status other than Granted."""

    def __init__(self, reason: str, *, code: int | None = None, status: int | None = None):
        super().__init__(reason)
        self.code = code
        self.status = status


class LocalMediaError(MediaError):
    """Bad configuration of an endpoint."""


# ---------------------------------------------------------------------------------------------
# TLS


@attrs.frozen
class UeTls:
    """TLS settings of a UE media endpoint.

    ``peer_fingerprints``: the ``a=fingerprint`` values of the SDP the UE received (the AGW's);
    ``present``: ``"own"`` (``identity``), ``"other"`` (``other_identity``, a fresh certificate
    if not given) or ``"none"``.
    """

    identity: certs.CertAndKey
    peer_fingerprints: tuple[certs.Fingerprint, ...]
    present: Present = "own"
    other_identity: certs.CertAndKey | None = None
    accepted_hash_funcs: tuple[str, ...] | None = None
    keylog: KeyLogWriter | None = None

    def context(self, role: TlsRole) -> SSL.Context:
        identity = self.identity
        if self.present == "other":
            identity = self.other_identity or certs.generate(
                "impostor", now=datetime.datetime.now(datetime.UTC)
            )
        return make_context(
            identity, role, keylog=self.keylog, present_certificate=self.present != "none"
        )

    def check(self, der: bytes | None) -> tuple[certs.Fingerprint | None, str | None]:
        """(matched SDP fingerprint, None) or (None, why the peer is refused)."""
        if der is None:
            return None, "no certificate"
        found = certs.matching_fingerprint(
            der, self.peer_fingerprints, accepted=self.accepted_hash_funcs
        )
        if found is None:
            return None, "certificate does not match the SDP fingerprint"
        return found, None


def _keylog_writer(keylog: KeyLogWriter | Path | None) -> KeyLogWriter | None:
    return KeyLogWriter(keylog) if isinstance(keylog, Path) else keylog


def _check_psk_settings(settings: UePsk) -> None:
    if not isinstance(settings.psk, bytes):
        raise TypeError("the PSK must be bytes")
    # psk_context checks the key's length and the suites, naming the problem (never the key).
    psk_context("server", settings.psk, ciphers=settings.ciphers)


@attrs.frozen
class UePsk:
    """TLS-PSK settings of a UE media endpoint (TS 33.328 Annex H).

    ``psk``: the pre-shared key, the TEK that the KMS's MIKEY-TICKET exchange gave for this
    stream (1 to 64 bytes); both ends must hold the same one. ``keylog``: a
    :class:`~certs.tls.KeyLogWriter` or the path of an NSS key log file (for Wireshark).
    ``ciphers``: the TLS 1.2 PSK suites offered, a subset of
    :data:`certs.psk.ALLOWED_PSK_CIPHERS`. The PSK identity is the empty string and no
    certificate is sent or asked for (Annex H.2). The key is left out of ``repr``.
    """

    psk: bytes = attrs.field(repr=False)
    keylog: KeyLogWriter | None = attrs.field(default=None, converter=_keylog_writer)
    ciphers: tuple[str, ...] = DEFAULT_PSK_CIPHERS

    def __attrs_post_init__(self) -> None:
        _check_psk_settings(self)

    def context(self, role: TlsRole) -> SSL.Context:
        return psk_context(role, self.psk, ciphers=self.ciphers, keylog=self.keylog)


# ---------------------------------------------------------------------------------------------
# Small Deferred helpers

T = TypeVar("T")


class _Waiters(Generic[T]):
    """Many callers wait for one outcome."""

    def __init__(self) -> None:
        self._waiting: list[defer.Deferred[T]] = []
        self._result: tuple[bool, Any] | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def wait(self) -> defer.Deferred[T]:
        if self._result is not None:
            ok, value = self._result
            return defer.succeed(value) if ok else defer.fail(value)
        d: defer.Deferred[T] = defer.Deferred()
        self._waiting.append(d)
        return d

    def fire(self, value: T) -> None:
        self._settle(True, value)

    def fail(self, failure: Failure | Exception) -> None:
        self._settle(False, failure if isinstance(failure, Failure) else Failure(failure))

    def _settle(self, ok: bool, value: Any) -> None:
        if self._result is not None:
            return
        self._result = (ok, value)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if ok:
                d.callback(value)
            else:
                d.errback(value)


# ---------------------------------------------------------------------------------------------
# Connections


@implementer(IHandshakeListener)
class MediaConnection(Protocol):
    """What every media connection shares: verification, counters, ready/closed, close()."""

    log = Logger()
    stream = "media"

    def __init__(self) -> None:
        self.tls: UeTls | UePsk | None = None
        self.endpoint: MediaEndpoint[Any] | None = None
        self.verified = False
        self.peer_fingerprint: certs.Fingerprint | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peer = "?"
        self.outgoing = False
        self._ready: _Waiters[Any] = _Waiters()
        self._closed: _Waiters[None] = _Waiters()
        self._refusal: Exception | None = None

    @property
    def call_id(self) -> str | None:
        return None if self.endpoint is None else self.endpoint.call_id

    def _log(self, level: str, fmt: str, **fields: Any) -> None:
        fields.setdefault("stream", self.stream)
        fields.setdefault("peer", self.peer)
        getattr(self.log, level)(fmt, call_id=self.call_id, **fields)

    # -- life cycle ---------------------------------------------------------------------------

    def connectionMade(self) -> None:
        address = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
        try:
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        except Exception:  # noqa: S110 - not a TCP transport (tests)
            pass
        if self.tls is None:
            self._verified()

    def handshakeCompleted(self) -> None:
        assert self.tls is not None
        if isinstance(self.tls, UePsk):
            self._psk_handshake_completed()
            return
        der = peer_certificate_der(self.transport.getHandle())  # type: ignore[union-attr]
        found, problem = self.tls.check(der)
        presented = None if der is None else certs.fingerprint_of(der, "sha-256").value
        if problem is not None:
            self._refusal = PeerNotVerified(problem, peer=self.peer, fingerprint=presented)
            self._log(
                "warn",
                "{stream}: TLS peer {peer} refused: {reason} (presented {fingerprint})",
                stream=self.stream,
                peer=self.peer,
                reason=problem,
                fingerprint=presented,
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.peer_fingerprint = found
        self._log(
            "info",
            "{stream}: TLS peer {peer} verified with {fingerprint}",
            stream=self.stream,
            peer=self.peer,
            fingerprint=None if found is None else found.value,
        )
        self._verified()

    def _psk_handshake_completed(self) -> None:
        # Completing the handshake proves the peer holds the key (both Finished messages are
        # keyed by it); the context allows nothing but the PSK suites, checked here once more.
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        cipher = handle.get_cipher_name()
        version = handle.get_protocol_version_name()
        if cipher not in ALLOWED_PSK_CIPHERS:
            problem = f"negotiated {cipher} ({version}), not a TLS-PSK suite"
            self._refusal = PeerNotVerified(problem, peer=self.peer, fingerprint=None)
            self._log(
                "warn",
                "{stream}: TLS-PSK peer {peer} refused: {reason}",
                reason=problem,
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._log(
            "info",
            "{stream}: TLS-PSK peer {peer} verified by the key ({version}, {cipher})",
            version=version,
            cipher=cipher,
        )
        self._verified()

    def _verified(self) -> None:
        self.verified = True
        self.on_verified()
        self._ready.fire(self)
        if self.endpoint is not None:
            self.endpoint._connection_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.verified:
            # Cannot happen with TLSMemoryBIOProtocol (the handshake completes first); never
            # use a byte from an unverified peer anyway.
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.bytes_received += len(data)
        if self.endpoint is not None:
            self.endpoint.bytes_received += len(data)
        self.on_data(data)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self.verified:
            raise LocalMediaError("nothing may be sent before the peer is verified")
        self.bytes_sent += len(data)
        if self.endpoint is not None:
            self.endpoint.bytes_sent += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionClosed())) -> None:  # noqa: B008
        psk = isinstance(self.tls, UePsk)
        if self.tls is not None and not self.verified and (psk or not self.outgoing):
            if self._refusal is None:
                # The handshake itself failed (no certificate, no common version or suite; with
                # TLS-PSK also a wrong key, on either TCP role).
                security = "TLS-PSK" if psk else "TLS"
                self._refusal = PeerNotVerified(
                    f"{security} handshake failed: {reason.getErrorMessage()}",
                    peer=self.peer,
                    fingerprint=None,
                )
                self._log(
                    "warn",
                    "{stream}: {security} peer {peer} refused: handshake failed ({reason})",
                    security=security,
                    reason=reason.getErrorMessage(),
                )
        error = self._refusal or ConnectionClosed(
            f"{self.stream} connection to {self.peer} closed: {reason.getErrorMessage()}"
        )
        if self._refusal is None:
            self._log(
                "info",
                "{stream}: connection with {peer} closed ({reason}); "
                "{bytes_sent} bytes sent, {bytes_received} received",
                reason=reason.getErrorMessage(),
                bytes_sent=self.bytes_sent,
                bytes_received=self.bytes_received,
            )
        if self.endpoint is not None:
            # Counted first, so that whoever waits on this connection sees the refusal counted.
            self.endpoint._connection_lost(self, self._refusal)
        self._ready.fail(error)
        self.on_closed(error)
        self._closed.fire(None)

    def _unusable(self) -> Exception:
        if self._closed.done:
            return self._refusal or ConnectionClosed(
                f"{self.stream} connection to {self.peer} is closed"
            )
        return LocalMediaError(f"{self.stream} connection to {self.peer} is not ready")

    # -- public API ---------------------------------------------------------------------------

    def when_ready(self) -> defer.Deferred[Any]:
        """Fires with this connection once usable (TLS peer verified), or fails."""
        return self._ready.wait()

    def when_closed(self) -> defer.Deferred[None]:
        return self._closed.wait()

    def close(self) -> defer.Deferred[None]:
        """Close gracefully (after pending writes); fires when the connection is gone."""
        if not self._closed.done and self.transport is not None:
            self.transport.loseConnection()
        return self.when_closed()

    def abort(self) -> defer.Deferred[None]:
        if not self._closed.done and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        return self.when_closed()

    # -- hooks --------------------------------------------------------------------------------

    def on_verified(self) -> None:
        pass

    def on_data(self, data: bytes) -> None:
        pass

    def on_closed(self, error: Exception) -> None:
        pass


class MsrpConnection(MediaConnection):
    """An MSRP session over one connection."""

    stream = "msrp"

    def __init__(self, session: msrp.MsrpSession) -> None:
        super().__init__()
        self.session = session
        self.received: list[msrp.MessageReceived] = []
        self.reports: list[msrp.ReportReceived] = []
        self.peer_errors: list[msrp.RemoteMsrpError] = []
        self._delivery: dict[str, _Waiters[str]] = {}
        self._count_waiters: list[tuple[int, defer.Deferred[list[msrp.MessageReceived]]]] = []

    def send_message(
        self,
        body: bytes,
        content_type: str = "text/plain",
        *,
        success_report: bool = False,
        failure_report: msrp.FailureReport = "yes",
        chunk_size: int | None = None,
    ) -> defer.Deferred[str]:
        """Send one message (chunked); fires with its Message-ID once every chunk got its 200
        (at once when ``failure_report`` is not ``yes``), fails with :class:`DeliveryFailed`."""
        if not self.verified or self._closed.done:
            return defer.fail(self._unusable())
        mid = self.session.send_message(
            body,
            content_type,
            success_report=success_report,
            failure_report=failure_report,
            chunk_size=chunk_size,
        )
        self.write(self.session.data_to_send())
        if failure_report != "yes":
            return defer.succeed(mid)
        waiters: _Waiters[str] = _Waiters()
        self._delivery[mid] = waiters
        return waiters.wait()

    def wait_messages(self, count: int) -> defer.Deferred[list[msrp.MessageReceived]]:
        """Fires with the first ``count`` messages received (at once if they are already in)."""
        if len(self.received) >= count:
            return defer.succeed(self.received[:count])
        d: defer.Deferred[list[msrp.MessageReceived]] = defer.Deferred()
        self._count_waiters.append((count, d))
        return d

    def on_data(self, data: bytes) -> None:
        try:
            events = self.session.receive_data(data)
        except msrp.RemoteMsrpError as exc:
            self.peer_errors.append(exc)
            self._log(
                "warn",
                "msrp: closing connection to {peer}: {error}",
                peer=self.peer,
                error=str(exc),
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        finally:
            if self.transport is not None and self.verified:
                self.write(self.session.data_to_send())
        for event in events:
            self._event(event)

    def _event(self, event: msrp.SessionEvent) -> None:
        if isinstance(event, msrp.MessageReceived):
            self.received.append(event)
            self._log(
                "info",
                "msrp: message {message_id} from {peer}: {size} bytes of {content_type}",
                message_id=event.message_id,
                peer=self.peer,
                size=len(event.body),
                content_type=event.content_type,
            )
            ready = [(n, d) for n, d in self._count_waiters if len(self.received) >= n]
            self._count_waiters = [w for w in self._count_waiters if w not in ready]
            for n, d in ready:
                d.callback(self.received[:n])
        elif isinstance(event, msrp.MessageDelivered):
            waiter = self._delivery.pop(event.message_id, None)
            if waiter is not None:
                waiter.fire(event.message_id)
        elif isinstance(event, msrp.MessageFailed):
            waiter = self._delivery.pop(event.message_id, None)
            if waiter is not None:
                waiter.fail(DeliveryFailed(event.message_id, event.status, event.comment))
        elif isinstance(event, msrp.ReportReceived):
            self.reports.append(event)
        elif isinstance(event, msrp.PeerError):
            self.peer_errors.append(event.error)
            self._log(
                "warn",
                "msrp: bad frame from {peer} answered: {error}",
                peer=self.peer,
                error=str(event.error),
            )

    def on_closed(self, error: Exception) -> None:
        for waiter in self._delivery.values():
            waiter.fail(error)
        self._delivery.clear()
        waiting, self._count_waiters = self._count_waiters, []
        for _, d in waiting:
            d.errback(error)


class _BfcpConnection(MediaConnection):
    stream = "bfcp"

    def __init__(self) -> None:
        super().__init__()
        self.framer = bfcp.BfcpFramer()
        self.received: list[bfcp.Message] = []
        self.peer_errors: list[bfcp.RemoteBfcpError] = []

    def send(self, message: bfcp.Message) -> None:
        self.write(message.to_bytes())

    def on_data(self, data: bytes) -> None:
        self.framer.feed(data)
        while self.transport is not None:
            try:
                message = self.framer.next_message()
            except bfcp.RemoteBfcpError as exc:
                self.peer_errors.append(exc)
                self._log(
                    "warn", "bfcp: bad message from {peer}: {error}", peer=self.peer, error=str(exc)
                )
                answer = exc.error_message()
                if answer is not None:
                    self.send(answer)
                if not exc.recoverable:
                    self.transport.loseConnection()
                    return
                continue
            if message is None:
                return
            self.received.append(message)
            self.on_message(message)

    def on_message(self, message: bfcp.Message) -> None:
        pass


class BfcpServerConnection(_BfcpConnection):
    """One participant's connection to the floor control server (shared per endpoint)."""

    def __init__(self, server: bfcp.FloorControlServer) -> None:
        super().__init__()
        self.server = server

    def on_message(self, message: bfcp.Message) -> None:
        for reply in self.server.handle(message):
            self._log(
                "info",
                "bfcp: {request} from user {user_id} -> {reply}",
                request=message.primitive.name,
                user_id=message.user_id,
                reply=reply.primitive.name,
            )
            self.send(reply)


@attrs.frozen
class FloorGrant:
    """A floor the server granted us."""

    floor_request_id: int
    floor_ids: tuple[int, ...]


class BfcpClientConnection(_BfcpConnection):
    """A floor participant (``a=floorctrl:c-only``) talking to a floor control server."""

    def __init__(self, conference_id: int, user_id: int) -> None:
        super().__init__()
        self.client = bfcp.FloorControlClient(conference_id, user_id)
        self.grants: list[FloorGrant] = []
        self._pending: dict[int, tuple[bfcp.Primitive, defer.Deferred[Any]]] = {}
        self._awaiting_grant: dict[int, defer.Deferred[Any]] = {}

    def _request(self, message: bfcp.Message) -> defer.Deferred[Any]:
        if not self.verified or self._closed.done:
            return defer.fail(self._unusable())
        d: defer.Deferred[Any] = defer.Deferred()
        self._pending[message.transaction_id] = (message.primitive, d)
        self.send(message)
        return d

    def hello(self) -> defer.Deferred[bfcp.Message]:
        """Hello; fires with the HelloAck."""
        return self._request(self.client.hello())

    def request_floor(self, *floor_ids: int) -> defer.Deferred[FloorGrant]:
        """FloorRequest; fires with the grant (in the response or a later FloorRequestStatus)."""
        return self._request(self.client.floor_request(floor_ids))

    def release_floor(self, floor_request_id: int) -> defer.Deferred[bfcp.Message]:
        """FloorRelease; fires with the FloorRequestStatus (Released)."""
        return self._request(self.client.floor_release(floor_request_id))

    def goodbye(self) -> defer.Deferred[bfcp.Message]:
        """Goodbye; fires with the GoodbyeAck."""
        return self._request(self.client.goodbye())

    def on_message(self, message: bfcp.Message) -> None:
        pending = self._pending.pop(message.transaction_id, None)
        if message.primitive == bfcp.Primitive.ERROR:
            if pending is not None:
                code = message.first(bfcp.AttrType.ERROR_CODE)
                info = message.first(bfcp.AttrType.ERROR_INFO)
                number = code.code if isinstance(code, bfcp.ErrorCode) else None
                text = info.text if isinstance(info, bfcp.Text) else ""
                pending[1].errback(FloorNotGranted(f"error {number}: {text}", code=number))
            return
        if message.primitive == bfcp.Primitive.FLOOR_REQUEST_STATUS:
            self._floor_status(message, pending)
            return
        if pending is not None:
            pending[1].callback(message)

    def _floor_status(
        self, message: bfcp.Message, pending: tuple[bfcp.Primitive, defer.Deferred[Any]] | None
    ) -> None:
        status = bfcp.request_status_of(message)
        if status is None:
            return
        request_id, value, floors = status
        if pending is not None and pending[0] != bfcp.Primitive.FLOOR_REQUEST:
            pending[1].callback(message)  # FloorRelease answered
            return
        waiter = pending[1] if pending is not None else self._awaiting_grant.pop(request_id, None)
        if waiter is None:
            return
        if value == bfcp.RequestStatusValue.GRANTED:
            grant = FloorGrant(request_id, tuple(floors))
            self.grants.append(grant)
            waiter.callback(grant)
        elif value in (bfcp.RequestStatusValue.PENDING, bfcp.RequestStatusValue.ACCEPTED):
            self._awaiting_grant[request_id] = waiter
        else:
            waiter.errback(
                FloorNotGranted(f"floor request {request_id}: status {value}", status=value)
            )

    def on_closed(self, error: Exception) -> None:
        waiting = [d for _, d in self._pending.values()] + list(self._awaiting_grant.values())
        self._pending.clear()
        self._awaiting_grant.clear()
        for d in waiting:
            d.errback(error)


# ---------------------------------------------------------------------------------------------
# Endpoints

C = TypeVar("C", bound=MediaConnection)


class _Factory(ClientFactory):
    def __init__(self, endpoint: MediaEndpoint[Any]) -> None:
        self.endpoint = endpoint

    def buildProtocol(self, addr: Any) -> MediaConnection:
        return self.endpoint._build()


class MediaEndpoint(Generic[C]):
    """Connects or listens for one kind of media connection, over TLS when ``tls`` is given
    (:class:`UeTls`: certificates pinned by SDP fingerprint; :class:`UePsk`: TLS-PSK).

    ``connect()`` is the ``a=setup:active`` side (TCP and TLS client), ``listen()`` the
    ``passive`` side (TCP and TLS server); ``accepted()`` fires with the next verified
    connection. Peers refused during TLS verification (TLS-PSK: a failed handshake, on either
    role) are counted in ``refused``.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        make_connection: Callable[[], C],
        *,
        tls: UeTls | UePsk | None = None,
        label: str = "media",
        call_id: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.call_id = call_id
        self.make_connection = make_connection
        self.tls = tls
        self.label = label
        self.connections: list[C] = []
        self.refused: list[PeerNotVerified] = []
        self.bytes_sent = 0
        self.bytes_received = 0
        self._listening: IListeningPort | None = None
        self._accepted: list[C] = []
        self._accept_waiters: list[defer.Deferred[C]] = []

    # -- plumbing -----------------------------------------------------------------------------

    def _build(self) -> C:
        conn = self.make_connection()
        conn.tls = self.tls
        conn.endpoint = self
        self.connections.append(conn)
        return conn

    def _factory(self, role: TlsRole) -> Factory:
        inner = _Factory(self)
        if self.tls is None:
            return inner
        creator = ContextCreator(self.tls.context(role))
        return TLSMemoryBIOFactory(creator, role == "client", inner)

    def _connection_ready(self, conn: MediaConnection) -> None:
        if conn.outgoing:
            return
        if self._accept_waiters:
            self._accept_waiters.pop(0).callback(conn)
        else:
            self._accepted.append(conn)  # type: ignore[arg-type]

    def _connection_lost(self, conn: MediaConnection, refusal: Exception | None) -> None:
        if isinstance(refusal, PeerNotVerified):
            self.refused.append(refusal)

    # -- public API ---------------------------------------------------------------------------

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> int:
        """Listen (``a=setup:passive``); returns the port number (0 picks a free one)."""
        if self._listening is not None:
            raise LocalMediaError(f"{self.label} endpoint already listening")
        self._listening = self.reactor.listenTCP(port, self._factory("server"), interface=interface)
        bound: int = self._listening.getHost().port  # type: ignore[attr-defined]
        self.log.info(
            "{stream}: listening on {interface}:{port} ({security})",
            call_id=self.call_id,
            stream=self.label,
            interface=interface,
            port=bound,
            security=_security(self.tls),
        )
        return bound

    def accepted(self) -> defer.Deferred[C]:
        """The next accepted, verified connection."""
        if self._accepted:
            return defer.succeed(self._accepted.pop(0))
        d: defer.Deferred[C] = defer.Deferred()
        self._accept_waiters.append(d)
        return d

    def connect(self, host: str, port: int, *, timeout: float = 10) -> defer.Deferred[C]:
        """Connect (``a=setup:active``); fires with the verified connection, or fails
        (connection refused, :class:`PeerNotVerified`, TLS handshake failure)."""
        result: defer.Deferred[C] = defer.Deferred()
        factory = self._factory("client")

        class _Connector(ClientFactory):
            def buildProtocol(inner_self, addr: Any) -> Any:
                proto = factory.buildProtocol(addr)
                conn = proto.wrappedProtocol if hasattr(proto, "wrappedProtocol") else proto
                conn.outgoing = True
                conn.when_ready().chainDeferred(result)
                return proto

            def clientConnectionFailed(inner_self, connector: Any, reason: Failure) -> None:
                if not result.called:
                    result.errback(reason)

        self.reactor.connectTCP(host, port, _Connector(), timeout=timeout)
        return result

    @property
    def port(self) -> int | None:
        if self._listening is None:
            return None
        port: int = self._listening.getHost().port  # type: ignore[attr-defined]
        return port

    def summary(self) -> dict[str, Any]:
        """Counters for a demo summary (JSON-ready; fingerprints as ``"<hash> <HEX:...>"``)."""
        verified = [c for c in self.connections if c.verified]
        return {
            "stream": self.label,
            "tls": self.tls is not None,
            "connections": len(self.connections),
            "verified": len(verified),
            "refused": len(self.refused),
            "peer_fingerprints": sorted(
                {c.peer_fingerprint.value for c in verified if c.peer_fingerprint is not None}
            ),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close every connection."""
        waits: list[defer.Deferred[Any]] = []
        if self._listening is not None:
            waits.append(defer.maybeDeferred(self._listening.stopListening))
            self._listening = None
        for conn in self.connections:
            waits.append(conn.abort())
        for d in self._accept_waiters:
            d.errback(ConnectionClosed(f"{self.label} endpoint stopped"))
        self._accept_waiters = []
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)


def _security(tls: UeTls | UePsk | None) -> str:
    if tls is None:
        return "TCP"
    return "TLS-PSK" if isinstance(tls, UePsk) else "TLS"


# ---------------------------------------------------------------------------------------------
# Constructors for the lab roles


def msrp_endpoint(
    reactor: Any,
    *,
    local_uri: str,
    remote_path: Sequence[str] = (),
    tls: UeTls | UePsk | None = None,
    chunk_size: int = msrp.DEFAULT_CHUNK_SIZE,
    check_to_path: bool = True,
    max_message_bytes: int = 16 << 20,
    label: str = "msrp",
    call_id: str | None = None,
) -> MediaEndpoint[MsrpConnection]:
    """An MSRP endpoint: the UE's (with ``tls``: :class:`UeTls` or :class:`UePsk`) or the core
    peer's (plain TCP).

    ``local_uri`` is this side's ``a=path``; ``remote_path`` the peer's (learnt from the first
    request when empty)."""

    def make() -> MsrpConnection:
        session = msrp.MsrpSession(
            local_uri,
            tuple(remote_path),
            chunk_size=chunk_size,
            check_to_path=check_to_path,
            max_message_bytes=max_message_bytes,
        )
        return MsrpConnection(session)

    return MediaEndpoint(reactor, make, tls=tls, label=label, call_id=call_id)


def bfcp_client_endpoint(
    reactor: Any,
    *,
    conference_id: int,
    user_id: int,
    tls: UeTls | UePsk | None = None,
    call_id: str | None = None,
) -> MediaEndpoint[BfcpClientConnection]:
    """A floor participant (a UE): ``a=confid`` / ``a=userid`` from the SDP."""
    return MediaEndpoint(
        reactor,
        lambda: BfcpClientConnection(conference_id, user_id),
        tls=tls,
        label="bfcp",
        call_id=call_id,
    )


def bfcp_server_endpoint(
    reactor: Any,
    *,
    conference_id: int,
    floors: Iterable[int] | None = None,
    tls: UeTls | UePsk | None = None,
) -> tuple[MediaEndpoint[BfcpServerConnection], bfcp.FloorControlServer]:
    """A floor control server (the core stub) granting every request; one state for all its
    connections, returned too."""
    server = bfcp.FloorControlServer(conference_id, None if floors is None else frozenset(floors))
    return MediaEndpoint(
        reactor, lambda: BfcpServerConnection(server), tls=tls, label="bfcp"
    ), server
