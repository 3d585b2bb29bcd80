"""The user's side of the UE-KMS exchanges, sans I/O: build REQUEST_INIT_PSK and
RESOLVE_INIT_PSK (RFC 6043 §4.2.1, §4.2.3) and read the KMS's replies (:func:`open_reply`).

- REQUEST_INIT_PSK = HDR (V set, #CS 0, Empty map), T, RANDRi, IDRi, IDRkms, TP, V. The TP
  asks for the ticket: its type and flags, and in its TP Data the Responders allowed to resolve
  it (IDRr, none: anybody) and a KEMAC listing the keys wanted, one TGK per crypto session
  (key data of length 0: "the KMS makes it"; docs/kms.md, "Keys and tickets"), and GTGKs
  for a group or a message (:func:`message_request_init`: TR 33.829 §8.3.1.1, one GTGK, no
  TGK, key forking).
- RESOLVE_INIT_PSK = HDR (V set, #CS 0, Empty map), T, RANDRr, IDRr, IDRkms, TICKET, V.

Each is MACed (HMAC-SHA-256-256) over RFC 6043 Table 5.2 (the message, then the sender's and
the KMS's identities) with the auth key of RFC 6043 §5.1.2, derived from the key the user
shares with the KMS, the CSB ID and RANDRi (request) or RANDRr (resolve)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from mikey import kemac as kemac_crypto
from mikey.constants import (
    DataType,
    EncrAlg,
    ErrorNo,
    IdRole,
    KeyType,
    MacAlg,
    PrfFunc,
    RandRole,
    TsType,
)
from mikey.errors import MikeyError
from mikey.keys import MessageKeys, ticket_message_keys
from mikey.message import EmptyMap, Header, Message, decode
from mikey.payloads import (
    Err,
    IdWithRole,
    Kemac,
    KeyData,
    KvSpi,
    Payload,
    RandWithRole,
    Ticket,
    TicketFlag,
    TicketPolicy,
    Timestamp,
    Verification,
    ntp_from_unix,
)
from mikey.transfer import MESSAGE_FLAGS

#: RAND length in bytes (RFC 3830 §6.11 asks for at least 128 bits).
RAND_BYTES = 16
#: MAC of the requests and of the KMS's replies; encryption of the replies' KEMAC.
MAC_ALG = MacAlg.HMAC_SHA_256_256
ENCR_ALG = EncrAlg.AES_KW_128
PRF = PrfFunc.PRF_HMAC_SHA_256
#: The 3GPP base ticket (RFC 6043 Table 6.15).
TICKET_TYPE = 2
#: What a ticket for session-based messaging over TLS asks for (TR 33.829 §8.3.1.2): the
#: Resolve exchange is mandatory (E), a TRANSFER_RESP is sent (F), keys from a TGK use
#: RANDRi (H), and both ends follow RFC 6043 (N, O).
SESSION_FLAGS = TicketFlag.E | TicketFlag.F | TicketFlag.H | TicketFlag.N | TicketFlag.O
#: SPI of crypto session n's TGK (4 bytes, n); the MPK's is 0.
MPK_SPI = bytes(4)
#: SPIs of MPKi and MPKr (MPKr' in a RESOLVE_RESP) of a ticket with key forking (flag I): at
#: the top of the 32-bit space, where neither tgk_spi(n) nor gtgk_spi(n) reaches.
MPKI_SPI = b"\xff\xff\xff\x01"
MPKR_SPI = b"\xff\xff\xff\x02"
#: The top bit of a GTGK's SPI: GTGK n is 0x80000000 | n, apart from the TGKs' 1..n.
GTGK_SPI_BIT = 0x8000_0000


def tgk_spi(cs_id: int) -> bytes:
    return cs_id.to_bytes(4, "big")


def gtgk_spi(n: int) -> bytes:
    """The SPI of the ``n``-th GTGK a request asks for (1-based): 0x80000000 | n."""
    if not 0 < n < GTGK_SPI_BIT:
        raise ValueError("GTGK n: 1 <= n < 2**31")
    return (GTGK_SPI_BIT | n).to_bytes(4, "big")


def _stamp(now: float) -> Timestamp:
    return Timestamp(TsType.NTP_UTC, ntp_from_unix(now))


def request_keys(key: bytes, csb_id: int, randri: bytes, *, response: bool) -> MessageKeys:
    return ticket_message_keys(
        key,
        csb_id,
        response=response,
        randri=randri,
        encr_alg=ENCR_ALG,
        mac_alg=MAC_ALG,
        prf_func=PRF,
    )


def resolve_keys(key: bytes, csb_id: int, randrr: bytes, *, response: bool) -> MessageKeys:
    return ticket_message_keys(
        key,
        csb_id,
        response=response,
        randrr=randrr,
        encr_alg=ENCR_ALG,
        mac_alg=MAC_ALG,
        prf_func=PRF,
    )


def request_init(
    identity: str,
    key: bytes,
    responders: Sequence[str],
    now: float,
    *,
    kms: str,
    sessions: int = 1,
    csb_id: int | None = None,
    randri: bytes | None = None,
    ticket_type: int = TICKET_TYPE,
    flags: int = SESSION_FLAGS,
    gtgks: int = 0,
) -> Message:
    """A ticket request from ``identity`` to the KMS ``kms`` for a ticket ``responders`` may
    resolve (none: anybody), with one TGK for each of ``sessions`` crypto sessions and
    ``gtgks`` GTGKs (SPIs :func:`gtgk_spi`)."""
    randri = randri if randri is not None else os.urandom(RAND_BYTES)
    csb = csb_id if csb_id is not None else int.from_bytes(os.urandom(4), "big")
    wanted = Kemac.plain(
        (
            *(KeyData(KeyType.TGK, b"", kv=KvSpi(tgk_spi(n))) for n in range(1, sessions + 1)),
            *(KeyData(KeyType.GTGK, b"", kv=KvSpi(gtgk_spi(n))) for n in range(1, gtgks + 1)),
        )
    )
    policy = TicketPolicy.with_payloads(
        ticket_type,
        (*(IdWithRole.uri(IdRole.IDRR, r) for r in responders), wanted),
        prf_func=PRF,
        flags=flags,
    )
    draft = Message(
        Header(DataType.REQUEST_INIT_PSK, csb, EmptyMap(0), True, PRF),
        (
            _stamp(now),
            RandWithRole(RandRole.RANDRI, randri),
            IdWithRole.uri(IdRole.IDRI, identity),
            IdWithRole.uri(IdRole.IDRKMS, kms),
            policy,
            Verification.placeholder(MAC_ALG),
        ),
    )
    keys = request_keys(key, csb, randri, response=False)
    return kemac_crypto.protect(draft, keys, mac_data=kemac_crypto.ticket_mac_input(draft))


def message_request_init(
    identity: str,
    key: bytes,
    responders: Sequence[str],
    now: float,
    *,
    kms: str,
    csb_id: int | None = None,
    randri: bytes | None = None,
    ticket_type: int = TICKET_TYPE,
) -> Message:
    """A ticket request for immediate messaging (TR 33.829 §8.3.1.1): flags
    :data:`mikey.transfer.MESSAGE_FLAGS` (key forking, no TRANSFER_RESP), one GTGK (SPI
    ``gtgk_spi(1)``) and no TGK."""
    return request_init(
        identity,
        key,
        responders,
        now,
        kms=kms,
        sessions=0,
        csb_id=csb_id,
        randri=randri,
        ticket_type=ticket_type,
        flags=MESSAGE_FLAGS,
        gtgks=1,
    )


def resolve_init(
    identity: str,
    key: bytes,
    ticket: Ticket,
    now: float,
    *,
    kms: str,
    csb_id: int,
    randrr: bytes | None = None,
) -> Message:
    """A resolve of ``ticket`` by the Responder ``identity`` (``csb_id``: the session's, as
    the Initiator's TRANSFER_INIT gave it)."""
    randrr = randrr if randrr is not None else os.urandom(RAND_BYTES)
    draft = Message(
        Header(DataType.RESOLVE_INIT_PSK, csb_id, EmptyMap(0), True, PRF),
        (
            _stamp(now),
            RandWithRole(RandRole.RANDRR, randrr),
            IdWithRole.uri(IdRole.IDRR, identity),
            IdWithRole.uri(IdRole.IDRKMS, kms),
            ticket,
            Verification.placeholder(MAC_ALG),
        ),
    )
    keys = resolve_keys(key, csb_id, randrr, response=False)
    return kemac_crypto.protect(draft, keys, mac_data=kemac_crypto.ticket_mac_input(draft))


def rand_of(message: Message, role: RandRole) -> bytes:
    for p in message.payloads:
        if isinstance(p, RandWithRole) and p.role == role:
            return p.rand
    raise MikeyError(ErrorNo.UNSPECIFIED, f"{message.data_type.name} without {role.name}")


def reply_keys(key: bytes, request: Message) -> MessageKeys:
    """The keys that protect the KMS's reply to ``request``."""
    csb = request.header.csb_id
    if request.data_type is DataType.REQUEST_INIT_PSK:
        return request_keys(key, csb, rand_of(request, RandRole.RANDRI), response=True)
    return resolve_keys(key, csb, rand_of(request, RandRole.RANDRR), response=True)


def open_reply(body: bytes, key: bytes, request: Message) -> tuple[Message, tuple[KeyData, ...]]:
    """Check the MAC of a REQUEST_RESP / RESOLVE_RESP to ``request`` and return it with the
    keys of its KEMAC. Raises MikeyError: Auth failure for a MAC that is not the KMS's, the
    KMS's error number for a MIKEY Error reply."""
    message = decode(body)
    if message.data_type is DataType.ERROR:
        errs = [p for p in message.payloads if isinstance(p, Err)]
        code = errs[0].error_no if errs else int(ErrorNo.UNSPECIFIED)
        name = ErrorNo(code).name if code in ErrorNo._value2member_map_ else str(code)
        raise MikeyError(code, f"the KMS refused: {name}")
    expected = (
        DataType.REQUEST_RESP
        if request.data_type is DataType.REQUEST_INIT_PSK
        else DataType.RESOLVE_RESP
    )
    if message.data_type is not expected:
        raise MikeyError(
            ErrorNo.INVALID_DT, f"a {message.data_type.name} to a {request.data_type.name}"
        )
    keys = reply_keys(key, request)
    keydata = kemac_crypto.open_message(
        message, keys, mac_data=kemac_crypto.ticket_mac_input(message, initial=request)
    )
    return message, keydata


def payloads_of(message: Message, kind: type[Payload]) -> list[Payload]:
    return [p for p in message.payloads if isinstance(p, kind)]


def ticket_of(reply: Message) -> Ticket:
    """The TICKET of a REQUEST_RESP."""
    for p in reply.payloads:
        if isinstance(p, Ticket):
            return p
    raise MikeyError(ErrorNo.INVALID_TICKET, f"a {reply.data_type.name} without a TICKET")


def ticket_keys(keys: Sequence[KeyData]) -> tuple[bytes, dict[bytes, bytes]]:
    """The MPK and the TGKs (SPI -> key) of the KEMAC of a REQUEST_RESP or RESOLVE_RESP."""
    mpk = [k.key for k in keys if k.key_type is KeyType.MPK]
    tgks = {
        k.kv.spi: k.key
        for k in keys
        if k.key_type is KeyType.TGK and isinstance(k.kv, KvSpi) and k.kv.spi != MPK_SPI
    }
    if len(mpk) != 1:
        raise MikeyError(ErrorNo.UNSPECIFIED, f"{len(mpk)} MPKs in the KMS's reply, not one")
    return mpk[0], tgks


@attrs.frozen
class ForkedKeys:
    """The keys of a KMS reply for a ticket with key forking: MPKi (it MACs the TRANSFER_INIT),
    MPKr (in the Initiator's REQUEST_RESP; MPKr' in a Responder's RESOLVE_RESP), the GTGKs and
    the TGKs (TGK' for a Responder), each SPI -> key."""

    mpki: bytes
    mpkr: bytes
    gtgks: Mapping[bytes, bytes]
    tgks: Mapping[bytes, bytes]


def forked_keys(keys: Sequence[KeyData]) -> ForkedKeys:
    """MPKi, MPKr (or MPKr'), the GTGKs and the TGKs of the KEMAC of a REQUEST_RESP or
    RESOLVE_RESP for a forking ticket. MikeyError(Unspecified) unless it has exactly one MPK
    with each of MPKI_SPI and MPKR_SPI."""

    def spi(k: KeyData) -> bytes | None:
        return k.kv.spi if isinstance(k.kv, KvSpi) else None

    def one_mpk(wanted: bytes, name: str) -> bytes:
        found = [k.key for k in keys if k.key_type is KeyType.MPK and spi(k) == wanted]
        if len(found) != 1:
            raise MikeyError(
                ErrorNo.UNSPECIFIED, f"{len(found)} {name} in the KMS's reply, not one"
            )
        return found[0]

    def by_spi(kind: KeyType) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for k in keys:
            s = spi(k)
            if k.key_type is kind and s is not None:
                out[s] = k.key
        return out

    return ForkedKeys(
        one_mpk(MPKI_SPI, "MPKi"),
        one_mpk(MPKR_SPI, "MPKr"),
        by_spi(KeyType.GTGK),
        by_spi(KeyType.TGK),
    )


def mikey_warning(exc: MikeyError) -> str:
    """``<MIKEY error name>: <reason>``, the text of a 488's Warning."""
    try:
        name = ErrorNo(exc.code).name
    except ValueError:
        name = str(exc.code)
    return f"{name}: {exc.reason}"


def read_shared_key(path: Path) -> bytes:
    """The key a user shares with the KMS, from a file holding it in hex (kept out of command
    lines). ValueError saying what is wrong: unreadable, not hex, or empty."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError(f"{path}: the shared key must be hex") from None
    if not key:
        raise ValueError(f"{path}: the shared key is empty")
    return key


__all__ = [
    "GTGK_SPI_BIT",
    "MESSAGE_FLAGS",
    "MPKI_SPI",
    "MPKR_SPI",
    "MPK_SPI",
    "RAND_BYTES",
    "SESSION_FLAGS",
    "ForkedKeys",
    "forked_keys",
    "gtgk_spi",
    "message_request_init",
    "mikey_warning",
    "open_reply",
    "rand_of",
    "read_shared_key",
    "reply_keys",
    "request_init",
    "resolve_init",
    "tgk_spi",
    "ticket_keys",
    "ticket_of",
]
