"""A UE's KMS-protected immediate messages (TR 33.829 §8.3.1.1), the Twisted side of
:mod:`immsg.core` for :class:`lab.uesim.UeSim`.

Sending (:meth:`UeMessaging.send`): a forking ticket (F=0, G=0, H=1, I=1, no TGK, one GTGK)
for the Request-URI and the URI list, requested once and reused while it is valid (the spec:
"The ticket can be reused, but the intended responders ... should be the same each time");
each MESSAGE has a TRANSFER_INIT of its own and the text protected under the KEK from the GTGK.

Receiving: the body is read, its timestamp checked against the ticket's validity and its T and
RANDRi against the replay cache, the ticket resolved at the KMS as us, the TRANSFER_INIT and
body digest verified and the text decrypted; 200 OK. Any refusal is a 4xx with a Warning (see
:mod:`immsg.core`) and a log event, recorded in :attr:`UeMessaging.refused`. A retransmission
that comes while the KMS is being asked is dropped; one after the answer gets it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from immsg import core as im
from kms import client as kms_client
from lab import ue
from lab.sipnode import Address
from mikey import transfer
from mikey.errors import MikeyError
from mikey.payloads import Ticket
from pcscf.sip.message import Request, make_response

if TYPE_CHECKING:
    from lab.uesim import UeSim

log = Logger(namespace="lab.ue")

#: The key log label of a message's KEK.
KEK_LABEL = "E2AE_MIME_KEK"
#: Seconds before its TRe a cached ticket is no longer used for a new message.
TICKET_MARGIN = 60.0


@attrs.frozen
class ImSent:
    """The outcome of a MESSAGE we sent: the final response's status and Warning."""

    call_id: str
    target: str
    status: int
    warning: str | None
    ticket_reused: bool


@attrs.frozen
class ImReceived:
    """A protected MESSAGE we accepted. ``sender`` is the From AOR; ``protected_by`` the
    TRANSFER_INIT's Initiator (the ticket's IDRi), which is a list server when it re-protected
    the message for us (then the sender's proof of origin ends at that server)."""

    call_id: str
    sender: str
    protected_by: str
    text: str

    @property
    def reprotected(self) -> bool:
        return self.protected_by != self.sender


@attrs.frozen
class ImRefused:
    call_id: str
    sender: str
    status: int
    reason: str


@attrs.frozen
class _Ticket:
    ticket: Ticket
    keys: kms_client.ForkedKeys
    valid_until: float


class UeMessaging:
    """The immediate-messaging state of one UE."""

    def __init__(self, owner: UeSim) -> None:
        self.owner = owner
        self.received: list[ImReceived] = []
        self.refused: list[ImRefused] = []
        self.replays = im.ReplayCache()
        self._tickets: dict[tuple[str, ...], _Ticket] = {}
        self._busy: set[str] = set()
        self._waiters: list[defer.Deferred[ImReceived]] = []
        self._queue: list[ImReceived] = []
        #: When set, every MESSAGE that comes in is written there as it came, one file each
        #: (``NNN-<Call-ID>.sip``), for ``e2ae mikey decode`` and ``openssl cms``.
        self.save_dir: Path | None = None
        self._saved = 0

    # -- sending ----------------------------------------------------------------------------

    async def _ticket(self, responders: tuple[str, ...]) -> tuple[_Ticket, bool]:
        owner = self.owner
        kms = owner.kms
        assert kms is not None
        now = float(owner.reactor.seconds())
        cached = self._tickets.get(responders)
        if cached is not None and cached.valid_until - TICKET_MARGIN > now:
            return cached, True
        request = kms_client.message_request_init(
            owner.kms_user, kms.key, responders, now, kms=kms.kms_identity
        )
        reply, keys = await owner._kms_exchange(request)
        ticket = kms_client.ticket_of(reply)
        _, end = im.ticket_validity(ticket)
        entry = _Ticket(ticket, kms_client.forked_keys(keys), end if end is not None else now)
        self._tickets[responders] = entry
        return entry, False

    async def send(self, target: str, text: str, *, recipients: Sequence[str] = ()) -> ImSent:
        """Send ``text`` to ``target`` protected end to end; ``recipients``: the URI list of a
        message to a list server (RFC 5365), left unprotected as the spec says."""
        owner = self.owner
        if owner.kms is None:
            raise ue.LocalUeError("a protected MESSAGE needs the KMS (kms=)")
        named = (owner.kms.responder,) if owner.kms.responder else (target, *recipients)
        responders = tuple(dict.fromkeys(named))
        try:
            entry, reused = await self._ticket(responders)
            keys = entry.keys
            if len(keys.gtgks) != 1:
                raise ue.LocalUeError(f"the ticket has {len(keys.gtgks)} GTGKs, not one")
            ((spi, gtgk),) = keys.gtgks.items()
            out = im.protect(
                im.text_entity(text),
                sender=owner.kms_user,
                recipient=target,
                ticket=entry.ticket,
                mpki=keys.mpki,
                mpkr=keys.mpkr,
                gtgk=gtgk,
                gtgk_spi=spi,
                now=float(owner.reactor.seconds()),
                recipients=recipients,
            )
        except MikeyError as exc:
            reason = kms_client.mikey_warning(exc)
            log.warn(
                "UE {ue}: no ticket for a MESSAGE to {target}: {error}",
                ue=owner.user,
                target=target,
                error=reason,
            )
            raise ue.LocalUeError(f"KMS: {reason}") from None
        self._log_kek(out.kek_id, out.kek)
        request = owner._agent().message(target, out.body, out.content_type)
        response = await owner._request(request)
        sent = ImSent(request.call_id, target, response.status, response.get("Warning"), reused)
        log.info(
            "UE {ue}: MESSAGE {call_id} to {target}: {status}{ticket}",
            ue=owner.user,
            call_id=request.call_id,
            target=target,
            status=response.status,
            ticket=" (ticket reused)" if reused else "",
        )
        return sent

    # -- receiving --------------------------------------------------------------------------

    def next_message(self) -> defer.Deferred[ImReceived]:
        if self._queue:
            return defer.succeed(self._queue.pop(0))
        d: defer.Deferred[ImReceived] = defer.Deferred()
        self._waiters.append(d)
        return d

    def incoming(self, request: Request, addr: Address) -> None:
        branch = request.top_via.branch
        if branch in self._busy:
            return  # a retransmission while the KMS is asked: the answer comes once
        self._busy.add(branch)
        self._save(request)
        d = defer.Deferred.fromCoroutine(self._incoming(request, addr))
        d.addErrback(
            lambda failure: log.failure(
                "UE {ue}: MESSAGE {call_id} failed",
                failure,
                ue=self.owner.user,
                call_id=request.call_id,
            )
        )
        d.addBoth(lambda _: self._busy.discard(branch))

    async def _incoming(self, request: Request, addr: Address) -> None:
        owner = self.owner
        sender = request.from_.sip_uri("From").aor()
        try:
            received = await self._open(request, sender)
        except im.ImError as exc:
            self._refuse(request, addr, sender, exc.status, exc.reason)
            return
        except Exception as exc:  # never let a message end the UE
            self._refuse(request, addr, sender, 500, f"{type(exc).__name__}: {exc}")
            return
        owner._respond(request, make_response(request, 200, to_tag=ue.new_token()), addr)
        log.info(
            "UE {ue}: MESSAGE {call_id} from {sender} (protected by {initiator}) accepted",
            ue=owner.user,
            call_id=request.call_id,
            sender=sender,
            initiator=received.protected_by,
        )
        self.received.append(received)
        if self._waiters:
            self._waiters.pop(0).callback(received)
        else:
            self._queue.append(received)

    async def _open(self, request: Request, sender: str) -> ImReceived:
        owner = self.owner
        kms = owner.kms
        if kms is None:
            raise im.ImError(493, "this UE has no KMS to resolve the ticket with")
        incoming = im.read(request.get("Content-Type") or "", request.body)
        now = float(owner.reactor.seconds())
        until = im.check_fresh(incoming, now)
        self.replays.check(incoming.nonce, now)
        me = owner.kms_user
        info = incoming.transfer
        try:
            resolve = kms_client.resolve_init(
                me, kms.key, incoming.ticket, now, kms=kms.kms_identity, csb_id=info.csb_id
            )
            _, keys = await owner._kms_exchange(resolve)
            forked = kms_client.forked_keys(keys)
        except MikeyError as exc:
            raise im.ImError(493, f"no key from the KMS: {kms_client.mikey_warning(exc)}") from None
        gtgk = forked.gtgks.get(info.spi)
        if gtgk is None:
            raise im.ImError(493, f"the KMS gave no GTGK with SPI {info.spi.hex()}")
        text = im.text_of(im.open_content(incoming, mpki=forked.mpki, gtgk=gtgk))
        self._log_kek(incoming.kek_id, transfer.mime_kek(gtgk, info.cs_id, info.randri))
        self.replays.remember(incoming.nonce, until, float(owner.reactor.seconds()))
        return ImReceived(request.call_id, sender, info.initiator, text)

    def _save(self, request: Request) -> None:
        if self.save_dir is None:
            return
        self._saved += 1
        safe = "".join(c if c.isalnum() or c in "-.@" else "_" for c in request.call_id)[:80]
        path = self.save_dir / f"{self._saved:03d}-{safe}.sip"
        path.write_bytes(request.serialise())

    def _log_kek(self, kek_id: bytes, kek: bytes) -> None:
        """With a key log (asked for: ``keylog=``), a line ``E2AE_MIME_KEK <key id> <KEK>``
        in hex beside the TLS secrets, for ``openssl cms -decrypt -secretkeyid -secretkey``
        (docs/messaging.md); Wireshark skips the label."""
        keylog = self.owner.keylog
        if keylog is not None:
            keylog(None, f"{KEK_LABEL} {kek_id.hex()} {kek.hex()}".encode())  # type: ignore[arg-type]

    def _refuse(
        self, request: Request, addr: Address, sender: str, status: int, reason: str
    ) -> None:
        owner = self.owner
        log.warn(
            "UE {ue}: MESSAGE {call_id} from {sender} refused: {status} {error}",
            ue=owner.user,
            call_id=request.call_id,
            sender=sender,
            status=status,
            error=reason,
        )
        extra: list[tuple[str, str]] = [im.warning(owner.host, reason)]
        if status == 415:
            extra.append(("Accept", im.ACCEPT))
        response = make_response(request, status, to_tag=ue.new_token(), extra=extra)
        owner._respond(request, response, addr)
        self.refused.append(ImRefused(request.call_id, sender, status, reason))
