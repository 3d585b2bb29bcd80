"""The MRFC as a Twisted service (``e2ae mrfc``): the conference focus over SIP/UDP, the KMS
over HTTPS, and the MRFP's terminations over Mp (:class:`mp.link.MpController`).

Dial-in (a participant INVITEs a conference URI):

1. KMS-keyed offer (``TCP/TLS/MSRP``, ``TCP/TLS/BFCP``, session ``a=key-mgmt:mikey``): the
   MRFC reads the TRANSFER_INIT for the conference URI (or its own identity), has the KMS
   resolve the ticket as its own identity (the KMS decides whether the MRFC may: the ticket
   names the conference, of which the MRFC is a member at the KMS, the MRFC, or anybody),
   verifies it with the MPK, checks that the Initiator (the KMS UID) is on the conference's
   list (403 with a Warning otherwise, Annex G.3.2), derives each crypto session's TLS-PSK.
2. Plain offer from an e2ae participant (Annex G.2, through P-CSCF and AGW): joined as
   ``plain`` when the conference allows it (``allow_plain``), else 488; the identity checked
   is the asserted one.
3. Each stream is joined at the MRFP (:func:`mrfc.core.join_request`), the MRFC answers 200
   with the MRFP's address, ports and path, its ``a=setup`` and (keyed) the TRANSFER_RESP.
   After the ACK, streams where the MRFP is active get a Connect; each TLS client stream gets
   StartTls once the MRFP reports ``tcp-established``.
4. BYE: every stream Leaves. An MRFP event ``tls-failed`` or ``closed`` ends that
   participant's dialog (BYE); the conference and the others carry on.

Dial-out (:meth:`MrfcService.dial_out`): one MSRP m-line keyed by one TLS crypto session;
the ticket from the KMS (``ticket_source = "kms"``) or from the MRFC's own in-process KMS
(``"self"``, served over HTTPS so that the participant can resolve it there).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from certs import load_pair
from iq.config import IqTlsConfig
from iq.errors import IqError
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
from mp.profile import (
    ConnectRequest,
    Endpoint,
    JoinReply,
    JoinRequest,
    LeaveRequest,
    MpEvent,
    PskConfig,
    StartTlsRequest,
)
from mrfc import core
from mrfc.config import MrfcConfig
from pcscf.sdp import KeyMgmt
from pcscf.sip import Request, Response, SipUri, make_response
from pcscf.sip.message import Message
from pcscf.udpua import UdpUserAgent

log = Logger(namespace="mrfc")

Address = tuple[str, int]
#: Seconds a participant outlives a closed media connection, waiting for the BYE that usually
#: follows (a UE closes its media as it hangs up).
BYE_GRACE = 2.0


def key_mgmt_value(message: MikeyMessage) -> str:
    return KeyMgmt("mikey", message.encode()).value()


class DialOutFailed(core.MrfcError):
    """A dial-out that did not set up (the participant refused, or its answer failed a check)."""


@attrs.define(eq=False)
class Stream:
    """One joined stream of a participant: its termination at the MRFP and its roles."""

    media: str
    context: int
    termination: str
    request: JoinRequest
    remote: Endpoint | None


@attrs.define(eq=False)
class Participant:
    """One participant's dialog and streams."""

    conference: core.Conference
    identity: str
    dialog: core.Dialog
    security: str
    outgoing: bool = False
    invite: Request | None = None
    streams: list[Stream] = attrs.field(factory=list)
    final: Response | None = None
    acked: bool = False
    ended: bool = False
    bfcp_user: int | None = None


def mp_controller(config: MrfcConfig, *, reactor: Any, on_event: Callable[[MpEvent], None]) -> Any:
    """The :class:`mp.link.MpController` of ``config`` (TLS with the MRFP pinned, or the
    logged plain opt-in)."""
    from mp.link import MpController

    link = config.mp
    tls = None
    if not link.insecure:
        assert link.cert is not None and link.key_file is not None and link.peer is not None
        tls = IqTlsConfig(load_pair(link.cert, link.key_file), (link.peer,))
    return MpController(
        link.listen[0],
        link.listen[1],
        tls=tls,
        insecure=link.insecure,
        allow=link.allow,
        reactor=reactor,
        on_event=on_event,
    )


class MrfcService(service.Service):
    """The MRFC (see the module's docstring). ``mp``: an object with the MpController's
    ``join``/``connect``/``start_tls``/``leave`` (built from the configuration when ``None``;
    its events must then reach :meth:`mp_event`). ``self_kms``: the in-process KMS service of
    ``ticket_source = "self"`` (built from ``[self_kms]`` when ``None``)."""

    def __init__(
        self,
        config: MrfcConfig,
        *,
        reactor: Any = None,
        post: KmsPost | None = None,
        mp: Any = None,
        self_kms: Any = None,
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
        self._own_mp = mp is None
        self.mp = (
            mp if mp is not None else mp_controller(config, reactor=reactor, on_event=self.mp_event)
        )
        self.self_kms = self_kms
        self._own_kms = False
        if config.ticket_source == "self" and self_kms is None:
            from kms.config import load as load_kms
            from kms.service import build as build_kms

            assert config.self_kms is not None
            self.self_kms = build_kms(load_kms(config.self_kms), reactor=reactor)
            self._own_kms = True
        #: Participants by Call-ID.
        self.participants: dict[str, Participant] = {}
        self._by_termination: dict[tuple[int, str], Participant] = {}
        self._contexts: dict[str, int] = {}
        self._locks: dict[str, defer.DeferredLock] = {}
        self._bfcp_users: dict[str, int] = {}
        self._ended: dict[str, Participant] = {}
        #: Dial-outs in progress per conference URI, not yet in ``participants``.
        self._dialling: dict[str, int] = {}
        self.sip = UdpUserAgent(reactor, "mrfc", self._request, on_stray=self._stray)
        self.kms_exchanges: list[str] = []
        #: Leave statistics of the streams that ended: (call_id, media, StreamStatistics).
        self.left: list[tuple[str, str, Any]] = []
        self.mp_port: int | None = None

    # -- lifecycle

    @property
    def address(self) -> Address:
        return self.sip.address

    @property
    def contact(self) -> str:
        host, port = self.address
        return f"<sip:mrfc@{host}:{port}>"

    def startService(self) -> None:
        super().startService()
        host, port = self.config.sip
        self.sip.listen(host, port)
        if self._own_mp:
            self.mp_port = self.mp.listen()
        if self._own_kms:
            self.self_kms.startService()
        log.info(
            "mrfc: {identity} on {address}, conferences {conferences}, tickets from {source}",
            identity=self.config.identity,
            address="{}:{}".format(*self.address),
            conferences=", ".join(c.uri for c in self.config.conferences),
            source=self.config.ticket_source,
        )

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        for p in list(self.participants.values()):
            self.end(p, "the MRFC stops", bye=False)
        waits: list[defer.Deferred[Any]] = []
        waits.append(self.sip.stop())
        if self._own_mp:
            waits.append(defer.maybeDeferred(self.mp.stop))
        if self._own_kms:
            waits.append(defer.maybeDeferred(self.self_kms.stopService))
        done: defer.Deferred[None] = defer.gatherResults(waits, consumeErrors=True).addCallback(
            lambda _: None
        )
        return done

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
        """Send ``request`` (not ACK) with RFC 3261 retransmissions until its final response
        or 32 s (TimeoutError)."""
        return self.sip.request(request, dest)

    def _stray(self, response: Response) -> None:
        """A 2xx a dialled-out participant sends again: ACK it again."""
        p = self.participants.get(response.call_id) or self._ended.get(response.call_id)
        if p is not None and p.outgoing and 200 <= response.status < 300:
            if response.cseq[1] == "INVITE":
                self._ack(p)

    def _next_hop(self, p: Participant, fallback: Address | None = None) -> Address:
        return core.next_hop(p.dialog, fallback or self.config.next_hop)

    # -- requests

    def _request(self, request: Request, addr: Address) -> None:
        method = request.method
        if method == "INVITE" and request.to.tag is None:
            self._invite(request, addr)
        elif method == "ACK":
            p = self.participants.get(request.call_id)
            if p is not None and not p.outgoing and not p.acked:
                p.acked = True
                self._after_ack(p)
        elif method == "BYE":
            self._bye(request, addr)
        elif method == "CANCEL":
            self._cancel(request, addr)
        elif request.to.tag is None:
            response = make_response(
                request, 405, to_tag=core.new_tag(), extra=[("Allow", "INVITE, ACK, BYE")]
            )
            self._respond(request, response, addr)
        else:
            self._respond(request, make_response(request, 481), addr)

    def _invite(self, invite: Request, addr: Address) -> None:
        p = self.participants.get(invite.call_id) or self._ended.get(invite.call_id)
        if p is not None:  # a retransmission
            self.send(p.final or make_response(invite, 100), invite.top_via.response_address())
            return
        dialog = core.dial_in_dialog(invite)
        target = SipUri.parse(invite.uri, "Request-URI").aor()
        conference = self.config.conference(target)
        if conference is None:
            response = core.answer(
                invite, dialog, 404, contact=self.contact, warning=f"no conference {target}"
            )
            self.send(response, invite.top_via.response_address())
            return
        setups = sum(1 for q in self.participants.values() if not q.outgoing and q.final is None)
        try:
            core.check_room(
                conference,
                self._count(conference),
                setups,
                max_participants=self.config.max_participants,
                max_setups=self.config.max_setups,
            )
        except core.Refused as exc:
            log.warn(
                "mrfc: {call_id} to {conference} refused {status}: {error}",
                call_id=invite.call_id,
                conference=conference.uri,
                participant=core.participant_of(invite),
                peer=f"{addr[0]}:{addr[1]}",
                status=exc.status,
                error=exc.warning,
            )
            retry = [("Retry-After", str(core.RETRY_AFTER))] if exc.status == 503 else []
            response = core.answer(
                invite, dialog, exc.status, contact=self.contact, warning=exc.warning, extra=retry
            )
            self.send(response, invite.top_via.response_address())
            return
        p = Participant(conference, core.participant_of(invite), dialog, "?", invite=invite)
        self.participants[invite.call_id] = p
        self.send(make_response(invite, 100), invite.top_via.response_address())
        d = defer.Deferred.fromCoroutine(self._dial_in(p))
        d.addErrback(self._setup_failed, p)

    def _count(self, conference: core.Conference) -> int:
        """The dialogs of ``conference``: those in ``participants`` and the dial-outs in
        progress that are not there yet."""
        return self._dialling.get(conference.uri, 0) + sum(
            1 for q in self.participants.values() if q.conference.uri == conference.uri
        )

    def _cancel(self, cancel: Request, addr: Address) -> None:
        p = self.participants.get(cancel.call_id)
        if p is None or p.invite is None or p.invite.top_via.branch != cancel.top_via.branch:
            self._respond(cancel, make_response(cancel, 481), addr)
            return
        self._respond(cancel, make_response(cancel, 200), addr)
        if p.final is not None:
            return
        p.final = make_response(p.invite, 487, to_tag=p.dialog.local_tag)
        self.send(p.final, p.invite.top_via.response_address())
        self.end(p, "CANCEL from the participant", bye=False)

    def _setup_failed(self, failure: Failure, p: Participant) -> None:
        log.failure("mrfc: {call_id}: setting up failed", failure, call_id=p.dialog.call_id)
        self._refuse(p, 500, f"UNSPECIFIED: {failure.getErrorMessage()}")

    def _refuse(self, p: Participant, status: int, warning: str) -> None:
        if p.final is None and p.invite is not None:
            log.warn(
                "mrfc: {call_id} from {participant} to {conference} refused {status}: {error}",
                call_id=p.dialog.call_id,
                participant=p.identity,
                conference=p.conference.uri,
                status=status,
                error=warning,
            )
            p.final = core.answer(p.invite, p.dialog, status, contact=self.contact, warning=warning)
            self.send(p.final, p.invite.top_via.response_address())
        self.end(p, warning, bye=False)

    async def _kms(
        self, request: MikeyMessage, kms: KmsLink
    ) -> tuple[MikeyMessage, tuple[KeyData, ...]]:
        self.kms_exchanges.append(request.data_type.name)
        try:
            return await kms_exchange(kms, request, self._post)
        except KmsUnreachable as exc:
            raise MikeyError(ErrorNo.UNSPECIFIED, f"the KMS: {exc}") from None

    async def _dial_in(self, p: Participant) -> None:
        assert p.invite is not None
        conference, me, kms = p.conference, self.config.identity, self.config.kms
        psks: dict[int, bytes] = {}
        key_mgmt: str | None = None
        try:
            offer = core.read_offer(p.invite.body)
            if offer.keyed:
                init = mikey_decode(core.transfer_message(p.invite.body))
                now = float(self.reactor.seconds())
                tls_lines = sum(1 for s in offer.streams if s.tls)
                info = transfer.read_transfer_init(
                    init, responder=me, streams=tls_lines, now=now, answers_for=(conference.uri,)
                )
                resolve = kms_client.resolve_init(
                    me, kms.key, info.ticket, now, kms=kms.identity, csb_id=info.csb_id
                )
                _, keys = await self._kms(resolve, kms)
                mpk, tgks = kms_client.ticket_keys(keys)
                named = transfer.named_responder(init) or me
                transfer.verify_transfer_init(info, mpk, named)
                p.identity = info.initiator
                core.authorize(conference, p.identity)
                resp = transfer.transfer_resp(info, named, mpk, float(self.reactor.seconds()))
                by_cs = transfer.session_psks(
                    info.message,
                    tgks,
                    ticket_flags=info.ticket.policy.flags,
                    randrr=transfer.randrr_of(resp),
                )
                sessions = core.crypto_sessions(offer)
                psks = {index: by_cs[cs] for index, cs in sessions.items()}
                key_mgmt = key_mgmt_value(resp)
                p.security = "tls-psk"
            else:
                if not conference.allow_plain:
                    raise core.Refused(
                        488, f"{conference.uri} takes TLS-PSK (a=key-mgmt:mikey) only"
                    )
                core.authorize(conference, p.identity)
                p.security = "plain"
        except core.Refused as exc:
            self._refuse(p, exc.status, exc.warning)
            return
        except MikeyError as exc:
            self._refuse(p, 488, kms_client.mikey_warning(exc))
            return
        except ValueError as exc:
            self._refuse(p, 488, f"UNSPECIFIED: {exc}")
            return
        if p.ended:
            return
        p.bfcp_user = self._next_bfcp_user(conference.uri)
        try:
            joined = await self._join_all(p, offer, psks)
        except (IqError, TimeoutError, defer.TimeoutError) as exc:
            self._refuse(p, 503, f"the MRFP: {exc}")
            return
        if p.ended:
            self._leave_all(p)
            return
        answered = {
            s.index: core.Answered(reply, "active" if req.tcp_role == "active" else "passive")
            for s, (req, reply) in joined.items()
        }
        body = core.answer_sdp(
            offer,
            answered,
            conference=conference,
            bfcp_user=p.bfcp_user,
            key_mgmt=key_mgmt,
            session_id=secrets.randbelow(1 << 31),
        )
        p.final = core.answer(p.invite, p.dialog, 200, contact=self.contact, body=body)
        self.send(p.final, p.invite.top_via.response_address())
        self.sip.retransmit_2xx(p.invite, p.final, lambda: p.acked or p.ended)
        log.info(
            "mrfc: {participant} joined {conference} ({call_id}): {streams}, {security}",
            participant=p.identity,
            conference=conference.uri,
            call_id=p.dialog.call_id,
            streams=", ".join(s.media for s in p.streams),
            security=p.security,
        )

    def _next_bfcp_user(self, uri: str) -> int:
        n = self._bfcp_users.get(uri, 0) + 1
        self._bfcp_users[uri] = n
        return n

    async def _join_all(
        self, p: Participant, offer: core.Offer, psks: dict[int, bytes]
    ) -> dict[core.Offered, tuple[JoinRequest, JoinReply]]:
        out: dict[core.Offered, tuple[JoinRequest, JoinReply]] = {}
        for s in offer.media_streams:
            if p.ended:
                break
            request = core.join_request(
                p.conference,
                p.identity,
                s,
                context=None,
                psk=psks.get(s.index) if offer.keyed else None,
                ciphersuites=self.config.psk_suites,
                bfcp_user=p.bfcp_user,
                call_id=p.dialog.call_id,
            )
            reply = await self._join(p, request)
            out[s] = (request, reply)
        return out

    async def _join(self, p: Participant, request: JoinRequest) -> JoinReply:
        """Join one stream in the conference's context (the first join of a conference makes
        it: joins of one conference wait for each other until it exists)."""
        uri = p.conference.uri
        lock = self._locks.setdefault(uri, defer.DeferredLock())
        await lock.acquire()
        try:
            request = attrs.evolve(request, context=self._contexts.get(uri))
            reply: JoinReply = await self.mp.join(None, request, timeout=self.config.setup_timeout)
            self._contexts.setdefault(uri, reply.context)
        finally:
            lock.release()
        stream = Stream(request.media, reply.context, reply.termination, request, request.remote)
        p.streams.append(stream)
        self._by_termination[(reply.context, reply.termination)] = p
        return reply

    def _after_ack(self, p: Participant) -> None:
        for s in p.streams:
            if s.request.tcp_role == "active" and s.remote is not None:
                d = self.mp.connect(None, ConnectRequest(s.context, s.termination, s.remote))
                d.addErrback(self._mp_failed, p, "Connect")

    def _mp_failed(self, failure: Failure, p: Participant, what: str) -> None:
        log.warn(
            "mrfc: {call_id}: {what} at the MRFP failed: {error}",
            call_id=p.dialog.call_id,
            what=what,
            error=failure.getErrorMessage(),
        )
        self.end(p, f"{what} failed")

    def mp_event(self, event: MpEvent) -> None:
        """An MRFP Notify: TCP up -> StartTls for TLS client streams; TLS failed or the
        connection closed -> that participant's dialog ends (BYE)."""
        p = self._by_termination.get((event.context, event.termination))
        log.info(
            "mrfc: MRFP event {kind} on {context}/{termination} ({call_id}) {reason}",
            kind=event.kind,
            context=event.context,
            termination=event.termination,
            call_id=p.dialog.call_id if p else "-",
            reason=event.reason,
        )
        if p is None or p.ended:
            return
        stream = next((s for s in p.streams if s.termination == event.termination), None)
        if event.kind == "tcp-established" and stream is not None:
            if stream.request.tls_role == "client":
                d = self.mp.start_tls(None, StartTlsRequest(stream.context, stream.termination))
                d.addErrback(self._mp_failed, p, "StartTls")
        elif event.kind in ("tls-failed", "closed", "renegotiation-refused"):
            reason = f"{event.kind} on {event.termination}"
            if event.kind == "closed":
                self.later(BYE_GRACE, self._closed, p, reason)
                return
            log.warn(
                "mrfc: {participant} leaves {conference}: {kind} {reason}",
                participant=p.identity,
                conference=p.conference.uri,
                kind=event.kind,
                reason=event.reason,
            )
            self.end(p, reason)

    def _closed(self, p: Participant, reason: str) -> None:
        if not p.ended:
            log.warn(
                "mrfc: {participant} leaves {conference}: {reason} and no BYE came",
                participant=p.identity,
                conference=p.conference.uri,
                reason=reason,
            )
            self.end(p, reason)

    def _bye(self, bye: Request, addr: Address) -> None:
        p = self.participants.get(bye.call_id) or self._ended.get(bye.call_id)
        if p is None:
            self._respond(bye, make_response(bye, 481), addr)
            return
        self._respond(bye, make_response(bye, 200), addr)
        self.end(p, "BYE from the participant", bye=False)

    def _ack(self, p: Participant) -> None:
        ack = core.in_dialog(p.dialog, "ACK", via=self._via(), cseq=p.dialog.invite_cseq)
        self.send(ack, self._next_hop(p))

    def _leave_all(self, p: Participant) -> None:
        streams, p.streams = p.streams, []
        for s in streams:
            self._by_termination.pop((s.context, s.termination), None)
            d = self.mp.leave(None, LeaveRequest(s.context, s.termination))

            def left(reply: Any, s: Stream = s) -> None:
                self.left.append((p.dialog.call_id, s.media, reply.statistics))
                if len(self.left) > 1000:
                    del self.left[0]

            d.addCallbacks(
                left,
                lambda f: log.warn("mrfc: Leave failed: {error}", error=f.getErrorMessage()),
            )

    def end(self, p: Participant, reason: str, *, bye: bool = True) -> None:
        """End a participant: its streams leave; BYE if its dialog was confirmed and ``bye``."""
        if p.ended:
            return
        p.ended = True
        self._leave_all(p)
        confirmed = p.dialog.remote_tag is not None and (
            p.outgoing or (p.final is not None and p.final.status < 300)
        )
        if bye and confirmed:
            request = core.in_dialog(p.dialog, "BYE", via=self._via())
            self.request(request, self._next_hop(p)).addErrback(lambda _: None)
        self.participants.pop(p.dialog.call_id, None)
        self._ended[p.dialog.call_id] = p
        self.later(32.0, self._ended.pop, p.dialog.call_id, None)
        while len(self._ended) > 1000:
            self._ended.pop(next(iter(self._ended)))
        log.info(
            "mrfc: {participant} ({call_id}) left {conference}: {reason}",
            participant=p.identity,
            call_id=p.dialog.call_id,
            conference=p.conference.uri,
            reason=reason,
        )

    # -- dial-out

    def _ticket_kms(self) -> KmsLink:
        if self.config.ticket_source == "kms":
            return self.config.kms
        kms = self.self_kms
        assert kms is not None
        return attrs.evolve(
            self.config.kms,
            address=kms.address,
            pin=kms.identity.fingerprint(),
            identity=kms.config.identity,
        )

    async def dial_out(self, conference_uri: str, target: str) -> Participant:
        """INVITE ``target`` into ``conference_uri``: one TLS-PSK MSRP stream, keyed by one
        TLS crypto session of a ticket for ``target``. Raises :class:`DialOutFailed`."""
        conference = self.config.conference(conference_uri)
        if conference is None:
            raise DialOutFailed(f"no conference {conference_uri}")
        core.authorize(conference, target)
        if self.config.next_hop is None:
            raise DialOutFailed("dial-out needs next_hop")
        try:
            core.check_room(
                conference,
                self._count(conference),
                0,
                max_participants=self.config.max_participants,
                max_setups=self.config.max_setups,
            )
        except core.Refused as exc:
            raise DialOutFailed(exc.warning) from None
        uri = conference.uri
        self._dialling[uri] = self._dialling.get(uri, 0) + 1
        held = [True]

        def placed() -> None:
            """The dial-out is in ``participants`` now (or over): it no longer counts here."""
            if held[0]:
                held[0] = False
                left = self._dialling.pop(uri) - 1
                if left:
                    self._dialling[uri] = left

        try:
            return await self._dial_out(conference, target, placed)
        finally:
            placed()

    async def _dial_out(
        self, conference: core.Conference, target: str, placed: Callable[[], None]
    ) -> Participant:
        me, kms = self.config.identity, self._ticket_kms()
        now = float(self.reactor.seconds())
        try:
            request = kms_client.request_init(me, kms.key, (target,), now, kms=kms.identity)
            reply, keys = await self._kms(request, kms)
            ticket = kms_client.ticket_of(reply)
            mpk, tgks = kms_client.ticket_keys(keys)
            init = transfer.transfer_init(
                me, target, ticket, mpk, [kms_client.tgk_spi(1)], now, csb_id=reply.header.csb_id
            )
            psk = transfer.session_psks(init, tgks, ticket_flags=ticket.policy.flags)[1]
        except MikeyError as exc:
            raise DialOutFailed(f"no ticket: {kms_client.mikey_warning(exc)}") from None
        dialog_placeholder = core.Dialog("", "", conference.uri, target, target)
        p = Participant(conference, target, dialog_placeholder, "tls-psk", outgoing=True)
        join = JoinRequest(
            conference=conference.uri,
            context=None,
            participant=target,
            media="msrp",
            tcp_role="passive",
            security="tls-psk",
            tls_role="server",
            psk=PskConfig(psk, core.PSK_IDENTITY, self.config.psk_suites),
        )
        try:
            joined = await self._join(p, join)
        except (IqError, TimeoutError, defer.TimeoutError) as exc:
            raise DialOutFailed(f"the MRFP: {exc}") from None
        body = core.dial_out_offer(
            joined, tls=True, key_mgmt=key_mgmt_value(init), session_id=secrets.randbelow(1 << 31)
        )
        invite, dialog = core.dial_out_invite(
            conference.uri, target, via=self._via(), contact=self.contact, routes=(), body=body
        )
        p.dialog = dialog
        self.participants[dialog.call_id] = p
        placed()
        try:
            response = await self.request(invite, self.config.next_hop)
        except TimeoutError:
            self.end(p, "no answer", bye=False)
            raise DialOutFailed(f"{target} did not answer") from None
        if response.status >= 300:
            self.end(p, f"{response.status} {response.reason}", bye=False)
            warning = response.get("Warning")
            raise DialOutFailed(
                f"{response.status} {response.reason}" + (f" ({warning})" if warning else "")
            )
        core.answered(dialog, response)
        p.acked = True
        self._ack(p)
        try:
            core.read_dial_out_answer(response.body)
            resp = mikey_decode(core.transfer_message(response.body))
            transfer.verify_transfer_resp(resp, init, mpk)
            by = transfer.named_responder(resp)
            if by is not None and by != target:
                raise MikeyError(ErrorNo.INVALID_ID, f"the TRANSFER_RESP is from {by}")
        except core.Refused as exc:
            reason = exc.warning
        except (MikeyError, ValueError) as exc:
            reason = "TRANSFER_RESP refused: " + (
                kms_client.mikey_warning(exc) if isinstance(exc, MikeyError) else str(exc)
            )
        else:
            log.info(
                "mrfc: {participant} dialled into {conference} ({call_id}), tickets from {source}",
                participant=target,
                conference=conference.uri,
                call_id=dialog.call_id,
                source=self.config.ticket_source,
            )
            return p
        log.warn("mrfc: dial-out to {target} aborted: {error}", target=target, error=reason)
        self.end(p, reason)
        raise DialOutFailed(reason)


def build(config: MrfcConfig, *, reactor: Any = None, **kw: Any) -> MrfcService:
    """The MRFC, ready to start (``e2ae mrfc``, the demo and the tests use this)."""
    return MrfcService(config, reactor=reactor, **kw)
