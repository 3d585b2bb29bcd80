"""One well-formed message of each data type the codec models, for tests and dissector checks.

The values are fixed (no randomness) so that encodings are stable. The ticket messages use a
GENERIC-ID map with one TLS crypto session as TS 33.328 Annex H.1 describes it (S = 0, no
policies, no session data, the SPI naming the TGK); :data:`TLS_PROT_TYPE` stands for the Prot
Type number IANA assigns for TLS, which the project's spec text leaves as TBD1.
"""

from __future__ import annotations

from mikey.constants import (
    DataType,
    ErrorNo,
    GenExtType,
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
    GenericIdEntry,
    GenericIdMap,
    Message,
    SrtpIdEntry,
    SrtpIdMap,
    message,
)
from mikey.payloads import (
    Err,
    GeneralExtension,
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

POLICY = TicketPolicy(
    TicketType.TGPP_2,
    prf_func=PrfFunc.PRF_HMAC_SHA_256,
    flags=TicketFlag.F | TicketFlag.H | TicketFlag.I,
)
TICKET = Ticket(POLICY, b"opaque ticket data for the KMS")

IDRI = IdWithRole(IdRole.IDRI, IdType.URI, b"sip:alice@ims.example.net")
IDRR = IdWithRole(IdRole.IDRR, IdType.URI, b"sip:bob@ims.example.net")
IDRKMS = IdWithRole(IdRole.IDRKMS, IdType.URI, b"https://kms.ims.example.net")
IDRPSK = IdWithRole(IdRole.IDRPSK, IdType.BYTE_STRING, b"\x00\x01psk-1")

V_SHA256 = Verification.placeholder(MacAlg.HMAC_SHA_256_256)


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
    """RFC 6043 §4.1 (PSK variant): HDR, T, RAND, [IDRi], [IDRkms], [IDRpsk], [TP], V."""
    return message(
        DataType.REQUEST_INIT,
        CSB_ID,
        (T, RAND, IDRI, IDRKMS, IDRPSK, POLICY, V_SHA256),
        cs_map=TLS_MAP,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def request_resp() -> Message:
    """RFC 6043 §4.1: HDR, T, [IDRkms], TICKET, KEMAC (the keys for the Initiator), V."""
    kemac = Kemac.plain(
        (
            KeyData(KeyType.TGK, TGK, kv=KvSpi(SPI)),
            KeyData(KeyType.TEK_SALT, bytes(16), salt=bytes(14), kv=KvInterval(b"\0", b"\xff")),
        )
    )
    return message(
        DataType.REQUEST_RESP,
        CSB_ID,
        (T, IDRKMS, TICKET, kemac, V_SHA256),
        cs_map=TLS_MAP,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def transfer_init() -> Message:
    """RFC 6043 §4.2: HDR, T, RAND, [IDRi], [IDRr], {SP}, TICKET, V (TS 33.328: no SP for
    the TLS Prot Type)."""
    return message(
        DataType.TRANSFER_INIT,
        CSB_ID,
        (
            T,
            RAND,
            TimestampWithRole(TsRole.TRE, TsType.NTP_UTC, 0xE9A1B2C3_00000000 + (3600 << 32)),
            IDRI,
            IDRR,
            TICKET,
            V_SHA256,
        ),
        cs_map=TLS_MAP,
        v=True,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def transfer_resp() -> Message:
    """RFC 6043 §4.2: HDR, T, [IDRr], [RANDRr], V."""
    return message(
        DataType.TRANSFER_RESP,
        CSB_ID,
        (T, IDRR, RandWithRole(RandRole.RANDRR, bytes(range(100, 116))), V_SHA256),
        cs_map=TLS_MAP,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def resolve_init() -> Message:
    """RFC 6043 §4.3: HDR, T, RAND, [IDRr], [IDRkms], TICKET, V."""
    return message(
        DataType.RESOLVE_INIT,
        CSB_ID,
        (T, RAND, IDRR, IDRKMS, TICKET, V_SHA256),
        cs_map=TLS_MAP,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )


def resolve_resp() -> Message:
    """RFC 6043 §4.3: HDR, T, [IDRkms], KEMAC (the resolved keys), [GEN EXT], V."""
    kemac = Kemac.plain((KeyData(KeyType.TGK, TGK, kv=KvSpi(SPI)),))
    return message(
        DataType.RESOLVE_RESP,
        CSB_ID,
        (T, IDRKMS, kemac, GeneralExtension(GenExtType.VENDOR_ID, b"e2ae-lab"), V_SHA256),
        cs_map=TLS_MAP,
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
