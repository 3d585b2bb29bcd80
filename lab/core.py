"""The lab's core stub (Twisted edge): registrar + S-CSCF routing, a plain MSRP peer, a BFCP
floor control server.

:class:`CoreStub` listens for SIP on UDP (the P-CSCF's next hop):

- REGISTER: binds the AOR (To) to its Contact and the ``Path`` the P-CSCF added; 200 OK.
- An initial INVITE (and its CANCEL / hop-by-hop ACK) to a registered AOR is routed back like an
  S-CSCF does: Request-URI = the registered contact, ``Route`` = the stored Path, a Via of ours
  (stateless: the branch is derived from the incoming one, so a CANCEL matches its INVITE).
  Responses lose our Via and go on to the next one.
- An INVITE to ``sip:<peer_user>@<domain>`` is answered by the core itself: a plain TCP MSRP peer
  that acknowledges and records every message (``echo`` sends each one back), and a BFCP floor
  control server that grants every request (``TCP/MSRP`` / ``TCP/BFCP`` in the SDP answer, the
  TCP role from the offer's ``a=setup``). BYE closes them.
- With a list server (``list_server``, the AS of group PSIs ``list_psis``): an out-of-dialog
  request to a PSI goes to the list server like an ISC hop (Request-URI unchanged,
  ``Route: <sip:list@HOST:PORT;lr>``); the list server's requests to members are routed like any
  other, and a MESSAGE to a member with no binding who is known (registered once, or in
  ``known_users``) gets ``480 Temporarily Unavailable`` instead of 404. Every REGISTER or
  de-REGISTER that succeeds is told to the list server by a third-party REGISTER (TS 24.229
  5.4.1.7), retransmitted by Timer E until a final response or Timer F.
- With a conference focus (``conference_server``, the MRFC of the conference URIs
  ``conference_uris``): an initial request to a conference URI goes to it the same way
  (``Route: <sip:focus@HOST:PORT;lr>``), and the dialog follows our Record-Route.

Everything it did is kept for checks: :attr:`CoreStub.bindings`, :attr:`CoreStub.routed`
(the SDP protos of each INVITE it routed), :attr:`CoreStub.peer_calls` and
:attr:`CoreStub.third_party` (the outcome of each third-party REGISTER).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import secrets
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

import certs
from e2ae import bfcp, msrp
from lab import media, ue
from lab.sipnode import Address, SipNode, Transport
from lab.ue import StreamInfo
from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import Message, Request, Response, make_response
from pcscf.sip.transaction import ClientState, ClientTransaction, Timer, TimerValues
from pcscf.sip.uri import NameAddr, SipUri

log = Logger(namespace="lab.core")

DISCARD_PORT = 9
#: build_sdp wants a fingerprint; a plain (non-TLS) answer never shows it.
_NO_FINGERPRINT = certs.fingerprint_of(b"plain core peer", "sha-256")
CONFERENCE_ID = 7
CLIENT_USER_ID = 1
FLOOR_ID = 1


@attrs.frozen
class Binding:
    aor: str
    contact: str
    path: tuple[str, ...]
    expires: int


@attrs.frozen
class ThirdPartyOutcome:
    """How a third-party REGISTER to the list server ended: its final status, or ``None`` when
    none came before Timer F."""

    aor: str
    expires: int
    status: int | None


@attrs.define
class _ThirdParty:
    aor: str
    expires: int
    request: Request
    machine: ClientTransaction
    timer: Any = None


@attrs.frozen
class RoutedInvite:
    call_id: str
    from_: str
    to: str
    protos: tuple[str, ...]


@attrs.define
class PeerCall:
    """A call the core answered itself, and what its media peers saw."""

    call_id: str
    offer: bytes
    answer: bytes = b""
    protos: tuple[str, ...] = ()
    msrp: media.MediaEndpoint[media.MsrpConnection] | None = None
    msrp_remote: StreamInfo | None = None
    msrp_setup: str = "passive"
    bfcp: media.MediaEndpoint[media.BfcpServerConnection] | None = None
    bfcp_remote: StreamInfo | None = None
    bfcp_setup: str = "passive"
    floor_server: bfcp.FloorControlServer | None = None
    msrp_port: int = 0
    msrp_session: str = ""
    bfcp_port: int | None = None
    ended: bool = False

    @property
    def messages(self) -> list[msrp.MessageReceived]:
        if self.msrp is None:
            return []
        return [m for conn in self.msrp.connections for m in conn.received]

    @property
    def grants(self) -> int:
        if self.bfcp is None:
            return 0
        return sum(
            1
            for conn in self.bfcp.connections
            for m in conn.received
            if m.primitive == bfcp.Primitive.FLOOR_REQUEST
        )


class CoreStub:
    """Registrar, S-CSCF routing and the plain core peers, on one UDP port."""

    def __init__(
        self,
        reactor: Any,
        *,
        host: str = "127.0.0.1",
        domain: str = "lab.example",
        peer_user: str = "peer",
        echo: bool = False,
        app_server: tuple[str, int] | None = None,
        app_server_for: frozenset[str] = frozenset(),
        list_server: tuple[str, int] | None = None,
        list_psis: frozenset[str] = frozenset(),
        known_users: frozenset[str] = frozenset(),
        conference_server: tuple[str, int] | None = None,
        conference_uris: frozenset[str] = frozenset(),
        clock: Any = None,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.domain = domain
        self.peer_user = peer_user
        self.echo = echo
        #: Terminating filter criteria: an initial INVITE to one of these AORs goes to the AS
        #: first (Route: the AS, then us with ``;term``); the AS's own INVITE, routed back
        #: through that second entry, goes on to the AOR's registered contact.
        self.app_server = app_server
        self.app_server_for = app_server_for
        #: The AS of the group PSIs: requests to a PSI go there, and it hears of every
        #: registration (third-party REGISTER).
        self.list_server = list_server
        self.list_psis = _aors(list_psis)
        #: Members a MESSAGE gets 480 for (not 404) while they have no binding; an AOR that
        #: has registered once is known too.
        self.known_users = _aors(known_users)
        self.ever_registered: set[str] = set()
        #: The conference focus (an MRFC) and the conference URIs it serves: an initial
        #: request to one of them goes there (TS 24.147: the conference URI is a PSI).
        self.conference_server = conference_server
        self.conference_uris = _aors(conference_uris)
        #: Timers of the third-party REGISTERs (the reactor unless a test gives a clock).
        self.clock = clock if clock is not None else reactor
        self.third_party: list[ThirdPartyOutcome] = []
        self._third_party: dict[str, _ThirdParty] = {}
        self._third_party_cseq = itertools.count(1)
        self._told: dict[str, tuple[str, int]] = {}
        self.node = SipNode(reactor, "core", host)
        self.node.handler = self._received
        self.bindings: dict[str, Binding] = {}
        self.routed: list[RoutedInvite] = []
        self.peer_calls: dict[str, PeerCall] = {}

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def peer_uri(self) -> str:
        return f"sip:{self.peer_user}@{self.domain}"

    def listen(self, port: int = 0) -> int:
        bound = self.node.listen(port)
        log.info(
            "core: S-CSCF/registrar on {address}, plain peer {peer_uri}",
            address=f"{self.host}:{bound}",
            peer_uri=self.peer_uri,
        )
        return bound

    def stop(self) -> defer.Deferred[Any]:
        for pending in self._third_party.values():
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
        self._third_party.clear()
        waits = [self.node.stop()]
        for call in self.peer_calls.values():
            waits.extend(self._stop_peer(call))
        return defer.gatherResults(waits, consumeErrors=True)

    # -- SIP --------------------------------------------------------------------------------

    def _received(self, message: Message, addr: Address, transport: Transport) -> None:
        if isinstance(message, Response):
            if not self._third_party_response(message):
                self._forward_response(message)
            return
        if message.method == "REGISTER":
            self._register(message, addr)
            return
        target = SipUri.parse(message.uri, "Request-URI")
        ours_peer = target.user == self.peer_user and message.to.tag is not None
        if message.to.tag is None and target.user == self.peer_user:
            if message.method == "INVITE":
                self._answer(message, addr)
            elif message.method == "CANCEL":
                self.node.send(make_response(message, 200), addr)
            return
        if ours_peer or message.call_id in self.peer_calls:
            self._peer_request(message, addr)
            return
        self._route(message, addr, target)

    def _register(self, request: Request, addr: Address) -> None:
        aor = request.to.sip_uri("To").aor()
        contacts = request.addresses("Contact")
        expires_text = (request.get("Expires") or "3600").strip()
        if not (expires_text.isdigit() and expires_text.isascii() and len(expires_text) <= 10):
            raise RemoteSipError(400, f"Bad Expires {expires_text[:20]!r}", where="Expires")
        expires = int(expires_text)
        extra: list[tuple[str, str]] = []
        bound = bool(contacts) and expires > 0
        if bound:
            binding = Binding(aor, contacts[0].uri, tuple(request.values("Path")), expires)
            self.bindings[aor] = binding
            self.ever_registered.add(aor)
            extra.append(("Contact", f"<{binding.contact}>;expires={expires}"))
            extra.extend(("Path", p) for p in binding.path)
        else:
            self.bindings.pop(aor, None)
        extra.append(("Expires", str(expires)))
        log.info(
            "core: {aor} {what} via Path {path}",
            aor=aor,
            what="registered" if expires > 0 else "unregistered",
            path=", ".join(request.values("Path")) or "none",
        )
        self.node.send(make_response(request, 200, to_tag=secrets.token_hex(4), extra=extra), addr)
        # a retransmitted REGISTER (same Call-ID and CSeq) was told to the list server already
        seen = (request.call_id, request.cseq[0])
        if self.list_server is not None and self._told.get(aor) != seen:
            self._told[aor] = seen
            self._third_party_register(aor, expires if bound else 0)

    def _branch(self, request: Request) -> str:
        digest = hashlib.sha256(request.top_via.branch.encode()).hexdigest()[:16]
        return f"z9hG4bK{digest}"

    def _route(self, request: Request, addr: Address, target: SipUri) -> None:
        binding = self.bindings.get(target.aor())
        routes = list(request.values("Route"))
        from_as = False
        if routes:
            first = NameAddr.parse(routes[0], "Route").sip_uri("Route")
            if (first.host, first.port) == (self.host, self.port):
                routes = routes[1:]
                from_as = any(k.lower() == "term" for k, _ in first.params)
        uri = request.uri
        from_list = self.list_server is not None and _same_address(addr, self.list_server)
        if (
            self.list_server is not None
            and request.to.tag is None
            and not from_list
            and target.aor() in self.list_psis
        ):
            # like an ISC hop to the AS that serves the PSI (TS 24.229 5.4.3.3)
            host, port = self.list_server
            routes = [f"<sip:list@{host}:{port};lr>", *routes]
            log.info(
                "core: {method} {call_id} to {aor} goes to the list server at {address}",
                method=request.method,
                call_id=request.call_id,
                aor=target.aor(),
                address=f"{host}:{port}",
            )
        elif (
            self.conference_server is not None
            and request.to.tag is None
            and target.aor() in self.conference_uris
        ):
            host, port = self.conference_server
            routes = [f"<sip:focus@{host}:{port};lr>", *routes]
            log.info(
                "core: {method} {call_id} to {aor} goes to the conference focus at {address}",
                method=request.method,
                call_id=request.call_id,
                aor=target.aor(),
                address=f"{host}:{port}",
            )
        elif (
            self.app_server is not None
            and binding is not None
            and request.method == "INVITE"
            and request.to.tag is None
            and not from_as
            and target.aor() in self.app_server_for
        ):
            host, port = self.app_server
            routes = [f"<sip:msrp-as@{host}:{port};lr>", f"<sip:{self.host}:{self.port};lr;term>"]
            log.info(
                "core: {call_id} to {aor} goes through the AS at {address}",
                call_id=request.call_id,
                aor=target.aor(),
                address=f"{host}:{port}",
            )
        elif binding is not None and request.to.tag is None:
            uri = binding.contact
            routes = list(binding.path) + routes
        elif request.to.tag is None:
            if request.method != "ACK":
                self._no_binding(request, addr, target.aor())
            return
        next_hop = (
            NameAddr.parse(routes[0], "Route").sip_uri("Route") if routes else SipUri.parse(uri)
        )
        if not _is_ip(next_hop.host):
            if request.method != "ACK":
                self.node.send(make_response(request, 404, to_tag="core404"), addr)
            return
        via = f"SIP/2.0/UDP {self.host}:{self.port};branch={self._branch(request)}"
        top = request.top_via.with_received(addr[0], addr[1])
        headers = [(n, v) for n, v in request.without("Route") if n.lower() not in ("via", "v")]
        forwards = request.get("Max-Forwards")
        out_headers: list[tuple[str, str]] = [("Via", via), ("Via", str(top))]
        out_headers += [("Via", str(v)) for v in request.vias[1:]]
        out_headers += [("Route", r) for r in routes]
        if request.method == "INVITE" and request.to.tag is None:
            # like an S-CSCF: stay on the dialog's path (separates the two passes of a spiral)
            out_headers.append(("Record-Route", f"<sip:{self.host}:{self.port};lr>"))
        for name, value in headers:
            if name.lower() == "max-forwards":
                value = str(max(0, int(forwards or "70") - 1))
            out_headers.append((name, value))
        forwarded = request.evolve(headers=tuple(out_headers), uri=uri)
        if request.method == "INVITE" and request.to.tag is None:
            protos = tuple(s.proto for s in _streams(request.body))
            self.routed.append(
                RoutedInvite(request.call_id, request.from_.uri, request.to.uri, protos)
            )
            log.info(
                "core: routing {call_id} to {contact} via {route}",
                call_id=request.call_id,
                contact=uri,
                route=", ".join(routes) or "-",
            )
        self.node.send(forwarded, next_hop.address())

    def _no_binding(self, request: Request, addr: Address, aor: str) -> None:
        """A request to an AOR with no binding: 404, or for a MESSAGE to a user we know (one
        that registered once, or a configured member) 480, as an S-CSCF answers for a user
        who is not reachable now (RFC 3261 21.4.18)."""
        known = aor in self.ever_registered or aor in self.known_users
        if request.method == "MESSAGE" and known:
            self.node.send(make_response(request, 480, to_tag="core480"), addr)
            log.info(
                "core: MESSAGE {call_id} to {aor}: not registered (480)",
                call_id=request.call_id,
                aor=aor,
                status=480,
            )
            return
        self.node.send(make_response(request, 404, to_tag="core404"), addr)

    # -- third-party registration (TS 24.229 5.4.1.7) ----------------------------------------

    def _third_party_register(self, aor: str, expires: int) -> None:
        """Tell the list server that ``aor`` registered for ``expires`` s (0: de-registered)."""
        assert self.list_server is not None
        host, port = self.list_server
        branch = "z9hG4bK" + secrets.token_hex(8)
        hostport = f"{self.host}:{self.port}"
        headers = (
            ("Via", f"SIP/2.0/UDP {hostport};branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", f"<{aor}>;tag={secrets.token_hex(4)}"),
            ("To", f"<{aor}>"),
            ("Call-ID", f"{secrets.token_hex(8)}@{self.host}"),
            ("CSeq", f"{next(self._third_party_cseq)} REGISTER"),
            ("Contact", f"<sip:core@{hostport}>"),
            ("Expires", str(expires)),
        )
        request = Request(headers, b"", "REGISTER", f"sip:{_hostport(host, port)}")
        machine = ClientTransaction.for_method("REGISTER", "udp", TimerValues())
        pending = _ThirdParty(aor, expires, request, machine)
        self._third_party[branch] = pending
        self.node.send(request, (host, port))
        machine.start(self.clock.seconds())
        self._third_party_arm(branch, pending)

    def _third_party_arm(self, branch: str, pending: _ThirdParty) -> None:
        machine = pending.machine
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None
        if machine.state is ClientState.TERMINATED:
            self._third_party.pop(branch, None)
            return
        deadlines = (machine.retransmit_at, machine.timeout_at, machine.expire_at)
        due = [t for t in deadlines if t is not None]
        if due:
            delay = max(0.0, min(due) - self.clock.seconds())
            pending.timer = self.clock.callLater(delay, self._third_party_due, branch)

    def _third_party_due(self, branch: str) -> None:
        pending = self._third_party.get(branch)
        if pending is None:
            return
        pending.timer = None
        fired = pending.machine.fire(self.clock.seconds())
        if fired.timer is Timer.E and self.list_server is not None:
            self.node.send(pending.request, self.list_server)
        elif fired.timer is Timer.F:
            self.third_party.append(ThirdPartyOutcome(pending.aor, pending.expires, None))
            log.warn(
                "core: third-party REGISTER of {aor} to the list server: no answer",
                aor=pending.aor,
                status=408,
                expires=pending.expires,
            )
        self._third_party_arm(branch, pending)

    def _third_party_response(self, response: Response) -> bool:
        """A response to one of our third-party REGISTERs (True), or one to pass on."""
        vias = response.vias
        if len(vias) != 1 or (vias[0].host, vias[0].port) != (self.host, self.port):
            return False
        pending = self._third_party.get(vias[0].branch)
        if pending is None:
            return True  # one Via, ours: an answer to a REGISTER that is over
        reception = pending.machine.receive(response.status, self.clock.seconds())
        if reception.pass_up and response.status >= 200:
            self.third_party.append(
                ThirdPartyOutcome(pending.aor, pending.expires, response.status)
            )
            fields = {"aor": pending.aor, "status": response.status, "expires": pending.expires}
            if 200 <= response.status < 300:
                log.info("core: third-party REGISTER of {aor}: {status}", **fields)
            else:
                log.warn("core: third-party REGISTER of {aor} refused: {status}", **fields)
        self._third_party_arm(vias[0].branch, pending)
        return True

    def _forward_response(self, response: Response) -> None:
        vias = response.vias
        if not vias or (vias[0].host, vias[0].port) != (self.host, self.port) or len(vias) < 2:
            return
        rest = [(n, v) for n, v in response.headers if n.lower() not in ("via", "v")]
        headers = tuple([("Via", str(v)) for v in vias[1:]] + rest)
        self.node.send(response.evolve(headers=headers), vias[1].response_address())

    # -- the plain core peer ----------------------------------------------------------------

    def _answer(self, request: Request, addr: Address) -> None:
        call = PeerCall(request.call_id, request.body)
        try:
            offered = ue.streams_of(request.body, from_offerer=True)
            if not offered or any(s.tls for s in offered):
                raise ue.RemoteUeError(
                    "the plain core peer takes TCP/MSRP and TCP/BFCP", where="SDP"
                )
            for stream in offered:
                self._peer_stream(call, stream)
        except (ue.UeError, ValueError) as exc:
            self.node.send(make_response(request, 488, to_tag="core488"), addr)
            log.warn(
                "core: cannot answer {call_id}: {error}", call_id=request.call_id, error=str(exc)
            )
            return
        call.protos = tuple(s.proto for s in offered)
        call.answer = ue.build_sdp(
            ue.MediaPlan(
                self.host,
                _NO_FINGERPRINT,
                call.msrp_port,
                msrp_session=call.msrp_session,
                bfcp_port=call.bfcp_port,
                setup=call.msrp_setup,  # type: ignore[arg-type]
                bfcp_setup=call.bfcp_setup,  # type: ignore[arg-type]
                e2ae=False,
                tls=False,
                conference_id=CONFERENCE_ID,
                user_id=CLIENT_USER_ID,
                floor_id=FLOOR_ID,
                floorctrl="s-only",
            ),
            username="core",
        )
        self.peer_calls[call.call_id] = call
        contact = f"<sip:{self.peer_user}@{self.host}:{self.port}>"
        ok = make_response(
            request,
            200,
            to_tag=secrets.token_hex(4),
            extra=[("Contact", contact), ("Content-Type", "application/sdp")],
            body=call.answer,
        )
        self.node.send(ok, addr)

    def _peer_stream(self, call: PeerCall, stream: StreamInfo) -> None:
        setup = stream.our_role
        if stream.media == "message":
            call.msrp_session = secrets.token_hex(6)
            holder: list[str] = [""]
            endpoint = media.msrp_endpoint(self.reactor, local_uri="", call_id=call.call_id)

            def make(remote_path: tuple[str, ...] = stream.path) -> media.MsrpConnection:
                conn = media.MsrpConnection(msrp.MsrpSession(holder[0], remote_path))
                if self.echo:
                    conn.when_ready().addCallback(self._echo_loop)
                return conn

            endpoint.make_connection = make
            port = endpoint.listen(0, self.host) if setup == "passive" else DISCARD_PORT
            holder[0] = f"msrp://{self.host}:{port}/{call.msrp_session};tcp"
            call.msrp, call.msrp_remote, call.msrp_setup = endpoint, stream, setup
            call.msrp_port = port
            return
        server_ep, state = media.bfcp_server_endpoint(
            self.reactor, conference_id=CONFERENCE_ID, floors=[FLOOR_ID]
        )
        server_ep.call_id = call.call_id
        port = server_ep.listen(0, self.host) if setup == "passive" else DISCARD_PORT
        call.bfcp, call.bfcp_remote, call.bfcp_setup = server_ep, stream, setup
        call.floor_server = state
        call.bfcp_port = port

    def _echo_loop(self, conn: media.MsrpConnection) -> None:
        def next_message(count: int) -> None:
            d = conn.wait_messages(count)

            def got(messages: list[msrp.MessageReceived]) -> None:
                message = messages[count - 1]
                sent = conn.send_message(b"echo: " + message.body, message.content_type)
                sent.addErrback(lambda _: None)
                next_message(count + 1)

            d.addCallbacks(got, lambda _: None)

        next_message(1)

    def _peer_request(self, request: Request, addr: Address) -> None:
        call = self.peer_calls.get(request.call_id)
        if request.method == "ACK":
            if call is not None and not call.ended:
                self._peer_connect(call)
            return
        status = 200 if call is not None or request.method != "BYE" else 481
        self.node.send(make_response(request, status), addr)
        if request.method == "BYE" and call is not None:
            call.ended = True
            self._stop_peer(call)

    def _peer_connect(self, call: PeerCall) -> None:
        if call.msrp is not None and call.msrp_remote is not None and call.msrp_setup == "active":
            d1 = call.msrp.connect(call.msrp_remote.host or self.host, call.msrp_remote.port)
            d1.addErrback(self._connect_failed, call, "msrp")
        if call.bfcp is not None and call.bfcp_remote is not None and call.bfcp_setup == "active":
            d2 = call.bfcp.connect(call.bfcp_remote.host or self.host, call.bfcp_remote.port)
            d2.addErrback(self._connect_failed, call, "bfcp")

    def _connect_failed(self, failure: Any, call: PeerCall, stream: str) -> None:
        log.warn(
            "core: {stream} connection of {call_id} failed: {error}",
            stream=stream,
            call_id=call.call_id,
            error=failure.getErrorMessage(),
        )

    def _stop_peer(self, call: PeerCall) -> list[defer.Deferred[Any]]:
        out: list[defer.Deferred[Any]] = []
        if call.msrp is not None:
            out.append(call.msrp.stop())
        if call.bfcp is not None:
            out.append(call.bfcp.stop())
        return out


def _aors(uris: Iterable[str]) -> frozenset[str]:
    return frozenset(SipUri.parse(u, "AOR").aor() for u in uris)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _same_address(addr: Address, other: tuple[str, int]) -> bool:
    return (addr[0], int(addr[1])) == (other[0], int(other[1]))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _streams(body: bytes) -> list[StreamInfo]:
    if not body:
        return []
    try:
        return ue.streams_of(body, from_offerer=True)
    except (ue.UeError, ValueError):
        return []
