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

From an envelope key or pre-shared key, RFC 3830 §4.1.4 — the keys that
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

MIKEY-TICKET (RFC 6043 §5.1) changes the labels; the RFC 3830 constants stay
(``||`` concatenation, lengths as unsigned big-endian integers of the size given):

- §5.1.2, keys protecting a ticket message, from the pre-shared/envelope key (Ticket Request,
  Ticket Resolve) or the MPK (Ticket Transfer: MPKi, or MPKr' with key forking) —
  label = constant || 0xFF || CSB ID || 0x01 (initial message) / 0x02 (response)
  || len8 RANDRi || RANDRi || len8 RANDRr || RANDRr (:func:`ticket_message_keys`);
- §5.1.3, keys from a TGK/TGK'/GTGK in the Ticket Transfer exchange —
  label = constant || CS ID || 0xFFFFFFFF || 0x03 || len8 RANDRi || RANDRi || len8 RANDRr
  || RANDRr (:func:`ticket_tek`, :func:`ticket_from_tgk`);
- §5.1.1, key forking (flag I) of MPKr and the TGKs, with the PRF of the Ticket Policy —
  label = constant || 0xFF || 0xFFFFFFFF || 0x00 || len16 ID Data || ID Data (of IDRr)
  || len8 RANDRkms || RANDRkms, outkey as long as the inkey; constants MPKr' 0x2B288856,
  TGK' 0x1512B54A (:func:`fork`, :func:`fork_mpkr`, :func:`fork_tgk`);
- §6.10, the auth_key of the Vr payload in the Initiator Data, from MPKr (not forked) —
  label = constant || 0xFF || 0xFFFFFFFF || 0x04 (:func:`initiator_data_keys`);
- Appendix A.2.1 (MIKEY base ticket), keys from the TPK — label = constant || 0xFF
  || 0xFFFFFFFF || 0x05 || len8 RAND || RAND (:func:`tpk_keys`);
- Appendix A.2.2, MPKi and MPKr from the MPK — label = constant || 0xFF || 0xFFFFFFFF
  || 0x06 || len8 RAND || RAND, outkey as long as the MPK; constants MPKi 0x220E99A2, MPKr
  0x1F4D675B (:func:`mpk_split`).

Only RAND length and RAND of a RANDR/RAND payload enter a label, never the whole payload.

TS 33.328 Annex H.2: the TLS-PSK pre-shared key is the TEK of the TLS crypto session,
derived from the TGK its SPI names "using the CS ID (and some other parameters)". In the
Ticket Transfer exchange that is the RFC 6043 §5.1.3 TEK (:func:`ticket_tls_psk`);
:func:`tls_psk` is the RFC 3830 §4.1.3 TEK and stays for the plain PSK mode.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

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

# RFC 6043 §5.1.1 Table 5.1: forked keys.
MPKR_FORK = 0x2B288856
TGK_FORK = 0x1512B54A
# RFC 6043 Appendix A.2.2 Table A.1: MPKi and MPKr from the MPK of a MIKEY base ticket.
MPKI = 0x220E99A2
MPKR = 0x1F4D675B

#: Key lengths (bytes) for the KEMAC encryption algorithms: RFC 3830 §4.2.3 (AES-CM-128: 128-bit
#: key and 112-bit salt; AES-KW-128: 128-bit key and a 64-bit salt used as the key wrap IV),
#: RFC 6043 §6.2 (AES-CM-256: the same with a 256-bit key).
ENCR_KEY_LENGTH: dict[EncrAlg, int] = {
    EncrAlg.NULL: 0,
    EncrAlg.AES_CM_128: 16,
    EncrAlg.AES_KW_128: 16,
    EncrAlg.AES_CM_256: 32,
}
SALT_KEY_LENGTH: dict[EncrAlg, int] = {
    EncrAlg.NULL: 0,
    EncrAlg.AES_CM_128: 14,
    EncrAlg.AES_KW_128: 8,
    EncrAlg.AES_CM_256: 14,
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
    """The RFC 3830 §4.1.3 TEK of a TLS crypto session (label constant || CS ID || CSB ID ||
    RAND). A crypto session set up by a MIKEY-TICKET Ticket Transfer exchange derives its TEK
    with the RFC 6043 §5.1.3 label instead: use :func:`ticket_tls_psk` there.

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
    """encr_key, auth_key and salt_key from an envelope key or PSK with the RFC 3830 §4.1.4
    label, each as long as ``encr_alg`` and ``mac_alg`` need (empty when the algorithm is
    NULL). MIKEY-TICKET messages use the RFC 6043 §5.1.2 label: :func:`ticket_message_keys`."""
    return _message_keys(
        inkey, lambda c: message_label(c, csb_id, rand), encr_alg, mac_alg, prf_func
    )


def _message_keys(
    inkey: bytes,
    label: Callable[[int], bytes],
    encr_alg: EncrAlg,
    mac_alg: MacAlg,
    prf_func: PrfFunc,
) -> MessageKeys:
    """encr_key, auth_key and salt_key: the PRF of ``inkey`` with ``label(constant)`` for
    each of the three constants, as long as the algorithms need."""
    encr_alg, mac_alg = EncrAlg(encr_alg), MacAlg(mac_alg)
    return MessageKeys(
        prf(inkey, label(MSG_ENCR), ENCR_KEY_LENGTH[encr_alg], prf_func),
        prf(inkey, label(MSG_AUTH), AUTH_KEY_LENGTH[mac_alg], prf_func),
        prf(inkey, label(MSG_SALT), SALT_KEY_LENGTH[encr_alg], prf_func),
    )


# --- RFC 6043 §5.1 and Appendix A.2 ---------------------------------------------------------

#: Direction byte of the §5.1.2 label.
INITIAL = 0x01
RESPONSE = 0x02
_ALL_ONES = b"\xff\xff\xff\xff"


def _len8(name: str, value: bytes) -> bytes:
    if len(value) > 0xFF:
        raise ValueError(f"{name} must be at most 255 bytes")
    return bytes([len(value)]) + value


def ticket_message_label(
    constant: int, csb_id: int, direction: int, randri: bytes = b"", randrr: bytes = b""
) -> bytes:
    """constant || 0xFF || CSB ID || direction || len RANDRi || RANDRi || len RANDRr || RANDRr
    (RFC 6043 §5.1.2; direction 0x01 for initial messages, 0x02 for responses)."""
    if direction not in (INITIAL, RESPONSE):
        raise ValueError("direction is 0x01 (initial message) or 0x02 (response)")
    return (
        _u32("constant", constant)
        + b"\xff"
        + _u32("CSB ID", csb_id)
        + bytes([direction])
        + _len8("RANDRi", randri)
        + _len8("RANDRr", randrr)
    )


def ticket_message_keys(
    inkey: bytes,
    csb_id: int,
    *,
    response: bool,
    randri: bytes = b"",
    randrr: bytes = b"",
    encr_alg: EncrAlg = EncrAlg.NULL,
    mac_alg: MacAlg = MacAlg.HMAC_SHA_256_256,
    prf_func: PrfFunc = PrfFunc.PRF_HMAC_SHA_256,
) -> MessageKeys:
    """encr_key, auth_key, salt_key of a MIKEY-TICKET message (RFC 6043 §5.1.2). ``inkey`` is
    the pre-shared or envelope key (Ticket Request, Ticket Resolve) or MPKi / MPKr' (Ticket
    Transfer). RANDRi goes in for the Request and Transfer exchanges, RANDRr for Resolve and,
    when the Ticket Policy has G, for TRANSFER_RESP; an omitted one is given as ``b""``."""
    if not randri and not randrr:
        raise ValueError("RFC 6043 §5.1.2: at least one of RANDRi and RANDRr is used")
    direction = RESPONSE if response else INITIAL
    return _message_keys(
        inkey,
        lambda c: ticket_message_label(c, csb_id, direction, randri, randrr),
        encr_alg,
        mac_alg,
        prf_func,
    )


def ticket_tgk_label(constant: int, cs_id: int, randri: bytes = b"", randrr: bytes = b"") -> bytes:
    """constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || RANDRi || len RANDRr || RANDRr
    (RFC 6043 §5.1.3)."""
    if not 0 <= cs_id <= 0xFF:
        raise ValueError("CS ID must be 8 bits")
    return (
        _u32("constant", constant)
        + bytes([cs_id])
        + _ALL_ONES
        + b"\x03"
        + _len8("RANDRi", randri)
        + _len8("RANDRr", randrr)
    )


def ticket_from_tgk(
    tgk: bytes,
    constant: int,
    cs_id: int,
    out_len: int,
    *,
    randri: bytes = b"",
    randrr: bytes = b"",
    prf_func: PrfFunc = PrfFunc.PRF_HMAC_SHA_256,
) -> bytes:
    """A key from a TGK, TGK' or GTGK in the Ticket Transfer exchange (RFC 6043 §5.1.3), with
    the PRF of the HDR. RANDRi goes in when the Ticket Policy has H, RANDRr when it has G."""
    if not randri and not randrr:
        raise ValueError("RFC 6043 §5.1.3: at least one of RANDRi and RANDRr is used")
    return prf(tgk, ticket_tgk_label(constant, cs_id, randri, randrr), out_len, prf_func)


def ticket_tek(
    tgk: bytes,
    cs_id: int,
    out_len: int,
    *,
    randri: bytes = b"",
    randrr: bytes = b"",
    prf_func: PrfFunc = PrfFunc.PRF_HMAC_SHA_256,
) -> bytes:
    """The TEK of crypto session ``cs_id`` in the Ticket Transfer exchange (constant
    0x2AD01C64, RFC 6043 §5.1.3)."""
    return ticket_from_tgk(
        tgk, TEK, cs_id, out_len, randri=randri, randrr=randrr, prf_func=prf_func
    )


def ticket_tls_psk(
    tgk: bytes,
    cs_id: int,
    length: int,
    *,
    randri: bytes = b"",
    randrr: bytes = b"",
    prf_func: PrfFunc = PrfFunc.PRF_HMAC_SHA_256,
) -> bytes:
    """The TLS-PSK of a TLS crypto session set up by a Ticket Transfer exchange: its RFC 6043
    §5.1.3 TEK (TS 33.328 Annex H.2). ``tgk`` is TGK' when the ticket uses key forking."""
    if length <= 0:
        raise ValueError("a PSK needs a positive length")
    return ticket_tek(tgk, cs_id, length, randri=randri, randrr=randrr, prf_func=prf_func)


def fork_label(constant: int, id_data: bytes, randrkms: bytes = b"") -> bytes:
    """constant || 0xFF || 0xFFFFFFFF || 0x00 || len16 ID Data || ID Data || len8 RANDRkms
    || RANDRkms (RFC 6043 §5.1.1)."""
    if len(id_data) > 0xFFFF:
        raise ValueError("ID Data must be at most 65535 bytes")
    return (
        _u32("constant", constant)
        + b"\xff"
        + _ALL_ONES
        + b"\x00"
        + len(id_data).to_bytes(2, "big")
        + id_data
        + _len8("RANDRkms", randrkms)
    )


def fork(
    inkey: bytes,
    constant: int,
    id_data: bytes,
    randrkms: bytes = b"",
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> bytes:
    """A forked key (RFC 6043 §5.1.1): as long as ``inkey``, with the PRF of the Ticket
    Policy; ``id_data`` is the ID Data of the IDRr sent in RESOLVE_RESP and TRANSFER_RESP."""
    return prf(inkey, fork_label(constant, id_data, randrkms), len(inkey), prf_func)


def fork_mpkr(
    mpkr: bytes, id_data: bytes, randrkms: bytes = b"", prf_func: PrfFunc = PrfFunc.MIKEY_1
) -> bytes:
    """MPKr' = PRF(MPKr, fork label with constant 0x2B288856)."""
    return fork(mpkr, MPKR_FORK, id_data, randrkms, prf_func)


def fork_tgk(
    tgk: bytes, id_data: bytes, randrkms: bytes = b"", prf_func: PrfFunc = PrfFunc.MIKEY_1
) -> bytes:
    """TGK' = PRF(TGK, fork label with constant 0x1512B54A). GTGKs and TEKs are not forked."""
    return fork(tgk, TGK_FORK, id_data, randrkms, prf_func)


def _fixed_label(constant: int, code: int, rand: bytes | None) -> bytes:
    tail = b"" if rand is None else _len8("RAND", rand)
    return _u32("constant", constant) + b"\xff" + _ALL_ONES + bytes([code]) + tail


def _three_keys(
    inkey: bytes,
    code: int,
    rand: bytes | None,
    encr_alg: EncrAlg,
    mac_alg: MacAlg,
    prf_func: PrfFunc,
) -> MessageKeys:
    return _message_keys(inkey, lambda c: _fixed_label(c, code, rand), encr_alg, mac_alg, prf_func)


def initiator_data_keys(
    mpkr: bytes,
    *,
    mac_alg: MacAlg = MacAlg.HMAC_SHA_256_256,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> MessageKeys:
    """The keys of the Vr payload in the Initiator Data (RFC 6043 §6.10), from MPKr (not
    forked): label constant || 0xFF || 0xFFFFFFFF || 0x04."""
    return _three_keys(mpkr, 0x04, None, EncrAlg.NULL, mac_alg, prf_func)


def tpk_keys(
    tpk: bytes,
    rand: bytes,
    *,
    encr_alg: EncrAlg = EncrAlg.AES_CM_128,
    mac_alg: MacAlg = MacAlg.HMAC_SHA_256_256,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> MessageKeys:
    """The keys protecting MIKEY base ticket data, from the TPK (RFC 6043 Appendix A.2.1):
    label constant || 0xFF || 0xFFFFFFFF || 0x05 || len8 RAND || RAND, with the PRF of the
    Ticket Policy."""
    return _three_keys(tpk, 0x05, rand, encr_alg, mac_alg, prf_func)


@attrs.frozen
class MpkPair:
    """MPKi (protects TRANSFER_INIT) and MPKr (verifies TRANSFER_RESP)."""

    mpki: bytes
    mpkr: bytes


def mpk_split(mpk: bytes, rand: bytes, prf_func: PrfFunc = PrfFunc.MIKEY_1) -> MpkPair:
    """MPKi and MPKr from the MPK of a MIKEY base ticket (RFC 6043 Appendix A.2.2), each as
    long as the MPK, with the PRF of the Ticket Policy."""
    return MpkPair(
        prf(mpk, _fixed_label(MPKI, 0x06, rand), len(mpk), prf_func),
        prf(mpk, _fixed_label(MPKR, 0x06, rand), len(mpk), prf_func),
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
