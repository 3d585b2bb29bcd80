"""MIKEY key derivation (RFC 3830 §4.1.3, §4.1.4), as MIKEY-TICKET (RFC 6043) and TS 33.328
Annex H use it.

Constants and labels (each constant is 32 bits, big-endian; ``||`` is concatenation; CS ID is
8 bits, CSB ID 32 bits, RAND as carried in the RAND payload):

From a TGK, RFC 3830 §4.1.3 — label = constant || CS ID || CSB ID || RAND:

============  ===========================  ==========================
constant      derived key                   here
============  ===========================  ==========================
0x2AD01C64    TEK                           :data:`TEK`
0x1B5C7973    authentication key            :data:`TGK_AUTH`
0x15798CEF    encryption key                :data:`TGK_ENCR`
0x39A2C14B    salting key                   :data:`TGK_SALT`
============  ===========================  ==========================

From an envelope key, pre-shared key or (RFC 6043) MPK, RFC 3830 §4.1.4 — the keys that
protect the MIKEY message itself; label = constant || 0xFF || CSB ID || RAND:

============  ===========================  ==========================
0x150533E1    encryption key (encr_key)     :data:`MSG_ENCR`
0x2D22AC75    authentication key (auth_key) :data:`MSG_AUTH`
0x29B88916    salting key (salt_key)        :data:`MSG_SALT`
============  ===========================  ==========================

The seven constants are consecutive nine-digit groups of the decimal expansion of e
(718281828 = 0x2AD01C64, ...), which tests/mikey/test_keys.py recomputes.

The PRF is the one the HDR names (:class:`mikey.constants.PrfFunc`): MIKEY-1 or
PRF-HMAC-SHA-256 (:mod:`mikey.prf`).

MIKEY-TICKET: in the Ticket Request and Ticket Resolve exchanges the inkey of the message keys
is the pre-shared key the user shares with the KMS; in the Ticket Transfer exchange it is the
MPK (MIKEY protection key) that the KMS gave out with the ticket (RFC 6043 §5). Both use the
RFC 3830 §4.1.4 label above. RFC 6043's key forking (deriving per-Responder keys from the
Responder's identity) is not implemented: its constants are not confirmed in the project's
texts.

TS 33.328 Annex H.2: the TLS-PSK pre-shared key is the TEK of the TLS crypto session,
derived from the TGK its SPI names with that crypto session's CS ID (:func:`tls_psk`).
"""

from __future__ import annotations

import hmac

import attrs

from mikey.constants import MAC_LENGTH, EncrAlg, MacAlg, PrfFunc
from mikey.prf import prf

# RFC 3830 §4.1.3: keys from a TGK.
TEK = 0x2AD01C64
TGK_AUTH = 0x1B5C7973
TGK_ENCR = 0x15798CEF
TGK_SALT = 0x39A2C14B

# RFC 3830 §4.1.4: keys protecting a message, from an envelope key / PSK / MPK.
MSG_ENCR = 0x150533E1
MSG_AUTH = 0x2D22AC75
MSG_SALT = 0x29B88916

#: Key lengths (bytes) for the KEMAC encryption algorithms (RFC 3830 §4.2.3: 128-bit AES
#: key, 112-bit salt for AES-CM).
ENCR_KEY_LENGTH: dict[EncrAlg, int] = {
    EncrAlg.NULL: 0,
    EncrAlg.AES_CM_128: 16,
    EncrAlg.AES_KW_128: 16,
}
SALT_KEY_LENGTH: dict[EncrAlg, int] = {
    EncrAlg.NULL: 0,
    EncrAlg.AES_CM_128: 14,
    EncrAlg.AES_KW_128: 0,
}
#: Authentication key lengths (bytes): 160 bits for HMAC-SHA-1, 256 bits for HMAC-SHA-256.
AUTH_KEY_LENGTH: dict[MacAlg, int] = {
    MacAlg.NULL: 0,
    MacAlg.HMAC_SHA_1_160: 20,
    MacAlg.HMAC_SHA_256_256: 32,
}


def _u32(name: str, value: int) -> bytes:
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{name} must be a 32-bit unsigned int")
    return value.to_bytes(4, "big")


def tgk_label(constant: int, cs_id: int, csb_id: int, rand: bytes) -> bytes:
    """constant || CS ID || CSB ID || RAND (RFC 3830 §4.1.3)."""
    if not 0 <= cs_id <= 0xFF:
        raise ValueError("CS ID must be 8 bits")
    return _u32("constant", constant) + bytes([cs_id]) + _u32("CSB ID", csb_id) + rand


def message_label(constant: int, csb_id: int, rand: bytes) -> bytes:
    """constant || 0xFF || CSB ID || RAND (RFC 3830 §4.1.4)."""
    return _u32("constant", constant) + b"\xff" + _u32("CSB ID", csb_id) + rand


def from_tgk(
    tgk: bytes,
    constant: int,
    cs_id: int,
    csb_id: int,
    rand: bytes,
    out_len: int,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> bytes:
    """A key of ``out_len`` bytes derived from a TGK (RFC 3830 §4.1.3)."""
    return prf(tgk, tgk_label(constant, cs_id, csb_id, rand), out_len, prf_func)


def tek(
    tgk: bytes,
    cs_id: int,
    csb_id: int,
    rand: bytes,
    out_len: int,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> bytes:
    """The TEK of crypto session ``cs_id`` (constant 0x2AD01C64)."""
    return from_tgk(tgk, TEK, cs_id, csb_id, rand, out_len, prf_func)


@attrs.frozen
class SrtpMaster:
    """The SRTP master key (the TEK) and master salt of one crypto session."""

    key: bytes
    salt: bytes


def srtp_master(
    tgk: bytes,
    cs_id: int,
    csb_id: int,
    rand: bytes,
    *,
    key_len: int = 16,
    salt_len: int = 14,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> SrtpMaster:
    """TEK (0x2AD01C64) and salting key (0x39A2C14B) of an SRTP crypto session."""
    return SrtpMaster(
        tek(tgk, cs_id, csb_id, rand, key_len, prf_func),
        from_tgk(tgk, TGK_SALT, cs_id, csb_id, rand, salt_len, prf_func),
    )


def tls_psk(
    tgk: bytes,
    cs_id: int,
    csb_id: int,
    rand: bytes,
    length: int,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> bytes:
    """The TLS-PSK pre-shared key of a TLS crypto session: its TEK (TS 33.328 Annex H.2).

    ``length`` is explicit because the spec text gives no TEK length for the TLS Prot Type
    (there is no SP payload to carry one)."""
    if length <= 0:
        raise ValueError("a PSK needs a positive length")
    return tek(tgk, cs_id, csb_id, rand, length, prf_func)


@attrs.frozen
class MessageKeys:
    """The keys that protect one MIKEY message (RFC 3830 §4.1.4)."""

    encr_key: bytes
    auth_key: bytes
    salt_key: bytes


def message_keys(
    inkey: bytes,
    csb_id: int,
    rand: bytes,
    *,
    encr_alg: EncrAlg = EncrAlg.NULL,
    mac_alg: MacAlg = MacAlg.HMAC_SHA_1_160,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> MessageKeys:
    """encr_key, auth_key and salt_key from an envelope key, PSK or MPK, each as long as
    ``encr_alg`` and ``mac_alg`` need (empty when the algorithm is NULL)."""
    encr_alg, mac_alg = EncrAlg(encr_alg), MacAlg(mac_alg)

    def derive(constant: int, length: int) -> bytes:
        return prf(inkey, message_label(constant, csb_id, rand), length, prf_func)

    return MessageKeys(
        derive(MSG_ENCR, ENCR_KEY_LENGTH[encr_alg]),
        derive(MSG_AUTH, AUTH_KEY_LENGTH[mac_alg]),
        derive(MSG_SALT, SALT_KEY_LENGTH[encr_alg]),
    )


def mac(alg: MacAlg, key: bytes, data: bytes) -> bytes:
    """The KEMAC MAC / V ver data of ``data`` (RFC 3830 §4.2.4, RFC 6043 §6.2)."""
    alg = MacAlg(alg)
    if alg is MacAlg.NULL:
        return b""
    digest = hmac.digest(key, data, "sha1" if alg is MacAlg.HMAC_SHA_1_160 else "sha256")
    return digest[: MAC_LENGTH[alg]]


def verify_mac(alg: MacAlg, key: bytes, data: bytes, tag: bytes) -> bool:
    """Whether ``tag`` is the MAC of ``data`` (compared in constant time)."""
    return hmac.compare_digest(mac(alg, key, data), tag)
