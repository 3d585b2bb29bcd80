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

:func:`read_transfer_init` checks what can be checked before the ticket is resolved, in the
order a Responder answers: data type, composition, no SP, the map (entries, Prot Type, S, #P,
session data, SPIs), the number of crypto sessions against the m-lines, the timestamp, the
Responder named. :func:`verify_transfer_init` checks the MAC once the MPK is known. Every
failure is a :class:`~mikey.errors.MikeyError` with its ERR number.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import attrs

from mikey import kemac
from mikey.constants import DataType, ErrorNo, IdRole, MacAlg, PrfFunc, RandRole, TsType
from mikey.errors import MikeyError
from mikey.keys import MessageKeys, ticket_message_keys, ticket_tls_psk
from mikey.message import GenericIdEntry, GenericIdMap, Header, Message, check_composition
from mikey.payloads import (
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


__all__ = [
    "TLS_PROT_TYPE",
    "TLS_PSK_BYTES",
    "CryptoSession",
    "TransferInit",
    "named_responder",
    "read_transfer_init",
    "session_psks",
    "ticket_initiator",
    "tls_map",
    "transfer_init",
    "transfer_resp",
    "verify_transfer_init",
    "verify_transfer_resp",
]
