"""The protected SIP MESSAGE of KMS-based immediate messaging (TR 33.829 §8.3.1.1), sans I/O.

The body of the MESSAGE is ``multipart/mixed`` (RFC 2046) with, in this order:

1. ``application/mikey``: the Initiator's TRANSFER_INIT (RFC 6043 §4.2.2) for one crypto
   session of Prot Type PSK/MIME keyed from the ticket's GTGK (:mod:`mikey.transfer`); its
   General Extension carries the SHA-256 of the CMS object below, so the TRANSFER_INIT MAC
   (under MPKi) and the Initiator Data (under MPKr) cover the body too.
2. ``application/pkcs7-mime; smime-type=authEnveloped-data``: CMS AuthEnvelopedData (RFC 5652,
   RFC 5083) of the MIME entity for the end terminal (``text/plain`` here), with one
   KEKRecipientInfo: the KEK is the TEK of the crypto session (``mikey.transfer.mime_kek``),
   the key identifier ``mikey.transfer.mime_kek_id`` (:mod:`immsg.cms`).
3. Optional, not protected (the spec: "MIME entities not intended for the end terminal (e.g.
   URI-lists) shall not be protected"): ``application/resource-lists+xml`` with
   ``Content-Disposition: recipient-list`` (RFC 5365), the members a list server fans out to.

A receiver reads the body (:func:`read`) before it resolves the ticket, checks freshness and
replays (:class:`ReplayCache`), resolves, then :func:`open_content` verifies the TRANSFER_INIT
and the body digest and decrypts. Every refusal is an :class:`ImError` with the SIP status
and a reason for the Warning header; no key or plaintext is ever in a reason.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import attrs

from immsg import cms, mime
from mikey import transfer
from mikey.constants import ErrorNo, TsRole
from mikey.errors import MikeyError
from mikey.message import Message, decode
from mikey.payloads import Ticket, TimestampWithRole, unix_from_ntp

#: The largest MESSAGE body a receiver takes (RFC 3428 §7 asks for messages that fit a
#: datagram of 1300 bytes unless the path is congestion controlled; a protected message is
#: bigger than its text, and the list server may add a URI list): larger gets 413.
MAX_BODY_BYTES = 16 * 1024
#: The text of a message: its MIME entity's type.
TEXT_TYPE = "text/plain;charset=utf-8"
MIKEY_TYPE = "application/mikey"
SMIME_TYPE = "application/pkcs7-mime"
SMIME_KIND = "authenveloped-data"
LIST_TYPE = "application/resource-lists+xml"
#: The CS ID of the one PSK/MIME crypto session of a message's TRANSFER_INIT.
MIME_CS_ID = 1
#: Seconds of clock difference allowed between a TRANSFER_INIT's sender and its receiver.
FRESHNESS = 300.0
#: What an ``Accept`` header of a 415 lists.
ACCEPT = "multipart/mixed, application/mikey, application/pkcs7-mime"


class ImError(Exception):
    """A protected MESSAGE refused: ``status`` the SIP final response, ``reason`` its Warning."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.frozen
class Outgoing:
    """A protected MESSAGE body as the sender puts it in the request."""

    content_type: str
    body: bytes
    transfer_init: Message
    kek_id: bytes
    #: The KEK, for a key log the user asked for; never in a repr.
    kek: bytes = attrs.field(repr=False)


@attrs.frozen
class Incoming:
    """A protected MESSAGE body as read before the ticket is resolved."""

    transfer: transfer.MessageTransfer
    cms: bytes
    kek_id: bytes
    recipients: tuple[str, ...]

    @property
    def ticket(self) -> Ticket:
        return self.transfer.ticket

    @property
    def nonce(self) -> bytes:
        """What a replayed MESSAGE repeats: the TRANSFER_INIT's T and RANDRi."""
        return self.transfer.nonce


def protect(
    content: bytes,
    *,
    sender: str,
    recipient: str,
    ticket: Ticket,
    mpki: bytes,
    mpkr: bytes,
    gtgk: bytes,
    gtgk_spi: bytes,
    now: float,
    recipients: Sequence[str] = (),
    csb_id: int | None = None,
    randri: bytes | None = None,
    random: Callable[[int], bytes] = os.urandom,
) -> Outgoing:
    """Protect the MIME entity ``content`` for ``recipient`` (the Request-URI): the sender's
    TRANSFER_INIT with ``ticket`` and its MIKEY keys (MPKi, MPKr of a forking ticket), the
    body encrypted under the KEK derived from ``gtgk``."""
    csb = csb_id if csb_id is not None else int.from_bytes(random(4), "big")
    rand = randri if randri is not None else random(transfer.RAND_BYTES)
    kek = transfer.mime_kek(gtgk, MIME_CS_ID, rand)
    kek_id = transfer.mime_kek_id(csb, MIME_CS_ID, gtgk_spi)
    sealed = cms.seal(content, kek, kek_id, random=random)
    init = transfer.message_transfer_init(
        sender,
        recipient,
        ticket,
        mpki,
        mpkr,
        gtgk_spi,
        hashlib.sha256(sealed).digest(),
        now,
        csb_id=csb,
        randri=rand,
    )
    parts = [mime.mikey_part(init.encode()), mime.smime_part(sealed)]
    if recipients:
        parts.append(mime.recipient_list_part(recipients))
    content_type, body = mime.multipart(parts, boundary=random(12).hex())
    return Outgoing(content_type, body, init, kek_id, kek)


def text_entity(text: str) -> bytes:
    """The MIME entity of a text message."""
    return mime.entity(TEXT_TYPE, text.encode("utf-8"))


def text_of(entity: bytes) -> str:
    """The text of a decrypted MIME entity (415 unless it is ``text/plain`` in UTF-8)."""
    try:
        part = mime.parse_entity(entity)
    except mime.MimeError as exc:
        raise ImError(400, f"the protected MIME entity is malformed: {exc.reason}") from None
    if part.content_type != "text/plain":
        raise ImError(415, f"the protected content is {part.content_type}, not text/plain")
    try:
        return part.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ImError(400, "the protected text is not UTF-8") from None


def read(content_type: str, body: bytes) -> Incoming:
    """Read a protected MESSAGE body up to what needs the resolved keys."""
    if len(body) > MAX_BODY_BYTES:
        raise ImError(413, f"a body of {len(body)} bytes: at most {MAX_BODY_BYTES}")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind != "multipart/mixed":
        raise ImError(415, f"a {kind or 'missing'} body: a protected MESSAGE is multipart/mixed")
    try:
        parts = mime.parse_multipart(content_type, body)
    except mime.MimeError as exc:
        raise ImError(400, f"malformed MIME: {exc.reason}") from None
    mikeys = [p for p in parts if p.content_type == MIKEY_TYPE]
    smimes = [p for p in parts if p.content_type == SMIME_TYPE]
    lists = [p for p in parts if p.content_type == LIST_TYPE]
    if len(mikeys) != 1 or len(smimes) != 1:
        raise ImError(
            415,
            f"{len(mikeys)} application/mikey and {len(smimes)} application/pkcs7-mime parts:"
            " one of each is needed",
        )
    if len(lists) > 1 or len(parts) != 2 + len(lists):
        raise ImError(415, "a part that is neither MIKEY, S/MIME nor one recipient list")
    smime_kind = smimes[0].params.get("smime-type", "").lower()
    if smime_kind != SMIME_KIND:
        raise ImError(415, f"smime-type {smime_kind or 'missing'}: authEnveloped-data is needed")
    try:
        info = transfer.read_message_transfer_init(decode(mikeys[0].body))
    except MikeyError as exc:
        raise ImError(400, f"TRANSFER_INIT refused: {_mikey_reason(exc)}") from None
    der = smimes[0].body
    try:
        envelope = cms.read(der)
    except cms.CmsError as exc:
        status = 415 if exc.kind == "unsupported" else 400
        raise ImError(status, f"CMS: {exc.reason}") from None
    expected = transfer.mime_kek_id(info.csb_id, info.cs_id, info.spi)
    if envelope.kek_id != expected:
        raise ImError(
            493,
            f"the body is for key id {envelope.kek_id.hex()}, the TRANSFER_INIT's crypto"
            f" session is {expected.hex()}",
        )
    recipients: tuple[str, ...] = ()
    if lists:
        try:
            recipients = mime.recipient_list(lists[0])
        except mime.MimeError as exc:
            raise ImError(400, f"recipient list: {exc.reason}") from None
    return Incoming(info, der, envelope.kek_id, recipients)


def open_content(incoming: Incoming, *, mpki: bytes, gtgk: bytes) -> bytes:
    """Verify the TRANSFER_INIT (MAC under MPKi, Vi, the body digest) and decrypt: the MIME
    entity the sender protected."""
    try:
        transfer.verify_message_transfer_init(incoming.transfer, mpki, incoming.cms)
    except MikeyError as exc:
        raise ImError(403, f"TRANSFER_INIT does not verify: {_mikey_reason(exc)}") from None
    info = incoming.transfer
    kek = transfer.mime_kek(gtgk, info.cs_id, info.randri)
    try:
        return cms.open_(incoming.cms, kek, incoming.kek_id)
    except cms.CmsError as exc:
        raise ImError(493, f"CMS: {exc.reason}") from None


def ticket_validity(ticket: Ticket) -> tuple[float | None, float | None]:
    """The ticket's TRs and TRe (RFC 6043 §6.10, in the Ticket Policy) as Unix times."""
    start = end = None
    for p in ticket.policy.payloads():
        if isinstance(p, TimestampWithRole) and p.role == TsRole.TRS:
            start = unix_from_ntp(p.value)
        elif isinstance(p, TimestampWithRole) and p.role == TsRole.TRE:
            end = unix_from_ntp(p.value)
    return start, end


def check_fresh(incoming: Incoming, now: float, skew: float = FRESHNESS) -> float:
    """403 unless the TRANSFER_INIT's timestamp lies in its ticket's validity and is not in
    the future (``skew`` seconds of clock difference allowed). A message may be stored and
    delivered later (the Responder may be unregistered: TR 33.829 §8.3.1.1), so an old
    timestamp is fine while its ticket is valid. Returns until when the message's T and
    RANDRi must be remembered against a replay."""
    stamp = incoming.transfer.timestamp
    start, end = ticket_validity(incoming.ticket)
    if stamp > now + skew:
        raise ImError(403, f"TRANSFER_INIT timestamp {stamp - now:.0f} s in the future")
    if start is not None and stamp < start - skew:
        raise ImError(403, "TRANSFER_INIT timestamp before its ticket's validity")
    if end is not None and now > end + skew:
        raise ImError(403, "the ticket of the TRANSFER_INIT has expired")
    return (end if end is not None else stamp + 2 * skew) + skew


class ReplayCache:
    """The T ‖ RANDRi of every TRANSFER_INIT accepted, each until its ticket expires (the
    time :func:`check_fresh` returns), at most ``limit`` of them (the oldest go first); a
    MESSAGE repeating one is a replay. :meth:`check` before the resolve, :meth:`remember`
    once the message verified (a forged copy cannot burn the real one's nonce)."""

    def __init__(self, *, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        for nonce, until in list(self._seen.items()):
            if until <= now:
                del self._seen[nonce]
        while len(self._seen) >= self.limit:
            self._seen.popitem(last=False)

    def check(self, nonce: bytes, now: float) -> None:
        """403 if ``nonce`` was accepted before."""
        self._expire(now)
        if nonce in self._seen:
            raise ImError(403, "a replayed MESSAGE (the same TRANSFER_INIT T and RANDRi)")

    def remember(self, nonce: bytes, until: float, now: float) -> None:
        self._expire(now)
        self._seen[nonce] = until


def warning(agent: str, reason: str) -> tuple[str, str]:
    """The ``Warning`` header of a refusal (RFC 3261 §20.43, code 399)."""
    safe = "".join(c if c.isprintable() and c not in '"\\' else " " for c in reason)[:200]
    return ("Warning", f'399 {agent} "{safe}"')


def _mikey_reason(exc: MikeyError) -> str:
    try:
        name = ErrorNo(exc.code).name
    except ValueError:
        name = str(exc.code)
    return f"{name}: {exc.reason}"


__all__ = [
    "ACCEPT",
    "FRESHNESS",
    "MAX_BODY_BYTES",
    "ImError",
    "Incoming",
    "Outgoing",
    "ReplayCache",
    "check_fresh",
    "open_content",
    "protect",
    "read",
    "text_entity",
    "text_of",
    "ticket_validity",
    "warning",
]
