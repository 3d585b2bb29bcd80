"""The lab's UE simulator: a SIP user agent with MSRP and BFCP over TLS (Twisted edge).

:class:`UserAgent` registers through a P-CSCF with
``Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec``, places calls (:meth:`UserAgent.call`)
and answers them (:meth:`UserAgent.next_call`) with MSRP and BFCP streams marked
``a=3ge2ae:requested`` and its certificate's fingerprint, follows the SDP it gets back (address,
``a=setup`` role, the AGW's fingerprint) to run the :mod:`lab.media` endpoints, and hangs up
(:meth:`UserAgent.hangup`). The TLS peer must present the certificate of the SDP fingerprint
(mutual verification: the UE refuses a wrong AGW too).

Misbehaviour on purpose: ``present="other"`` (another certificate than the one in its SDP),
``present="none"`` (no certificate), ``register_e2ae=False`` (requests e2ae per stream without
having registered the mechanisms).

SIP as a lab UA needs it: the P-CSCF is the outbound proxy of every request, dialogs follow the
Record-Route set, no retransmissions over UDP (loopback), one call at a time per dialog.
The SDP logic is pure (:mod:`lab.scenario`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

import certs
from certs.tls import KeyLogWriter
from lab import media, scenario
from lab.scenario import Kind, LocalStream, RemoteStream
from lab.sipnode import Address, SipNode, Transport
from pcscf.sip.message import Message, Request, Response, make_request, make_response
from pcscf.sip.uri import NameAddr

log = Logger(namespace="lab.ue")

MECHANISMS = "msrp-tls;mediasec, bfcp-tls;mediasec"
#: BFCP identities a UE uses when it is the floor control server of a call it answers.
FLOOR_SERVER_CONFERENCE = 1
FLOOR_SERVER_USER = 2
FLOOR_ID = 1


class UeError(Exception):
    """Root of the UE simulator's errors."""


class CallFailed(UeError):
    """The call was refused (final response >= 300) or its media could not be set up."""

    def __init__(self, reason: str, *, status: int | None = None, call_id: str = "") -> None:
        super().__init__(f"call {call_id}: {reason}" if call_id else reason)
        self.status = status
        self.call_id = call_id


def _token() -> str:
    return secrets.token_hex(6)


@attrs.define
class StreamLeg:
    """One MSRP or BFCP stream of a call, on the UE."""

    kind: Kind
    local: LocalStream
    remote: RemoteStream
    endpoint: media.MediaEndpoint[Any]
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
    def local_port(self) -> int | None:
        conn = self.connection
        if conn is None or conn.transport is None:
            return None
        return int(conn.transport.getHost().port)


@attrs.define
class Call:
    """A dialog and its media on the UE."""

    call_id: str
    outgoing: bool
    local: str  # our From/To name-addr with tag
    remote: str
    remote_target: str = ""
    route_set: list[str] = attrs.field(factory=list)
    cseq: int = 1
    offer: bytes = b""
    answer: bytes = b""
    streams: dict[str, StreamLeg] = attrs.field(factory=dict)
    ended: bool = False
    end_reason: str = ""
    _closed: defer.Deferred[None] = attrs.field(factory=defer.Deferred)

    @property
    def msrp(self) -> media.MsrpConnection:
        conn: media.MsrpConnection = self.streams["msrp"].connection
        return conn

    @property
    def bfcp(self) -> Any:
        return self.streams["bfcp"].connection

    def when_ended(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if self.ended:
            d.callback(None)
        else:
            self._closed.addBoth(lambda r: d.callback(None) or r)
        return d


class UserAgent:
    """A UE: SIP UA + MSRP/BFCP media endpoints."""

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
        register_e2ae: bool = True,
        e2ae: bool = True,
        kinds: Sequence[Kind] = ("msrp", "bfcp"),
        keylog: KeyLogWriter | None = None,
        media_timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.user = user
        self.identity = identity
        self.proxy = proxy
        self.transport = transport
        self.domain = domain
        self.host = host
        self.present = present
        self.register_e2ae = register_e2ae
        self.e2ae = e2ae
        self.kinds = tuple(kinds)
        self.keylog = keylog
        self.media_timeout = media_timeout
        self.fingerprint = identity.fingerprint("sha-256")
        self.node = SipNode(reactor, f"UE {user}", host)
        self.node.handler = self._received
        self.calls: dict[str, Call] = {}
        self.registered = False
        self._pending: dict[str, defer.Deferred[Response]] = {}
        self._incoming: list[Call] = []
        self._incoming_waiters: list[defer.Deferred[Call]] = []
        self._cseq = 1
        self._reg_call_id = f"{_token()}@{host}"
        self._tag = _token()

    # -- identity ---------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        suffix = ";transport=tcp" if self.node.transport == "tcp" else ""
        return f"<sip:{self.user}@{self.host}:{self.node.port}{suffix}>"

    def _via(self, branch: str | None = None) -> str:
        proto = "TCP" if self.node.transport == "tcp" else "UDP"
        return (
            f"SIP/2.0/{proto} {self.host}:{self.node.port};"
            f"branch={branch or 'z9hG4bK' + _token()};rport"
        )

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        if self.transport == "tcp":
            return self.node.connect_tcp(*self.proxy)
        self.node.listen_udp(0)
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[Any]:
        waits = [self.node.stop()]
        for call in self.calls.values():
            waits.extend(leg.endpoint.stop() for leg in call.streams.values())
        return defer.gatherResults(waits, consumeErrors=True)

    # -- client transactions ----------------------------------------------------------------

    def _request(self, request: Request) -> defer.Deferred[Response]:
        branch = request.top_via.branch
        d: defer.Deferred[Response] = defer.Deferred()
        self._pending[branch] = d
        self.node.send(request, self.proxy)
        return d.addTimeout(32, self.reactor)

    async def register(self, expires: int = 600) -> Response:
        """REGISTER through the P-CSCF (with the media security mechanisms unless told not
        to); returns the final response."""
        extra: list[tuple[str, str]] = [
            ("Contact", self.contact),
            ("Expires", str(expires)),
            ("Supported", "path"),
        ]
        if self.register_e2ae:
            extra.append(("Security-Client", MECHANISMS))
        self._cseq += 1
        request = make_request(
            "REGISTER",
            f"sip:{self.domain}",
            via=self._via(),
            from_=f"<{self.aor}>;tag={self._tag}",
            to=f"<{self.aor}>",
            call_id=self._reg_call_id,
            cseq=self._cseq,
            extra=extra,
        )
        response = await self._request(request)
        self.registered = 200 <= response.status < 300 and expires > 0
        log.info(
            "UE {ue}: registered {aor} ({status}), media security {mechanisms}",
            ue=self.user,
            aor=self.aor,
            status=response.status,
            mechanisms=", ".join(response.get_all("Security-Server")) or "none",
        )
        return response

    # -- placing a call ---------------------------------------------------------------------

    def _offer_streams(self, call_id: str) -> list[LocalStream]:
        tls = self.e2ae
        out: list[LocalStream] = []
        for kind in self.kinds:
            if kind == "msrp":
                scheme = "msrps" if tls else "msrp"
                path = f"{scheme}://{self.host}:{scenario.DISCARD_PORT}/{_token()};tcp"
                out.append(LocalStream("msrp", scenario.DISCARD_PORT, "active", tls, path=path))
            else:
                out.append(
                    LocalStream("bfcp", scenario.DISCARD_PORT, "active", tls, floorctrl="c-only")
                )
        return out

    def _sdp(self, streams: Sequence[LocalStream]) -> bytes:
        return scenario.render(
            self.host,
            streams,
            fingerprint=self.fingerprint,
            e2ae_requested=self.e2ae,
            user=self.user,
        )

    async def call(self, target: str) -> Call:
        """INVITE ``target``; once answered, ACK and connect the media as the answer says.
        Returns the call with verified media connections; raises :class:`CallFailed`."""
        call_id = f"{_token()}@{self.host}"
        local_streams = self._offer_streams(call_id)
        offer = self._sdp(local_streams)
        call = Call(
            call_id=call_id,
            outgoing=True,
            local=f"<{self.aor}>;tag={_token()}",
            remote=f"<{target}>",
            offer=offer,
        )
        self.calls[call_id] = call
        invite = make_request(
            "INVITE",
            target,
            via=self._via(),
            from_=call.local,
            to=call.remote,
            call_id=call_id,
            cseq=call.cseq,
            extra=[("Contact", self.contact), ("Supported", "path")],
            body=offer,
        )
        response = await self._request(invite)
        if response.status >= 300:
            self.calls.pop(call_id, None)
            raise CallFailed(
                f"{response.status} {response.reason}"
                + (f" ({response.get('Warning')})" if response.get("Warning") else ""),
                status=response.status,
                call_id=call_id,
            )
        call.remote = response.get("To") or call.remote
        contact = response.addresses("Contact")
        call.remote_target = contact[0].uri if contact else target
        call.route_set = list(reversed(response.values("Record-Route")))
        call.answer = response.body
        self._send_in_dialog(call, "ACK", cseq=call.cseq)
        remote = {s.kind: s for s in scenario.read_streams(response.body)}
        for local in local_streams:
            rs = remote.get(local.kind)
            if rs is None or rs.rejected:
                raise CallFailed(f"{local.kind} stream rejected in the answer", call_id=call_id)
            call.streams[local.kind] = self._leg(call, local, rs, server=False)
        await self._connect_media(call)
        return call

    # -- answering --------------------------------------------------------------------------

    def next_call(self) -> defer.Deferred[Call]:
        """The next incoming call, once answered, ACKed and its media connected."""
        if self._incoming:
            return defer.succeed(self._incoming.pop(0))
        d: defer.Deferred[Call] = defer.Deferred()
        self._incoming_waiters.append(d)
        return d

    def _answer_streams(self, call: Call, remote: list[RemoteStream]) -> list[LocalStream]:
        out: list[LocalStream] = []
        for rs in remote:
            if rs.kind not in self.kinds or rs.rejected:
                out.append(LocalStream(rs.kind, 0, "active", rs.tls, rejected=True))
                continue
            setup = scenario.answer_setup(rs.setup)
            server = rs.kind == "bfcp" and rs.floorctrl in (None, "c-only", "c-s")
            floor: dict[str, Any] = {}
            if rs.kind == "bfcp":
                floor = (
                    {
                        "floorctrl": "s-only",
                        "confid": FLOOR_SERVER_CONFERENCE,
                        "userid": FLOOR_SERVER_USER,
                        "floorid": FLOOR_ID,
                    }
                    if server
                    else {"floorctrl": "c-only"}
                )
            draft = LocalStream(rs.kind, scenario.DISCARD_PORT, setup, rs.tls, **floor)
            leg = self._leg(call, draft, rs, server=server)
            port = leg.endpoint.listen(0, self.host) if setup == "passive" else draft.port
            path = None
            if rs.kind == "msrp":
                scheme = "msrps" if rs.tls else "msrp"
                path = f"{scheme}://{self.host}:{port}/{_token()};tcp"
            local = attrs.evolve(draft, port=port, path=path)
            leg.local = local
            if rs.kind == "msrp":
                self._set_msrp_session(leg, path or "", rs.path)
            call.streams[rs.kind] = leg
            out.append(local)
        return out

    def _incoming_invite(self, request: Request, addr: Address) -> None:
        call_id = request.call_id
        tag = _token()
        call = Call(
            call_id=call_id,
            outgoing=False,
            local=str(request.to.with_param("tag", tag)),
            remote=request.get("From") or "",
        )
        contact = request.addresses("Contact")
        call.remote_target = contact[0].uri if contact else str(request.from_.uri)
        call.route_set = list(request.values("Record-Route"))
        call.offer = request.body
        try:
            remote = scenario.read_streams(request.body)
            answer = self._sdp(self._answer_streams(call, remote))
        except Exception as exc:
            log.warn(
                "UE {ue}: cannot answer {call_id}: {error}",
                ue=self.user,
                call_id=call_id,
                error=str(exc),
            )
            self.node.send(make_response(request, 488, to_tag=tag), addr)
            return
        call.answer = answer
        self.calls[call_id] = call
        ok = make_response(
            request,
            200,
            to_tag=tag,
            extra=[("Contact", self.contact), ("Content-Type", "application/sdp")],
            body=answer,
        )
        self.node.send(ok, addr)

    async def _after_ack(self, call: Call) -> None:
        try:
            await self._connect_media(call)
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

    def _tls(self, rs: RemoteStream) -> media.UeTls | None:
        if not rs.tls:
            return None
        return media.UeTls(self.identity, rs.fingerprints, present=self.present, keylog=self.keylog)

    def _set_msrp_session(self, leg: StreamLeg, local_uri: str, remote_path: Sequence[str]) -> None:
        from lab import msrp

        def make() -> media.MsrpConnection:
            return media.MsrpConnection(msrp.MsrpSession(local_uri, tuple(remote_path)))

        leg.endpoint.make_connection = make

    def _leg(self, call: Call, local: LocalStream, rs: RemoteStream, *, server: bool) -> StreamLeg:
        tls = self._tls(rs)
        endpoint: media.MediaEndpoint[Any]
        if rs.kind == "msrp":
            endpoint = media.msrp_endpoint(
                self.reactor,
                local_uri=local.path or "",
                remote_path=rs.path,
                tls=tls,
                call_id=call.call_id,
            )
        elif server:
            endpoint, _ = media.bfcp_server_endpoint(
                self.reactor, conference_id=FLOOR_SERVER_CONFERENCE, floors=[FLOOR_ID], tls=tls
            )
            endpoint.call_id = call.call_id
        else:
            endpoint = media.bfcp_client_endpoint(
                self.reactor,
                conference_id=rs.confid or 1,
                user_id=rs.userid or 1,
                tls=tls,
                call_id=call.call_id,
            )
        return StreamLeg(rs.kind, local, rs, endpoint)

    async def _connect_media(self, call: Call) -> None:
        waits: list[defer.Deferred[Any]] = []
        for leg in call.streams.values():
            if leg.local.rejected:
                continue
            if scenario.connects(leg.local.setup):
                d = leg.endpoint.connect(leg.remote.host, leg.remote.port)
            else:
                d = leg.endpoint.accepted()
            d.addTimeout(self.media_timeout, self.reactor)
            waits.append(d.addCallback(self._connected, leg))
        await defer.gatherResults(waits, consumeErrors=True)

    def _connected(self, conn: Any, leg: StreamLeg) -> Any:
        leg.connection = conn
        return conn

    # -- hanging up -------------------------------------------------------------------------

    def _send_in_dialog(self, call: Call, method: str, *, cseq: int) -> Request:
        extra = [("Route", route) for route in call.route_set]
        request = make_request(
            method,
            call.remote_target,
            via=self._via(),
            from_=call.local,
            to=call.remote,
            call_id=call.call_id,
            cseq=cseq,
            extra=extra,
        )
        if method == "ACK":
            self.node.send(request, self.proxy)
        return request

    async def hangup(self, call: Call) -> Response:
        """BYE; closes the media; returns the final response."""
        call.cseq += 1
        bye = self._send_in_dialog(call, "BYE", cseq=call.cseq)
        self._end(call, "hung up")
        return await self._request(bye)

    def _end(self, call: Call, reason: str) -> None:
        if call.ended:
            return
        call.ended = True
        call.end_reason = reason
        for leg in call.streams.values():
            leg.endpoint.stop()
        call._closed.callback(None)

    # -- input ------------------------------------------------------------------------------

    def _received(self, message: Message, addr: Address, transport: Transport) -> None:
        if isinstance(message, Response):
            self._response(message)
            return
        method = message.method
        call = self.calls.get(message.call_id)
        if method == "INVITE" and message.to.tag is None:
            self._incoming_invite(message, addr)
        elif method == "ACK":
            if call is not None and not call.outgoing and not call.ended:
                defer.Deferred.fromCoroutine(self._after_ack(call))
        elif method == "BYE":
            status = 200 if call is not None else 481
            self.node.send(make_response(message, status), addr)
            if call is not None:
                self._end(call, "remote hung up")
        elif method == "CANCEL":
            self.node.send(make_response(message, 200), addr)
        elif method in ("OPTIONS", "UPDATE", "INVITE"):
            self.node.send(make_response(message, 200), addr)
        else:
            self.node.send(make_response(message, 501), addr)

    def _response(self, response: Response) -> None:
        try:
            branch = response.top_via.branch
        except Exception:
            return
        method = response.cseq[1]
        if response.status < 200:
            return
        d = self._pending.pop(branch, None)
        if method == "INVITE" and response.status >= 300:
            # a non-2xx final response is ACKed in its own transaction (same branch)
            ack = make_request(
                "ACK",
                self._uri_of_call(response),
                via=str(response.top_via),
                from_=response.get("From") or "",
                to=response.get("To") or "",
                call_id=response.call_id,
                cseq=response.cseq[0],
            )
            self.node.send(ack, self.proxy)
        elif method == "INVITE" and d is None:
            call = self.calls.get(response.call_id)
            if call is not None:  # 2xx retransmission: ACK again
                self._send_in_dialog(call, "ACK", cseq=response.cseq[0])
        if d is not None and not d.called:
            d.callback(response)

    def _uri_of_call(self, response: Response) -> str:
        try:
            return NameAddr.parse(response.get("To") or "").uri
        except Exception:
            return f"sip:{self.domain}"
