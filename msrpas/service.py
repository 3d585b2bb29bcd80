"""The MSRP AS as a Twisted service (``e2ae msrp-as``): SIP over UDP as a back-to-back user
agent, the KMS over HTTPS, TLS-PSK on both legs of every keyed MSRP and BFCP stream.

One call, as :mod:`msrpas.core` describes it:

1. The caller's INVITE (from the S-CSCF, the AS's Route first) gets 100; the AS reads its
   TRANSFER_INIT, has the KMS resolve the ticket (RESOLVE_INIT as the AS's own identity) and
   verifies the TRANSFER_INIT with the MPK.
2. It requests a ticket of its own for the callee (REQUEST_INIT), listens for the callee's
   TLS-PSK (one port per stream, the callee connects) and sends a new INVITE with its own
   TRANSFER_INIT back to the S-CSCF (the rest of the caller's Route).
3. The callee's 200 is ACKed and its TRANSFER_RESP verified with the AS's MPK; the AS answers
   the caller 200 with a TRANSFER_RESP of its own (its identity as IDRr) and opens the
   caller's leg (listens, or connects where the caller is passive).
4. MSRP frames are re-addressed between the legs (:class:`msrpas.core.MsrpRelay`), BFCP
   passes as it is; no byte of a leg is relayed before its TLS-PSK handshake completed. A BYE
   on either leg ends the other; a failure on one leg of a call ends that call only.

Bounds: ``max_calls`` calls at once (503 beyond), ``setup_timeout`` for the callee to answer
and for each TLS-PSK handshake, ``max_pending`` unverified connections per media port,
``max_buffer`` bytes held for a leg that is not connected yet, 1 MiB per MSRP chunk.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IHandshakeListener,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from certs.psk import DEFAULT_PSK_CIPHERS, psk_context
from certs.tls import KeyLogWriter
from e2ae import msrp
from e2ae.tlsconn import ContextCreator
from kms import client as kms_client
from kms.exchange import KmsUnreachable
from kms.exchange import Post as KmsPost
from kms.exchange import exchange as kms_exchange
from kms.link import KmsLink
from mikey import transfer
from mikey.constants import ErrorNo
from mikey.errors import MikeyError
from mikey.message import Message as MikeyMessage
from mikey.message import decode as mikey_decode
from mikey.payloads import KeyData
from msrpas import core
from pcscf.sdp import KeyMgmt, SessionDescription
from pcscf.sip import Request, Response, make_response
from pcscf.sip.message import Message
from pcscf.udpua import UdpUserAgent

log = Logger(namespace="msrpas")

Address = tuple[str, int]
#: Seconds a call outlives a closed media connection, waiting for the BYE.
BYE_GRACE = 2.0


@attrs.frozen
class AsConfig:
    """The AS's configuration (``e2ae msrp-as``; docs/msrp-as.md)."""

    sip: Address
    next_hop: Address
    media_ip: str
    identity: str
    kms: KmsLink
    max_calls: int = 100
    setup_timeout: float = 10.0
    max_pending: int = 4
    max_buffer: int = 1 << 20
    keylog: Path | None = None
    ciphers: tuple[str, ...] = DEFAULT_PSK_CIPHERS


def key_mgmt_value(message: MikeyMessage) -> str:
    return KeyMgmt("mikey", message.encode()).value()


# ---------------------------------------------------------------------------------------------
# media


@implementer(IHandshakeListener)
class _LegProtocol(Protocol):
    """One TLS-PSK connection of a leg; it speaks for the leg once its handshake completed."""

    def __init__(self, leg: _MediaLeg) -> None:
        self.leg = leg
        self.verified = False

    def handshakeCompleted(self) -> None:
        self.verified = self.leg.attach(self)
        if not self.verified:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.verified:
            self.leg.received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.leg.lost(self, reason)


class _MediaLeg:
    """One side of one stream: the TLS-PSK endpoint of the AS toward a caller or a callee."""

    def __init__(self, stream: _MediaStream, side: core.Side, psk: bytes) -> None:
        self.stream = stream
        self.side = side
        self.psk = psk
        self.port: Any = None
        self.pending: list[_LegProtocol] = []
        self.conn: _LegProtocol | None = None
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.closed = False

    def factory(self, *, client: bool) -> TLSMemoryBIOFactory:
        owner = self.stream.call.owner
        ctx = psk_context(
            "client" if client else "server",
            self.psk,
            ciphers=owner.config.ciphers,
            keylog=owner.keylog,
        )
        leg = self

        class _Factory(Factory):
            def buildProtocol(self, addr: Any) -> Protocol | None:
                if (
                    leg.closed
                    or leg.conn is not None
                    or len(leg.pending) >= owner.config.max_pending
                ):
                    return None
                proto = _LegProtocol(leg)
                leg.pending.append(proto)
                owner.later(owner.config.setup_timeout, leg.expire, proto)
                return proto

        return TLSMemoryBIOFactory(ContextCreator(ctx), client, _Factory())

    def listen(self) -> int:
        reactor = self.stream.call.owner.reactor
        self.port = reactor.listenTCP(
            0, self.factory(client=False), interface=self.stream.call.owner.config.media_ip
        )
        return int(self.port.getHost().port)

    def connect(self, host: str, port: int) -> None:
        reactor = self.stream.call.owner.reactor
        reactor.connectTCP(
            host,
            port,
            self.factory(client=True),
            timeout=self.stream.call.owner.config.setup_timeout,
        )

    def expire(self, proto: _LegProtocol) -> None:
        if proto in self.pending and not proto.verified:
            log.warn(
                "msrp-as: {call_id} {stream} {side}: no TLS-PSK handshake in time",
                call_id=self.stream.call.caller_id,
                stream=self.stream.kind,
                side=self.side,
            )
            proto.transport.abortConnection()  # type: ignore[attr-defined]

    def attach(self, proto: _LegProtocol) -> bool:
        if proto in self.pending:
            self.pending.remove(proto)
        if self.closed or self.conn is not None:
            return False
        self.conn = proto
        if self.port is not None:  # one peer per leg: stop taking connections
            self.port.stopListening()
            self.port = None
        peer = proto.transport.getPeer()  # type: ignore[attr-defined]
        log.info(
            "msrp-as: {call_id} {stream} {side}: TLS-PSK verified with {peer}",
            call_id=self.stream.call.caller_id,
            stream=self.stream.kind,
            side=self.side,
            peer=f"{peer.host}:{peer.port}",
        )
        for data in self.held:
            proto.transport.write(data)  # type: ignore[attr-defined]
        self.held.clear()
        self.held_bytes = 0
        return True

    def send(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.conn is not None:
            self.conn.transport.write(data)  # type: ignore[attr-defined]
            return
        self.held_bytes += len(data)
        if self.held_bytes > self.stream.call.owner.config.max_buffer:
            self.stream.fail(f"more than {self.held_bytes} bytes for a {self.side} not connected")
            return
        self.held.append(data)

    def received(self, data: bytes) -> None:
        self.stream.relay(self.side, data)

    def lost(self, proto: _LegProtocol, reason: Failure) -> None:
        if proto in self.pending:
            self.pending.remove(proto)
            if not proto.verified:
                log.warn(
                    "msrp-as: {call_id} {stream} {side}: TLS-PSK refused: {error}",
                    call_id=self.stream.call.caller_id,
                    stream=self.stream.kind,
                    side=self.side,
                    error=reason.getErrorMessage()[:200],
                )
            return
        if proto is self.conn:
            self.conn = None
            self.stream.leg_closed(self.side)

    def close(self) -> None:
        self.closed = True
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        for proto in [*self.pending, *([self.conn] if self.conn else [])]:
            proto.transport.loseConnection()  # type: ignore[attr-defined]


class _MediaStream:
    """One keyed stream of a call: its two legs and the relay between them."""

    def __init__(self, call: _Call, kind: core.Kind) -> None:
        self.call = call
        self.kind = kind
        self.legs: dict[core.Side, _MediaLeg] = {}
        self.msrp: core.MsrpRelay | None = None
        self.bytes = {"caller": 0, "callee": 0}

    def relay(self, side: core.Side, data: bytes) -> None:
        other: core.Side = "callee" if side == "caller" else "caller"
        self.bytes[side] += len(data)
        if self.msrp is None:
            self.legs[other].send(data)
            return
        try:
            out = self.msrp.receive(side, data)
        except (msrp.MsrpError, core.RemoteAsError) as exc:
            self.fail(f"{side}: {exc}")
            return
        self.legs[other].send(out)

    def leg_closed(self, side: core.Side) -> None:
        """A leg's connection closed: the call ends, after a grace time for the BYE that
        usually follows (a UE closes its media as it hangs up)."""
        call = self.call
        reason = f"the {side}'s {self.kind} connection closed"

        def end() -> None:
            if not call.ended:
                call.owner.end_call(call, reason)

        call.owner.later(BYE_GRACE, end)

    def fail(self, reason: str) -> None:
        log.warn(
            "msrp-as: {call_id} {stream}: {error}",
            call_id=self.call.caller_id,
            stream=self.kind,
            error=reason,
        )
        self.call.owner.end_call(self.call, reason)

    def close(self) -> None:
        for leg in self.legs.values():
            leg.close()


# ---------------------------------------------------------------------------------------------
# calls


@attrs.define(eq=False)
class _Call:
    owner: MsrpAsService
    invite: Request
    caller_addr: Address
    caller: core.Leg
    callee: core.Leg | None = None
    callee_invite: Request | None = None
    streams: list[_MediaStream] = attrs.field(factory=list)
    final: Response | None = None
    acked: bool = False
    cancelled: bool = False
    ended: bool = False

    @property
    def caller_id(self) -> str:
        return self.caller.call_id


class MsrpAsService(service.Service):
    """The MSRP AS (see the module's docstring)."""

    def __init__(
        self,
        config: AsConfig,
        *,
        reactor: Any = None,
        post: KmsPost | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if post is None:
            from kms.cli import post as kms_post

            post = kms_post
        self.config = config
        self.reactor = reactor
        self._post = post
        self.keylog = KeyLogWriter(config.keylog) if config.keylog else None
        self.calls: dict[str, _Call] = {}
        self._by_callee: dict[str, _Call] = {}
        #: Calls that ended in the last 32 s, by both Call-IDs: a BYE that crossed ours gets 200.
        self._ended: dict[str, _Call] = {}
        self.sip = UdpUserAgent(
            reactor,
            "msrp-as",
            self._request,
            on_stray=self._stray,
            answered=4 * config.max_calls + 64,
        )
        self.kms_exchanges: list[str] = []
        self.relayed: list[dict[str, Any]] = []

    # -- lifecycle

    @property
    def address(self) -> Address:
        return self.sip.address

    @property
    def contact(self) -> str:
        host, port = self.address
        return f"<sip:msrp-as@{host}:{port}>"

    def startService(self) -> None:
        super().startService()
        host, port = self.config.sip
        self.sip.listen(host, port)
        log.info(
            "msrp-as: {identity} on {address}, next hop {next_hop}, KMS {kms}",
            identity=self.config.identity,
            address="{}:{}".format(*self.address),
            next_hop="{}:{}".format(*self.config.next_hop),
            kms="{}:{}".format(*self.config.kms.address),
        )

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        for call in list(self.calls.values()):
            self.end_call(call, "the AS stops")
        if not self.sip.listening:
            return None
        d: defer.Deferred[None] = self.sip.stop()
        return d

    def later(self, delay: float, f: Callable[..., object], *args: Any) -> None:
        """``reactor.callLater``, cancelled when the service stops."""
        self.sip.later(delay, f, *args)

    # -- SIP transport (pcscf.udpua)

    def _via(self) -> str:
        return self.sip.via(core.new_branch())

    def send(self, message: Message, dest: Address) -> None:
        self.sip.send(message, dest)

    def _respond(self, request: Request, response: Response, addr: Address) -> None:
        self.sip.respond(request, response, addr)

    def request(self, request: Request, dest: Address) -> defer.Deferred[Response]:
        """Send ``request`` (not ACK) over UDP with RFC 3261 retransmissions, until its final
        response or 32 s (a TimeoutError)."""
        return self.sip.request(request, dest)

    def _stray(self, response: Response) -> None:
        """A 2xx retransmitted by the callee: ACK it again."""
        call = self._by_callee.get(response.call_id) or self._ended.get(response.call_id)
        if call is not None and call.callee is not None and 200 <= response.status < 300:
            if response.cseq[1] == "INVITE":
                self._ack_callee(call)

    # -- requests

    def _request(self, request: Request, addr: Address) -> None:
        method = request.method
        if method == "INVITE" and request.to.tag is None:
            self._invite(request, addr)
        elif method == "ACK":
            call = self.calls.get(request.call_id)
            if call is not None:
                call.acked = True
        elif method == "BYE":
            self._bye(request, addr)
        elif method == "CANCEL":
            self._cancel(request, addr)
        elif request.to.tag is None:
            response = make_response(
                request, 405, to_tag=core.new_tag(), extra=[("Allow", "INVITE, ACK, BYE, CANCEL")]
            )
            self._respond(request, response, addr)
        else:
            self._respond(request, make_response(request, 481), addr)

    def _invite(self, invite: Request, addr: Address) -> None:
        call = self.calls.get(invite.call_id) or self._ended.get(invite.call_id)
        if call is not None:  # a retransmission (of a call that may have ended since)
            response = call.final or make_response(invite, 100)
            self.send(response, invite.top_via.response_address())
            return
        if len(self.calls) >= self.config.max_calls:
            self.send(
                make_response(invite, 503, to_tag=core.new_tag(), extra=[("Retry-After", "5")]),
                invite.top_via.response_address(),
            )
            log.warn(
                "msrp-as: {call_id} refused: {max} calls held",
                call_id=invite.call_id,
                max=self.config.max_calls,
            )
            return
        call = _Call(self, invite, addr, core.caller_leg(invite))
        self.calls[invite.call_id] = call
        self.send(make_response(invite, 100), invite.top_via.response_address())
        d = defer.Deferred.fromCoroutine(self._setup(call))
        d.addErrback(self._setup_failed, call)

    def _setup_failed(self, failure: Failure, call: _Call) -> None:
        log.failure("msrp-as: {call_id}: setting up failed", failure, call_id=call.caller_id)
        self._refuse(call, 500, f"UNSPECIFIED: {failure.getErrorMessage()}")

    def _refuse(self, call: _Call, status: int, warning: str | None) -> None:
        if call.final is None:
            log.warn(
                "msrp-as: {call_id} refused {status}: {error}",
                call_id=call.caller_id,
                status=status,
                error=warning,
            )
            call.final = core.answer(
                call.invite, call.caller, status, contact=self.contact, warning=warning
            )
            self.send(call.final, call.invite.top_via.response_address())
        self.end_call(call, warning or str(status), bye=False)

    async def _kms(self, request: MikeyMessage) -> tuple[MikeyMessage, tuple[KeyData, ...]]:
        self.kms_exchanges.append(request.data_type.name)
        try:
            return await kms_exchange(self.config.kms, request, self._post)
        except KmsUnreachable as exc:
            raise MikeyError(ErrorNo.UNSPECIFIED, f"the KMS: {exc}") from None

    async def _setup(self, call: _Call) -> None:
        me = self.config.identity
        offer = call.invite.body
        # 1. the caller's TRANSFER_INIT, resolved and verified
        try:
            streams = core.keyed_streams(offer, offer=True)
            if not streams:
                raise core.RemoteAsError("no TCP/TLS/MSRP or TCP/TLS/BFCP stream", where="SDP")
            init = mikey_decode(SessionDescription.parse(offer).tls_key_mgmt("mikey"))
            now = float(self.reactor.seconds())
            info = core.read_inbound(init, me=me, streams=len(streams), now=now)
            kms = self.config.kms
            resolve = kms_client.resolve_init(
                me, kms.key, info.ticket, now, kms=kms.identity, csb_id=info.csb_id
            )
            _, keys = await self._kms(resolve)
            mpk_a, tgks_a = kms_client.ticket_keys(keys)
            callee = core.check_inbound(info, mpk_a)
            # 2. a ticket of the AS's own for the callee
            now = float(self.reactor.seconds())
            request = kms_client.request_init(
                me, kms.key, (callee,), now, kms=kms.identity, sessions=len(streams)
            )
            reply, keys_b = await self._kms(request)
            ticket_b = kms_client.ticket_of(reply)
            mpk_b, tgks_b = kms_client.ticket_keys(keys_b)
            spis = [kms_client.tgk_spi(n) for n in range(1, len(streams) + 1)]
            init_b = transfer.transfer_init(
                me, callee, ticket_b, mpk_b, spis, now, csb_id=reply.header.csb_id
            )
            psks_b = transfer.session_psks(init_b, tgks_b, ticket_flags=ticket_b.policy.flags)
        except MikeyError as exc:
            self._refuse(call, 488, kms_client.mikey_warning(exc))
            return
        except (core.RemoteAsError, ValueError) as exc:
            self._refuse(call, 488, f"UNSPECIFIED: {exc}")
            return
        if call.ended:
            return
        log.info(
            "msrp-as: {call_id} from {initiator} to {callee}: ticket resolved, re-originated",
            call_id=call.caller_id,
            initiator=info.initiator,
            callee=callee,
        )
        # 3. the callee's leg: listen, offer
        for cs_id, stream in enumerate(streams, start=1):
            media = _MediaStream(call, stream.kind)
            media.legs["callee"] = _MediaLeg(media, "callee", psks_b[cs_id])
            call.streams.append(media)
        ports_b = {
            s.index: m.legs["callee"].listen() for s, m in zip(streams, call.streams, strict=True)
        }
        uri_b = core.msrp_uri(self.config.media_ip, _msrp_port(streams, ports_b))
        plan_b = core.LegPlan(
            self.config.media_ip,
            ports_b,
            {s.index: core.offered_setup(s) for s in streams},
            uri_b,
            key_mgmt_value(init_b),
        )
        session_id = secrets.randbelow(1 << 31)
        body_b = core.rewrite_sdp(offer, plan_b, session_id=session_id)
        routes = _routes_after_ours(call.invite, self.address)
        invite_b, leg_b = core.callee_invite(
            call.invite, via=self._via(), contact=self.contact, routes=routes, body=body_b
        )
        call.callee, call.callee_invite = leg_b, invite_b
        self._by_callee[leg_b.call_id] = call
        try:
            response = await self.request(invite_b, self.config.next_hop)
        except TimeoutError:
            self._refuse(call, 408, "the callee did not answer")
            return
        if call.ended:
            if 200 <= response.status < 300:
                core.callee_answered(leg_b, response)
                self._ack_callee(call)
                self.send(core.in_dialog(leg_b, "BYE", via=self._via()), core.next_hop(leg_b))
            return
        if response.status >= 300:
            warning = response.get("Warning")
            self._forward_failure(call, response.status, response.reason, warning)
            return
        # 4. the callee's answer: ACK, its TRANSFER_RESP
        core.callee_answered(leg_b, response)
        self._ack_callee(call)
        try:
            answer_b = response.body
            resp_b = mikey_decode(SessionDescription.parse(answer_b).tls_key_mgmt("mikey"))
            transfer.verify_transfer_resp(resp_b, init_b, mpk_b)
            answered = core.keyed_streams(answer_b, offer=False)
            if [s.index for s in answered] != [s.index for s in streams]:
                raise core.RemoteAsError(
                    "the answer's TLS streams are not the offer's", where="SDP"
                )
            for s in answered:
                if not s.port or s.setup != "active":
                    raise core.RemoteAsError(
                        f"the callee's {s.kind} stream: port {s.port}, a=setup:{s.setup}",
                        where="SDP",
                    )
            # 5. the caller's leg: our TRANSFER_RESP, its PSKs, listen or connect
            resp_a = transfer.transfer_resp(info, me, mpk_a, float(self.reactor.seconds()))
            psks_a = transfer.session_psks(
                info.message,
                tgks_a,
                ticket_flags=info.ticket.policy.flags,
                randrr=transfer.randrr_of(resp_a),
            )
        except MikeyError as exc:
            self._bye_callee(call)
            self._refuse(call, 488, "callee: " + kms_client.mikey_warning(exc))
            return
        except (core.RemoteAsError, ValueError) as exc:
            self._bye_callee(call)
            self._refuse(call, 488, f"UNSPECIFIED: callee: {exc}")
            return
        ports_a: dict[int, int] = {}
        setups_a: dict[int, core.Setup] = {}
        for cs_id, (s_a, media) in enumerate(zip(streams, call.streams, strict=True), start=1):
            leg = _MediaLeg(media, "caller", psks_a[cs_id])
            media.legs["caller"] = leg
            setups_a[s_a.index] = core.answering_setup(s_a)
            ports_a[s_a.index] = leg.listen() if setups_a[s_a.index] == "passive" else 9
        uri_a = core.msrp_uri(self.config.media_ip, _msrp_port(streams, ports_a))
        for s_a, s_b, media in zip(streams, answered, call.streams, strict=True):
            if media.kind == "msrp":
                media.msrp = core.MsrpRelay(
                    core.MsrpLeg(uri_a, s_a.path),
                    core.MsrpLeg(uri_b, s_b.path),
                    max_body_bytes=self.config.max_buffer,
                )
        plan_a = core.LegPlan(
            self.config.media_ip, ports_a, setups_a, uri_a, key_mgmt_value(resp_a)
        )
        body_a = core.rewrite_sdp(answer_b, plan_a, session_id=session_id)
        call.final = core.answer(call.invite, call.caller, 200, contact=self.contact, body=body_a)
        self.send(call.final, call.invite.top_via.response_address())
        self.sip.retransmit_2xx(call.invite, call.final, lambda: call.acked or call.ended)
        for s_a, media in zip(streams, call.streams, strict=True):
            if setups_a[s_a.index] == "active":
                host = s_a.host or call.caller_addr[0]
                media.legs["caller"].connect(host, s_a.port)
        log.info(
            "msrp-as: {call_id} answered: TLS-PSK terminated here for {streams}",
            call_id=call.caller_id,
            streams=", ".join(m.kind for m in call.streams),
        )

    def _ack_callee(self, call: _Call) -> None:
        leg = call.callee
        assert leg is not None
        ack = core.in_dialog(leg, "ACK", via=self._via(), cseq=leg.invite_cseq)
        self.send(ack, core.next_hop(leg))

    def _bye_callee(self, call: _Call) -> None:
        leg = call.callee
        if leg is not None and leg.remote_tag is not None:
            bye = core.in_dialog(leg, "BYE", via=self._via())
            self.request(bye, core.next_hop(leg)).addErrback(lambda _: None)

    def _forward_failure(self, call: _Call, status: int, reason: str, warning: str | None) -> None:
        log.warn(
            "msrp-as: {call_id}: the callee answered {status} {reason}",
            call_id=call.caller_id,
            status=status,
            reason=reason,
        )
        extra = [("Warning", warning)] if warning else []
        call.final = make_response(
            call.invite, status, reason, to_tag=call.caller.local_tag, extra=extra
        )
        self.send(call.final, call.invite.top_via.response_address())
        self.end_call(call, f"{status} {reason}", bye=False)

    def _bye(self, bye: Request, addr: Address) -> None:
        call = self.calls.get(bye.call_id) or self._by_callee.get(bye.call_id)
        if call is None:
            call = self._ended.get(bye.call_id)
        if call is None:
            self._respond(bye, make_response(bye, 481), addr)
            return
        self._respond(bye, make_response(bye, 200), addr)
        from_caller = bye.call_id == call.caller_id
        self.end_call(
            call, "BYE from the " + ("caller" if from_caller else "callee"), skip=bye.call_id
        )

    def _cancel(self, cancel: Request, addr: Address) -> None:
        call = self.calls.get(cancel.call_id)
        if call is None or call.invite.top_via.branch != cancel.top_via.branch:
            self._respond(cancel, make_response(cancel, 481), addr)
            return
        self._respond(cancel, make_response(cancel, 200), addr)
        if call.final is not None:
            return
        call.cancelled = True
        if call.callee_invite is not None and call.callee_invite.top_via.branch in self._client:
            self.request(core.cancel_of(call.callee_invite), self.config.next_hop).addErrback(
                lambda _: None
            )
        call.final = make_response(call.invite, 487, to_tag=call.caller.local_tag)
        self.send(call.final, call.invite.top_via.response_address())
        self.end_call(call, "CANCEL from the caller", bye=False)

    def end_call(
        self, call: _Call, reason: str, *, bye: bool = True, skip: str | None = None
    ) -> None:
        """End ``call``: close its media, BYE each confirmed leg but ``skip``'s (or none)."""
        if call.ended:
            return
        call.ended = True
        for media in call.streams:
            media.close()
            self.relayed.append({"call_id": call.caller_id, "stream": media.kind, **media.bytes})
            if len(self.relayed) > 1000:
                del self.relayed[0]
        if bye:
            if skip != call.caller_id and call.final is not None and call.final.status < 300:
                request = core.in_dialog(call.caller, "BYE", via=self._via())
                self.request(request, core.next_hop(call.caller)).addErrback(lambda _: None)
            if call.callee is not None and skip != call.callee.call_id:
                self._bye_callee(call)
        self.calls.pop(call.caller_id, None)
        self._ended[call.caller_id] = call
        self.later(32.0, self._ended.pop, call.caller_id, None)
        if call.callee is not None:
            self._by_callee.pop(call.callee.call_id, None)
            self._ended[call.callee.call_id] = call
            self.later(32.0, self._ended.pop, call.callee.call_id, None)
        while len(self._ended) > 4 * self.config.max_calls:
            self._ended.pop(next(iter(self._ended)))
        log.info("msrp-as: {call_id} ended: {reason}", call_id=call.caller_id, reason=reason)


def _msrp_port(streams: list[core.Stream], ports: dict[int, int]) -> int:
    for s in streams:
        if s.kind == "msrp":
            return ports[s.index]
    return 9


def _routes_after_ours(invite: Request, ours: Address) -> list[str]:
    """The caller's Route set without the AS's own entry (where the S-CSCF sent it)."""
    from pcscf.sip import NameAddr

    out: list[str] = []
    for value in invite.values("Route"):
        uri = NameAddr.parse(value, "Route").sip_uri("Route")
        if (uri.host, uri.port) == ours or uri.user == "msrp-as":
            continue
        out.append(value)
    return out


def build(config: AsConfig, *, reactor: Any = None, **kw: Any) -> MsrpAsService:
    """The MSRP AS, ready to start (``e2ae msrp-as``, the demo and the tests use this)."""
    return MsrpAsService(config, reactor=reactor, **kw)
