"""One well-formed message of each data type the codec models, for tests and dissector checks.

The values are fixed (no randomness) so that encodings are stable. The ticket messages follow
the compositions of RFC 6043 §4.2 (PSK variants, key forking in the Ticket Policy). The Ticket
Request and Resolve exchanges carry no crypto sessions (#CS 0, Empty map, RFC 6043 §4.2.1.1);
the Ticket Transfer messages use a GENERIC-ID map with one TLS crypto session as TS 33.328
Annex H.1 describes it (S = 0, no policies, no session data, the SPI naming the TGK);
:data:`TLS_PROT_TYPE` stands for the Prot Type number IANA assigns for TLS, which the
project's spec text leaves as TBD1.
"""

from __future__ import annotations

from mikey.constants import (
    DataType,
    ErrorNo,
    IdRole,
    IdType,
    KeyType,
    MacAlg,
    PrfFunc,
    ProtType,
    RandRole,
    SrtpParam,
    TicketType,
    TsRole,
    TsType,
)
from mikey.message import (
    EmptyMap,
    GenericIdEntry,
    GenericIdMap,
    Message,
    SrtpIdEntry,
    SrtpIdMap,
    message,
)
from mikey.payloads import (
    Err,
    Id,
    IdWithRole,
    Kemac,
    KeyData,
    KvInterval,
    KvSpi,
    Rand,
    RandWithRole,
    SecurityPolicy,
    SpParam,
    Ticket,
    TicketFlag,
    TicketPolicy,
    Timestamp,
    TimestampWithRole,
    Verification,
    encode_payload_chain,
)

#: Placeholder for the IANA number of Prot Type TLS (TS 33.328 Annex J, TBD1).
TLS_PROT_TYPE = 0xF0

CSB_ID = 0x1A2B3C4D
T = Timestamp(TsType.NTP_UTC, 0xE9A1B2C300000000)
RAND = Rand(bytes(range(16)))
SPI = b"\x00\x00\x00\x01"
TGK = bytes(range(0x40, 0x50))

SRTP_MAP = SrtpIdMap((SrtpIdEntry(0, 0x11223344, 0), SrtpIdEntry(0, 0x55667788, 0)))
TLS_MAP = GenericIdMap((GenericIdEntry(1, TLS_PROT_TYPE, spi=SPI),))

SRTP_POLICY = SecurityPolicy(
    0,
    ProtType.SRTP,
    (
        SpParam(SrtpParam.ENCR_ALG, b"\x01"),
        SpParam(SrtpParam.SESSION_ENCR_KEY_LEN, b"\x10"),
        SpParam(SrtpParam.AUTH_ALG, b"\x01"),
        SpParam(SrtpParam.SESSION_AUTH_KEY_LEN, b"\x14"),
        SpParam(SrtpParam.SESSION_SALT_KEY_LEN, b"\x0e"),
        SpParam(SrtpParam.SRTP_ENCRYPTION, b"\x01"),
        SpParam(SrtpParam.SRTCP_ENCRYPTION, b"\x01"),
        SpParam(SrtpParam.SRTP_AUTHENTICATION, b"\x01"),
        SpParam(SrtpParam.AUTH_TAG_LEN, b"\x0a"),
    ),
)

IDRI = IdWithRole(IdRole.IDRI, IdType.URI, b"sip:alice@ims.example.net")
IDRR = IdWithRole(IdRole.IDRR, IdType.URI, b"sip:bob@ims.example.net")
IDRKMS = IdWithRole(IdRole.IDRKMS, IdType.URI, b"https://kms.ims.example.net")
IDRPSK = IdWithRole(IdRole.IDRPSK, IdType.BYTE_STRING, b"\x00\x01psk-1")

RANDRI = RandWithRole(RandRole.RANDRI, bytes(range(16)))
RANDRR = RandWithRole(RandRole.RANDRR, bytes(range(100, 116)))
RANDRKMS = RandWithRole(RandRole.RANDRKMS, bytes(range(200, 216)))

V_SHA256 = Verification.placeholder(MacAlg.HMAC_SHA_256_256)

#: A Ticket Policy with key forking (I, which implies E; F as a TGK is in the ticket), RANDRi
#: in the TEK derivation (H), made by the KMS (D), usable by RFC 6043 peers (N, O); TP Data:
#: the KMS, the Initiator, the end of validity and the authorized Responder (RFC 6043 §6.10).
POLICY = TicketPolicy.with_payloads(
    TicketType.TGPP_2,
    (
        IDRKMS,
        IDRI,
        TimestampWithRole(TsRole.TRE, TsType.NTP_UTC_32, 0xE9A1B2C3 + 3600),
        IDRR,
    ),
    prf_func=PrfFunc.PRF_HMAC_SHA_256,
    flags=TicketFlag.D
    | TicketFlag.E
    | TicketFlag.F
    | TicketFlag.H
    | TicketFlag.I
    | TicketFlag.N
    | TicketFlag.O,
)
TICKET = Ticket(POLICY, b"opaque ticket data for the KMS")
#: The ticket as the Initiator sends it with key forking: Initiator Data = Vi, Vr.
TICKET_FORKED = Ticket(
    POLICY, b"opaque ticket data for the KMS", encode_payload_chain((V_SHA256, V_SHA256))
)


def psk_init() -> Message:
    """RFC 3830 §3.1: HDR, T, RAND, [IDi], [IDr], {SP}, KEMAC (TGK, NULL-encrypted, MAC)."""
    kemac = Kemac.plain(
        (KeyData(KeyType.TGK, TGK, kv=KvSpi(SPI)),),
        MacAlg.HMAC_SHA_1_160,
    )
    return message(
        DataType.PSK_INIT,
        CSB_ID,
        (
            T,
            RAND,
            Id(IdType.URI, b"sip:alice@example.net"),
            Id(IdType.URI, b"sip:bob@example.net"),
            SRTP_POLICY,
            kemac,
        ),
        cs_map=SRTP_MAP,
        v=True,
    )


def psk_verify() -> Message:
    """RFC 3830 §3.1: HDR, T, [IDi], [IDr], V."""
    return message(
        DataType.PSK_VERIFY,
        CSB_ID,
        (T, Verification.placeholder(MacAlg.HMAC_SHA_1_160)),
        cs_map=SRTP_MAP,
    )


def error() -> Message:
    """RFC 3830 §5.1.2: HDR, T, {ERR}, [V]."""
    return message(
        DataType.ERROR,
        CSB_ID,
        (T, Err(ErrorNo.AUTH_FAILURE), Err(ErrorNo.INVALID_TICKET)),
    )


def request_init() -> Message:
    """RFC 6043 §4.2.1: REQUEST_INIT_PSK = HDR, T, RANDRi, [IDRi], [IDRkms], TP, [IDRpsk], V."""
    return message(
        DataType.REQUEST_INIT_PSK,
        CSB_ID,
        (T, RANDRI, IDRI, IDRKMS, POLICY, IDRPSK, V_SHA256),
        cs_map=EmptyMap(),
        v=True,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def request_resp() -> Message:
    """RFC 6043 §4.2.1: REQUEST_RESP = HDR, T, [IDRkms], TICKET, KEMAC, V; the KEMAC carries
    MPKi, MPKr (key forking) and the TGK, each with an SPI (§4.2.1.5, §6.2.1)."""
    kemac = Kemac.plain(
        (
            KeyData(KeyType.MPK, bytes(range(0x60, 0x70)), kv=KvSpi(b"\x00\x00\x00\x02")),
            KeyData(KeyType.MPK, bytes(range(0x70, 0x80)), kv=KvSpi(b"\x00\x00\x00\x03")),
            KeyData(KeyType.TGK, TGK, kv=KvSpi(SPI)),
            KeyData(KeyType.TEK_SALT, bytes(16), salt=bytes(14), kv=KvInterval(b"\0", b"\xff")),
        )
    )
    return message(
        DataType.REQUEST_RESP,
        CSB_ID,
        (T, IDRKMS, TICKET, kemac, V_SHA256),
        cs_map=EmptyMap(),
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def transfer_init() -> Message:
    """RFC 6043 §4.2.2: TRANSFER_INIT = HDR, T, RANDRi, [IDRi], [IDRr], {SP}, TICKET, [KEMAC], V
    (TS 33.328: no SP for the TLS Prot Type)."""
    return message(
        DataType.TRANSFER_INIT,
        CSB_ID,
        (T, RANDRI, IDRI, IDRR, TICKET_FORKED, V_SHA256),
        cs_map=TLS_MAP,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def transfer_resp() -> Message:
    """RFC 6043 §4.2.2: TRANSFER_RESP = HDR, T, [RANDRr], [IDRr], [RANDRkms], {SP}, [KEMAC], V."""
    return message(
        DataType.TRANSFER_RESP,
        CSB_ID,
        (T, RANDRR, IDRR, RANDRKMS, V_SHA256),
        cs_map=TLS_MAP,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def resolve_init() -> Message:
    """RFC 6043 §4.2.3: RESOLVE_INIT_PSK = HDR, T, RANDRr, [IDRr], [IDRkms], TICKET, [IDRpsk],
    V."""
    return message(
        DataType.RESOLVE_INIT_PSK,
        CSB_ID,
        (T, RANDRR, IDRR, IDRKMS, TICKET_FORKED, IDRPSK, V_SHA256),
        cs_map=EmptyMap(),
        v=True,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def resolve_resp() -> Message:
    """RFC 6043 §4.2.3: RESOLVE_RESP = HDR, T, [IDRkms], KEMAC, [IDRr], [RANDRkms], V; the
    KEMAC carries the resolved MPKi and TGK."""
    kemac = Kemac.plain(
        (
            KeyData(KeyType.MPK, bytes(range(0x60, 0x70)), kv=KvSpi(b"\x00\x00\x00\x02")),
            KeyData(KeyType.TGK, TGK, kv=KvSpi(SPI)),
        )
    )
    return message(
        DataType.RESOLVE_RESP,
        CSB_ID,
        (T, IDRKMS, kemac, IDRR, RANDRKMS, V_SHA256),
        cs_map=EmptyMap(),
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


#: name -> builder, one per message type.
ALL = {
    "psk_init": psk_init,
    "psk_verify": psk_verify,
    "error": error,
    "request_init": request_init,
    "request_resp": request_resp,
    "transfer_init": transfer_init,
    "transfer_resp": transfer_resp,
    "resolve_init": resolve_init,
    "resolve_resp": resolve_resp,
}
