"""The Ticket Transfer exchange between the ends (RFC 6043 §4.2.2) for TLS crypto sessions
(TS 33.328 Annex H): the Initiator's TRANSFER_INIT in the INVITE, the Responder's
TRANSFER_RESP in the 200 OK, and the TLS-PSK of each crypto session. Pure: no I/O, no clock.

- TRANSFER_INIT = HDR (GENERIC-ID map: one entry per TCP/TLS/MSRP or TCP/TLS/BFCP m-line,
  Prot Type TLS, S = 0, #P = 0, no session data, the SPI naming the TGK; Annex H.1), T, RANDRi,
  IDRi, IDRr, TICKET, V. No SP payload: the TLS handshake negotiates its parameters (TR 33.829
  §8.3.1.2). The V is MACed with the initial-message keys of RFC 6043 §5.1.2 from the MPK the
  KMS issued with the ticket, over Table 5.2 (the message without the ticket's Initiator Data,
  then Identity_i and Identity_r).
- TRANSFER_RESP = HDR (the same map), T, [RANDRr], IDRr, V, MACed with the response keys from
  the MPK over the response and the whole TRANSFER_INIT.
- The TLS-PSK of crypto session *n* is its RFC 6043 §5.1.3 TEK from its TGK, with RANDRi when
  the ticket has H and RANDRr when it has G.

Immediate messaging (TR 33.829 §8.3.1.1) uses the same exchange without its answer: a SIP
MESSAGE carries a TRANSFER_INIT for one crypto session of Prot Type PSK/MIME keyed from the
ticket's GTGK, with key forking (flag I). Its V is MACed with MPKi; the Initiator Data of its
TICKET (``Vi, Vr``) is MACed with MPKr, which only the Initiator and the KMS hold; a General
Extension carries the SHA-256 of the protected MIME body, so both MACs cover the body too
(:func:`message_transfer_init`, :func:`read_message_transfer_init`,
:func:`verify_message_transfer_init`, :func:`mime_kek`).

:func:`read_transfer_init` checks what can be checked before the ticket is resolved, in the
order a Responder answers: data type, composition, no SP, the map (entries, Prot Type, S, #P,
session data, SPIs), the number of crypto sessions against the m-lines, the timestamp, the
Responder named. :func:`verify_transfer_init` checks the MAC once the MPK is known. Every
failure is a :class:`~mikey.errors.MikeyError` with its ERR number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence

import attrs

from mikey import kemac
from mikey.constants import DataType, ErrorNo, IdRole, MacAlg, PrfFunc, RandRole, TsType
from mikey.errors import MikeyError
from mikey.keys import MessageKeys, ticket_message_keys, ticket_tek, ticket_tls_psk
from mikey.message import GenericIdEntry, GenericIdMap, Header, Message, check_composition
from mikey.payloads import (
    GeneralExtension,
    IdWithRole,
    Payload,
    RandWithRole,
    SecurityPolicy,
    Ticket,
    TicketFlag,
    Timestamp,
    Verification,
    ntp_from_unix,
    unix_from_ntp,
)

#: The Prot Type of a TLS crypto session. TS 33.328 Annex J asks IANA for it and the spec text
#: leaves it as TBD1; until a number is assigned the project uses this one from the private
#: range at the top of the 8-bit space (the value mikey.samples uses).
TLS_PROT_TYPE = 0xF0
MAC_ALG = MacAlg.HMAC_SHA_256_256
PRF = PrfFunc.PRF_HMAC_SHA_256
RAND_BYTES = 16
#: Bytes of each TLS-PSK (TS 33.328 Annex H.2 gives no length; the SHA-256 PRF's output).
TLS_PSK_BYTES = 32
#: The Prot Type of a PSK/MIME crypto session ("PSK S/MIME", TS 33.328 Annex J). The spec text
#: leaves it as TBD2; until a number is assigned the project uses the next value of the
#: private range after TLS_PROT_TYPE.
PSK_MIME_PROT_TYPE = 0xF1
#: The General Extension type (RFC 3830 §6.15) whose data is the SHA-256 of the protected MIME
#: body as sent. No registered type carries a body digest: this one is from the private range
#: and stays out of :class:`mikey.constants.GenExtType`, which holds registered values. Inside
#: the TRANSFER_INIT it is covered by the V (MPKi) and by the Initiator Data's Vr (MPKr).
BODY_DIGEST_EXT = 0xF0
BODY_DIGEST_BYTES = 32
#: Bytes of the key-encryption key of a PSK/MIME crypto session (AES-128 key wrap).
MIME_KEK_BYTES = 16
#: The ticket flags of immediate messaging (TR 33.829 §8.3.1.1): the resolve is mandatory (E,
#: which RFC 6043 §6.10 requires with I), no TRANSFER_RESP (F = 0), no RANDRr (G = 0), keys from
#: the GTGK use RANDRi (H, which RFC 6043 requires when G is 0), key forking (I), and both ends
#: follow RFC 6043 (N, O). J is not set: every message's TRANSFER_INIT carries its own Initiator
#: Data, which only the KMS can check, so a Responder resolves each message anew.
MESSAGE_FLAGS = TicketFlag.E | TicketFlag.H | TicketFlag.I | TicketFlag.N | TicketFlag.O
#: Flags whose value the immediate-messaging profile fixes, and that value.
_MESSAGE_PROFILE = {
    TicketFlag.F: False,
    TicketFlag.G: False,
    TicketFlag.H: True,
    TicketFlag.I: True,
}


@attrs.frozen
class CryptoSession:
    """One TLS crypto session of the map: its CS ID and the SPI of the TGK it keys from."""

    cs_id: int
    spi: bytes


@attrs.frozen
class TransferInit:
    """What a Responder reads from a TRANSFER_INIT before the ticket is resolved."""

    message: Message
    csb_id: int
    sessions: tuple[CryptoSession, ...]
    randri: bytes
    initiator: str
    ticket: Ticket


def _keys(mpk: bytes, csb_id: int, *, response: bool, randri: bytes, randrr: bytes) -> MessageKeys:
    return ticket_message_keys(
        mpk,
        csb_id,
        response=response,
        randri=randri,
        randrr=randrr,
        mac_alg=MAC_ALG,
        prf_func=PRF,
    )


def tls_map(spis: Sequence[bytes]) -> GenericIdMap:
    """The CS ID map of TS 33.328 Annex H.1: crypto session *n* (1-based, in m-line order)
    keyed from the TGK with ``spis[n-1]``."""
    return GenericIdMap(
        tuple(GenericIdEntry(n, TLS_PROT_TYPE, spi=spi) for n, spi in enumerate(spis, start=1))
    )


def transfer_init(
    initiator: str,
    responder: str,
    ticket: Ticket,
    mpk: bytes,
    spis: Sequence[bytes],
    now: float,
    *,
    csb_id: int | None = None,
    randri: bytes | None = None,
) -> Message:
    """The Initiator's TRANSFER_INIT for ``len(spis)`` TLS crypto sessions."""
    if not spis:
        raise MikeyError(ErrorNo.UNSPECIFIED, "a TRANSFER_INIT needs at least one crypto session")
    randri = randri if randri is not None else os.urandom(RAND_BYTES)
    csb = csb_id if csb_id is not None else int.from_bytes(os.urandom(4), "big")
    draft = Message(
        Header(DataType.TRANSFER_INIT, csb, tls_map(spis), False, PRF),
        (
            Timestamp(TsType.NTP_UTC, ntp_from_unix(now)),
            RandWithRole(RandRole.RANDRI, randri),
            IdWithRole.uri(IdRole.IDRI, initiator),
            IdWithRole.uri(IdRole.IDRR, responder),
            ticket,
            Verification.placeholder(MAC_ALG),
        ),
    )
    keys = _keys(mpk, csb, response=False, randri=randri, randrr=b"")
    return kemac.protect(draft, keys, mac_data=kemac.ticket_mac_input(draft))


def _identity(payloads: Sequence[Payload], role: IdRole) -> str | None:
    for p in payloads:
        if isinstance(p, IdWithRole) and p.role == role:
            try:
                return p.data.decode("utf-8")
            except UnicodeDecodeError:
                raise MikeyError(ErrorNo.INVALID_ID, f"{role.name} is not UTF-8") from None
    return None


def read_transfer_init(
    message: Message,
    *,
    responder: str,
    streams: int,
    now: float,
    max_skew: float = 300.0,
    answers_for: Sequence[str] = (),
) -> TransferInit:
    """The checks a Responder makes before resolving the ticket of ``message``, which an
    offer with ``streams`` TCP/TLS/MSRP or TCP/TLS/BFCP m-lines carried. ``answers_for``: the
    other identities the Responder takes a TRANSFER_INIT for (a group or list URI it serves;
    whether the ticket lets it resolve is the KMS's decision)."""
    if message.data_type is not DataType.TRANSFER_INIT:
        raise MikeyError(ErrorNo.INVALID_DT, f"a {message.data_type.name}, not a TRANSFER_INIT")
    check_composition(message)
    if any(isinstance(p, SecurityPolicy) for p in message.payloads):
        raise MikeyError(ErrorNo.INVALID_SP, "SP payloads are not used with TLS (Annex H)")
    cs_map = message.header.cs_map
    if not isinstance(cs_map, GenericIdMap) or not cs_map.entries:
        raise MikeyError(ErrorNo.UNSPECIFIED, "the CS ID map must be GENERIC-ID with entries")
    sessions = []
    for entry in cs_map.entries:
        if entry.prot_type != TLS_PROT_TYPE:
            raise MikeyError(
                ErrorNo.UNSPECIFIED, f"crypto session {entry.cs_id}: Prot Type {entry.prot_type}"
            )
        if entry.s_flag or entry.policies or entry.session_data:
            raise MikeyError(
                ErrorNo.INVALID_SP,
                f"crypto session {entry.cs_id}: S, #P and session data must be empty (Annex H.1)",
            )
        if not entry.spi:
            raise MikeyError(ErrorNo.UNSPECIFIED, f"crypto session {entry.cs_id}: no SPI")
        sessions.append(CryptoSession(entry.cs_id, entry.spi))
    ids = [s.cs_id for s in sessions]
    if ids != list(range(1, len(ids) + 1)):
        raise MikeyError(ErrorNo.UNSPECIFIED, f"crypto sessions {ids}: expected 1..{len(ids)}")
    if len(sessions) != streams:
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"{len(sessions)} crypto session(s) for {streams} TLS m-line(s)",
        )
    (stamp,) = (p for p in message.payloads if isinstance(p, Timestamp))
    if stamp.ts_type not in (TsType.NTP_UTC, TsType.NTP):
        raise MikeyError(ErrorNo.INVALID_TS, f"a {stamp.ts_type.name} timestamp")
    if abs(unix_from_ntp(stamp.value) - now) > max_skew:
        raise MikeyError(ErrorNo.INVALID_TS, "the TRANSFER_INIT timestamp is out of the window")
    named = _identity(message.payloads, IdRole.IDRR)
    if named is not None and named != responder and named not in answers_for:
        raise MikeyError(ErrorNo.INVALID_ID, f"the TRANSFER_INIT is for {named}")
    initiator = _identity(message.payloads, IdRole.IDRI)
    if initiator is None:
        raise MikeyError(ErrorNo.INVALID_ID, "the TRANSFER_INIT names no Initiator (IDRi)")
    randri = next(
        p.rand
        for p in message.payloads
        if isinstance(p, RandWithRole) and p.role == RandRole.RANDRI
    )
    (ticket,) = (p for p in message.payloads if isinstance(p, Ticket))
    return TransferInit(message, message.header.csb_id, tuple(sessions), randri, initiator, ticket)


def named_responder(message: Message) -> str | None:
    """The Responder a TRANSFER_INIT names (its IDRr), if it names one."""
    return _identity(message.payloads, IdRole.IDRR)


def ticket_initiator(ticket: Ticket) -> str | None:
    """The Initiator the KMS wrote into the ticket's policy (its IDRi): the user who requested
    the ticket. The KMS's tag over the policy makes it authentic once the ticket resolved."""
    return _identity(ticket.policy.payloads(), IdRole.IDRI)


def verify_transfer_init(info: TransferInit, mpk: bytes, responder: str) -> None:
    """Raise MikeyError(Auth failure) unless the TRANSFER_INIT's MAC is the MPK's, and
    MikeyError(Invalid ID) when its IDRi is not the Initiator the ticket names (the user the
    KMS gave the MPK to). Call it once the ticket resolved: only then is the ticket's IDRi
    the KMS's word, and ``info.initiator`` the authenticated peer."""
    keys = _keys(mpk, info.csb_id, response=False, randri=info.randri, randrr=b"")
    covered = kemac.ticket_mac_input(info.message, identity_r=responder.encode())
    kemac.verify(info.message, keys, mac_data=covered)
    issued_to = ticket_initiator(info.ticket)
    if issued_to is not None and issued_to != info.initiator:
        raise MikeyError(
            ErrorNo.INVALID_ID,
            f"the TRANSFER_INIT names {info.initiator} but the ticket was issued to {issued_to}",
        )


def transfer_resp(
    info: TransferInit,
    responder: str,
    mpk: bytes,
    now: float,
    *,
    randrr: bytes | None = None,
) -> Message:
    """The Responder's TRANSFER_RESP; a RANDRr is sent when the ticket has G."""
    uses_randrr = info.ticket.policy.has(TicketFlag.G)
    randrr = (randrr or os.urandom(RAND_BYTES)) if uses_randrr else b""
    payloads: list[Payload] = [Timestamp(TsType.NTP_UTC, ntp_from_unix(now))]
    if uses_randrr:
        payloads.append(RandWithRole(RandRole.RANDRR, randrr))
    payloads += [IdWithRole.uri(IdRole.IDRR, responder), Verification.placeholder(MAC_ALG)]
    draft = Message(
        Header(DataType.TRANSFER_RESP, info.csb_id, info.message.header.cs_map, False, PRF),
        tuple(payloads),
    )
    keys = _keys(mpk, info.csb_id, response=True, randri=info.randri, randrr=randrr)
    return kemac.protect(draft, keys, mac_data=kemac.ticket_mac_input(draft, initial=info.message))


def randrr_of(message: Message) -> bytes:
    for p in message.payloads:
        if isinstance(p, RandWithRole) and p.role == RandRole.RANDRR:
            return p.rand
    return b""


def verify_transfer_resp(resp: Message, init: Message, mpk: bytes) -> None:
    """Raise MikeyError unless ``resp`` is a TRANSFER_RESP to ``init`` MACed with the MPK."""
    if resp.data_type is not DataType.TRANSFER_RESP:
        raise MikeyError(ErrorNo.INVALID_DT, f"a {resp.data_type.name}, not a TRANSFER_RESP")
    check_composition(resp)
    if resp.header.csb_id != init.header.csb_id:
        raise MikeyError(ErrorNo.UNSPECIFIED, "the TRANSFER_RESP is for another CSB")
    randri = next(
        p.rand for p in init.payloads if isinstance(p, RandWithRole) and p.role == RandRole.RANDRI
    )
    keys = _keys(mpk, init.header.csb_id, response=True, randri=randri, randrr=randrr_of(resp))
    kemac.verify(resp, keys, mac_data=kemac.ticket_mac_input(resp, initial=init))


def session_psks(
    init: Message,
    tgks: Mapping[bytes, bytes],
    *,
    ticket_flags: int,
    randrr: bytes = b"",
    length: int = TLS_PSK_BYTES,
) -> dict[int, bytes]:
    """The TLS-PSK of every crypto session of ``init``: CS ID -> key. ``tgks`` maps SPI -> TGK
    (from the KMS's reply). RANDRi enters when the ticket has H, RANDRr when it has G."""
    randri = next(
        p.rand for p in init.payloads if isinstance(p, RandWithRole) and p.role == RandRole.RANDRI
    )
    use_i = bool(ticket_flags & TicketFlag.H)
    use_r = bool(ticket_flags & TicketFlag.G)
    cs_map = init.header.cs_map
    assert isinstance(cs_map, GenericIdMap)
    out: dict[int, bytes] = {}
    for entry in cs_map.entries:
        tgk = tgks.get(entry.spi)
        if tgk is None:
            raise MikeyError(
                ErrorNo.UNSPECIFIED, f"crypto session {entry.cs_id}: no TGK with its SPI"
            )
        out[entry.cs_id] = ticket_tls_psk(
            tgk,
            entry.cs_id,
            length,
            randri=randri if use_i else b"",
            randrr=randrr if use_r else b"",
            prf_func=init.header.prf_func,
        )
    return out


# --- immediate messaging: one PSK/MIME crypto session, key forking ---------------------------


@attrs.frozen
class MessageTransfer:
    """What a Responder reads from the TRANSFER_INIT of a SIP MESSAGE before the resolve.

    ``nonce`` is the T payload's body and the RANDRi: what a replay cache keys on."""

    message: Message
    csb_id: int
    cs_id: int
    spi: bytes
    randri: bytes
    initiator: str
    responder: str
    ticket: Ticket
    body_digest: bytes
    timestamp: float
    nonce: bytes


def mime_map(gtgk_spi: bytes, cs_id: int = 1) -> GenericIdMap:
    """The CS ID map of a message's TRANSFER_INIT: one PSK/MIME crypto session keyed from the
    GTGK with ``gtgk_spi``; S = 0, no policies, no session data."""
    return GenericIdMap((GenericIdEntry(cs_id, PSK_MIME_PROT_TYPE, spi=gtgk_spi),))


def message_transfer_init(
    initiator: str,
    responder: str,
    ticket: Ticket,
    mpki: bytes,
    mpkr: bytes,
    gtgk_spi: bytes,
    body_digest: bytes,
    now: float,
    *,
    csb_id: int | None = None,
    randri: bytes | None = None,
) -> Message:
    """The TRANSFER_INIT of a SIP MESSAGE: HDR (one PSK/MIME crypto session, CS ID 1, the
    GTGK's SPI), T, RANDRi, IDRi, IDRr, TICKET, GEN EXT (the body digest), V. The V is MACed
    with the initial-message keys from MPKi (RFC 6043 §5.1.2); the TICKET gets the Initiator
    Data ``Vi, Vr``, Vr MACed with the key from MPKr (§6.10). ``body_digest`` is the SHA-256
    of the protected MIME body as sent."""
    if len(body_digest) != BODY_DIGEST_BYTES:
        raise MikeyError(
            ErrorNo.UNSPECIFIED, f"the body digest is a SHA-256: {BODY_DIGEST_BYTES} bytes"
        )
    if not gtgk_spi:
        raise MikeyError(ErrorNo.UNSPECIFIED, "the crypto session needs the GTGK's SPI")
    randri = randri if randri is not None else os.urandom(RAND_BYTES)
    csb = csb_id if csb_id is not None else int.from_bytes(os.urandom(4), "big")
    draft = Message(
        Header(DataType.TRANSFER_INIT, csb, mime_map(gtgk_spi), False, PRF),
        (
            Timestamp(TsType.NTP_UTC, ntp_from_unix(now)),
            RandWithRole(RandRole.RANDRI, randri),
            IdWithRole.uri(IdRole.IDRI, initiator),
            IdWithRole.uri(IdRole.IDRR, responder),
            attrs.evolve(ticket, initiator_data=b""),
            GeneralExtension(BODY_DIGEST_EXT, body_digest),
            Verification.placeholder(MAC_ALG),
        ),
    )
    keys = _keys(mpki, csb, response=False, randri=randri, randrr=b"")
    return kemac.protect_transfer_init(draft, keys, mpkr=mpkr)


def _message_profile(ticket: Ticket) -> None:
    wrong = [
        f"{flag.name}={int(ticket.policy.has(flag))}"
        for flag, wanted in _MESSAGE_PROFILE.items()
        if ticket.policy.has(flag) is not wanted
    ]
    if wrong:
        raise MikeyError(
            ErrorNo.INVALID_TPPAR,
            f"the ticket is not profiled for immediate messaging ({', '.join(wrong)};"
            " F=0, G=0, H=1, I=1 expected)",
        )


def read_message_transfer_init(
    message: Message, *, now: float | None = None, max_skew: float = 300.0
) -> MessageTransfer:
    """The checks a Responder makes on a message's TRANSFER_INIT before resolving its ticket:
    data type, composition, no SP, one PSK/MIME crypto session with an SPI, the ticket's
    flags (F=0, G=0, H=1, I=1), an NTP timestamp (within ``max_skew`` of ``now`` when ``now``
    is given), the IDRi (the ticket's Initiator when it names one), an IDRr, one body digest,
    and the Initiator Data. Replays are the caller's: ``nonce`` is what to remember."""
    if message.data_type is not DataType.TRANSFER_INIT:
        raise MikeyError(ErrorNo.INVALID_DT, f"a {message.data_type.name}, not a TRANSFER_INIT")
    check_composition(message)
    if any(isinstance(p, SecurityPolicy) for p in message.payloads):
        raise MikeyError(ErrorNo.INVALID_SP, "SP payloads are not used with PSK/MIME")
    cs_map = message.header.cs_map
    if not isinstance(cs_map, GenericIdMap) or len(cs_map.entries) != 1:
        raise MikeyError(
            ErrorNo.UNSPECIFIED, "the CS ID map must be GENERIC-ID with exactly one crypto session"
        )
    (entry,) = cs_map.entries
    if entry.prot_type != PSK_MIME_PROT_TYPE:
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"crypto session {entry.cs_id}: Prot Type {entry.prot_type}, not PSK/MIME",
        )
    if entry.s_flag or entry.policies or entry.session_data:
        raise MikeyError(
            ErrorNo.INVALID_SP,
            f"crypto session {entry.cs_id}: S, #P and session data must be empty",
        )
    if not entry.spi:
        raise MikeyError(ErrorNo.UNSPECIFIED, f"crypto session {entry.cs_id}: no SPI")
    tickets = [p for p in message.payloads if isinstance(p, Ticket)]
    if len(tickets) != 1:
        raise MikeyError(ErrorNo.INVALID_TICKET, f"{len(tickets)} TICKET payloads; one expected")
    ticket = tickets[0]
    _message_profile(ticket)
    (stamp,) = (p for p in message.payloads if isinstance(p, Timestamp))
    if stamp.ts_type not in (TsType.NTP_UTC, TsType.NTP):
        raise MikeyError(ErrorNo.INVALID_TS, f"a {stamp.ts_type.name} timestamp")
    sent = unix_from_ntp(stamp.value)
    if now is not None and abs(sent - now) > max_skew:
        raise MikeyError(ErrorNo.INVALID_TS, "the TRANSFER_INIT timestamp is out of the window")
    initiator = _identity(message.payloads, IdRole.IDRI)
    if initiator is None:
        raise MikeyError(ErrorNo.INVALID_ID, "the TRANSFER_INIT names no Initiator (IDRi)")
    issued_to = ticket_initiator(ticket)
    if issued_to is not None and issued_to != initiator:
        raise MikeyError(
            ErrorNo.INVALID_ID,
            f"the TRANSFER_INIT names {initiator} but the ticket was issued to {issued_to}",
        )
    responder = _identity(message.payloads, IdRole.IDRR)
    if responder is None:
        raise MikeyError(ErrorNo.INVALID_ID, "the TRANSFER_INIT names no Responder (IDRr)")
    digests = [
        p
        for p in message.payloads
        if isinstance(p, GeneralExtension) and p.ext_type == BODY_DIGEST_EXT
    ]
    if len(digests) != 1:
        raise MikeyError(
            ErrorNo.UNSPECIFIED, f"{len(digests)} body digests (General Extension); one expected"
        )
    if len(digests[0].data) != BODY_DIGEST_BYTES:
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"a body digest of {len(digests[0].data)} bytes, not {BODY_DIGEST_BYTES} (SHA-256)",
        )
    _initiator_vi(ticket)
    randri = next(
        p.rand
        for p in message.payloads
        if isinstance(p, RandWithRole) and p.role == RandRole.RANDRI
    )
    return MessageTransfer(
        message=message,
        csb_id=message.header.csb_id,
        cs_id=entry.cs_id,
        spi=entry.spi,
        randri=randri,
        initiator=initiator,
        responder=responder,
        ticket=ticket,
        body_digest=digests[0].data,
        timestamp=sent,
        nonce=stamp.encode_body() + randri,
    )


def _initiator_vi(ticket: Ticket) -> Verification:
    """The Vi of the ticket's Initiator Data (which must end with Vi, Vr)."""
    if not ticket.initiator_data:
        raise MikeyError(
            ErrorNo.INVALID_TICKET, "the ticket carries no Initiator Data (key forking)"
        )
    payloads = ticket.initiator_payloads()
    if len(payloads) < 2 or not all(isinstance(p, Verification) for p in payloads[-2:]):
        raise MikeyError(ErrorNo.INVALID_TICKET, "the Initiator Data does not end with Vi, Vr")
    vi = payloads[-2]
    assert isinstance(vi, Verification)
    return vi


def verify_message_transfer_init(info: MessageTransfer, mpki: bytes, body: bytes) -> None:
    """Raise MikeyError(Auth failure) unless the TRANSFER_INIT's V verifies with the keys from
    MPKi, the Vi of the Initiator Data is that V, and ``body`` is the body the digest names.
    The Vr of the Initiator Data is the KMS's to check (the Responder holds MPKr', not MPKr):
    call this once the ticket resolved, which is when the KMS verified it."""
    keys = _keys(mpki, info.csb_id, response=False, randri=info.randri, randrr=b"")
    try:
        kemac.verify(info.message, keys, mac_data=kemac.ticket_mac_input(info.message))
    except MikeyError:
        raise MikeyError(ErrorNo.AUTH_FAILURE, "the TRANSFER_INIT MAC does not verify") from None
    if _initiator_vi(info.ticket) != info.message.payloads[-1]:
        raise MikeyError(
            ErrorNo.AUTH_FAILURE, "the Vi of the Initiator Data is not the TRANSFER_INIT's V"
        )
    if not hmac.compare_digest(hashlib.sha256(body).digest(), info.body_digest):
        raise MikeyError(ErrorNo.AUTH_FAILURE, "the body is not the one the TRANSFER_INIT names")


def mime_kek(gtgk: bytes, cs_id: int, randri: bytes, *, length: int = MIME_KEK_BYTES) -> bytes:
    """The TEK of a PSK/MIME crypto session, the key-encryption key of the body (AES-128 key
    wrap): the RFC 6043 §5.1.3 TEK from the GTGK (not forked, §5.1.1) with RANDRi (flag H) and
    no RANDRr (G = 0), PRF-HMAC-SHA-256."""
    if length <= 0:
        raise ValueError("a KEK needs a positive length")
    return ticket_tek(gtgk, cs_id, length, randri=randri, prf_func=PRF)


def mime_kek_id(csb_id: int, cs_id: int, spi: bytes) -> bytes:
    """CSB ID (4 bytes, big-endian) || CS ID (1 byte) || SPI: the CMS
    KEKIdentifier.keyIdentifier of the body's KEKRecipientInfo."""
    if not 0 <= csb_id < 1 << 32 or not 0 <= cs_id <= 0xFF:
        raise ValueError("CSB ID is 32 bits, CS ID 8 bits")
    return csb_id.to_bytes(4, "big") + bytes([cs_id]) + spi


__all__ = [
    "BODY_DIGEST_EXT",
    "MESSAGE_FLAGS",
    "MIME_KEK_BYTES",
    "PSK_MIME_PROT_TYPE",
    "RAND_BYTES",
    "TLS_PROT_TYPE",
    "TLS_PSK_BYTES",
    "CryptoSession",
    "MessageTransfer",
    "TransferInit",
    "message_transfer_init",
    "mime_kek",
    "mime_kek_id",
    "mime_map",
    "named_responder",
    "read_message_transfer_init",
    "read_transfer_init",
    "session_psks",
    "ticket_initiator",
    "tls_map",
    "transfer_init",
    "transfer_resp",
    "verify_message_transfer_init",
    "verify_transfer_init",
    "verify_transfer_resp",
]
