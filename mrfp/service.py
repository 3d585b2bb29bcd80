"""The MRFP's media terminations on Twisted: the Mp handler the MRFC drives (``join``,
``connect``, ``start_tls``, ``leave``), TCP and TLS-PSK connections, one
:class:`mrfp.conference.Conference` per Mp context.

One termination is one participant stream (MSRP or BFCP):

- ``join``: a passive termination listens on a port of its own (``media_ip``, port 0), an
  active one remembers the participant's address (if given) and waits for ``connect``; the
  reply gives the local address and, for MSRP, the MRFP's MSRP URI for that participant.
- ``connect``: an active termination opens TCP to the participant (a repeated ``connect`` to
  the same address while that connection is on its way or up is acknowledged, no more).
- TLS (``security="tls-psk"``): the PSK and identity come with the join, the suites must be a
  subset of :data:`certs.psk.ALLOWED_PSK_CIPHERS` (else H.248 error 512). As TLS server the
  MRFP starts the handshake as soon as TCP is up; as TLS client when ``start_tls`` came (the
  handshake begins once both TCP is up and ``start_tls`` was asked). Nothing reaches the
  conference, and nothing is sent to the participant, before the handshake completed; a
  ``plain`` stream joins the conference when TCP is up.
- A handshake that fails (a wrong PSK: the peer's Finished does not verify, a TLS alert),
  or does not complete within ``handshake_timeout``: event ``tls-failed`` with the reason, the
  TCP connection closed; the rest of the conference carries on.
- Renegotiation: the contexts of :func:`certs.psk.psk_context` set
  ``SSL_OP_NO_RENEGOTIATION`` and never ``SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION``, so a
  renegotiation is refused in every case, a legacy (non RFC 5746) one included: the MRFP
  answers the peer's new ClientHello with the ``no_renegotiation`` alert and reports the event
  ``renegotiation-refused``. TS 33.328 asks the MRFP to accept renegotiation only when RFC 5746
  secures it; accepting none meets that. TLS 1.3 has no renegotiation.
- close_notify or a TLS error ends the TCP connection too; event ``closed``.

Events go to ``notify`` (the Mp agent's ``notify``). Requests naming an unknown context are
refused with H.248 error 411, an unknown termination with 430. Bounds: conferences,
terminations, connections being verified per port, the handshake time, bytes queued for a peer
that does not read, and the conference's own bounds. Logs name the conference, participant,
termination and peer; never a key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.psk import ALLOWED_PSK_CIPHERS, MAX_IDENTITY_LEN, MAX_PSK_LEN, psk_context
from certs.tls import KeyLogWriter
from e2ae import msrp
from e2ae.tlsconn import ContextCreator
from iq.errors import (
    InsufficientResources,
    RemoteIqError,
    UnknownContext,
    UnknownTermination,
    UnsupportedValue,
)
from mp.profile import (
    AckReply,
    ConnectRequest,
    Endpoint,
    JoinReply,
    JoinRequest,
    LeaveReply,
    LeaveRequest,
    MpEvent,
    StartTlsRequest,
    StreamStatistics,
)
from mrfp.conference import Conference, ConferenceError, Output, StreamFailed
from mrfp.config import MrfpConfig

log = Logger(namespace="mrfp")

#: H.248.1 error for a request the MRFP is not equipped for (a TLS-PSK suite outside its
#: preconfigured list).
UNEQUIPPED = 512
#: The TLS alert OpenSSL sends to refuse a renegotiation (RFC 5246 7.2.2).
NO_RENEGOTIATION_ALERT = 100
DISCARD_PORT = 9

Notify = Callable[[MpEvent], object]


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _tls_info(conn: SSL.Connection, where: int, ret: int) -> None:
    """The context's info callback: a ``no_renegotiation`` alert we write is a refused
    renegotiation."""
    if where & SSL.SSL_CB_WRITE_ALERT == SSL.SSL_CB_WRITE_ALERT and (
        ret & 0xFF == NO_RENEGOTIATION_ALERT
    ):
        tls = conn.get_app_data()
        proto = getattr(tls, "wrappedProtocol", None)
        if isinstance(proto, _StreamProtocol):
            proto.term.renegotiation_refused()


@implementer(IHandshakeListener, IPushProducer)
class _StreamProtocol(Protocol):
    """One TCP connection of a termination; it speaks for the termination once verified
    (TLS handshake completed, or TCP up for a plain stream)."""

    def __init__(self, term: _Termination) -> None:
        self.term = term
        self.verified = False
        self.tls_started = False
        self.paused = False
        self.held_out = 0
        self.timer: Any = None

    def connectionMade(self) -> None:
        _tr(self).registerProducer(self, True)
        self.term.tcp_up(self)

    def start_tls(self) -> None:
        if self.tls_started:
            return
        self.tls_started = True
        term = self.term
        client = term.request.tls_role == "client"
        # ``normal``: the TLS client is the TCP client (connectTCP) or the TLS server the TCP
        # server (an accepted connection); otherwise the roles are swapped.
        normal = client == (term.request.tcp_role == "active")
        _tr(self).startTLS(ContextCreator(term.tls_context()), normal)

    def handshakeCompleted(self) -> None:
        self.term.handshake_done(self)

    def dataReceived(self, data: bytes) -> None:
        if self.verified:
            self.term.received(data)

    def write(self, data: bytes) -> None:
        if self.paused:
            self.held_out += len(data)
            if self.held_out > self.term.owner.config.max_out_buffer:
                self.term.fail(self, "the peer does not read: output buffer full")
                return
        _tr(self).write(data)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.held_out = 0

    def stopProducing(self) -> None:
        self.paused = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.term.lost(self, reason)


class _Listener(Factory):
    def __init__(self, term: _Termination) -> None:
        self.term = term

    def buildProtocol(self, addr: Any) -> Protocol | None:
        return self.term.accept(addr)


class _Connector(ClientFactory):
    def __init__(self, term: _Termination) -> None:
        self.term = term

    def buildProtocol(self, addr: Any) -> Protocol | None:
        return self.term.accept(addr)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.term.connect_failed(reason)


class _Termination:
    """One participant stream: its listening port or connector, its connections."""

    def __init__(
        self, owner: MrfpHandler, context: _Context, tid: str, request: JoinRequest
    ) -> None:
        self.owner = owner
        self.context = context
        self.id = tid
        self.request = request
        self.port: Any = None
        self.local_port = DISCARD_PORT
        self.remote: Endpoint | None = request.remote
        self.pending: list[_StreamProtocol] = []
        self.conn: _StreamProtocol | None = None
        self.tls_requested = False
        self.connecting = False
        self.closed = False
        self.octets_in = 0
        self.octets_out = 0
        self.final_messages = (0, 0)
        self._ctx: SSL.Context | None = None

    # -- logging

    def _log(self, level: str, text: str, **kw: Any) -> None:
        getattr(log, level)(
            "mrfp: {conference} {participant} {termination} ({media}): " + text,
            conference=self.context.conference.uri,
            participant=self.request.participant,
            termination=self.id,
            media=self.request.media,
            call_id=self.request.call_id,
            **kw,
        )

    def event(self, kind: Any, reason: str = "") -> None:
        if not self.closed:
            self.owner.emit(MpEvent(self.context.id, self.id, kind, reason))

    # -- TLS

    def tls_context(self) -> SSL.Context:
        if self._ctx is None:
            psk = self.request.psk
            role = self.request.tls_role
            assert psk is not None and role is not None
            self._ctx = psk_context(
                role,
                psk.key,
                identity=psk.identity,
                ciphers=psk.ciphersuites,
                keylog=self.owner.keylog,
            )
            self._ctx.set_info_callback(_tls_info)
        return self._ctx

    # -- connections

    def listen(self) -> int:
        reactor = self.owner.reactor
        self.port = reactor.listenTCP(0, _Listener(self), interface=self.owner.config.media_ip)
        self.local_port = int(self.port.getHost().port)
        return self.local_port

    def connect(self, remote: Endpoint) -> None:
        self.remote = remote
        self.connecting = True
        self._log("info", "connecting to {peer}", peer=f"{remote.ip}:{remote.port}")
        self.owner.reactor.connectTCP(
            remote.ip,
            remote.port,
            _Connector(self),
            timeout=self.owner.config.connect_timeout,
            bindAddress=(self.owner.config.media_ip, 0),
        )

    def connect_failed(self, reason: Failure) -> None:
        self.connecting = False
        self._log("warn", "TCP connection failed: {error}", error=reason.getErrorMessage())
        self.event("closed", f"TCP connection failed: {reason.getErrorMessage()}"[:200])

    def accept(self, addr: Any) -> _StreamProtocol | None:
        if self.closed or self.conn is not None:
            return None
        if len(self.pending) >= self.owner.config.max_pending:
            self._log("warn", "refused a connection from {peer}: too many", peer=_peer(addr))
            return None
        proto = _StreamProtocol(self)
        self.pending.append(proto)
        return proto

    def tcp_up(self, proto: _StreamProtocol) -> None:
        peer = _peer(_tr(proto).getPeer())
        self._log("info", "TCP up with {peer}", peer=peer)
        self.event("tcp-established", peer)
        if self.request.security == "plain":
            self.attach(proto)
            return
        timeout = self.owner.config.handshake_timeout
        proto.timer = self.owner.reactor.callLater(timeout, self.expire, proto)
        if self.request.tls_role == "server" or self.tls_requested:
            proto.start_tls()

    def start_tls(self) -> None:
        self.tls_requested = True
        for proto in self.pending:
            proto.start_tls()

    def expire(self, proto: _StreamProtocol) -> None:
        if not proto.verified:
            wait = self.owner.config.handshake_timeout
            self._log("warn", "no TLS handshake within {wait} s", wait=wait)
            self.event("tls-failed", f"no TLS handshake within {wait} s")
            self._drop(proto)
            _tr(proto).abortConnection()

    def handshake_done(self, proto: _StreamProtocol) -> None:
        if proto.timer is not None and proto.timer.active():
            proto.timer.cancel()
        handle = _tr(proto).getHandle()
        suite = handle.get_cipher_name() or "?"
        version = handle.get_protocol_version_name() or "?"
        self._log(
            "info", "TLS-PSK handshake completed: {version} {suite}", version=version, suite=suite
        )
        self.event("tls-established", f"{version} {suite}")
        self.attach(proto)

    def attach(self, proto: _StreamProtocol) -> None:
        if proto in self.pending:
            self.pending.remove(proto)
        if self.closed or self.conn is not None:
            _tr(proto).abortConnection()
            return
        proto.verified = True
        self.conn = proto
        for other in self.pending:
            _tr(other).abortConnection()
        self.pending.clear()
        if self.port is not None:  # one peer per termination: stop taking connections
            self.port.stopListening()
            self.port = None
        self.owner.deliver(self.context, self.context.conference.up(self.id))

    def received(self, data: bytes) -> None:
        self.octets_in += len(data)
        now = float(self.owner.reactor.seconds())
        conference = self.context.conference
        try:
            out = conference.receive(self.id, data, now)
        except StreamFailed as exc:
            self.owner.deliver(self.context, exc.output)
            if self.conn is not None:
                self.fail(self.conn, exc.reason)
            return
        self.owner.deliver(self.context, out)
        self.owner.deliver(self.context, conference.expire(now))

    def send(self, data: bytes) -> None:
        if self.conn is not None and data and not self.closed:
            self.octets_out += len(data)
            self.conn.write(data)

    def fail(self, proto: _StreamProtocol, reason: str) -> None:
        self._log("warn", "closing the stream: {error}", error=reason)
        _tr(proto).abortConnection()

    def renegotiation_refused(self) -> None:
        self._log("warn", "refused a TLS renegotiation (no_renegotiation alert)")
        self.event("renegotiation-refused", "renegotiation is not accepted")

    def _drop(self, proto: _StreamProtocol) -> None:
        if proto in self.pending:
            self.pending.remove(proto)

    def lost(self, proto: _StreamProtocol, reason: Failure) -> None:
        why = reason.getErrorMessage()[:200]
        self.connecting = False
        if proto is not self.conn:
            was_pending = proto in self.pending
            self._drop(proto)
            if was_pending and proto.tls_started and not self.closed:
                self._log("warn", "TLS-PSK handshake failed: {error}", error=why)
                self.event("tls-failed", why or "the connection closed during the handshake")
            elif was_pending and not self.closed:
                self.event("closed", why)
            return
        self.conn = None
        self._log("info", "connection closed: {reason}", reason=why)
        self.event("closed", why)
        if not self.closed:
            self.final_messages = self.messages()
            self.owner.deliver(self.context, self.context.conference.remove(self.id))

    def messages(self) -> tuple[int, int]:
        """(messages received, messages sent), kept once the stream left the conference."""
        if self.id in self.context.conference.members:
            return self.context.conference.statistics(self.id)
        return self.final_messages

    def close(self) -> None:
        """Leave: stop listening, close the connection (TLS close_notify, then TCP)."""
        self.closed = True
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        for proto in [*self.pending, *([self.conn] if self.conn else [])]:
            if proto.timer is not None and proto.timer.active():
                proto.timer.cancel()
            # TLS sends close_notify only once no producer is registered.
            _tr(proto).unregisterProducer()
            _tr(proto).loseConnection()
        self.pending.clear()


def _tr(proto: Protocol) -> Any:
    """A connection's transport (TCP, TLS once started): untyped in Twisted's interfaces."""
    return proto.transport


def _peer(addr: Any) -> str:
    host = getattr(addr, "host", "?")
    port = getattr(addr, "port", "?")
    return f"{host}:{port}"


class _Context:
    def __init__(self, cid: int, conference: Conference) -> None:
        self.id = cid
        self.conference = conference
        self.terminations: dict[str, _Termination] = {}


class MrfpHandler:
    """The MRFP's Mp handler (``join``, ``connect``, ``start_tls``, ``leave``; see the module's
    docstring). ``notify`` receives the events (set it to the Mp agent's ``notify``)."""

    def __init__(
        self, config: MrfpConfig, *, reactor: Any = None, notify: Notify | None = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.notify = notify
        self.keylog = KeyLogWriter(config.keylog) if config.keylog else None
        self.contexts: dict[int, _Context] = {}
        self._by_uri: dict[str, int] = {}
        self._context_ids = itertools.count(1)
        self._termination_ids = itertools.count(1)
        #: Every event emitted (the last 1000), for tests and the demo.
        self.events: list[MpEvent] = []

    # -- events and output

    def emit(self, event: MpEvent) -> None:
        self.events.append(event)
        del self.events[:-1000]
        if self.notify is None:
            return
        try:
            result = self.notify(event)
        except Exception as exc:
            log.warn("mrfp: notifying {event} failed: {error}", event=event.kind, error=str(exc))
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(
                lambda f: log.warn(
                    "mrfp: notifying {event} failed: {error}",
                    event=event.kind,
                    error=f.getErrorMessage(),
                )
            )

    def deliver(self, context: _Context, out: Output) -> None:
        for note in out.notes:
            term = context.terminations.get(note.termination)
            log.info(
                "mrfp: {conference} {termination} {kind}: {text}",
                conference=context.conference.uri,
                termination=note.termination,
                participant=term.request.participant if term else None,
                kind=note.kind,
                text=note.text,
            )
        for send in out.sends:
            target = context.terminations.get(send.termination)
            if target is not None:
                target.send(send.data)

    # -- lookup

    def _context(self, cid: int) -> _Context:
        context = self.contexts.get(cid)
        if context is None:
            raise UnknownContext(f"no context {cid}")
        return context

    def _termination(self, cid: int, tid: str) -> _Termination:
        term = self._context(cid).terminations.get(tid)
        if term is None:
            raise UnknownTermination(f"no termination {tid} in context {cid}", where=tid)
        return term

    @property
    def termination_count(self) -> int:
        return sum(len(c.terminations) for c in self.contexts.values())

    # -- MpHandler

    def join(self, request: JoinRequest) -> JoinReply:
        _check_join(request)
        if self.termination_count >= self.config.max_terminations:
            raise InsufficientResources(f"{self.config.max_terminations} terminations held")
        created = False
        if request.context is None:
            cid = self._by_uri.get(request.conference)
            if cid is None:
                created = True
                if len(self.contexts) >= self.config.max_conferences:
                    raise RemoteIqError(f"{self.config.max_conferences} conferences held", code=412)
                cid = next(self._context_ids)
                conference = Conference(
                    request.conference, frozenset(request.floors), limits=self.config.limits
                )
                self.contexts[cid] = _Context(cid, conference)
                self._by_uri[request.conference] = cid
            context = self.contexts[cid]
        else:
            context = self._context(request.context)
            if context.conference.uri != request.conference:
                raise UnsupportedValue(
                    f"context {context.id} is conference {context.conference.uri},"
                    f" not {request.conference}"
                )
        conference = context.conference
        conference.floors = conference.floors | frozenset(request.floors)
        tid = f"{request.media}/{next(self._termination_ids)}"
        term = _Termination(self, context, tid, request)
        ip = self.config.media_ip
        local_path: str | None = None
        try:
            if request.media == "msrp":
                if request.tcp_role == "passive":
                    term.listen()
                local_path = f"msrp://{_uri_host(ip)}:{term.local_port}/{msrp.new_ident()};tcp"
                conference.add_msrp(
                    tid,
                    request.participant,
                    local_path,
                    request.remote_path,
                    active=request.tcp_role == "active",
                )
            else:
                assert request.bfcp_user is not None
                conference.add_bfcp(tid, request.participant, request.bfcp_user)
                if request.tcp_role == "passive":
                    term.listen()
        except (ConferenceError, msrp.LocalMsrpError) as exc:
            term.close()
            if created:
                del self.contexts[context.id]
                self._by_uri.pop(request.conference, None)
            if isinstance(exc, ConferenceError):
                raise InsufficientResources(str(exc)) from None
            raise UnsupportedValue(f"MSRP path: {exc}") from None
        context.terminations[tid] = term
        term._log(
            "info",
            "joined: {tcp_role} TCP, {security}{tls}, local {local}",
            tcp_role=request.tcp_role,
            security=request.security,
            tls=f" as TLS {request.tls_role}" if request.tls_role else "",
            local=f"{ip}:{term.local_port}",
        )
        return JoinReply(context.id, tid, Endpoint(ip, term.local_port), local_path)

    def connect(self, request: ConnectRequest) -> AckReply:
        term = self._termination(request.context, request.termination)
        if term.request.tcp_role != "active":
            raise UnsupportedValue(f"{term.id} is passive: it does not connect", where=term.id)
        if term.connecting or term.conn is not None or term.pending:
            if term.remote == request.remote:
                return AckReply()  # a repeated Connect: the connection is on its way or up
            raise UnsupportedValue(f"{term.id} is connected already", where=term.id)
        term.connect(request.remote)
        return AckReply()

    def start_tls(self, request: StartTlsRequest) -> AckReply:
        term = self._termination(request.context, request.termination)
        if term.request.security != "tls-psk" or term.request.tls_role != "client":
            raise UnsupportedValue(f"{term.id} is not a TLS client", where=term.id)
        term.start_tls()
        return AckReply()

    def leave(self, request: LeaveRequest) -> LeaveReply:
        context = self._context(request.context)
        term = self._termination(request.context, request.termination)
        messages_in, messages_out = term.messages()
        term.close()
        del context.terminations[term.id]
        self.deliver(context, context.conference.remove(term.id))
        term._log("info", "left")
        if not context.terminations:
            del self.contexts[context.id]
            self._by_uri.pop(context.conference.uri, None)
        return LeaveReply(
            StreamStatistics(term.octets_in, term.octets_out, messages_in, messages_out)
        )

    def stop(self) -> None:
        """Close every termination."""
        for context in list(self.contexts.values()):
            for term in list(context.terminations.values()):
                term.close()
        self.contexts.clear()
        self._by_uri.clear()


def _check_join(request: JoinRequest) -> None:
    if request.media not in ("msrp", "bfcp"):
        raise UnsupportedValue(f"media {request.media!r}")
    if request.tcp_role not in ("active", "passive"):
        raise UnsupportedValue(f"TCP role {request.tcp_role!r}")
    if request.media == "bfcp" and request.bfcp_user is None:
        raise UnsupportedValue("a BFCP stream needs the participant's BFCP user id")
    if request.security == "plain":
        if request.psk is not None:
            raise UnsupportedValue("a PSK for a plain stream")
        return
    if request.security != "tls-psk":
        raise UnsupportedValue(f"security {request.security!r}")
    psk = request.psk
    if request.tls_role not in ("client", "server") or psk is None:
        raise UnsupportedValue("a TLS-PSK stream needs its TLS role and its PSK")
    suites = psk.ciphersuites
    if not suites or any(s not in ALLOWED_PSK_CIPHERS for s in suites):
        raise RemoteIqError(
            f"TLS-PSK suites {', '.join(suites) or '(none)'} are not among the preconfigured"
            f" {', '.join(ALLOWED_PSK_CIPHERS)}",
            code=UNEQUIPPED,
        )
    if not 0 < len(psk.key) <= MAX_PSK_LEN:
        raise UnsupportedValue(f"the PSK must be 1 to {MAX_PSK_LEN} bytes")
    if len(psk.identity) > MAX_IDENTITY_LEN or b"\0" in psk.identity:
        raise UnsupportedValue(f"the PSK identity must be at most {MAX_IDENTITY_LEN} bytes")
