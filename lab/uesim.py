"""The UE simulator's Twisted edge: :class:`UeSim` runs the pure SIP user agent and SDP of
:mod:`lab.ue` over UDP or TCP and opens the media with :mod:`lab.media`.

It registers through the P-CSCF (``Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec``),
places calls (:meth:`UeSim.call`) and answers them (:meth:`UeSim.next_call`) with an MSRP and a
BFCP stream marked ``a=3ge2ae:requested`` with its certificate's fingerprint, follows the SDP it
gets back (address, ``a=setup`` role, the AGW's fingerprint) and hangs up (:meth:`UeSim.hangup`).
The TLS peer must present the certificate of the SDP fingerprint (mutual verification: the UE
refuses a wrong AGW too).

With ``kms=`` (:class:`lab.ue.KmsAccess`) the calls are protected end to end with keys from
the KMS (TS 33.328 Annex H, TR 33.829 section 8.3.1.2): the caller asks the KMS for a ticket for
the callee with one TGK per TLS m-line, offers ``TCP/TLS/MSRP`` and ``TCP/TLS/BFCP`` with its
TRANSFER_INIT in a session-level ``a=key-mgmt:mikey`` (no ``a=fingerprint``, no
``a=3ge2ae``), and checks the TRANSFER_RESP of the answer (refused: ACK, BYE,
:class:`CallFailed`). The callee checks the TRANSFER_INIT, has the KMS resolve the ticket,
answers with its TRANSFER_RESP, or refuses the offer with a 488 whose ``Warning`` says the MIKEY
error. Each stream then runs TLS-PSK (:class:`lab.media.UePsk`) with the TLS-PSK of its crypto
session, on the ``a=setup`` roles as in a certificate call. The HTTPS exchanges with the KMS
(:func:`kms.cli.post`) run in a thread. An offer without ``a=key-mgmt`` is answered as without
``kms``.

Misbehaviour on purpose: ``present="other"`` (another certificate than the one in its SDP),
``present="none"`` (no certificate), ``mechanisms=()`` (asks for e2ae per stream without having
registered it).

As a lab UA: the P-CSCF is the outbound proxy of every request, dialogs follow the Record-Route
set. Over UDP it retransmits as RFC 3261 section 17 says, so it keeps working on a lossy link
(lab network emulation): requests every T1, doubling (non-INVITE capped at T2) until a response
(an INVITE stops at the first provisional one); a 2xx to an INVITE until the ACK comes, for at
most 64*T1; a retransmitted request gets the response it already got, once more. The media of a
call is opened after the answer (caller) or after the ACK (callee: the P-CSCF has given the
AGW its fingerprint by then).
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

import certs
from certs.tls import KeyLogWriter
from e2ae import msrp
from kms import client as kms_client
from kms.cli import post as kms_post
from lab import media, ue
from lab.sipnode import Address, SipNode, Transport
from lab.uemessage import UeMessaging
from mikey import message as mikey_message
from mikey import transfer
from mikey.constants import ErrorNo
from mikey.errors import MikeyError
from mikey.payloads import KeyData
from pcscf.sip.message import Message, Request, Response, make_request, make_response

log = Logger(namespace="lab.ue")

#: RFC 3261 timers (seconds), for UDP: the first retransmission interval, the cap of
#: non-INVITE and 2xx retransmissions, and how long a transaction may last.
T1 = 0.5
T2 = 4.0
TRANSACTION_TIMEOUT = 64 * T1
#: Server transactions whose response is kept to answer a retransmitted request.
ANSWERED_MEMORY = 256

#: Port an active endpoint puts in its m= line (RFC 4145 section 4: it does not listen there).
DISCARD_PORT = 9
#: BFCP identities of a UE that is the floor control server of a call it answers.
FLOOR_CONFERENCE = 1
FLOOR_USER = 2
FLOOR_ID = 1


class CallFailed(ue.UeError):
    """The call was refused (final response >= 300) or its media could not be set up."""

    def __init__(self, reason: str, *, status: int | None = None, call_id: str = "") -> None:
        super().__init__(f"call {call_id}: {reason}" if call_id else reason)
        self.status = status
        self.call_id = call_id


@attrs.frozen
class KeyedOffer:
    """What the caller of a KMS call keeps between its offer and the answer: its TRANSFER_INIT,
    the MPK that checks the TRANSFER_RESP, and the TLS-PSK of each crypto session."""

    init: mikey_message.Message
    mpk: bytes = attrs.field(repr=False)
    psks: Mapping[int, bytes] = attrs.field(repr=False)


@attrs.define
class StreamLeg:
    """One MSRP or BFCP stream of a call, on the UE."""

    kind: str  # msrp | bfcp
    action: ue.MediaAction
    endpoint: media.MediaEndpoint[Any]
    proto: str
    connection: Any = None

    @property
    def verified_fingerprint(self) -> str | None:
        """The SDP fingerprint the peer's certificate matched (TLS only)."""
        conn = self.connection
        if conn is None or conn.peer_fingerprint is None:
            return None
        value: str = conn.peer_fingerprint.value
        return value

    @property
    def tls_psk(self) -> bool:
        """The stream runs TLS-PSK with a key from the KMS (crypto session ``action.cs_id``)."""
        return isinstance(self.endpoint.tls, media.UePsk)

    @property
    def local_port(self) -> int | None:
        conn = self.connection
        if conn is None or conn.transport is None:
            return None
        return int(conn.transport.getHost().port)


@attrs.define
class Call:
    """A call on the UE: its dialog (:class:`lab.ue.Dialog`) and media."""

    dialog: ue.Dialog
    outgoing: bool
    offer: bytes = b""
    answer: bytes = b""
    streams: dict[str, StreamLeg] = attrs.field(factory=dict)
    ended: bool = False
    end_reason: str = ""
    acked: bool = False
    ack: Request | None = None  # the ACK sent for the 2xx (sent again if the 2xx comes again)
    #: The KMS identity of the application server TLS-PSK is terminated in, when the MIKEY
    #: exchange said so (the peer's authenticated identity is not the SIP peer's).
    tls_terminated_by: str | None = None
    _closed: list[defer.Deferred[None]] = attrs.field(factory=list)

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    @property
    def msrp(self) -> media.MsrpConnection:
        conn: media.MsrpConnection = self.streams["msrp"].connection
        return conn

    @property
    def bfcp(self) -> Any:
        return self.streams["bfcp"].connection

    def when_ended(self) -> defer.Deferred[None]:
        if self.ended:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._closed.append(d)
        return d


def _kind(media_name: str) -> str:
    return "msrp" if media_name == "message" else "bfcp"


def _keyed_offer(sdp: bytes) -> bool:
    """The offer keys a TLS stream with ``a=key-mgmt`` (a KMS call, TS 33.328 Annex H)."""
    try:
        return any(s.tls and s.key_mgmt for s in ue.streams_of(sdp, from_offerer=True))
    except ue.UeError:
        return False


class UeSim:
    """A UE: the SIP user agent of :mod:`lab.ue` on a socket, and its media endpoints."""

    def __init__(
        self,
        reactor: Any,
        user: str,
        identity: certs.CertAndKey,
        proxy: Address,
        *,
        transport: Transport = "udp",
        domain: str = "lab.example",
        host: str = "127.0.0.1",
        present: media.Present = "own",
        mechanisms: Sequence[str] = ue.MEDIA_MECHANISMS,
        e2ae: bool = True,
        bfcp: bool = True,
        keylog: KeyLogWriter | None = None,
        media_timeout: float = 10.0,
        kms: ue.KmsAccess | None = None,
    ) -> None:
        self.reactor = reactor
        self.user = user
        self.identity = identity
        self.proxy = proxy
        self.transport = transport
        self.domain = domain
        self.host = host
        self.present = present
        self.mechanisms = tuple(mechanisms)
        self.e2ae = e2ae
        self.bfcp = bfcp
        self.keylog = keylog
        self.media_timeout = media_timeout
        self.kms = kms
        #: The data type of every message posted to the KMS, in order.
        self.kms_exchanges: list[str] = []
        self._kms_files: tempfile.TemporaryDirectory[str] | None = None
        self.fingerprint = identity.fingerprint("sha-256")
        self.node = SipNode(reactor, f"UE {user}", host)
        self.node.handler = self._received
        self.ua: ue.UserAgent | None = None
        self.calls: dict[str, Call] = {}
        self.registered = False
        self._pending: dict[str, defer.Deferred[Response]] = {}
        self._resend: dict[str, IDelayedCall] = {}  # client retransmissions, by branch
        self._answered: OrderedDict[tuple[str, str], Response] = OrderedDict()
        self._unacked: dict[str, IDelayedCall] = {}  # 2xx retransmissions, by Call-ID
        self._incoming: list[Call] = []
        self._incoming_waiters: list[defer.Deferred[Call]] = []
        #: Immediate messages (SIP MESSAGE protected with keys from the KMS).
        self.im = UeMessaging(self)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def kms_user(self) -> str:
        """Our identity at the KMS (IDRi / IDRr): the configured one, else the AOR."""
        if self.kms is not None and self.kms.identity:
            return self.kms.identity
        return self.aor

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.transport == "tcp":
            await self.node.connect_tcp(*self.proxy)
        else:
            self.node.listen(0)
        self.ua = ue.UserAgent(
            self.aor,
            self.host,
            self.node.port,
            self.proxy,
            transport=self.transport,
            mechanisms=self.mechanisms,
        )

    def stop(self) -> defer.Deferred[Any]:
        for timer in (*self._resend.values(), *self._unacked.values()):
            if timer.active():
                timer.cancel()
        self._resend.clear()
        self._unacked.clear()
        waits = [self.node.stop()]
        for call in self.calls.values():
            waits.extend(leg.endpoint.stop() for leg in call.streams.values())
        if self._kms_files is not None:
            self._kms_files.cleanup()
            self._kms_files = None
        return defer.gatherResults(waits, consumeErrors=True)

    def _agent(self) -> ue.UserAgent:
        if self.ua is None:
            raise ue.LocalUeError("UE not started")
        return self.ua

    # -- client transactions ----------------------------------------------------------------

    def _request(self, request: Request) -> defer.Deferred[Response]:
        d: defer.Deferred[Response] = defer.Deferred()
        branch = request.top_via.branch
        self._pending[branch] = d
        self.node.send(request, self.proxy)
        if self.transport == "udp":
            self._resend[branch] = self.reactor.callLater(T1, self._retransmit, request, T1)

        def over(result: Any) -> Any:
            self._pending.pop(branch, None)
            self._stop_resending(branch)
            return result

        return d.addTimeout(TRANSACTION_TIMEOUT, self.reactor).addBoth(over)

    def _retransmit(self, request: Request, interval: float) -> None:
        branch = request.top_via.branch
        if branch not in self._pending:
            return
        self.node.send(request, self.proxy)
        interval = interval * 2 if request.method == "INVITE" else min(interval * 2, T2)
        self._resend[branch] = self.reactor.callLater(interval, self._retransmit, request, interval)

    def _stop_resending(self, branch: str) -> None:
        timer = self._resend.pop(branch, None)
        if timer is not None and timer.active():
            timer.cancel()

    # -- server transactions ----------------------------------------------------------------

    def _respond(self, request: Request, response: Response, addr: Address) -> None:
        self.node.send(response, addr)
        if self.transport != "udp":
            return
        self._answered[(request.top_via.branch, request.method)] = response
        while len(self._answered) > ANSWERED_MEMORY:
            self._answered.popitem(last=False)
        if request.method == "INVITE" and 200 <= response.status < 300:
            self._stop_2xx(request.call_id)
            self._unacked[request.call_id] = self.reactor.callLater(
                T1, self._retransmit_2xx, response, addr, T1, T1
            )

    def _retransmit_2xx(
        self, response: Response, addr: Address, interval: float, waited: float
    ) -> None:
        call_id = response.call_id
        self._unacked.pop(call_id, None)
        if waited >= TRANSACTION_TIMEOUT:
            log.warn(
                "UE {ue}: no ACK for the 2xx of {call_id} within {timeout:g} s",
                ue=self.user,
                call_id=call_id,
                timeout=TRANSACTION_TIMEOUT,
            )
            return
        self.node.send(response, addr)
        interval = min(interval * 2, T2)
        self._unacked[call_id] = self.reactor.callLater(
            interval, self._retransmit_2xx, response, addr, interval, waited + interval
        )

    def _stop_2xx(self, call_id: str) -> None:
        timer = self._unacked.pop(call_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    async def register(self, expires: int = 600) -> Response:
        """REGISTER through the P-CSCF; returns the final response."""
        agent = self._agent()
        response = await self._request(agent.register(expires=expires))
        self.registered = agent.registered(response) and expires > 0
        log.info(
            "UE {ue}: registered {aor} ({status}); network media security: {mechanisms}",
            ue=self.user,
            aor=self.aor,
            status=response.status,
            mechanisms=", ".join(sorted(agent.network_mechanisms)) or "none",
        )
        return response

    # -- calls ------------------------------------------------------------------------------

    def _plan(
        self, msrp_port: int, bfcp_port: int | None, setup: ue.Setup, **kw: Any
    ) -> ue.MediaPlan:
        return ue.MediaPlan(
            self.host,
            self.fingerprint,
            msrp_port,
            msrp_session=ue.new_token(),
            bfcp_port=bfcp_port,
            setup=setup,
            e2ae=self.e2ae,
            tls=self.e2ae,
            **kw,
        )

    async def call(
        self, target: str, *, before_media: Callable[[Call], Awaitable[None]] | None = None
    ) -> Call:
        """INVITE ``target``; once answered, ACK and open the media as the answer says.
        Returns the call with verified media connections; raises :class:`CallFailed`.
        ``before_media`` runs between the answer and the media (the demo's impostor)."""
        agent = self._agent()
        keyed: KeyedOffer | None = None
        bfcp_port = DISCARD_PORT if self.bfcp else None
        if self.kms is not None:
            keyed = await self._ticket_for(target, 2 if self.bfcp else 1)
            plan = ue.MediaPlan(
                self.host,
                self.fingerprint,
                DISCARD_PORT,
                msrp_session=ue.new_token(),
                bfcp_port=bfcp_port,
                setup="active",
                e2ae=False,
                tls=True,
                key_mgmt=ue.key_mgmt_value(keyed.init),
            )
        else:
            plan = self._plan(DISCARD_PORT, bfcp_port, "active")
        offer = ue.build_sdp(plan, username=self.user)
        invite, dialog = agent.invite(target, offer)
        call = Call(dialog, outgoing=True, offer=offer)
        self.calls[dialog.call_id] = call
        response = await self._request(invite)
        agent.invite_answered(response)
        if response.status >= 300:
            self.calls.pop(dialog.call_id, None)
            warning = response.get("Warning")
            raise CallFailed(
                f"{response.status} {response.reason}" + (f" ({warning})" if warning else ""),
                status=response.status,
                call_id=dialog.call_id,
            )
        call.answer = response.body
        call.ack = agent.ack(dialog)
        self.node.send(call.ack, self.proxy)
        if keyed is not None:
            await self._check_transfer_resp(call, keyed, response)
        try:
            actions = ue.media_actions(
                response.body, from_offerer=False, own=plan, keyed=keyed is not None
            )
        except ue.UeError as exc:
            raise CallFailed(str(exc), call_id=dialog.call_id) from None
        if len(actions) < (2 if self.bfcp else 1):
            raise CallFailed("a stream was rejected in the answer", call_id=dialog.call_id)
        protos = {s.media: s.proto for s in ue.streams_of(response.body, from_offerer=False)}
        for action in actions:
            leg = self._leg(
                call,
                action,
                plan,
                server=False,
                proto=protos[action.media],
                psks=None if keyed is None else keyed.psks,
            )
            call.streams[leg.kind] = leg
        if before_media is not None:
            await before_media(call)
        await self._open_media(call)
        return call

    def next_call(self) -> defer.Deferred[Call]:
        """The next incoming call, once answered, ACKed and its media connected."""
        if self._incoming:
            return defer.succeed(self._incoming.pop(0))
        d: defer.Deferred[Call] = defer.Deferred()
        self._incoming_waiters.append(d)
        return d

    def _incoming_invite(self, request: Request, addr: Address) -> None:
        if self.kms is not None and _keyed_offer(request.body):
            # The KMS is asked before the answer: say Trying, so that the INVITE is not sent
            # again meanwhile (a copy that still comes gets the 100 again).
            self._respond(request, make_response(request, 100), addr)
            answering = defer.Deferred.fromCoroutine(self._incoming_keyed_invite(request, addr))
            answering.addErrback(
                lambda failure: log.failure(
                    "UE {ue}: answering {call_id} failed",
                    failure,
                    ue=self.user,
                    call_id=request.call_id,
                )
            )
            return
        self._answer_offer(request, addr)

    async def _incoming_keyed_invite(self, request: Request, addr: Address) -> None:
        """Answer an offer keyed by a TRANSFER_INIT (``a=key-mgmt:mikey``): check it, have the
        KMS resolve its ticket, check its MAC, answer with the TRANSFER_RESP; or 488."""
        kms = self.kms
        assert kms is not None
        me = self.kms_user
        try:
            try:
                offered = ue.streams_of(request.body, from_offerer=True)
                init = ue.transfer_message(request.body)
                now = float(self.reactor.seconds())
                info = transfer.read_transfer_init(
                    init, responder=me, streams=sum(1 for s in offered if s.tls), now=now
                )
                resolve = kms_client.resolve_init(
                    me, kms.key, info.ticket, now, kms=kms.kms_identity, csb_id=info.csb_id
                )
                _, keys = await self._kms_exchange(resolve)
                mpk, tgks = kms_client.ticket_keys(keys)
                transfer.verify_transfer_init(info, mpk, me)
                caller = request.from_.sip_uri("From").aor()
                via_as = info.initiator if info.initiator != caller else None
                if via_as is not None and kms.as_policy == "close":
                    raise MikeyError(
                        ErrorNo.UNSPECIFIED,
                        f"TLS would be terminated in {via_as}, not {caller}: refused by policy",
                    )
                psks = transfer.session_psks(
                    info.message, tgks, ticket_flags=info.ticket.policy.flags
                )
                resp = transfer.transfer_resp(info, me, mpk, float(self.reactor.seconds()))
            except ue.UeError as exc:
                raise MikeyError(ErrorNo.UNSPECIFIED, str(exc)) from None
        except MikeyError as exc:
            self._refuse(request, addr, kms_client.mikey_warning(exc))
            return
        except Exception as exc:  # never let an offer end the UE
            self._refuse(request, addr, f"UNSPECIFIED: {type(exc).__name__}: {exc}")
            return
        if via_as is not None:
            log.info(
                "UE {ue}: call {call_id}: TLS-PSK is terminated in the AS {app_server}",
                ue=self.user,
                call_id=request.call_id,
                app_server=via_as,
            )
        self._answer_offer(
            request, addr, psks=psks, key_mgmt=ue.key_mgmt_value(resp), via_as=via_as
        )

    def _refuse(self, request: Request, addr: Address, warning: str | None) -> None:
        log.warn(
            "UE {ue}: cannot answer {call_id}: {error}",
            ue=self.user,
            call_id=request.call_id,
            error=warning,
        )
        response, _ = self._agent().answer(request, b"", status=488, warning=warning)
        self._respond(request, response, addr)

    def _answer_offer(
        self,
        request: Request,
        addr: Address,
        *,
        psks: Mapping[int, bytes] | None = None,
        key_mgmt: str | None = None,
        via_as: str | None = None,
    ) -> None:
        agent = self._agent()
        endpoints: dict[str, media.MediaEndpoint[Any]] = {}
        try:
            offered = ue.streams_of(request.body, from_offerer=True)
            sessions = ue.crypto_sessions(offered)
            kinds = {_kind(s.media): s for s in offered if s.port}
            # listen first where we are passive, so that the answer carries real ports
            ports: dict[str, int] = {}
            server = True  # the callee is the floor control server of the call
            for kind, stream in kinds.items():
                tls: media.UeTls | media.UePsk | None = None
                if psks is not None and stream.tls and stream.key_mgmt:
                    tls = self._psk(psks, sessions[stream.index])
                elif stream.tls:
                    tls = self._tls(stream.fingerprints)
                endpoints[kind] = self._endpoint(kind, tls, request.call_id, server=server)
                if stream.our_role == "passive":
                    ports[kind] = endpoints[kind].listen(0, self.host)
                else:
                    ports[kind] = DISCARD_PORT
            msrp_stream = kinds.get("msrp")
            plan = ue.MediaPlan(
                self.host,
                self.fingerprint,
                ports.get("msrp", 0),
                msrp_session=ue.new_token(),
                bfcp_port=ports.get("bfcp"),
                setup=msrp_stream.our_role if msrp_stream else "active",
                bfcp_setup=kinds["bfcp"].our_role if "bfcp" in kinds else None,
                e2ae=False,
                tls=bool(msrp_stream and msrp_stream.tls),
                conference_id=FLOOR_CONFERENCE,
                user_id=FLOOR_USER,
                floor_id=FLOOR_ID,
                floorctrl="s-only",
                key_mgmt=key_mgmt,
            )
            answer = ue.build_sdp(plan, username=self.user)
            actions = ue.media_actions(
                request.body, from_offerer=True, own=plan, keyed=psks is not None
            )
        except (ue.UeError, ValueError) as exc:
            if psks is None:
                log.warn(
                    "UE {ue}: cannot answer {call_id}: {error}",
                    ue=self.user,
                    call_id=request.call_id,
                    error=str(exc),
                )
                response, _ = agent.answer(request, b"", status=488)
                self._respond(request, response, addr)
            else:
                for endpoint in endpoints.values():
                    endpoint.stop()
                self._refuse(request, addr, f"UNSPECIFIED: {exc}")
            return
        response, dialog = agent.answer(request, answer)
        call = Call(
            dialog, outgoing=False, offer=request.body, answer=answer, tls_terminated_by=via_as
        )
        for action in actions:
            kind = _kind(action.media)
            endpoint = endpoints[kind]
            if kind == "msrp":
                self._msrp_session(endpoint, plan.msrp_uri, action.remote_path)
            call.streams[kind] = StreamLeg(kind, action, endpoint, kinds[kind].proto)
        self.calls[dialog.call_id] = call
        self._respond(request, response, addr)

    async def _after_ack(self, call: Call) -> None:
        try:
            await self._open_media(call)
        except Exception as exc:
            log.warn(
                "UE {ue}: media of {call_id} failed: {error}",
                ue=self.user,
                call_id=call.call_id,
                error=str(exc),
            )
            return
        if self._incoming_waiters:
            self._incoming_waiters.pop(0).callback(call)
        else:
            self._incoming.append(call)

    # -- media ------------------------------------------------------------------------------

    def _tls(self, pinned: Sequence[certs.Fingerprint]) -> media.UeTls:
        return media.UeTls(self.identity, tuple(pinned), present=self.present, keylog=self.keylog)

    def _psk(self, psks: Mapping[int, bytes], cs_id: int | None) -> media.UePsk:
        psk = None if cs_id is None else psks.get(cs_id)
        if psk is None:
            raise ue.RemoteUeError("no crypto session keys this stream", where="a=key-mgmt")
        return media.UePsk(psk, keylog=self.keylog)

    # -- the KMS ----------------------------------------------------------------------------

    def _kms_cert_files(self) -> tuple[Path, Path]:
        assert self.kms is not None
        if self.kms.cert_files is not None:
            return self.kms.cert_files
        if self._kms_files is None:
            self._kms_files = tempfile.TemporaryDirectory(prefix="e2ae-ue-")
        cert = Path(self._kms_files.name) / f"{self.identity.name}.crt"
        if cert.exists():
            return cert, cert.with_suffix(".key")
        return certs.write(self.identity, Path(self._kms_files.name))

    async def _kms_exchange(
        self, request: mikey_message.Message
    ) -> tuple[mikey_message.Message, tuple[KeyData, ...]]:
        """Post ``request`` to the KMS (HTTPS in a thread) and open its reply."""
        kms = self.kms
        assert kms is not None
        cert, key = self._kms_cert_files()
        self.kms_exchanges.append(request.data_type.name)
        host, port = kms.address
        try:
            _, body = await threads.deferToThread(
                kms_post, kms.address, kms.pin, cert, key, request.encode(), kms.timeout
            )
        except Exception as exc:
            raise MikeyError(
                ErrorNo.UNSPECIFIED, f"the KMS at {host}:{port}: {type(exc).__name__}: {exc}"
            ) from None
        return kms_client.open_reply(body, kms.key, request)

    async def _ticket_for(self, target: str, sessions: int) -> KeyedOffer:
        """A ticket for ``target`` with one TGK per crypto session, and our TRANSFER_INIT."""
        kms = self.kms
        assert kms is not None
        me = self.kms_user
        responder = kms.responder or target
        now = float(self.reactor.seconds())
        try:
            responders = (responder, *(a for a in kms.app_servers if a != responder))
            request = kms_client.request_init(
                me, kms.key, responders, now, kms=kms.kms_identity, sessions=sessions
            )
            reply, keys = await self._kms_exchange(request)
            ticket = kms_client.ticket_of(reply)
            mpk, tgks = kms_client.ticket_keys(keys)
            spis = [kms_client.tgk_spi(n) for n in range(1, sessions + 1)]
            init = transfer.transfer_init(
                me, responder, ticket, mpk, spis, now, csb_id=reply.header.csb_id
            )
            psks = transfer.session_psks(init, tgks, ticket_flags=ticket.policy.flags)
        except MikeyError as exc:
            reason = kms_client.mikey_warning(exc)
            log.warn(
                "UE {ue}: no ticket for {target} from the KMS: {error}",
                ue=self.user,
                target=target,
                error=reason,
            )
            raise CallFailed(f"KMS: {reason}") from None
        return KeyedOffer(init, mpk, psks)

    async def _check_transfer_resp(self, call: Call, keyed: KeyedOffer, response: Response) -> None:
        """The answer must carry a TRANSFER_RESP to our TRANSFER_INIT, MACed with the MPK;
        otherwise BYE and :class:`CallFailed`."""
        kms = self.kms
        assert kms is not None
        try:
            resp = ue.transfer_message(response.body)
            transfer.verify_transfer_resp(resp, keyed.init, keyed.mpk)
            named = transfer.named_responder(keyed.init)
            answered_by = transfer.named_responder(resp) or named
            if answered_by != named and answered_by not in kms.app_servers:
                raise MikeyError(
                    ErrorNo.INVALID_ID, f"the TRANSFER_RESP is from {answered_by}, not {named}"
                )
        except MikeyError as exc:
            reason = f"TRANSFER_RESP refused: {kms_client.mikey_warning(exc)}"
        else:
            if answered_by == named:
                return
            call.tls_terminated_by = answered_by
            log.info(
                "UE {ue}: call {call_id}: TLS-PSK is terminated in the AS {app_server}",
                ue=self.user,
                call_id=call.call_id,
                app_server=answered_by,
            )
            if kms.as_policy == "accept":
                return
            reason = f"TLS is terminated in the AS {answered_by}: closed by policy"
        log.warn(
            "UE {ue}: call {call_id}: {error}", ue=self.user, call_id=call.call_id, error=reason
        )
        try:
            await self.hangup(call)
        except Exception as exc:
            log.warn(
                "UE {ue}: BYE of {call_id} failed: {error}",
                ue=self.user,
                call_id=call.call_id,
                error=str(exc),
            )
        raise CallFailed(reason, status=response.status, call_id=call.call_id)

    def _msrp_session(
        self, endpoint: media.MediaEndpoint[Any], local_uri: str, remote_path: Sequence[str]
    ) -> None:
        def make() -> media.MsrpConnection:
            return media.MsrpConnection(msrp.MsrpSession(local_uri, tuple(remote_path)))

        endpoint.make_connection = make

    def _endpoint(
        self,
        kind: str,
        tls: media.UeTls | media.UePsk | None,
        call_id: str,
        *,
        server: bool,
        conference_id: int | None = None,
        user_id: int | None = None,
    ) -> media.MediaEndpoint[Any]:
        if kind == "msrp":
            return media.msrp_endpoint(self.reactor, local_uri="", tls=tls, call_id=call_id)
        if server:
            endpoint, _ = media.bfcp_server_endpoint(
                self.reactor, conference_id=FLOOR_CONFERENCE, floors=[FLOOR_ID], tls=tls
            )
            endpoint.call_id = call_id
            return endpoint
        return media.bfcp_client_endpoint(
            self.reactor,
            conference_id=conference_id or 1,
            user_id=user_id or 1,
            tls=tls,
            call_id=call_id,
        )

    def _leg(
        self,
        call: Call,
        action: ue.MediaAction,
        plan: ue.MediaPlan,
        *,
        server: bool,
        proto: str,
        psks: Mapping[int, bytes] | None = None,
    ) -> StreamLeg:
        kind = _kind(action.media)
        tls: media.UeTls | media.UePsk | None = None
        if psks is not None and action.cs_id is not None:
            try:
                tls = self._psk(psks, action.cs_id)
            except ue.UeError as exc:
                raise CallFailed(str(exc), call_id=call.call_id) from None
        elif action.tls:
            tls = self._tls(action.pinned)
        endpoint = self._endpoint(
            kind,
            tls,
            call.call_id,
            server=server,
            conference_id=action.conference_id,
            user_id=action.user_id,
        )
        if kind == "msrp":
            self._msrp_session(endpoint, plan.msrp_uri, action.remote_path)
        return StreamLeg(kind, action, endpoint, proto)

    async def _open_media(self, call: Call) -> None:
        waits: list[defer.Deferred[Any]] = []
        for leg in call.streams.values():
            if leg.action.action == "connect":
                assert leg.action.host is not None
                d = leg.endpoint.connect(leg.action.host, leg.action.port)
            else:
                d = leg.endpoint.accepted()
            d.addTimeout(self.media_timeout, self.reactor)
            waits.append(d.addCallback(self._connected, leg))
        await defer.gatherResults(waits, consumeErrors=True)

    def _connected(self, conn: Any, leg: StreamLeg) -> Any:
        leg.connection = conn
        return conn

    # -- hanging up -------------------------------------------------------------------------

    async def hangup(self, call: Call) -> Response:
        """BYE; closes the media; returns the final response."""
        bye = self._agent().bye(call.dialog)
        self._end(call, "hung up")
        return await self._request(bye)

    def _end(self, call: Call, reason: str) -> None:
        if call.ended:
            return
        call.ended = True
        call.end_reason = reason
        for leg in call.streams.values():
            # close_notify and FIN first (the AGW sees a clean end), then stop listening
            if leg.connection is not None:
                leg.connection.close().addBoth(lambda _, ep=leg.endpoint: ep.stop())
            else:
                leg.endpoint.stop()
        waiters, call._closed = call._closed, []
        for d in waiters:
            d.callback(None)

    # -- input ------------------------------------------------------------------------------

    def _received(self, message: Message, addr: Address, transport: Transport) -> None:
        if isinstance(message, Response):
            self._response(message)
            return
        agent = self._agent()
        call = self.calls.get(message.call_id)
        again = self._answered.get((message.top_via.branch, message.method))
        if again is not None and message.method != "ACK":
            self.node.send(again, addr)  # a retransmitted request: the same response again
            return
        if message.method == "INVITE" and message.to.tag is None:
            self._incoming_invite(message, addr)
        elif message.method == "ACK":
            self._stop_2xx(message.call_id)
            if call is not None and not call.outgoing and not call.ended and not call.acked:
                call.acked = True
                defer.Deferred.fromCoroutine(self._after_ack(call))
        elif message.method == "BYE":
            self._respond(message, agent.respond(message), addr)
            if call is not None:
                self._end(call, "remote hung up")
        elif message.method == "MESSAGE" and message.to.tag is None:
            self.im.incoming(message, addr)
        elif message.method in ("CANCEL", "OPTIONS", "UPDATE", "INVITE"):
            self._respond(message, agent.respond(message, 200), addr)
        else:
            self._respond(message, agent.respond(message, 501), addr)

    def _response(self, response: Response) -> None:
        branch = response.top_via.branch
        if response.status < 200:
            if response.cseq[1] == "INVITE":
                self._stop_resending(branch)  # the proxy has it (Timer A stops)
            return
        self._stop_resending(branch)
        d = self._pending.pop(branch, None)
        if response.cseq[1] == "INVITE" and response.status >= 300:
            # a non-2xx final response is ACKed in its own transaction (same branch)
            ack = make_request(
                "ACK",
                ue.uri_of(response.get("To") or f"<sip:{self.domain}>"),
                via=str(response.top_via),
                from_=response.get("From") or "",
                to=response.get("To") or "",
                call_id=response.call_id,
                cseq=response.cseq[0],
            )
            self.node.send(ack, self.proxy)
        elif response.cseq[1] == "INVITE" and d is None:
            call = self.calls.get(response.call_id)
            if call is not None and call.ack is not None:
                self.node.send(call.ack, self.proxy)  # the 2xx again: the same ACK again
        if d is not None and not d.called:
            d.callback(response)
