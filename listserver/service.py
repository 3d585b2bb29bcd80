"""The list server as a Twisted service (``e2ae list-server``): SIP over UDP, the KMS over
HTTPS, stored messages in SQLite.

One MESSAGE to a group PSI (the core routes it here):

1. The body is read (:func:`immsg.core.read`), its TRANSFER_INIT checked for freshness and
   replays, its ticket resolved at the KMS as the list server's identity (it must be an
   allowed resolver), the TRANSFER_INIT verified and the content opened; 202 Accepted goes
   back to the sender (RFC 5365 §5).
2. One MESSAGE per member (:func:`listserver.core.plan`), via the core: the sender's parts as
   they are for a member entitled to the sender's ticket, a body protected by the list server
   with a ticket of its own (naming only that member, reused until 60 s before its TRe) for
   the others.
3. A member that does not answer, or answers 404/408/480/503, gets the message stored; a
   third-party REGISTER from the core for that member (Expires > 0) delivers what is stored,
   oldest first.

Bounds: ``max_pending`` SIP client transactions and KMS resolves at once (503 beyond),
:data:`immsg.core.MAX_BODY_BYTES` per body (413), the store's limits (docs/list-server.md).
"""

from __future__ import annotations

import secrets
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from immsg import core as im
from kms import client as kms_client
from kms.exchange import KmsUnreachable
from kms.exchange import Post as KmsPost
from kms.exchange import exchange as kms_exchange
from listserver import core
from listserver.config import Group, ListServerConfig
from listserver.store import MessageStore, StoreError, StoreFull
from mikey.errors import MikeyError
from mikey.message import Message as MikeyMessage
from mikey.payloads import KeyData, Ticket
from pcscf.sip import Request, Response, make_response
from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import Message, make_request
from pcscf.sip.uri import NameAddr
from pcscf.udpua import UdpUserAgent

log = Logger(namespace="listserver")

Address = tuple[str, int]
NAME = "list-server"
ALLOW = "MESSAGE, REGISTER"
#: Seconds between two sweeps of expired stored messages.
EXPIRE_EVERY = 60.0


@attrs.frozen
class _OwnTicket:
    """A ticket of the list server's own for one member, with its keys (never logged)."""

    ticket: Ticket
    mpki: bytes = attrs.field(repr=False)
    mpkr: bytes = attrs.field(repr=False)
    gtgk: bytes = attrs.field(repr=False)
    gtgk_spi: bytes
    expires_at: float | None


def _aor(uri: str) -> str:
    """A URI without its parameters and headers: the AOR it names."""
    uri = uri.strip().strip("<>")
    return uri.split(";", 1)[0].split("?", 1)[0]


def _from_aor(value: str) -> str:
    """The AOR of a From header value (for the logs)."""
    try:
        return _aor(NameAddr.parse(value, "From").uri)
    except RemoteSipError:
        return "?"


def _peer(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


class ListServerService(service.Service):
    """The list server (see the module's docstring)."""

    def __init__(
        self,
        config: ListServerConfig,
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
        self.store: MessageStore | None = None
        self.replays = im.ReplayCache()
        #: branch -> the final response (None while the MESSAGE is being resolved).
        #: Branches of MESSAGEs being resolved: their retransmissions wait for the answer.
        self._working: set[str] = set()
        self._resolving = 0
        self._tickets: dict[str, _OwnTicket] = {}
        self._delivering: set[str] = set()
        self.sip = UdpUserAgent(
            reactor, "list-server", self._request, answered=4 * config.max_pending + 64
        )
        self._sweep: task.LoopingCall | None = None
        self._work: set[defer.Deferred[None]] = set()
        self.kms_exchanges: list[str] = []

    # -- lifecycle

    @property
    def address(self) -> Address:
        return self.sip.address

    def startService(self) -> None:
        self.store = MessageStore(
            self.config.store,
            max_per_member=self.config.max_stored_per_member,
            max_total=self.config.max_stored,
        )
        host, port = self.config.sip
        try:
            self.sip.listen(host, port)
        except Exception:
            self.store.close()
            self.store = None
            raise
        super().startService()
        self._sweep = task.LoopingCall(self._expire)
        self._sweep.clock = self.reactor
        self._sweep.start(EXPIRE_EVERY, now=True)
        log.info(
            "list-server: {identity} on {address}, core {core}, KMS {kms}, groups {groups}",
            identity=self.config.identity,
            address=_peer(self.address),
            core=_peer(self.config.core),
            kms=_peer(self.config.kms.address),
            groups=", ".join(g.psi for g in self.config.groups),
        )

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self._sweep = None
        for d in list(self._work):
            d.cancel()
        self._work.clear()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.sip.listening:
            d: defer.Deferred[None] = self.sip.stop()
            return d
        return None

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def _expire(self) -> None:
        if self.store is not None:
            dropped = self.store.expire(self._now())
            if dropped:
                log.info("list-server: {count} stored message(s) expired", count=dropped)

    def _spawn(self, coro: Any, what: str, **fields: Any) -> None:
        d: defer.Deferred[None] = defer.Deferred.fromCoroutine(coro)
        self._work.add(d)

        def done(result: Any) -> None:
            self._work.discard(d)
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                log.failure("list-server: " + what + " failed", result, **fields)

        d.addBoth(done)

    # -- SIP transport (pcscf.udpua)

    def _via(self) -> str:
        host, port = self.address
        return f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport"

    def send(self, message: Message, dest: Address) -> None:
        self.sip.send(message, dest)

    def _respond(self, request: Request, response: Response, addr: Address) -> None:
        self._working.discard(request.top_via.branch)
        self.sip.respond(request, response, addr)

    def _refuse(
        self, request: Request, addr: Address, status: int, reason: str, **fields: Any
    ) -> None:
        log.warn(
            "list-server: {call_id} from {sender} refused {status}: {reason}",
            call_id=request.call_id,
            sender=_aor(request.from_.uri),
            peer=_peer(addr),
            status=status,
            reason=reason,
            **fields,
        )
        extra = [im.warning(NAME, reason)]
        if status == 503:
            extra.append(("Retry-After", "5"))
        if status == 405:
            extra.append(("Allow", ALLOW))
        if status == 415:
            extra.append(("Accept", im.ACCEPT))
        tag = secrets.token_hex(6)
        self._respond(request, make_response(request, status, to_tag=tag, extra=extra), addr)

    def request(self, request: Request, dest: Address) -> defer.Deferred[Response]:
        """Send ``request`` over UDP with RFC 3261 retransmissions (Timer E), until its final
        response or 64*T1 s (a TimeoutError)."""
        return self.sip.request(request, dest)

    def _busy(self) -> bool:
        return self.sip.pending + self._resolving >= self.config.max_pending

    # -- requests

    def _request(self, request: Request, addr: Address) -> None:
        if request.method == "ACK":
            return
        if request.top_via.branch in self._working:
            return  # a retransmission while it is being resolved: the answer comes once
        if request.method == "MESSAGE":
            self._message(request, addr)
        elif request.method == "REGISTER":
            self._register(request, addr)
        else:
            self._refuse(request, addr, 405, f"the list server takes {ALLOW}")

    def _message(self, request: Request, addr: Address) -> None:
        psi = _aor(request.uri)
        group = core.members_of(self.config, psi)
        if group is None:
            self._refuse(request, addr, 404, f"{psi} is not a group of this list server")
            return
        if len(request.body) > im.MAX_BODY_BYTES:
            reason = f"a body of {len(request.body)} bytes: at most {im.MAX_BODY_BYTES}"
            self._refuse(request, addr, 413, reason, group=psi)
            return
        if self._busy():
            reason = f"{self.config.max_pending} transactions pending"
            self._refuse(request, addr, 503, reason, group=psi)
            return
        store = self.store
        if store is not None and store.count() >= self.config.max_stored:
            self._refuse(request, addr, 503, "the list server's store is full", group=psi)
            return
        content_type = request.get("Content-Type") or ""
        now = self._now()
        try:
            incoming = im.read(content_type, request.body)
            until = im.check_fresh(incoming, now)
            self.replays.check(incoming.nonce, now)
            sender = _aor(request.from_.uri)
            if sender != incoming.transfer.initiator:
                raise im.ImError(
                    403,
                    f"From {sender} is not the TRANSFER_INIT's Initiator"
                    f" {incoming.transfer.initiator}",
                )
            plan = core.plan(incoming, group.members, psi=psi, kms_group=group.kms_group)
        except im.ImError as exc:
            self._refuse(request, addr, exc.status, exc.reason, group=psi)
            return
        self._working.add(request.top_via.branch)
        self._resolving += 1
        self._spawn(
            self._accept(request, addr, group, incoming, until, plan),
            "a MESSAGE",
            call_id=request.call_id,
            group=psi,
        )

    async def _kms(self, request: MikeyMessage) -> tuple[MikeyMessage, tuple[KeyData, ...]]:
        self.kms_exchanges.append(request.data_type.name)
        return await kms_exchange(self.config.kms, request, self._post)

    async def _accept(
        self,
        request: Request,
        addr: Address,
        group: Group,
        incoming: im.Incoming,
        until: float,
        plan: core.Plan,
    ) -> None:
        kms = self.config.kms
        try:
            try:
                resolve = kms_client.resolve_init(
                    self.config.identity,
                    kms.key,
                    incoming.ticket,
                    self._now(),
                    kms=kms.identity,
                    csb_id=incoming.transfer.csb_id,
                )
                _, keys = await self._kms(resolve)
                forked = kms_client.forked_keys(keys)
            except MikeyError as exc:
                reason = "the list server may not resolve the ticket: " + kms_client.mikey_warning(
                    exc
                )
                self._refuse(request, addr, 403, reason, group=group.psi)
                return
            except KmsUnreachable as exc:
                self._refuse(
                    request, addr, 503, f"the KMS cannot be reached: {exc}", group=group.psi
                )
                return
            gtgk = forked.gtgks.get(incoming.transfer.spi)
            if gtgk is None:
                reason = "the ticket's keys have no GTGK for the TRANSFER_INIT's crypto session"
                self._refuse(request, addr, 403, reason, group=group.psi)
                return
            try:
                entity = im.open_content(incoming, mpki=forked.mpki, gtgk=gtgk)
                now = self._now()
                self.replays.check(incoming.nonce, now)  # a copy that raced this one
            except im.ImError as exc:
                self._refuse(request, addr, exc.status, exc.reason, group=group.psi)
                return
            self.replays.remember(incoming.nonce, until, now)
        finally:
            self._resolving -= 1
        sender = request.get("From") or ""
        log.info(
            "list-server: {call_id} from {sender} to {group} accepted: {through} pass through,"
            " {again} re-protected",
            call_id=request.call_id,
            sender=incoming.transfer.initiator,
            group=group.psi,
            peer=_peer(addr),
            through=len(plan.pass_through),
            again=len(plan.reprotect),
        )
        self._respond(request, make_response(request, 202, to_tag=secrets.token_hex(6)), addr)
        _, tre = im.ticket_validity(incoming.ticket)
        keep = tre if tre is not None else now + core.DEFAULT_KEEP
        content_type = request.get("Content-Type") or ""
        if plan.pass_through:
            ct, body = core.pass_through_body(content_type, request.body)
            for member in plan.pass_through:
                self._spawn(
                    self._deliver(request.call_id, group.psi, member, sender, ct, body, keep),
                    "a delivery",
                    call_id=request.call_id,
                    group=group.psi,
                    member=member,
                )
        for member in plan.reprotect:
            self._spawn(
                self._reprotect(request.call_id, group.psi, member, sender, entity),
                "a re-protection",
                call_id=request.call_id,
                group=group.psi,
                member=member,
            )

    async def _own_ticket(self, member: str) -> _OwnTicket:
        now = self._now()
        cached = self._tickets.get(member)
        if cached is not None and core.ticket_reusable(cached.expires_at, now):
            return cached
        kms = self.config.kms
        ask = kms_client.message_request_init(
            self.config.identity, kms.key, (member,), now, kms=kms.identity
        )
        reply, keys = await self._kms(ask)
        ticket = kms_client.ticket_of(reply)
        forked = kms_client.forked_keys(keys)
        spi = kms_client.gtgk_spi(1)
        _, tre = im.ticket_validity(ticket)
        own = _OwnTicket(ticket, forked.mpki, forked.mpkr, forked.gtgks[spi], spi, tre)
        self._tickets[member] = own
        while len(self._tickets) > self.config.max_members * max(1, len(self.config.groups)):
            self._tickets.pop(next(iter(self._tickets)))
        return own

    async def _reprotect(
        self, call_id: str, psi: str, member: str, sender: str, entity: bytes
    ) -> None:
        try:
            own = await self._own_ticket(member)
            out = im.protect(
                entity,
                sender=self.config.identity,
                recipient=member,
                ticket=own.ticket,
                mpki=own.mpki,
                mpkr=own.mpkr,
                gtgk=own.gtgk,
                gtgk_spi=own.gtgk_spi,
                now=self._now(),
            )
        except (MikeyError, KmsUnreachable, KeyError) as exc:
            log.warn(
                "list-server: {call_id} to {member} of {group}: no ticket of its own: {error}",
                call_id=call_id,
                group=psi,
                member=member,
                error=kms_client.mikey_warning(exc) if isinstance(exc, MikeyError) else str(exc),
            )
            return
        keep = own.expires_at if own.expires_at is not None else self._now() + core.DEFAULT_KEEP
        await self._deliver(call_id, psi, member, sender, out.content_type, out.body, keep)

    def _registered(self, member: str, now: float) -> bool:
        """False only when the core told us the member is not registered (now)."""
        until = self.store.registration(member) if self.store is not None else None
        return until is None or until > now

    async def _deliver(
        self,
        call_id: str,
        psi: str,
        member: str,
        sender: str,
        content_type: str,
        body: bytes,
        keep: float,
    ) -> None:
        fields = {"call_id": call_id, "group": psi, "member": member, "sender": _from_aor(sender)}
        now = self._now()
        if not self._registered(member, now):
            self._store(psi, member, sender, content_type, body, keep, "not registered", fields)
            return
        if self._busy():
            self._store(psi, member, sender, content_type, body, keep, "too busy", fields)
            return
        status = await self._send_message(member, sender, content_type, body)
        result = core.outcome(status)
        if result == "delivered":
            log.info(
                "list-server: {call_id} delivered to {member} of {group}", status=status, **fields
            )
        elif result == "store":
            self._store(psi, member, sender, content_type, body, keep, f"answered {status}", fields)
        else:
            log.warn(
                "list-server: {call_id} refused by {member} of {group}: {status}",
                status=status,
                **fields,
            )

    async def _send_message(self, member: str, sender: str, content_type: str, body: bytes) -> int:
        """The final status of one MESSAGE to ``member`` via the core (408: no answer)."""
        message = make_request(
            "MESSAGE",
            member,
            via=self._via(),
            from_=sender,
            to=f"<{member}>",
            call_id=f"{secrets.token_hex(10)}@{NAME}",
            cseq=1,
            body=body,
            content_type=content_type,
        )
        try:
            response = await self.request(message, self.config.core)
        except TimeoutError:
            return 408
        return response.status

    def _store(
        self,
        psi: str,
        member: str,
        sender: str,
        content_type: str,
        body: bytes,
        keep: float,
        why: str,
        fields: dict[str, str],
    ) -> None:
        if self.store is None:
            return
        try:
            self.store.put(
                member=member,
                group=psi,
                sender=sender,
                content_type=content_type,
                body=body,
                now=self._now(),
                expires_at=keep,
            )
        except StoreFull as exc:
            log.warn(
                "list-server: {call_id} for {member} of {group} lost: {error}",
                error=str(exc),
                **fields,
            )
            return
        except StoreError as exc:
            log.warn("list-server: {call_id} not stored: {error}", error=str(exc), **fields)
            return
        log.info("list-server: {call_id} stored for {member} of {group} ({why})", why=why, **fields)

    # -- registrations

    def _register(self, request: Request, addr: Address) -> None:
        member = _aor(request.to.uri)
        if not self._from_registrar(addr):
            reason = "third-party REGISTERs are taken from the core only"
            self._refuse(request, addr, 403, reason, member=member)
            return
        try:
            contacts = [c.param("expires") for c in request.addresses("Contact")]
        except RemoteSipError:
            contacts = []  # Contact: * (a deregistration of every binding)
        try:
            expires = core.register_expires(request.get("Expires"), contacts)
        except im.ImError as exc:
            self._refuse(request, addr, exc.status, exc.reason, member=member)
            return
        now = self._now()
        response = make_response(
            request, 200, to_tag=secrets.token_hex(6), extra=[("Expires", str(expires))]
        )
        self._respond(request, response, addr)
        if self.store is None or not any(member in g.members for g in self.config.groups):
            return  # only the members' registrations matter (and are kept)
        self.store.register(member, now + expires if expires else 0.0)
        log.info(
            "list-server: {member} {state} (third-party REGISTER from {peer})",
            call_id=request.call_id,
            member=member,
            peer=_peer(addr),
            state=f"registered for {expires} s" if expires else "not registered",
        )
        if expires and member not in self._delivering:
            self._delivering.add(member)
            self._spawn(self._deliver_stored(member), "a stored delivery", member=member)

    def _from_registrar(self, addr: Address) -> bool:
        """Whether ``addr`` is one of the configured registrars (``registrars``; the core's
        address unless configured): the only sources whose REGISTERs are believed."""
        registrars = self.config.registrars or (self.config.core,)
        return (addr[0], addr[1]) in registrars

    async def _deliver_stored(self, member: str) -> None:
        try:
            while self.store is not None:
                waiting = self.store.pending(member, self._now())
                if not waiting:
                    return
                for stored in waiting:
                    status = await self._send_message(
                        member, stored.sender, stored.content_type, stored.body
                    )
                    if self.store is None:
                        return
                    if 200 <= status < 300:
                        self.store.delivered(stored.id)
                        log.info(
                            "list-server: a stored message of {group} delivered to {member}",
                            group=stored.group,
                            member=member,
                            sender=_from_aor(stored.sender),
                            status=status,
                        )
                        continue
                    log.warn(
                        "list-server: a stored message of {group} for {member} kept: {status}",
                        group=stored.group,
                        member=member,
                        sender=_from_aor(stored.sender),
                        status=status,
                    )
                    return
        finally:
            self._delivering.discard(member)


def build(config: ListServerConfig, *, reactor: Any = None, **kw: Any) -> ListServerService:
    """The list server, ready to start (``e2ae list-server`` and the tests use this)."""
    return ListServerService(config, reactor=reactor, **kw)


__all__ = ["ListServerService", "build"]
