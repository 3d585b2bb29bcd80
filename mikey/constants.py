"""MIKEY type numbers: RFC 3830 §6 and the RFC 6043 (MIKEY-TICKET) registrations.

Where a field's value decides the layout of what follows (a timestamp's length, whether a key
has a salt, a MAC's length, the CS ID map), the codec accepts only the numbers named here and
anything else is a :class:`mikey.errors.MikeyError`. Fields that do not change the layout (an
ID role, a Prot type, a general-extension type, a ticket type, an error number) are kept as
plain integers so that unregistered values survive a decode/encode round trip; the enums below
give the registered names.

Provenance of each group is in its docstring; the RFC 6043 numbers are those of its §6 tables
and §14 (IANA Considerations).
"""

from __future__ import annotations

from enum import IntEnum

#: HDR version (RFC 3830 §6.1).
MIKEY_VERSION = 1


class DataType(IntEnum):
    """HDR ``data type``: the message type. RFC 3830 Table 6.1.a, RFC 4650 (DHHMAC), RFC 4738
    (RSA-R), RFC 6043 §6.1 Table 6.1 (the ticket exchanges, 11..18).

    ``REQUEST_INIT`` and ``RESOLVE_INIT`` are kept as aliases of the PSK variants."""

    PSK_INIT = 0
    PSK_VERIFY = 1
    PK_INIT = 2
    PK_VERIFY = 3
    DH_INIT = 4
    DH_RESP = 5
    ERROR = 6
    DHHMAC_INIT = 7
    DHHMAC_RESP = 8
    RSA_R_INIT = 9
    RSA_R_RESP = 10
    REQUEST_INIT_PSK = 11
    REQUEST_INIT_PK = 12
    REQUEST_RESP = 13
    TRANSFER_INIT = 14
    TRANSFER_RESP = 15
    RESOLVE_INIT_PSK = 16
    RESOLVE_INIT_PK = 17
    RESOLVE_RESP = 18
    REQUEST_INIT = 11  # alias of REQUEST_INIT_PSK
    RESOLVE_INIT = 16  # alias of RESOLVE_INIT_PSK


class PayloadType(IntEnum):
    """``Next payload`` values. RFC 3830 Table 6.1.b; RFC 6043 §6.1 Table 6.2 adds TR (13),
    IDR (14), RANDR (15), TP (16) and TICKET (17)."""

    LAST = 0
    KEMAC = 1
    PKE = 2
    DH = 3
    SIGN = 4
    T = 5
    ID = 6
    CERT = 7
    CHASH = 8
    V = 9
    SP = 10
    RAND = 11
    ERR = 12
    TR = 13
    IDR = 14
    RANDR = 15
    TP = 16
    TICKET = 17
    KEY_DATA = 20
    GEN_EXT = 21


class PrfFunc(IntEnum):
    """HDR ``PRF func``: RFC 3830 Table 6.1.c (MIKEY-1), RFC 6043 §6.1 Table 6.3
    (PRF-HMAC-SHA-256)."""

    MIKEY_1 = 0
    PRF_HMAC_SHA_256 = 1


class CsIdMapType(IntEnum):
    """HDR ``CS ID map type``: RFC 3830 Table 6.1.d (SRTP-ID), RFC 4563 §4 (Empty map),
    RFC 6043 §6.1.1 (GENERIC-ID, the map TS 33.328 Annex H.1 uses for the TLS Prot Type)."""

    SRTP_ID = 0
    EMPTY = 1
    GENERIC_ID = 2


class ProtType(IntEnum):
    """Security protocol of a crypto session / SP payload: RFC 3830 Table 6.10.a.

    TS 33.328 Annex J asks IANA for ``TLS``, ``PSK S/MIME`` and ``Application Specific``; the
    project's spec text still has TBD1..TBD3, so none of them is named here. Prot types are
    plain ints in every payload; the caller picks the number it has been assigned."""

    SRTP = 0


class TsType(IntEnum):
    """T / TR payload ``TS type``: RFC 3830 Table 6.6, RFC 6043 §6.3 Table 6.8. NTP-UTC and
    NTP are 64 bits, COUNTER and NTP-UTC-32 (the seconds of an NTP-UTC timestamp) 32 bits."""

    NTP_UTC = 0
    NTP = 1
    COUNTER = 2
    NTP_UTC_32 = 3


class TsRole(IntEnum):
    """TR payload ``TS role``: RFC 6043 §6.4 Table 6.9."""

    TRI = 1  # when the ticket was created
    TRS = 2  # start of validity
    TRE = 3  # end of validity
    TRR = 4  # rekeying interval


class IdType(IntEnum):
    """ID / IDR ``ID type``: RFC 3830 Table 6.7.a (NAI, URI), RFC 6043 §6.6 (byte string)."""

    NAI = 0
    URI = 1
    BYTE_STRING = 2


class IdRole(IntEnum):
    """IDR ``ID role``: RFC 6043 §6.6 Table 6.11 (1..5), RFC 6509 §4.4 (6, 7)."""

    IDRI = 1  # Initiator
    IDRR = 2  # Responder
    IDRKMS = 3  # KMS
    IDRPSK = 4  # pre-shared key
    IDRAPP = 5  # application
    IDRKMSI = 6  # Initiator's KMS
    IDRKMSR = 7  # Responder's KMS


class RandRole(IntEnum):
    """RANDR ``RAND role``: RFC 6043 §6.8 Table 6.13."""

    RANDRI = 1  # Initiator
    RANDRR = 2  # Responder
    RANDRKMS = 3  # KMS


class EncrAlg(IntEnum):
    """KEMAC ``Encr alg``: RFC 3830 Table 6.2.a, RFC 6043 §6.2 Table 6.5 (AES-CM-256)."""

    NULL = 0
    AES_CM_128 = 1
    AES_KW_128 = 2
    AES_CM_256 = 3


class MacAlg(IntEnum):
    """KEMAC ``Mac alg`` and V ``Auth alg``: RFC 3830 Table 6.2.b, RFC 6043 §6.2
    (HMAC-SHA-256-256)."""

    NULL = 0
    HMAC_SHA_1_160 = 1
    HMAC_SHA_256_256 = 2


#: MAC length in bytes for each MAC algorithm.
MAC_LENGTH: dict[MacAlg, int] = {
    MacAlg.NULL: 0,
    MacAlg.HMAC_SHA_1_160: 20,
    MacAlg.HMAC_SHA_256_256: 32,
}


class KeyType(IntEnum):
    """Key data sub-payload ``Type``: RFC 3830 Table 6.13.a, RFC 6043 §6.2.1 Table 6.7 (the
    group TGK and the MIKEY protection key)."""

    TGK = 0
    TGK_SALT = 1
    TEK = 2
    TEK_SALT = 3
    GTGK = 4
    GTGK_SALT = 5
    MPK = 6


class KvType(IntEnum):
    """Key data sub-payload ``KV`` (key validity): RFC 3830 Table 6.13.b."""

    NULL = 0
    SPI = 1
    INTERVAL = 2


class SrtpParam(IntEnum):
    """SP payload parameter types for Prot type SRTP: RFC 3830 Table 6.10.1.a."""

    ENCR_ALG = 0
    SESSION_ENCR_KEY_LEN = 1
    AUTH_ALG = 2
    SESSION_AUTH_KEY_LEN = 3
    SESSION_SALT_KEY_LEN = 4
    SRTP_PRF = 5
    KEY_DERIVATION_RATE = 6
    SRTP_ENCRYPTION = 7
    SRTCP_ENCRYPTION = 8
    FEC_ORDER = 9
    SRTP_AUTHENTICATION = 10
    AUTH_TAG_LEN = 11
    SRTP_PREFIX_LEN = 12


class ErrorNo(IntEnum):
    """ERR payload ``Error no``: RFC 3830 Table 6.12 (0..12), RFC 6043 §6.9 Table 6.14
    (Invalid TICKET 14, Invalid TPpar 15)."""

    AUTH_FAILURE = 0
    INVALID_TS = 1
    INVALID_PRF = 2
    INVALID_MAC = 3
    INVALID_EA = 4
    INVALID_HA = 5
    INVALID_DH = 6
    INVALID_ID = 7
    INVALID_CERT = 8
    INVALID_SP = 9
    INVALID_SPPAR = 10
    INVALID_DT = 11
    UNSPECIFIED = 12
    INVALID_TICKET = 14
    INVALID_TPPAR = 15


class GenExtType(IntEnum):
    """General extension ``Type``: RFC 3830 Table 6.15 (0, 1), RFC 4563 (Key ID)."""

    VENDOR_ID = 0
    SDP_IDS = 1
    KEY_ID = 2


class TicketType(IntEnum):
    """TP / TICKET ``Ticket type`` (16 bits): RFC 6043 §6.10 Table 6.15 and §14: 1 MIKEY base
    ticket (RFC 6043 Appendix A), 2 3GPP base ticket. 3 is not registered by RFC 6043 (the
    project's spec texts do not contain TS 33.328 Annex D); Ticket Data of every type is
    carried as opaque bytes."""

    MIKEY_BASE = 1
    TGPP_2 = 2
    TGPP_3 = 3
    TGPP_BASE = 2  # alias: RFC 6043's name for type 2
