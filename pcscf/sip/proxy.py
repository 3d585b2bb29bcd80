"""The P-CSCF's transaction-stateful SIP proxy (RFC 3261 sections 16 and 17), sans I/O.

Feed it messages with :meth:`ProxyCore.receive` (with the :class:`Peer` they came from and the
time), media results with :meth:`ProxyCore.media_result`, and the clock with
:meth:`ProxyCore.tick` at :meth:`ProxyCore.next_deadline`; it returns :data:`Action` values:
messages to send, SDP bodies for the media handler, dialog-ended notices and log events.

Two sides: ``gm`` (towards UEs) and ``core`` (towards the S-CSCF / next hop). An initial request
from the Gm side is *originating* and goes to the next hop; one from the core side is
*terminating* and goes to the registered contact (found by the Path token in the Route, or by
Request-URI). In-dialog requests follow the Route set (we Record-Route twice, once per side).

Per call, messages that touch the media handler are processed strictly in order: while an SDP
body of a call is with the handler, later messages of that call wait (other calls do not).

The transaction state machines and their timers are :mod:`pcscf.sip.transaction`'s; this module
keeps routing, registration, dialogs and the media plan, sends what a transaction asks for, and
holds one :class:`~pcscf.sip.transaction.Schedule` of every deadline (transactions' and
session timers').
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal

import attrs

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.headers import Via, canonical, option_tags, split_list
from pcscf.sip.media import (
    DialogId,
    Direction,
    Forward,
    Kind,
    MediaContext,
    MediaResult,
    Reject,
    Side,
    UeInfo,
)
from pcscf.sip.message import (
    Header,
    Message,
    MessageError,
    Request,
    Response,
    make_response,
    validate_request,
    validate_response,
)
from pcscf.sip.registrar import Binding, Flow, PendingRegister, Registrar, read_register
from pcscf.sip.transaction import (
    ClientDue,
    ClientKey,
    ClientTransaction,
    Schedule,
    ServerDue,
    ServerKey,
    ServerTransaction,
    Timer,
    TimerValues,
    Transport,
)
from pcscf.sip.uri import NameAddr, SipUri, make_uri

MAGIC = "z9hG4bK"
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
#: RFC 3428 pager-mode messages: routed like an initial request (originating to the next hop,
#: terminating to the registered contact) or along the route set inside a dialog, never
#: Record-Routed, their body (multipart/mixed, application/pkcs7-mime, ...) relayed as it came.
MESSAGE = "MESSAGE"
#: The most a UDP datagram over IPv4 can carry (65,535 less the IP and UDP headers).
MAX_UDP_PAYLOAD = 65_507
SUPPORTED_OPTIONS = frozenset({"mediasec", "path", "100rel", "timer", "sec-agree", "replaces"})


@attrs.frozen
class Peer:
    """A transport address on one side: where a message came from or goes to."""

    side: Side
    transport: Transport
    host: str
    port: int

    @property
    def flow(self) -> Flow:
        return Flow(self.transport, self.host, self.port)

    def __str__(self) -> str:
        return f"{self.side}/{self.transport}:{self.host}:{self.port}"


# -- actions ---------------------------------------------------------------------------------
@attrs.frozen
class Send:
    peer: Peer
    message: Request | Response
    #: A response passed on from the other side (False: one the proxy made itself). For the
    #: edge's counters only; not part of the action's identity.
    relayed: bool = attrs.field(default=False, eq=False)


@attrs.frozen
class MediaRequest:
    """Ask the media handler about ``body``; answer with :meth:`ProxyCore.media_result`."""

    token: int
    context: MediaContext
    body: bytes


#: How a call ended, for the edge's counters (docs/metrics.md): answered (it had been
#: answered), rejected (a final error, or its SDP refused), cancelled, failed (no answer, the
#: next hop failed, a call that was not answered ended otherwise).
CallOutcome = Literal["answered", "rejected", "cancelled", "failed"]
#: Why, in a bounded vocabulary (``reason`` is the text for the log).
CallCause = Literal[
    "bye",
    "cancel",
    "final_response",
    "offer_rejected",
    "answer_rejected",
    "media_handler",
    "session_timer",
    "replaced",
    "no_answer",
    "next_hop_failed",
]


@attrs.frozen
class DialogEnded:
    dialog: DialogId
    reason: str
    #: For the counters only; not part of the action's identity.
    outcome: CallOutcome = attrs.field(default="failed", eq=False)
    cause: CallCause = attrs.field(default="bye", eq=False)


@attrs.frozen
class ReofferAnswered:
    """Final response to a re-offer the proxy sent on the handler's behalf."""

    token: int
    status: int
    body: bytes


@attrs.frozen
class Log:
    """A log event for the edge: a format string over named fields, and a level."""

    level: Literal["debug", "info", "warn", "error"]
    format: str
    fields: Mapping[str, object]


Action = Send | MediaRequest | DialogEnded | ReofferAnswered | Log


@attrs.frozen
class ProxyConfig:
    """Our two addresses, the next hop towards the core, timers and the advertised mechanisms."""

    gm: tuple[str, int]
    core: tuple[str, int]
    next_hop: Peer
    network_mechanisms: frozenset[str] = frozenset({"msrp-tls", "bfcp-tls"})
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: Timer C: how long an INVITE may ring (after a provisional response) before CANCEL.
    timer_c: float = 180.0
    #: Answer requests from UEs that are not registered with 403 (else forward them).
    require_registration: bool = True
    #: Bindings held at most, and at most per source address; a REGISTER from a new flow
    #: beyond either is answered 503 with Retry-After (refreshes and removals always pass).
    max_registrations: int = 10_000
    max_registrations_per_source: int = 16
    #: Call legs (dialogs, originating and terminating counted apart) at once; a new INVITE
    #: beyond is answered 503 with Retry-After.
    max_calls: int = 5_000
    #: Server transactions held at once (the ones still running and the finished ones kept
    #: until Timer J/K/D/L, 32 s over UDP, to answer retransmissions); a new request beyond is
    #: answered 503 with Retry-After, statelessly (no transaction is made for it). The client
    #: transactions follow: one per forwarded request, besides the proxy's own in-dialog ones.
    max_transactions: int = 100_000
    #: Seconds in the Retry-After of those 503s.
    retry_after: int = 30
    #: (The edge) TCP connections held per side at most; more are closed at accept.
    max_connections: int = 1_024
    #: (The edge) seconds a TCP connection may stay silent (no byte, not even a CRLF
    #: keep-alive) before it is closed; 0: never.
    idle_timeout: float = 900.0
    #: RFC 3261 18.1.1: a request larger than this many bytes (path MTU unknown: 1300) for a
    #: UDP next hop goes over TCP to the same address instead; 0 keeps it on UDP. Either way a
    #: request that no UDP datagram can carry is answered 513.
    udp_tcp_threshold: int = 1300

    def __attrs_post_init__(self) -> None:
        names = ("max_registrations", "max_registrations_per_source", "max_calls")
        for name in (*names, "max_transactions", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.retry_after < 0 or not self.idle_timeout >= 0:
            raise ValueError("retry_after and idle_timeout must not be negative")
        if not 0 <= self.udp_tcp_threshold <= MAX_UDP_PAYLOAD:
            raise ValueError(f"udp_tcp_threshold must be between 0 and {MAX_UDP_PAYLOAD}")

    def address(self, side: Side) -> tuple[str, int]:
        return self.gm if side == "gm" else self.core

    @property
    def timers(self) -> TimerValues:
        return TimerValues(self.t1, self.t2, self.t4, self.timer_c)


# -- state -----------------------------------------------------------------------------------
#: Work queued on a dialog, run when the dialog is free (one media request at a time).
DialogWork = Callable[[float, list[Action]], None]


@attrs.define
class ServerTxn:
    """A request received, as the proxy holds it: its transaction (``machine``), where it came
    from, and the dialog and client transaction it led to."""

    key: ServerKey
    request: Request
    peer: Peer
    machine: ServerTransaction
    dialog: DialogId | None = None
    client: ClientKey | None = None
    cancelled: bool = False
    #: For a MESSAGE: which way it went (its log event names it).
    direction: Direction | None = None
    #: Where the request was forwarded to (None: not forwarded).
    sent_to: Peer | None = None

    @property
    def last(self) -> Response | None:
        return self.machine.last

    @property
    def final(self) -> bool:
        return self.machine.final


@attrs.define
class ClientTxn:
    """A request sent, as the proxy holds it: its transaction (``machine``), where it went, and
    what it is for (the server transaction it forwards, the dialog, a REGISTER, or, internal,
    the proxy's own request with ``on_final``)."""

    key: ClientKey
    request: Request
    peer: Peer
    machine: ClientTransaction
    server: ServerKey | None = None
    dialog: DialogId | None = None
    internal: bool = False
    offer_in_request: bool = False
    register: PendingRegister | None = None
    answers: dict[bytes, MediaResult] = attrs.field(factory=dict)
    released: bool = False
    #: Sent over TCP although the next hop was UDP, because of its size (RFC 3261 18.1.1).
    switched: bool = False
    on_final: Callable[[Response, float, list[Action]], None] | None = None

    @property
    def method(self) -> str:
        return self.key[1]


@attrs.frozen
class SessionDue:
    """The RFC 4028 session timer of ``dialog`` may have expired."""

    dialog: DialogId


#: Whose deadline a schedule entry is.
Due = ClientDue | ServerDue | SessionDue


@attrs.define
class Party:
    """One end of a dialog as the proxy sees it: where to send and how to address it."""

    side: Side
    target: str = ""
    route: list[str] = attrs.field(factory=list)
    cseq: int = 0


@attrs.define
class Dialog:
    id: DialogId
    ue: UeInfo
    invite: Request
    caller: Party
    callee: Party
    from_hdr: str
    to_hdr: str
    state: str = "early"
    awaiting_answer: bool = False
    callee_released: bool = False
    busy: bool = False
    queue: deque[DialogWork] = attrs.field(factory=deque)
    server: ServerKey | None = None
    client: ClientKey | None = None
    expires_at: float | None = None


@attrs.define
class _Pending:
    dialog: Dialog
    on_forward: Callable[[bytes, float, list[Action]], None]
    on_reject: Callable[[Reject, float, list[Action]], None]


def _loop_hash(request: Request) -> str:
    # RFC 3261 16.6 step 8 includes the topmost Route: an in-dialog request of a spiral (both
    # UEs behind this proxy, the S-CSCF record-routing in between) comes back with the same
    # Request-URI, tags and CSeq, but another Route.
    routes = request._values("route")
    parts = [
        request.uri,
        routes[0] if routes else "",
        request.from_.tag or "",
        request.to.tag or "",
        request.call_id,
        str(request.cseq[0]),
        ",".join(request.get_all("proxy-require")),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]


class ProxyCore:
    """The stateful proxy. Not thread-safe; one instance per P-CSCF."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        registrar: Registrar | None = None,
        new_id: Callable[[], str] = lambda: secrets.token_hex(6),
    ) -> None:
        self.config = config
        self.registrar = registrar if registrar is not None else Registrar()
        self._new_id = new_id
        self.server_txns: dict[ServerKey, ServerTxn] = {}
        self.client_txns: dict[ClientKey, ClientTxn] = {}
        self.dialogs: dict[DialogId, Dialog] = {}
        self._pending: dict[int, _Pending] = {}
        self._tokens = itertools.count(1)
        self._timers: Schedule[Due] = Schedule()
        self._timer_values = config.timers
        self._flow_tokens: dict[Flow, str] = {}
        self._next_reap = 0.0
        self._record_routes: dict[tuple[Side, Transport, Direction], str] = {}
        #: our Via up to its branch value, per side and transport
        self._via_starts: dict[tuple[Side, Transport], str] = {}
        #: our two sent-by values (Via host:port), as loop detection compares them
        self._own_sent_by = frozenset({self._sent_by("gm"), self._sent_by("core")})
        #: The messages of transactions that reached their final response since the last
        #: call in, each with whether to keep its serialised bytes (a response that may be
        #: sent again): their lookups are dropped at the start of the next call in, once the
        #: edge has sent what the call before asked for (:meth:`_shed_finished`).
        self._finished: list[tuple[Message, bool]] = []

    # ======================================================================= public interface
    def receive(self, peer: Peer, message: Request | Response, now: float) -> list[Action]:
        """A parsed message arrived from ``peer``."""
        if self._finished:
            self._shed_finished()
        out: list[Action] = []
        try:
            if isinstance(message, Request):
                validate_request(message)
                self._on_request(peer, message, now, out)
            else:
                validate_response(message)
                self._on_response(peer, message, now, out)
        except RemoteSipError as exc:
            self._refuse(peer, message, exc, out)
        return out

    def malformed(self, peer: Peer, error: MessageError) -> list[Action]:
        """A message that did not parse: answer 400 if enough of a request could be read."""
        out: list[Action] = [
            Log(
                "warn",
                "Malformed SIP message from {peer}: {status} {reason}",
                {"peer": str(peer), "status": error.status, "reason": error.reason},
            )
        ]
        if error.partial is not None:
            out.append(Send(peer, make_response(error.partial, error.status, error.reason)))
        return out

    def media_result(self, token: int, result: MediaResult, now: float) -> list[Action]:
        """The media handler answered the :class:`MediaRequest` ``token``."""
        if self._finished:
            self._shed_finished()
        out: list[Action] = []
        pending = self._pending.pop(token, None)
        if pending is None:
            return out
        if isinstance(result, Forward):
            pending.on_forward(result.body, now, out)
        else:
            pending.on_reject(result, now, out)
        dialog = pending.dialog
        dialog.busy = False
        self._drain(dialog, now, out)
        if dialog.state == "ended" and not dialog.busy and not dialog.queue:
            if self.dialogs.get(dialog.id) is dialog:
                del self.dialogs[dialog.id]
        return out

    def transport_failed(self, peer: Peer, now: float) -> list[Action]:
        """The edge could not reach ``peer`` (a TCP connection refused or timed out): every
        client transaction waiting on it ends now rather than at Timer B/F. RFC 3261 8.1.3.1
        treats a transport error as 503; a request that went over TCP only because it was too
        large for UDP (18.1.1) is answered 513, as no transport could carry it."""
        out: list[Action] = []
        for key, txn in list(self.client_txns.items()):
            if txn.peer != peer or not txn.machine.unanswered:
                continue
            txn.machine.transport_failed()
            del self.client_txns[key]
            out.append(
                Log(
                    "warn",
                    "Transport to {peer} failed for {method} ({call_id})",
                    {"peer": str(peer), "method": txn.method, "call_id": txn.request.call_id},
                )
            )
            if txn.switched:
                self._too_large(txn, f"TCP to {peer.host}:{peer.port} failed", now, out)
                continue
            self._client_failed(
                txn, 503, None, f"transport to {peer.host}:{peer.port} failed", now, out
            )
        return out

    def _too_large(self, txn: ClientTxn, why: str, now: float, out: list[Action]) -> None:
        size = len(txn.request.serialise())
        out.append(
            Log(
                "warn",
                "{method} of {size} bytes for {call_id} not sent over UDP: {why}",
                {"method": txn.method, "size": size, "call_id": txn.request.call_id, "why": why},
            )
        )
        self._client_failed(
            txn, 513, None, f"request of {size} bytes too large for UDP; {why}", now, out
        )

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def tick(self, now: float) -> list[Action]:
        """Run every timer due at ``now``."""
        if self._finished:
            self._shed_finished()
        out: list[Action] = []
        while (due := self._timers.pop_due(now)) is not None:
            if isinstance(due, ClientDue):
                self._client_timer(due.key, now, out)
            elif isinstance(due, ServerDue):
                self._server_timer(due.key, now, out)
            else:
                self._session_timer_due(due.dialog, now, out)
        if now >= self._next_reap:
            self._next_reap = now + 10.0
            for gone in self.registrar.expire(now):
                out.append(Log("info", "Registration of {aor} expired", {"aor": gone.aor}))
        return out

    def _shed_finished(self) -> None:
        """Drop the lookups of the messages of the transactions finished since the last call
        in (held until Timer J/K/D/L for retransmissions only; memory per call under load
        20 -> 12 KB: docs/performance.md, "Sustained load")."""
        for message, keep_wire in self._finished:
            message._shed(keep_wire)
        self._finished.clear()

    def end_call(self, dialog_id: DialogId, cause: int, text: str, now: float) -> list[Action]:
        """End a call from the inside: BYE both ways (or CANCEL + error final if not answered),
        each with ``Reason: SIP;cause=<cause>;text="<text>"``."""
        out: list[Action] = []
        dialog = self.dialogs.get(dialog_id)
        if dialog is not None:
            why = "ended by the media handler: " + text
            self._end(dialog, cause, text, why, now, out, "media_handler")
        return out

    def reoffer(
        self, dialog_id: DialogId, side: Side, body: bytes, now: float
    ) -> tuple[int, list[Action]]:
        """Send a re-INVITE with ``body`` to the party on ``side``; its final response comes
        back as :class:`ReofferAnswered` with the returned token (the proxy ACKs a 2xx)."""
        out: list[Action] = []
        token = next(self._tokens)
        dialog = self.dialogs.get(dialog_id)
        if dialog is None or dialog.state != "confirmed":
            out.append(ReofferAnswered(token, 481, b""))
            return token, out
        party = dialog.caller if dialog.caller.side == side else dialog.callee

        def on_final(response: Response, now: float, out: list[Action]) -> None:
            if 200 <= response.status < 300:
                self._send_in_dialog(dialog, party, "ACK", b"", now, out, [], response=response)
            body = response.body if response.has_sdp else b""
            out.append(ReofferAnswered(token, response.status, body))

        self._send_in_dialog(
            dialog,
            party,
            "INVITE",
            body,
            now,
            out,
            [("Content-Type", "application/sdp")],
            on_final=on_final,
        )
        return token, out

    # ============================================================================ requests
    def _on_request(self, peer: Peer, msg: Request, now: float, out: list[Action]) -> None:
        via = msg.top_via
        top = via.with_received(peer.host, peer.port)
        msg = _with_top_via(msg, top)
        if msg.method == "ACK":
            txn = self.server_txns.get((via.branch, via.sent_by, "INVITE"))
            if txn is not None and txn.machine.receive_ack():
                return  # the ACK of our non-2xx final ends here (RFC 3261 17.2.1)
            self._route(None, peer, msg, now, out)
            return
        if msg.method == "CANCEL":
            self._on_cancel(peer, msg, via, now, out)
            return
        key = (via.branch, via.sent_by, msg.method)
        txn = self.server_txns.get(key)
        if txn is not None:
            again = txn.machine.request_again()
            if again is not None:
                out.append(Send(txn.peer, again))
            return
        forwards = msg.get("max-forwards")
        if forwards is not None and int(forwards.strip()) <= 0:
            raise RemoteSipError(483, "Too Many Hops")
        own = self._own_sent_by
        loop = _loop_hash(msg)
        # the top Via is ``top`` (its text parses back to the same sent-by and branch)
        for other in (top, *map(Via.parse, msg._values("via")[1:])):
            if other.sent_by in own and other.branch.startswith(MAGIC + loop + "."):
                raise RemoteSipError(482, "Loop Detected")
        unsupported = option_tags(msg.get_all("proxy-require")) - SUPPORTED_OPTIONS
        if unsupported:
            out.append(
                Send(
                    peer,
                    make_response(
                        msg, 420, extra=[("Unsupported", ", ".join(sorted(unsupported)))]
                    ),
                )
            )
            return
        if len(self.server_txns) >= self.config.max_transactions:
            self._transactions_full(peer, msg, out)
            return
        machine = ServerTransaction.for_method(msg.method, peer.transport, self._timer_values)
        txn = ServerTxn(key, msg, peer, machine)
        self.server_txns[key] = txn
        if msg.method == "INVITE":
            self._respond(txn, 100, now, out)
        self._route(txn, peer, msg, now, out)

    def _route(
        self, txn: ServerTxn | None, peer: Peer, msg: Request, now: float, out: list[Action]
    ) -> None:
        routes = msg.addresses("route")
        popped: list[SipUri] = []
        while routes and self._is_ours(routes[0]):
            popped.append(routes.pop(0).sip_uri("Route"))
        if popped:
            msg = msg.with_replaced("Route", [str(r) for r in routes])
        hint: Direction | None = None
        for uri in popped:
            value = uri.param("e2ae")
            if value == "orig":
                hint = "orig"
            elif value == "term":
                hint = "term"
        if msg.to.tag is not None:
            self._in_dialog(txn, peer, msg, routes, hint, now, out)
        elif txn is None:
            return  # an ACK outside any dialog and transaction: nothing to do with it
        elif msg.method == "REGISTER":
            self._register(txn, peer, msg, now, out)
        elif peer.side == "gm":
            self._originating(txn, peer, msg, now, out)
        else:
            self._terminating(txn, msg, popped, now, out)

    def _register(
        self, txn: ServerTxn, peer: Peer, msg: Request, now: float, out: list[Action]
    ) -> None:
        if peer.side != "gm":
            self._respond(txn, 403, now, out, reason="REGISTER only from the Gm side")
            return
        token = self._flow_token(peer.flow)
        pending = read_register(msg, peer.flow, token)
        full = self._registrations_full(peer, pending)
        if full is not None:
            out.append(
                Log(
                    "warn",
                    "REGISTER {aor} from {peer} refused: {limit}",
                    {"aor": pending.aor, "peer": str(peer), "limit": full, "call_id": msg.call_id},
                )
            )
            self._overloaded(txn, now, out, full)
            return
        path = NameAddr(str(self._own_uri("core", self.config.next_hop.transport, user=token)))
        msg = msg.with_prepended("Path", str(path))
        out.append(
            Log(
                "info",
                "REGISTER {aor} from {peer} mechanisms {mechanisms}",
                {
                    "aor": pending.aor,
                    "peer": str(peer),
                    "mechanisms": ",".join(sorted(pending.mechanisms)) or "-",
                    "call_id": msg.call_id,
                },
            )
        )
        client = self._forward(txn, msg, self.config.next_hop, now, out)
        client.register = pending

    def _registrations_full(self, peer: Peer, pending: PendingRegister) -> str | None:
        """Why a REGISTER would hold more than the limits allow (None: it may go on)."""
        adds = not pending.wildcard and pending.expires != 0 and pending.contacts
        if not adds or self.registrar.knows_flow(peer.flow):
            return None
        if len(self.registrar) >= self.config.max_registrations:
            return f"registrations full ({self.config.max_registrations})"
        if self.registrar.from_host(peer.host) >= self.config.max_registrations_per_source:
            limit = self.config.max_registrations_per_source
            return f"too many registrations from {peer.host} ({limit})"
        return None

    def _transactions_full(self, peer: Peer, msg: Request, out: list[Action]) -> None:
        """A new request while ``max_transactions`` server transactions are held: 503 with
        Retry-After, sent without a transaction (a retransmission gets another one)."""
        limit = f"transactions full ({self.config.max_transactions})"
        out.append(
            Log(
                "warn",
                "{method} {call_id} from {peer} refused: {limit}",
                {"method": msg.method, "call_id": msg.call_id, "peer": str(peer), "limit": limit},
            )
        )
        retry = [("Retry-After", str(self.config.retry_after))]
        reason = f"Service Unavailable ({limit})"
        response = make_response(msg, 503, reason, to_tag=self._new_id(), extra=retry)
        out.append(Send(peer, response))

    def _overloaded(self, txn: ServerTxn, now: float, out: list[Action], why: str) -> None:
        retry = [("Retry-After", str(self.config.retry_after))]
        self._respond(txn, 503, now, out, reason=f"Service Unavailable ({why})", extra=retry)

    def _originating(
        self, txn: ServerTxn, peer: Peer, msg: Request, now: float, out: list[Action]
    ) -> None:
        binding = self.registrar.by_flow(peer.flow, now)
        if binding is None and self.config.require_registration:
            self._respond(txn, 403, now, out, reason="Forbidden (not registered)")
            return
        self._initial(
            txn, peer, msg, "orig", _ue_info(binding, peer.flow), self.config.next_hop, now, out
        )

    def _terminating(
        self, txn: ServerTxn, msg: Request, popped: list[SipUri], now: float, out: list[Action]
    ) -> None:
        binding: Binding | None = None
        for uri in popped:
            if uri.user:
                binding = self.registrar.by_token(uri.user, now)
        if binding is None:
            try:
                binding = self.registrar.by_uri(SipUri.parse(msg.uri, "Request-URI"), now)
            except RemoteSipError:
                binding = None
        if binding is None:
            self._respond(txn, 404, now, out, reason="Not Found (no registered contact)")
            return
        flow = binding.flow
        dest = Peer("gm", "tcp" if flow.transport == "tcp" else "udp", flow.host, flow.port)
        self._initial(txn, txn.peer, msg, "term", _ue_info(binding, flow), dest, now, out)

    def _initial(
        self,
        txn: ServerTxn,
        peer: Peer,
        msg: Request,
        direction: Direction,
        ue: UeInfo,
        dest: Peer,
        now: float,
        out: list[Action],
    ) -> None:
        if msg.method == MESSAGE:
            # not a dialog method: no Record-Route, and the body is not the media handler's
            txn.direction = direction
            self._forward(txn, msg, dest, now, out)
            return
        if msg.method in DIALOG_METHODS:
            msg = self._record_route(msg, peer, dest, direction)
        if msg.method != "INVITE":
            self._forward(txn, msg, dest, now, out)
            return
        did = DialogId(msg.call_id, direction)
        old = self.dialogs.get(did)
        if old is None and len(self.dialogs) >= self.config.max_calls:
            out.append(
                Log(
                    "warn",
                    "New {direction} call {call_id} from {peer} refused: {limit}",
                    {
                        "direction": direction,
                        "call_id": did.call_id,
                        "peer": str(peer),
                        "limit": f"calls full ({self.config.max_calls})",
                    },
                )
            )
            self._overloaded(txn, now, out, f"calls full ({self.config.max_calls})")
            return
        if old is not None and old.state != "ended":
            self._ended(old, "replaced by a new INVITE with the same Call-ID", out, "replaced")
        contact = msg.addresses("contact")
        dialog = Dialog(
            did,
            ue,
            msg,
            caller=Party(
                peer.side,
                contact[0].uri if contact else "",
                [a.uri for a in txn.request.addresses("record-route")],
                msg.cseq[0],
            ),
            callee=Party(dest.side),
            from_hdr=msg.get("from") or "",
            to_hdr=msg.get("to") or "",
            server=txn.key,
        )
        self.dialogs[did] = dialog
        txn.dialog = did
        out.append(
            Log(
                "info",
                "New {direction} call {call_id} from {peer} to {next_hop}",
                {
                    "direction": direction,
                    "call_id": did.call_id,
                    "peer": str(peer),
                    "next_hop": str(dest),
                },
            )
        )

        def forward(body: bytes, now: float, out: list[Action]) -> None:
            if txn.cancelled or txn.final or dialog.state == "ended":
                return
            sent = msg.evolve(body=body) if msg.has_sdp else msg
            self._forward(
                txn,
                sent,
                dest,
                now,
                out,
                dialog=dialog,
                initial=True,
                offer_in_request=msg.has_sdp,
            )

        if not msg.has_sdp:
            forward(msg.body, now, out)
            return

        def reject(result: Reject, now: float, out: list[Action]) -> None:
            if not txn.final:
                self._respond(txn, result.status, now, out, extra=[self._warning(result.warning)])
            why = f"offer rejected: {result.status} {result.warning}"
            self._ended(dialog, why, out, "offer_rejected", "rejected")

        context = self._context(dialog, "offer", msg.method, None, True, peer.side == "gm", msg)
        self._ask(dialog, context, msg.body, forward, reject, out)

    def _in_dialog(
        self,
        txn: ServerTxn | None,
        peer: Peer,
        msg: Request,
        routes: list[NameAddr],
        hint: Direction | None,
        now: float,
        out: list[Action],
    ) -> None:
        dialog = self._find_dialog(msg.call_id, hint, peer)
        if (
            dialog is not None
            and peer.side == "gm"
            and dialog.ue.flow is not None
            and not _same_flow(dialog.ue.flow, peer)
        ):
            out.append(
                Log(
                    "warn",
                    "In-dialog {method} for {call_id} from {peer}, not the call's UE: refused",
                    {"method": msg.method, "call_id": msg.call_id, "peer": str(peer)},
                )
            )
            if txn is not None:
                self._respond(txn, 403, now, out, reason="Forbidden (not this call's UE)")
            return
        out_side: Side = "core" if peer.side == "gm" else "gm"
        dest: Peer | None = None
        if out_side == "gm" and dialog is not None and dialog.ue.flow is not None:
            flow = dialog.ue.flow
            dest = Peer("gm", "tcp" if flow.transport == "tcp" else "udp", flow.host, flow.port)
        else:
            uri = routes[0].sip_uri("Route") if routes else SipUri.parse(msg.uri, "Request-URI")
            host, port = uri.address()
            if not _is_ip(host):
                out.append(
                    Log(
                        "warn",
                        "No route for in-dialog {method} of {call_id}: {host} is not an address",
                        {"method": msg.method, "call_id": msg.call_id, "host": host},
                    )
                )
                if txn is not None:
                    self._respond(txn, 404, now, out, reason=f"Not Found (no address for {host})")
                return
            dest = Peer(out_side, "tcp" if uri.transport == "tcp" else "udp", host, port)

        def go(now: float, out: list[Action]) -> None:
            self._in_dialog_step(txn, peer, msg, dest, dialog, now, out)

        if dialog is None:
            go(now, out)
        else:
            if txn is not None:
                txn.dialog = dialog.id
            self._dispatch(dialog, go, now, out)

    def _in_dialog_step(
        self,
        txn: ServerTxn | None,
        peer: Peer,
        msg: Request,
        dest: Peer,
        dialog: Dialog | None,
        now: float,
        out: list[Action],
    ) -> None:
        if txn is not None and msg.method == MESSAGE:
            txn.direction = dialog.id.direction if dialog is not None else None
        if dialog is not None:
            party = dialog.caller if _same_party(dialog.caller, peer, dialog) else dialog.callee
            party.cseq = max(party.cseq, msg.cseq[0])
            if msg.method == "BYE":
                self._ended(dialog, "BYE", out, "bye")

        def forward(body: bytes, now: float, out: list[Action]) -> None:
            if txn is not None and (txn.cancelled or txn.final):
                return
            sent = msg.evolve(body=body) if msg.has_sdp else msg
            if txn is None:
                self._forward_stateless(sent, dest, out)
                return
            self._forward(
                txn, sent, dest, now, out, dialog=dialog, offer_in_request=kind == "offer"
            )

        kind: Kind | None = None
        if dialog is not None and msg.has_sdp and dialog.state != "ended":
            if msg.method in ("INVITE", "UPDATE"):
                kind = "offer"
            elif msg.method == "ACK" and dialog.awaiting_answer:
                kind = "answer"
            elif msg.method == "PRACK":
                kind = "answer" if dialog.awaiting_answer else "offer"
        if kind is None or dialog is None:
            forward(msg.body, now, out)
            return
        if kind == "answer":
            dialog.awaiting_answer = False
        the_dialog = dialog

        def reject(result: Reject, now: float, out: list[Action]) -> None:
            if txn is not None and not txn.final and kind == "offer":
                self._respond(txn, result.status, now, out, extra=[self._warning(result.warning)])
                return
            out.extend(self.end_call(the_dialog.id, result.status, result.warning, now))

        initial = msg.method == "ACK" and msg.cseq[0] == dialog.invite.cseq[0]
        context = self._context(dialog, kind, msg.method, None, initial, peer.side == "gm", msg)
        self._ask(dialog, context, msg.body, forward, reject, out)

    def _on_cancel(self, peer: Peer, msg: Request, via: Via, now: float, out: list[Action]) -> None:
        invite = self.server_txns.get((via.branch, via.sent_by, "INVITE"))
        if invite is None:
            out.append(Send(peer, make_response(msg, 481)))
            return
        out.append(Send(peer, make_response(msg, 200)))
        if invite.final:
            return
        invite.cancelled = True
        client = self.client_txns.get(invite.client) if invite.client else None
        if client is not None:
            if client.machine.pending:
                self._send_cancel(client, now, out, msg.get("reason"))
            return
        self._respond(invite, 487, now, out)
        dialog = self.dialogs.get(invite.dialog) if invite.dialog else None
        if dialog is not None:
            self._ended(dialog, "CANCEL", out, "cancel", "cancelled")

    # =========================================================================== responses
    def _on_response(self, peer: Peer, msg: Response, now: float, out: list[Action]) -> None:
        txn = self.client_txns.get((msg.top_via.branch, msg.cseq[1]))
        if txn is None:
            self._forward_stray_response(peer, msg, out)
            return
        if not self._client_receives(txn, msg, now, out):
            return
        if txn.internal:
            self._answer_own_request(txn, msg, now, out)
            return
        if msg.status == 100:
            return  # hop by hop: our own 100 went out when the request came
        fwd = self._response_to_pass_on(txn, msg, now, out)
        server = self.server_txns.get(txn.server) if txn.server else None
        dialog = self.dialogs.get(txn.dialog) if txn.dialog else None
        if dialog is None and server is not None and self._call_over_for_caller(txn, server, msg):
            self._release_late_callee(txn, server, fwd, now, out)
            return

        def go(now: float, out: list[Action]) -> None:
            self._response_step(txn, server, dialog, fwd, now, out)

        if dialog is None:
            go(now, out)
        else:
            self._dispatch(dialog, go, now, out)

    def _forward_stray_response(self, peer: Peer, msg: Response, out: list[Action]) -> None:
        """A response no client transaction matches (a 2xx retransmitted after the transaction
        ended, one to a request forwarded statelessly): on by the next Via if ours is on top."""
        ours = (self._sent_by("gm"), self._sent_by("core"))
        if msg.top_via.sent_by not in ours or len(msg.vias) < 2:
            return
        nxt = msg.vias[1]
        host, port = nxt.response_address()
        if not _is_ip(host):
            return
        side: Side = "core" if peer.side == "gm" else "gm"
        transport: Transport = "tcp" if nxt.transport == "TCP" else "udp"
        out.append(
            Send(
                Peer(side, transport, host, port),
                msg.with_first_value_dropped("via"),
                relayed=True,
            )
        )

    def _client_receives(
        self, txn: ClientTxn, msg: Response, now: float, out: list[Action]
    ) -> bool:
        """Run ``msg`` through ``txn``'s state machine (ACKing a non-2xx final to an INVITE):
        False if it goes no further, a retransmission the transaction absorbs."""
        final = msg.status >= 200 and txn.machine.pending
        reception = txn.machine.receive(msg.status, now)
        if final:
            self._finished.append((txn.request, False))
        if reception.ack:
            self._send_ack(txn, msg, out)
        if reception.wake is not None:  # (add would drop None; no entry made for it)
            self._timers.add(reception.wake, ClientDue(txn.key), now)
        return reception.pass_up

    def _answer_own_request(
        self, txn: ClientTxn, msg: Response, now: float, out: list[Action]
    ) -> None:
        """A response to a request the proxy sent itself: the first final goes to ``on_final``."""
        if msg.status >= 200 and txn.on_final is not None:
            callback, txn.on_final = txn.on_final, None
            callback(msg, now, out)

    def _response_to_pass_on(
        self, txn: ClientTxn, msg: Response, now: float, out: list[Action]
    ) -> Response:
        """``msg`` without our Via; for a REGISTER, the registration taken from it."""
        fwd = msg.with_first_value_dropped("via")
        if txn.register is not None:
            fwd = self._register_response(txn.register, fwd, now, out)
        return fwd

    def _call_over_for_caller(self, txn: ClientTxn, server: ServerTxn, msg: Response) -> bool:
        """A 2xx to an INVITE whose call is already over for the caller (CANCEL race)."""
        last = server.last
        return (
            txn.dialog is not None
            and txn.method == "INVITE"
            and 200 <= msg.status < 300
            and last is not None
            and last.status >= 300
        )

    def _release_late_callee(
        self, txn: ClientTxn, server: ServerTxn, ok: Response, now: float, out: list[Action]
    ) -> None:
        """ACK and BYE a callee that answered a call which is over, from what the transaction
        knows (the dialog itself is gone)."""
        assert txn.dialog is not None
        stub = Dialog(
            txn.dialog,
            UeInfo(registered=False),
            txn.request,
            caller=Party(server.peer.side),
            callee=Party(txn.peer.side, route=self._callee_route(ok), cseq=txn.request.cseq[0]),
            from_hdr=txn.request.get("from") or "",
            to_hdr=ok.get("to") or "",
            callee_released=txn.released,
        )
        self._release_callee(stub, ok, 487, "call no longer wanted", now, out)
        txn.released = True

    def _response_step(
        self,
        txn: ClientTxn,
        server: ServerTxn | None,
        dialog: Dialog | None,
        msg: Response,
        now: float,
        out: list[Action],
    ) -> None:
        initial = dialog is not None and txn.key == dialog.client
        if dialog is not None:
            self._learn_from_response(dialog, txn, msg, initial, now)
        if server is not None and self._caller_already_answered(txn, server, dialog, msg, now, out):
            return
        kind = self._response_sdp_kind(txn, dialog, msg)
        if kind is None or dialog is None:
            self._pass_response_on(server, dialog, initial, msg, msg.body, now, out)
            return
        if self._replay_media_result(txn, server, dialog, initial, msg, now, out):
            return
        if kind == "offer":
            dialog.awaiting_answer = True
        self._ask_about_response(txn, server, dialog, initial, kind, msg, out)

    def _learn_from_response(
        self, dialog: Dialog, txn: ClientTxn, msg: Response, initial: bool, now: float
    ) -> None:
        """The callee's tag, Contact and route set from a response to the dialog's INVITE (and
        the dialog confirmed by a 2xx); the session timer from a 2xx to INVITE or UPDATE."""
        if txn.method == "INVITE" and initial:
            if msg.status < 300 and msg.to.tag is not None:
                dialog.to_hdr = msg.get("to") or dialog.to_hdr
                contact = msg.addresses("contact")
                if contact:
                    dialog.callee.target = contact[0].uri
                dialog.callee.route = self._callee_route(msg)
            if 200 <= msg.status < 300:
                dialog.state = "confirmed"
        if txn.method in ("INVITE", "UPDATE") and 200 <= msg.status < 300:
            self._session_timer(dialog, msg, now)

    def _caller_already_answered(
        self,
        txn: ClientTxn,
        server: ServerTxn,
        dialog: Dialog | None,
        msg: Response,
        now: float,
        out: list[Action],
    ) -> bool:
        """True if the caller has its final response and ``msg`` goes no further. A 2xx after a
        2xx goes on (a retransmission); a 2xx after an error releases the callee (CANCEL race,
        rejected answer): it must not stay in a call nobody is in."""
        last = server.last
        if not server.final or last is None:
            return False
        accepted = 200 <= msg.status < 300
        if txn.method == "INVITE" and accepted and last.status >= 300:
            if dialog is not None:
                self._release_callee(dialog, msg, 487, "call no longer wanted", now, out)
            return True
        return not (accepted and last.status < 300)

    def _response_sdp_kind(
        self, txn: ClientTxn, dialog: Dialog | None, msg: Response
    ) -> Kind | None:
        """What the SDP of ``msg`` is for the media handler (None: nothing to ask it)."""
        if dialog is None or not msg.has_sdp or msg.status >= 300 or dialog.state == "ended":
            return None
        if txn.offer_in_request:
            return "answer"
        if txn.method in ("INVITE", "PRACK", "UPDATE"):
            return "offer"
        return None

    def _pass_response_on(
        self,
        server: ServerTxn | None,
        dialog: Dialog | None,
        initial: bool,
        msg: Response,
        body: bytes,
        now: float,
        out: list[Action],
    ) -> None:
        """Send ``msg`` (with ``body``) on to the caller, unless the caller already has its
        final; an error final to the dialog's INVITE ends the dialog."""
        if server is None:
            return
        last = server.last
        if server.final and not (
            200 <= msg.status < 300 and last is not None and last.status < 300
        ):
            return
        sent = msg.evolve(body=body) if msg.has_sdp else msg
        self._send_response(server, sent, now, out, relayed=True)
        if dialog is not None and initial and msg.status >= 300:
            why = f"final response {msg.status}"
            if server.cancelled:
                self._ended(dialog, why, out, "cancel", "cancelled")
            else:
                self._ended(dialog, why, out, "final_response", "rejected")

    def _replay_media_result(
        self,
        txn: ClientTxn,
        server: ServerTxn | None,
        dialog: Dialog,
        initial: bool,
        msg: Response,
        now: float,
        out: list[Action],
    ) -> bool:
        """A body the media handler already saw in this transaction (a retransmitted 18x or
        2xx): pass it on as it was rewritten then, or drop it if it was rejected. False if the
        body is new."""
        cached = txn.answers.get(msg.body)
        if cached is None:
            return False
        if isinstance(cached, Forward):
            self._pass_response_on(server, dialog, initial, msg, cached.body, now, out)
        return True

    def _ask_about_response(
        self,
        txn: ClientTxn,
        server: ServerTxn | None,
        dialog: Dialog,
        initial: bool,
        kind: Kind,
        msg: Response,
        out: list[Action],
    ) -> None:
        """Give the SDP of ``msg`` to the media handler; its result is kept for retransmissions."""
        body_in = msg.body

        def remember(body: bytes, now: float, out: list[Action]) -> None:
            txn.answers[body_in] = Forward(body)
            self._pass_response_on(server, dialog, initial, msg, body, now, out)

        def reject(result: Reject, now: float, out: list[Action]) -> None:
            txn.answers[body_in] = result
            self._response_sdp_rejected(txn, server, dialog, initial, msg, result, now, out)

        context = self._context(
            dialog, kind, txn.method, msg.status, initial, txn.peer.side == "gm", msg
        )
        self._ask(dialog, context, msg.body, remember, reject, out)

    def _response_sdp_rejected(
        self,
        txn: ClientTxn,
        server: ServerTxn | None,
        dialog: Dialog,
        initial: bool,
        msg: Response,
        result: Reject,
        now: float,
        out: list[Action],
    ) -> None:
        """The media handler refused the SDP of ``msg``. In a provisional response to the
        dialog's INVITE: answer the caller with the error and CANCEL the callee; in its final:
        answer the caller and release the callee; later in the call: end it both ways."""
        if server is None or server.final or not initial:
            out.extend(self.end_call(dialog.id, result.status, result.warning, now))
            return
        self._respond(server, result.status, now, out, extra=[self._warning(result.warning)])
        if msg.status < 200:
            self._send_cancel(txn, now, out, _reason(result.status, result.warning))
        else:
            self._release_callee(dialog, msg, result.status, result.warning, now, out)
        self._ended(
            dialog, f"answer rejected: {result.warning}", out, "answer_rejected", "rejected"
        )

    def _callee_route(self, msg: Response) -> list[str]:
        """Our route set towards the callee: the Record-Route entries above ours, reversed."""
        rr = [a.uri for a in msg.addresses("record-route")]
        ours = [i for i, uri in enumerate(rr) if self._is_ours(NameAddr(uri))]
        above = rr[: ours[0]] if ours else rr
        return list(reversed(above))

    def _session_timer(self, dialog: Dialog, msg: Response, now: float) -> None:
        """RFC 4028: a 2xx with Session-Expires (re)starts the session timer of the call."""
        value = (msg.get("session-expires") or "").split(";")[0].strip()
        if value.isdigit() and 0 < int(value) < 2**31:
            dialog.expires_at = now + int(value)
            self._timers.add(dialog.expires_at, SessionDue(dialog.id), now)

    def _session_timer_due(self, dialog_id: DialogId, now: float, out: list[Action]) -> None:
        dialog = self.dialogs.get(dialog_id)
        if dialog is None or dialog.expires_at is None:
            return
        if now >= dialog.expires_at and dialog.state == "confirmed":
            text = "session timer expired"
            self._end(dialog, 408, text, text, now, out, "session_timer")

    def _release_callee(
        self, dialog: Dialog, ok: Response, cause: int, text: str, now: float, out: list[Action]
    ) -> None:
        """ACK a 2xx the caller will never see (again, if retransmitted) and BYE the callee once."""
        self._send_in_dialog(dialog, dialog.callee, "ACK", b"", now, out, [], response=ok)
        if not dialog.callee_released:
            dialog.callee_released = True
            self._send_in_dialog(
                dialog, dialog.callee, "BYE", b"", now, out, [("Reason", _reason(cause, text))]
            )

    def _end(
        self,
        dialog: Dialog,
        cause: int,
        text: str,
        why: str,
        now: float,
        out: list[Action],
        kind: CallCause,
    ) -> None:
        if dialog.state == "ended":
            return
        reason = _reason(cause, text)
        if dialog.state == "early":
            server = self.server_txns.get(dialog.server) if dialog.server else None
            client = self.client_txns.get(dialog.client) if dialog.client else None
            if client is not None and client.machine.pending:
                self._send_cancel(client, now, out, reason)
            if server is not None and not server.final:
                status = cause if 400 <= cause <= 699 else 500
                self._respond(server, status, now, out, extra=[("Reason", reason)])
        else:
            for party in (dialog.caller, dialog.callee):
                self._send_in_dialog(dialog, party, "BYE", b"", now, out, [("Reason", reason)])
        self._ended(dialog, why, out, kind)

    def _register_response(
        self, pending: PendingRegister, msg: Response, now: float, out: list[Action]
    ) -> Response:
        if msg.status == 401 or 200 <= msg.status < 300:
            if self.config.network_mechanisms:
                value = ", ".join(f"{m};mediasec" for m in sorted(self.config.network_mechanisms))
                msg = msg.evolve(headers=(*msg.headers, ("Security-Server", value)))
        if 200 <= msg.status < 300:
            kept = self.registrar.apply(pending, msg, now)
            out.append(
                Log(
                    "info",
                    "Registration of {aor} from {peer}: {count} contact(s), "
                    "mechanisms {mechanisms}",
                    {
                        "aor": pending.aor,
                        "peer": str(pending.flow),
                        "count": len(kept),
                        "mechanisms": ",".join(sorted(pending.mechanisms)) or "-",
                    },
                )
            )
        return msg

    # =========================================================================== internals
    def _refuse(
        self, peer: Peer, message: Request | Response, exc: RemoteSipError, out: list[Action]
    ) -> None:
        out.append(
            Log(
                "warn",
                "Refused SIP message from {peer}: {status} {reason}",
                {"peer": str(peer), "status": exc.status, "reason": exc.reason},
            )
        )
        if isinstance(message, Request) and message.method != "ACK":
            try:
                out.append(Send(peer, make_response(message, exc.status, exc.reason)))
            except RemoteSipError:
                pass

    def _context(
        self,
        dialog: Dialog,
        kind: Kind,
        method: str,
        status: int | None,
        initial: bool,
        from_ue: bool,
        msg: Request | Response,
    ) -> MediaContext:
        return MediaContext(
            dialog.id, kind, method, status, initial, from_ue, dialog.ue, msg.cseq[0]
        )

    def _ask(
        self,
        dialog: Dialog,
        context: MediaContext,
        body: bytes,
        forward: Callable[[bytes, float, list[Action]], None],
        reject: Callable[[Reject, float, list[Action]], None],
        out: list[Action],
    ) -> None:
        token = next(self._tokens)
        self._pending[token] = _Pending(dialog, forward, reject)
        dialog.busy = True
        out.append(MediaRequest(token, context, body))

    def _dispatch(self, dialog: Dialog, step: DialogWork, now: float, out: list[Action]) -> None:
        if dialog.busy:
            dialog.queue.append(step)
        else:
            step(now, out)

    def _drain(self, dialog: Dialog, now: float, out: list[Action]) -> None:
        while dialog.queue and not dialog.busy:
            dialog.queue.popleft()(now, out)

    def _ended(
        self,
        dialog: Dialog,
        reason: str,
        out: list[Action],
        cause: CallCause,
        outcome: CallOutcome | None = None,
    ) -> None:
        """The call is over; ``outcome`` ``None``: answered if it was, else failed."""
        if dialog.state == "ended":
            return
        if outcome is None:
            outcome = "answered" if dialog.state == "confirmed" else "failed"
        dialog.state = "ended"
        out.append(DialogEnded(dialog.id, reason, outcome, cause))
        out.append(
            Log(
                "info",
                "Call {call_id} ({direction}) ended: {reason}",
                {"call_id": dialog.id.call_id, "direction": dialog.id.direction, "reason": reason},
            )
        )
        if not dialog.busy and not dialog.queue and self.dialogs.get(dialog.id) is dialog:
            # (a busy dialog stays until its queue has drained; lookups see it ended)
            del self.dialogs[dialog.id]

    def _find_dialog(self, call_id: str, hint: Direction | None, peer: Peer) -> Dialog | None:
        if hint is not None:
            return self.dialogs.get(DialogId(call_id, hint))
        candidates = [
            d for d in (self.dialogs.get(DialogId(call_id, x)) for x in ("orig", "term")) if d
        ]
        if len(candidates) == 1:
            return candidates[0]
        for dialog in candidates:
            if dialog.ue.flow == peer.flow:
                return dialog
        return candidates[0] if candidates else None

    def _sent_by(self, side: Side) -> str:
        return _hostport(*self.config.address(side)).lower()

    def _is_ours(self, addr: NameAddr) -> bool:
        try:
            uri = addr.sip_uri("Route")
        except RemoteSipError:
            return False
        host, port = uri.address()
        return (host, port) in (self.config.gm, self.config.core)

    def _own_uri(
        self, side: Side, transport: Transport, *, user: str | None = None, **params: str | None
    ) -> SipUri:
        host, port = self.config.address(side)
        extra: dict[str, str | None] = {"lr": None}
        if transport == "tcp":
            extra["transport"] = "tcp"
        extra.update(params)
        return make_uri(host, port, user=user, **extra)

    def _record_route(self, msg: Request, src: Peer, dest: Peer, direction: Direction) -> Request:
        """``msg`` with our two Record-Route entries on top: ``dest``'s side above ``src``'s
        (what prepending the inner one, then the outer one, gives)."""
        inner = self._record_route_value(src.side, src.transport, direction)
        outer = self._record_route_value(dest.side, dest.transport, direction)
        headers = msg.headers
        at = 0
        for i, (key, _) in enumerate(headers):
            if canonical(key) == "record-route":
                at = i
                break
        new = ("Record-Route", outer), ("Record-Route", inner)
        values = (outer, inner, *msg.get_all("record-route"))
        return msg._edited((*headers[:at], *new, *headers[at:]), ("record-route", values))

    def _record_route_value(self, side: Side, transport: Transport, direction: Direction) -> str:
        """Our Record-Route entry for ``side`` over ``transport`` (made from the configuration
        once per kind)."""
        key = (side, transport, direction)
        value = self._record_routes.get(key)
        if value is None:
            uri = self._own_uri(side, transport, e2ae=direction)
            value = self._record_routes[key] = str(NameAddr(str(uri)))
        return value

    def _flow_token(self, flow: Flow) -> str:
        token = self._flow_tokens.get(flow)
        if token is None:
            token = "f" + self._new_id()
            self._flow_tokens[flow] = token
        return token

    def _branch(self, msg: Request) -> str:
        return f"{MAGIC}{_loop_hash(msg)}.{self._new_id()}"

    def _via(self, side: Side, transport: Transport, branch: str) -> str:
        key = (side, transport)
        start = self._via_starts.get(key)
        if start is None:
            start = f"SIP/2.0/{transport.upper()} {_hostport(*self.config.address(side))};branch="
            self._via_starts[key] = start
        return start + branch

    def _forward(
        self,
        server: ServerTxn,
        msg: Request,
        dest: Peer,
        now: float,
        out: list[Action],
        *,
        dialog: Dialog | None = None,
        initial: bool = False,
        offer_in_request: bool = False,
    ) -> ClientTxn:
        """Send ``msg`` on in a new client transaction for ``server``; ``dialog`` is the one it
        belongs to (and, ``initial``, the one it creates), known before the first send so a
        request refused at once (513) ends the dialog it would have made."""
        branch = self._branch(msg)
        sent, peer = self._prepare(msg, dest, branch)
        txn = ClientTxn(
            (branch, msg.method),
            sent,
            peer,
            self._client_machine(msg.method, peer),
            server=server.key,
            dialog=server.dialog,
        )
        txn.switched = peer is not dest  # _prepare gives dest itself or a TCP peer
        txn.offer_in_request = offer_in_request
        if dialog is not None:
            txn.dialog = dialog.id
            if initial:
                dialog.client = txn.key
        server.client = txn.key
        server.sent_to = peer
        self._start_client(txn, now, out)
        return txn

    def _prepare(self, msg: Request, dest: Peer, branch: str) -> tuple[Request, Peer]:
        """The request as it leaves (Max-Forwards less one, our Via on top) and the transport
        it leaves on: a request too large for ``dest``'s UDP goes over TCP (RFC 3261 18.1.1)."""
        forwards = msg.get("max-forwards")
        remaining = int(forwards.strip()) - 1 if forwards is not None else 70
        sent = _with_hop(msg, str(remaining), self._via(dest.side, dest.transport, branch))
        peer = self._size_transport(sent, dest)
        if peer is dest:
            return sent, dest
        return _with_hop(msg, str(remaining), self._via(peer.side, "tcp", branch)), peer

    def _size_transport(self, request: Request, dest: Peer) -> Peer:
        """``dest``, or the same address over TCP when ``request`` is over the threshold."""
        threshold = self.config.udp_tcp_threshold
        if dest.transport != "udp" or not threshold:
            return dest
        if len(request.serialise()) <= threshold:
            return dest
        return Peer(dest.side, "tcp", dest.host, dest.port)

    def _forward_stateless(self, msg: Request, dest: Peer, out: list[Action]) -> None:
        """Forward without a transaction (ACK for 2xx). The branch is a function of the incoming
        one (RFC 3261 16.11), so a retransmitted ACK goes on byte for byte the same and the
        next hop sees a retransmission, not a new request."""
        top = msg.top_via
        digest = hashlib.sha256(f"{top.branch}\n{top.sent_by}".encode()).hexdigest()[:12]
        sent, peer = self._prepare(msg, dest, f"{MAGIC}{_loop_hash(msg)}.{digest}")
        out.append(Send(peer, sent))

    def _start_client(self, txn: ClientTxn, now: float, out: list[Action]) -> None:
        if txn.peer.transport == "udp":
            size = len(txn.request.serialise())
            if size > MAX_UDP_PAYLOAD:
                self._too_large(txn, f"{size} bytes fit no UDP datagram", now, out)
                return
        self.client_txns[txn.key] = txn
        out.append(Send(txn.peer, txn.request))
        for when in txn.machine.start(now):
            self._timers.add(when, ClientDue(txn.key), now)

    def _client_machine(
        self, method: str, peer: Peer, *, internal: bool = False
    ) -> ClientTransaction:
        return ClientTransaction.for_method(
            method, peer.transport, self._timer_values, passes_2xx_on=not internal
        )

    def _client_timer(self, key: ClientKey, now: float, out: list[Action]) -> None:
        txn = self.client_txns.get(key)
        if txn is None:
            return
        fired = txn.machine.fire(now)
        match fired.timer:
            case Timer.A | Timer.E:
                out.append(Send(txn.peer, txn.request))
            case Timer.C:
                # give up on the callee; its 487 (or Timer B after it) ends the call
                self._send_cancel(txn, now, out, _reason(408, "no answer (Timer C)"))
            case Timer.B | Timer.F:
                del self.client_txns[key]
                self._client_timeout(txn, now, out)
            case Timer.D | Timer.K | Timer.M:
                del self.client_txns[key]
        if fired.wake is not None:
            self._timers.add(fired.wake, ClientDue(key), now)

    def _client_timeout(self, txn: ClientTxn, now: float, out: list[Action]) -> None:
        out.append(
            Log(
                "warn",
                "No answer from {peer} to {method} ({call_id})",
                {"peer": str(txn.peer), "method": txn.method, "call_id": txn.request.call_id},
            )
        )
        self._client_failed(txn, 408, None, None, now, out)

    def _client_failed(
        self,
        txn: ClientTxn,
        status: int,
        reason: str | None,
        warning: str | None,
        now: float,
        out: list[Action],
    ) -> None:
        """``txn`` is over without a response from its peer: answer ``status`` in its place."""
        extra = [self._warning(warning)] if warning else []
        if txn.internal:
            if txn.on_final is not None:
                txn.on_final(make_response(txn.request, status, reason, extra=extra), now, out)
            return
        server = self.server_txns.get(txn.server) if txn.server else None
        if server is not None and not server.final:
            self._respond(server, status, now, out, reason=reason, extra=extra)
        dialog = self.dialogs.get(txn.dialog) if txn.dialog else None
        if dialog is not None and txn.key == dialog.client and dialog.state == "early":
            why = "no answer from the next hop" if status == 408 else f"next hop failed ({status})"
            kind: CallCause = "no_answer" if status == 408 else "next_hop_failed"
            self._ended(dialog, why, out, kind, "failed")

    def _server_timer(self, key: ServerKey, now: float, out: list[Action]) -> None:
        txn = self.server_txns.get(key)
        if txn is None:
            return
        fired = txn.machine.fire(now)
        match fired.timer:
            case Timer.G if txn.last is not None:
                out.append(Send(txn.peer, txn.last))
            case Timer.H | Timer.J | Timer.L:
                del self.server_txns[key]
        if fired.wake is not None:
            self._timers.add(fired.wake, ServerDue(key), now)

    def _respond(
        self,
        txn: ServerTxn,
        status: int,
        now: float,
        out: list[Action],
        *,
        reason: str | None = None,
        extra: list[Header] | None = None,
    ) -> None:
        to_tag = self._new_id() if status > 100 else None
        response = make_response(txn.request, status, reason, to_tag=to_tag, extra=extra or [])
        self._send_response(txn, response, now, out)

    def _send_response(
        self,
        txn: ServerTxn,
        response: Response,
        now: float,
        out: list[Action],
        *,
        relayed: bool = False,
    ) -> None:
        first_final = response.status >= 200 and not txn.final
        wakes = txn.machine.respond(response, now)
        out.append(Send(txn.peer, response, relayed))
        if first_final:
            self._finished.append((txn.request, False))
            self._finished.append((response, True))
        for when in wakes:
            self._timers.add(when, ServerDue(txn.key), now)
        if first_final and txn.request.method == MESSAGE:
            out.append(self._message_log(txn, response.status, relayed))

    def _message_log(self, txn: ServerTxn, status: int, relayed: bool) -> Log:
        """The one event of a MESSAGE: where it came from and went, and its final status
        (``relayed``: the next hop's, else the proxy's own)."""
        direction = txn.direction or ("orig" if txn.peer.side == "gm" else "term")
        return Log(
            "info",
            "MESSAGE {call_id} ({direction}) from {peer} to {next_hop}: {status}",
            {
                "call_id": txn.request.call_id,
                "direction": direction,
                "peer": str(txn.peer),
                "next_hop": str(txn.sent_to) if txn.sent_to is not None else "-",
                "status": status,
                "relayed": relayed,
                "in_dialog": txn.request.to.tag is not None,
            },
        )

    def _warning(self, text: str) -> Header:
        safe = text.replace("\\", "").replace('"', "'")
        return ("Warning", f'399 {_hostport(*self.config.gm)} "{safe}"')

    def _send_ack(self, txn: ClientTxn, response: Response, out: list[Action]) -> None:
        """ACK for a non-2xx final response, hop by hop (RFC 3261 section 17.1.1.3)."""
        req = txn.request
        headers: list[Header] = [("Via", req.values("via")[0])]
        for name in ("from", "call-id", "route"):
            headers.extend((name.title(), v) for v in req.get_all(name))
        headers.append(("To", response.get("to") or req.get("to") or ""))
        headers.append(("CSeq", f"{req.cseq[0]} ACK"))
        headers.append(("Max-Forwards", "70"))
        out.append(Send(txn.peer, Request(tuple(headers), b"", "ACK", req.uri)))

    def _send_cancel(
        self, txn: ClientTxn, now: float, out: list[Action], reason: str | None
    ) -> None:
        req = txn.request
        headers: list[Header] = [("Via", req.values("via")[0])]
        for name in ("from", "to", "call-id", "route"):
            headers.extend((name.title(), v) for v in req.get_all(name))
        headers.append(("CSeq", f"{req.cseq[0]} CANCEL"))
        headers.append(("Max-Forwards", "70"))
        if reason:
            headers.append(("Reason", reason))
        cancel = ClientTxn(
            (txn.key[0], "CANCEL"),
            Request(tuple(headers), b"", "CANCEL", req.uri),
            txn.peer,
            self._client_machine("CANCEL", txn.peer, internal=True),
            internal=True,
        )
        self._start_client(cancel, now, out)

    def _send_in_dialog(
        self,
        dialog: Dialog,
        party: Party,
        method: str,
        body: bytes,
        now: float,
        out: list[Action],
        extra: list[Header],
        *,
        response: Response | None = None,
        on_final: Callable[[Response, float, list[Action]], None] | None = None,
    ) -> None:
        """A request the proxy itself sends to one party of a dialog (BYE, ACK, re-INVITE)."""
        to_caller = party is dialog.caller
        if response is not None and not to_caller:
            dialog.to_hdr = response.get("to") or dialog.to_hdr
            contact = response.addresses("contact")
            if contact:
                dialog.callee.target = contact[0].uri
        local, remote = (
            (dialog.to_hdr, dialog.from_hdr) if to_caller else (dialog.from_hdr, dialog.to_hdr)
        )
        if not party.target:
            return
        if method == "ACK" and response is not None:
            cseq = response.cseq[0]
        else:
            sender = dialog.callee if to_caller else dialog.caller
            sender.cseq += 1
            cseq = sender.cseq
        if party.side == "gm" and dialog.ue.flow is not None:
            flow = dialog.ue.flow
            dest = Peer("gm", "tcp" if flow.transport == "tcp" else "udp", flow.host, flow.port)
        else:
            uri = SipUri.parse(party.route[0] if party.route else party.target, "route")
            host, port = uri.address()
            if not _is_ip(host):
                return
            dest = Peer(party.side, "tcp" if uri.transport == "tcp" else "udp", host, port)
        branch = f"{MAGIC}{self._new_id()}"
        headers: list[Header] = [
            ("Via", self._via(dest.side, dest.transport, branch)),
            ("Max-Forwards", "70"),
            ("From", local),
            ("To", remote),
            ("Call-ID", dialog.id.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        headers.extend(("Route", f"<{r}>") for r in party.route)
        headers.extend(extra)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        request = Request(tuple(headers), body, method, party.target)
        peer = self._size_transport(request, dest)
        if peer is not dest:
            headers[0] = ("Via", self._via(peer.side, "tcp", branch))
            request = request.evolve(headers=tuple(headers))
        if method == "ACK":
            out.append(Send(peer, request))
            return
        txn = ClientTxn(
            (branch, method),
            request,
            peer,
            self._client_machine(method, peer, internal=True),
            dialog=dialog.id,
            internal=True,
            on_final=on_final,
        )
        txn.switched = peer is not dest
        self._start_client(txn, now, out)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    """The lab resolves no names: only literal addresses can be sent to."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _reason(cause: int, text: str) -> str:
    safe = text.replace("\\", "").replace('"', "'")
    return f'SIP;cause={cause};text="{safe}"'


def _replace_top_via(msg: Request, via: Via) -> tuple[Header, ...]:
    """``msg``'s headers with its first Via item replaced by ``via``: what
    ``evolve(headers=dropping_first_value("via")).prepending("Via", ...)`` gives, in one pass
    (the new Via goes where the first remaining Via line is, else first of all)."""
    headers = msg.headers
    value = str(via)
    for i, (key, text) in enumerate(headers):
        if canonical(key) != "via":
            continue
        rest = split_list(text, "via")[1:]
        if rest:
            return (*headers[:i], ("Via", value), (key, ", ".join(rest)), *headers[i + 1 :])
        for j in range(i + 1, len(headers)):
            if canonical(headers[j][0]) == "via":
                return (*headers[:i], *headers[i + 1 : j], ("Via", value), *headers[j:])
        return (("Via", value), *headers[:i], *headers[i + 1 :])
    return (("Via", value), *headers)


def _with_top_via(msg: Request, via: Via) -> Request:
    """``msg`` with :func:`_replace_top_via`'s headers, answering lookups from its index (the
    same pass, the first Via line split once)."""
    headers = msg.headers
    value = str(via)
    old = msg.get_all("via")
    for i, (key, text) in enumerate(headers):
        if canonical(key) != "via":
            continue
        rest = split_list(text, "via")[1:]
        if rest:
            joined = ", ".join(rest)
            new = (*headers[:i], ("Via", value), (key, joined), *headers[i + 1 :])
            return msg._edited(new, ("via", (value, joined, *old[1:])))
        values = (value, *old[1:])
        for j in range(i + 1, len(headers)):
            if canonical(headers[j][0]) == "via":
                new = (*headers[:i], *headers[i + 1 : j], ("Via", value), *headers[j:])
                return msg._edited(new, ("via", values))
        return msg._edited((("Via", value), *headers[:i], *headers[i + 1 :]), ("via", values))
    return msg._edited((("Via", value), *headers), ("via", (value,)))


def _with_hop(msg: Request, max_forwards: str, via: str) -> Request:
    """``msg`` as it is forwarded: its Max-Forwards lines replaced by one of ``max_forwards`` and
    ``via`` put first among its Vias, in one pass; what ``evolve(headers=replacing(
    "Max-Forwards", [max_forwards]))`` and then ``prepending("Via", via)`` give."""
    out: list[Header] = []
    forwards = False
    top = False
    for header in msg.headers:
        name = canonical(header[0])
        if name == "max-forwards":
            if not forwards:
                out.append(("Max-Forwards", max_forwards))
                forwards = True
            continue
        if name == "via" and not top:
            out.append(("Via", via))
            top = True
        out.append(header)
    if not forwards:
        out.append(("Max-Forwards", max_forwards))
    if not top:
        out.insert(0, ("Via", via))
    vias = (via, *msg.get_all("via"))
    return msg._edited(tuple(out), ("max-forwards", (max_forwards,)), ("via", vias))


def _ue_info(binding: Binding | None, flow: Flow) -> UeInfo:
    if binding is None:
        return UeInfo(registered=False, flow=flow)
    return UeInfo(True, binding.aor, str(binding.contact), binding.flow, binding.mechanisms)


def _same_flow(flow: Flow, peer: Peer) -> bool:
    """``flow == peer.flow``, without making the Flow."""
    return (
        flow.port == peer.port
        and flow.host == peer.host
        and flow.transport == peer.transport
        and type(flow) is Flow
    )


def _same_party(party: Party, peer: Peer, dialog: Dialog) -> bool:
    """Did ``peer`` send as ``party``? Decided by side (a spiral keeps two dialogs anyway)."""
    return party.side == peer.side
