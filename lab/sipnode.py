"""Twisted edges of the lab's SIP nodes over UDP: the UE simulator and the core stub.

Thin: :class:`UeSimulator` drives :class:`lab.ue.UserAgent` and opens the media with
:mod:`lab.media` as :func:`lab.ue.media_actions` says; :class:`CoreService` feeds
:class:`lab.core.CoreStub`. No retransmission timers: the lab runs on loopback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

import certs
from lab import media
from lab.core import CoreStub, Deliver, Send
from lab.media import Present
from lab.ue import (
    Dialog,
    MediaAction,
    MediaPlan,
    UserAgent,
    answer_setup,
    build_sdp,
    media_actions,
    streams_of,
)
from pcscf.sip import RemoteSipError, Request, Response, make_response, parse_datagram

log = Logger()
Address = tuple[str, int]


class SipUdp(DatagramProtocol):
    """SIP over UDP: parses datagrams (bad ones are logged and dropped), sends messages."""

    def __init__(self, on_message: Callable[[Request | Response, Address], None]) -> None:
        self.on_message = on_message

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            message = parse_datagram(data)
        except RemoteSipError as exc:
            log.warn("sip: dropped a bad datagram from {peer}: {error}", peer=addr, error=str(exc))
            return
        if isinstance(message, Request | Response):
            self.on_message(message, (addr[0], addr[1]))

    def send(self, message: Request | Response, to: Address) -> None:
        assert self.transport is not None
        self.transport.write(message.serialise(), to)


@attrs.define
class Call:
    """A call of the UE simulator: its dialog and the media connections it opened."""

    dialog: Dialog
    msrp: media.MsrpConnection | None = None
    bfcp_client: media.BfcpClientConnection | None = None
    bfcp_server: media.BfcpServerConnection | None = None
    endpoints: list[media.MediaEndpoint[Any]] = attrs.Factory(list)


class UeSimulator:
    """A UE on ``host``: SIP over UDP towards ``proxy``, MSRP and BFCP over TLS."""

    def __init__(
        self,
        reactor: Any,
        *,
        aor: str,
        identity: certs.CertAndKey,
        proxy: Address,
        host: str = "127.0.0.1",
        mechanisms: tuple[str, ...] = ("msrp-tls", "bfcp-tls"),
        present: Present = "own",
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.present = present
        self.host = host
        self.udp = SipUdp(self._on_message)
        self.port = reactor.listenUDP(0, self.udp, interface=host)
        self.ua = UserAgent(aor, host, self.port.getHost().port, proxy, mechanisms=mechanisms)
        self.proxy = proxy
        self.calls: list[Call] = []
        self.incoming: list[defer.Deferred[Call]] = []
        self._waiting: dict[tuple[str, int, str], defer.Deferred[Response]] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def _request(self, request: Request) -> defer.Deferred[Response]:
        number, method = request.cseq
        d: defer.Deferred[Response] = defer.Deferred()
        self._waiting[(request.call_id, number, method)] = d
        self.udp.send(request, self.proxy)
        return d

    def _on_message(self, message: Request | Response, source: Address) -> None:
        if isinstance(message, Response):
            if message.status < 200:
                return
            number, method = message.cseq
            waiter = self._waiting.pop((message.call_id, number, method), None)
            if waiter is not None:
                waiter.callback(message)
            return
        if message.method == "INVITE":
            answering = defer.ensureDeferred(self._answer(message, source))
            answering.addErrback(self._failed, message.call_id)
        elif message.method in ("BYE", "CANCEL", "OPTIONS"):
            self.udp.send(self.ua.respond(message), source)
            for call in self.calls:
                if call.dialog.call_id == message.call_id and message.method == "BYE":
                    closing = defer.ensureDeferred(self._close_media(call))
                    closing.addErrback(self._failed, message.call_id)

    def _failed(self, failure: Any, call_id: str) -> None:
        log.warn(
            "ue: call {call_id} media failed: {error}",
            call_id=call_id,
            error=failure.getErrorMessage(),
        )
        waiting, self.incoming = self.incoming, []
        for d in waiting:
            d.errback(failure)

    def _tls(self, action: MediaAction) -> media.UeTls | None:
        if not action.tls:
            return None
        return media.UeTls(self.identity, action.pinned, present=self.present)

    # -- public API ---------------------------------------------------------------------------

    async def register(self, expires: int = 600) -> Response:
        response = await self._request(self.ua.register(expires=expires))
        self.ua.registered(response)
        return response

    async def call(self, target: str, *, bfcp: bool = True) -> Call:
        """Offer MSRP (and BFCP) over TLS with ``a=3ge2ae:requested``, open the media."""
        plan = MediaPlan(
            self.host,
            self.identity.fingerprint(),
            9,
            "c" + self.ua.new_id(),
            bfcp_port=9 if bfcp else None,
            setup="active",
        )
        invite, dialog = self.ua.invite(target, build_sdp(plan))
        response = await self._request(invite)
        self.ua.invite_answered(response)
        call = Call(dialog)
        self.calls.append(call)
        if not 200 <= response.status < 300:
            raise RemoteSipError(response.status, response.reason, where="INVITE")
        self.udp.send(self.ua.ack(dialog), self.proxy)
        for action in media_actions(response.body, from_offerer=False, own=plan):
            await self._open(call, plan, action, None)
        return call

    def next_call(self) -> defer.Deferred[Call]:
        """Fires with the next call this UE answers, once its media is open."""
        d: defer.Deferred[Call] = defer.Deferred()
        self.incoming.append(d)
        return d

    async def hangup(self, call: Call) -> Response:
        response = await self._request(self.ua.bye(call.dialog))
        await self._close_media(call)
        return response

    async def stop(self) -> None:
        for call in self.calls:
            await self._close_media(call)
        await defer.maybeDeferred(self.port.stopListening)

    # -- internals ----------------------------------------------------------------------------

    async def _answer(self, invite: Request, source: Address) -> None:
        streams = streams_of(invite.body, from_offerer=True)
        msrp_setup = next((s.setup for s in streams if s.media == "message"), "actpass")
        bfcp_offer = next((s for s in streams if s.media == "application"), None)
        plan = MediaPlan(
            self.host,
            self.identity.fingerprint(),
            9,
            "a" + self.ua.new_id(),
            bfcp_port=9 if bfcp_offer is not None else None,
            setup=answer_setup(msrp_setup),
            bfcp_setup=None if bfcp_offer is None else answer_setup(bfcp_offer.setup),
            floorctrl="s-only",
            conference_id=(bfcp_offer.conference_id or 1) if bfcp_offer else 1,
        )
        call = Call(Dialog("", "", "", "", ""))
        listeners: dict[str, media.MediaEndpoint[Any]] = {}
        actions = media_actions(invite.body, from_offerer=True, own=plan)
        for action in actions:
            if action.action == "listen":
                endpoint = self._endpoint(call, plan, action)
                port = endpoint.listen(0, self.host)
                listeners[action.media] = endpoint
                plan = (
                    attrs.evolve(plan, msrp_port=port)
                    if action.media == "message"
                    else attrs.evolve(plan, bfcp_port=port)
                )
        response, dialog = self.ua.answer(invite, build_sdp(plan))
        call.dialog = dialog
        self.calls.append(call)
        self.udp.send(response, source)
        for action in media_actions(invite.body, from_offerer=True, own=plan):
            await self._open(call, plan, action, listeners.get(action.media))
        if self.incoming:
            self.incoming.pop(0).callback(call)

    def _endpoint(
        self, call: Call, plan: MediaPlan, action: MediaAction
    ) -> media.MediaEndpoint[Any]:
        tls = self._tls(action)
        endpoint: media.MediaEndpoint[Any]
        if action.media == "message":
            endpoint = media.msrp_endpoint(
                self.reactor,
                local_uri=plan.msrp_uri,
                remote_path=action.remote_path,
                tls=tls,
                call_id=call.dialog.call_id or None,
            )
        elif plan.floorctrl == "s-only":
            endpoint, _ = media.bfcp_server_endpoint(
                self.reactor, conference_id=plan.conference_id, tls=tls
            )
        else:
            endpoint = media.bfcp_client_endpoint(
                self.reactor,
                conference_id=action.conference_id or plan.conference_id,
                user_id=action.user_id or plan.user_id,
                tls=tls,
            )
        call.endpoints.append(endpoint)
        return endpoint

    async def _open(
        self,
        call: Call,
        plan: MediaPlan,
        action: MediaAction,
        listening: media.MediaEndpoint[Any] | None,
    ) -> None:
        if listening is not None:
            conn = await listening.accepted()
        else:
            endpoint = self._endpoint(call, plan, action)
            assert action.host is not None
            conn = await endpoint.connect(action.host, action.port)
        if isinstance(conn, media.MsrpConnection):
            call.msrp = conn
        elif isinstance(conn, media.BfcpClientConnection):
            call.bfcp_client = conn
        elif isinstance(conn, media.BfcpServerConnection):
            call.bfcp_server = conn

    async def _close_media(self, call: Call) -> None:
        for endpoint in call.endpoints:
            await endpoint.stop()


class CoreService:
    """The core stub's SIP side on UDP: registrar + S-CSCF routing (:class:`CoreStub`)."""

    def __init__(self, reactor: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.reactor = reactor
        self.udp = SipUdp(self._on_message)
        self.port = reactor.listenUDP(port, self.udp, interface=host)
        self.stub = CoreStub((host, self.port.getHost().port))
        self.delivered: list[Request] = []

    @property
    def address(self) -> Address:
        return self.stub.address

    def _on_message(self, message: Request | Response, source: Address) -> None:
        for action in self.stub.handle(message, source, self.reactor.seconds()):
            if isinstance(action, Send):
                self.udp.send(action.message, action.to)
            elif isinstance(action, Deliver):
                self.delivered.append(action.request)
                if action.request.method != "ACK":
                    self.udp.send(make_response(action.request, 480), source)

    def stop(self) -> Any:
        return self.port.stopListening()
