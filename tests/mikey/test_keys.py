"""The MIKEY PRFs and key derivations, each checked against a second, independent computation:
the RFC 3830 §4.1.2 formula written out step by step with ``cryptography``'s HMAC (the code
under test uses the standard library's), the labels assembled by hand, the constants
recomputed from the digits of e, and the HMAC test vectors of RFC 2202 and RFC 4231."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from hypothesis import given
from hypothesis import strategies as st

from mikey import decode, keys, samples
from mikey.constants import EncrAlg, MacAlg, PrfFunc
from mikey.payloads import Kemac
from mikey.prf import p_function, prf


def _hmac(func: PrfFunc, key: bytes, data: bytes) -> bytes:
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if func is PrfFunc.MIKEY_1 else hashes.SHA256()
    h = HMAC(key, algorithm)
    h.update(data)
    return h.finalize()


def _reference_prf(inkey: bytes, label: bytes, outkey_len_bits: int, func: PrfFunc) -> bytes:
    """RFC 3830 §4.1.2 as written: bits, ceilings, the pieces s_1..s_n, P, XOR, truncation."""
    hash_bits = 160 if func is PrfFunc.MIKEY_1 else 256
    inkey_len_bits = len(inkey) * 8
    n = math.ceil(inkey_len_bits / 256)
    m = math.ceil(outkey_len_bits / hash_bits)
    pieces = [inkey[32 * i : 32 * (i + 1)] for i in range(n)]
    outputs = []
    for s in pieces:
        a = [label]  # A_0
        for i in range(1, m + 1):
            a.append(_hmac(func, s, a[i - 1]))  # A_i = HMAC(s, A_(i-1))
        outputs.append(b"".join(_hmac(func, s, a[i] + label) for i in range(1, m + 1)))
    result = outputs[0]
    for other in outputs[1:]:
        result = bytes(x ^ y for x, y in zip(result, other, strict=True))
    return result[: outkey_len_bits // 8]


# --- the PRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("func", list(PrfFunc))
@pytest.mark.parametrize("inkey_len", [1, 16, 31, 32, 33, 64, 65, 100])
@pytest.mark.parametrize("out_len", [0, 1, 16, 20, 21, 32, 33, 64, 100])
def test_prf_matches_the_formula(func: PrfFunc, inkey_len: int, out_len: int) -> None:
    inkey = bytes((7 * i + 3) & 0xFF for i in range(inkey_len))
    label = b"\x2a\xd0\x1c\x64\x01\x00\x00\x00\x01" + bytes(range(16))
    assert prf(inkey, label, out_len, func) == _reference_prf(inkey, label, 8 * out_len, func)


def test_one_piece_one_block_by_hand() -> None:
    """A 16-byte key and a 16-byte output: PRF = HMAC(s, HMAC(s, label) || label)[:16]."""
    s, label = b"\x01" * 16, b"label"
    a1 = _hmac(PrfFunc.MIKEY_1, s, label)
    assert prf(s, label, 16) == _hmac(PrfFunc.MIKEY_1, s, a1 + label)[:16]
    a1 = _hmac(PrfFunc.PRF_HMAC_SHA_256, s, label)
    expected = _hmac(PrfFunc.PRF_HMAC_SHA_256, s, a1 + label)
    assert prf(s, label, 32, PrfFunc.PRF_HMAC_SHA_256) == expected


def test_two_pieces_are_xored() -> None:
    s1, s2, label = b"\x01" * 32, b"\x02" * 8, b"x"
    p1 = p_function(s1, label, 1)
    p2 = p_function(s2, label, 1)
    assert prf(s1 + s2, label, 20) == bytes(x ^ y for x, y in zip(p1, p2, strict=True))


def test_prf_refuses_an_empty_key_and_a_negative_length() -> None:
    with pytest.raises(ValueError):
        prf(b"", b"label", 16)
    with pytest.raises(ValueError):
        prf(b"k", b"label", -1)


@given(
    st.binary(min_size=1, max_size=120),
    st.binary(max_size=60),
    st.integers(0, 120),
    st.sampled_from(PrfFunc),
)
def test_prf_matches_the_formula_for_any_input(
    inkey: bytes, label: bytes, out_len: int, func: PrfFunc
) -> None:
    assert prf(inkey, label, out_len, func) == _reference_prf(inkey, label, 8 * out_len, func)


@given(st.binary(min_size=1, max_size=80), st.integers(1, 90))
def test_a_shorter_output_is_a_prefix(inkey: bytes, out_len: int) -> None:
    assert prf(inkey, b"l", out_len) == prf(inkey, b"l", out_len + 7)[:out_len]


# --- constants and labels ---------------------------------------------------------------------


def test_the_constants_are_the_digits_of_e() -> None:
    """RFC 3830 takes its label constants from consecutive nine-digit groups of e."""
    getcontext().prec = 100
    digits = str(Decimal(1).exp()).replace(".", "")[1:]
    groups = [int(digits[9 * i : 9 * (i + 1)]) for i in range(7)]
    assert groups == [
        keys.TEK,
        keys.TGK_AUTH,
        keys.TGK_ENCR,
        keys.MSG_ENCR,
        keys.MSG_AUTH,
        keys.MSG_SALT,
        keys.TGK_SALT,
    ]
    assert keys.TEK == 0x2AD01C64 and keys.MSG_ENCR == 0x150533E1 and keys.TGK_SALT == 0x39A2C14B


def test_labels() -> None:
    rand = bytes(range(16))
    assert keys.tgk_label(keys.TEK, 3, 0x01020304, rand) == (
        bytes.fromhex("2ad01c64 03 01020304") + rand
    )
    assert keys.message_label(keys.MSG_AUTH, 0xA0B0C0D0, rand) == (
        bytes.fromhex("2d22ac75 ff a0b0c0d0") + rand
    )
    with pytest.raises(ValueError):
        keys.tgk_label(keys.TEK, 256, 0, rand)
    with pytest.raises(ValueError):
        keys.message_label(keys.MSG_AUTH, 1 << 32, rand)


# --- derivations ------------------------------------------------------------------------------

TGK = bytes(range(0x40, 0x60))
RAND = bytes(range(16))
CSB = 0x1A2B3C4D


@pytest.mark.parametrize("func", list(PrfFunc))
def test_tek_and_salt_from_a_tgk(func: PrfFunc) -> None:
    label_tek = b"\x2a\xd0\x1c\x64" + b"\x01" + CSB.to_bytes(4, "big") + RAND
    label_salt = b"\x39\xa2\xc1\x4b" + b"\x01" + CSB.to_bytes(4, "big") + RAND
    assert keys.tek(TGK, 1, CSB, RAND, 16, func) == _reference_prf(TGK, label_tek, 128, func)
    master = keys.srtp_master(TGK, 1, CSB, RAND, prf_func=func)
    assert master.key == _reference_prf(TGK, label_tek, 128, func)
    assert master.salt == _reference_prf(TGK, label_salt, 112, func)


def test_each_crypto_session_has_its_own_tek() -> None:
    teks = {keys.tek(TGK, cs, CSB, RAND, 16) for cs in range(1, 6)}
    assert len(teks) == 5
    assert keys.tek(TGK, 1, CSB, RAND, 16) != keys.tek(TGK, 1, CSB + 1, RAND, 16)
    assert keys.tek(TGK, 1, CSB, RAND, 16) != keys.tek(TGK, 1, CSB, RAND[::-1], 16)


def test_tgk_auth_and_encr_keys() -> None:
    for constant in (keys.TGK_AUTH, keys.TGK_ENCR):
        label = constant.to_bytes(4, "big") + b"\x02" + CSB.to_bytes(4, "big") + RAND
        got = keys.from_tgk(TGK, constant, 2, CSB, RAND, 20)
        assert got == _reference_prf(TGK, label, 160, PrfFunc.MIKEY_1)


def test_tls_psk_is_the_tek_of_the_tls_crypto_session() -> None:
    psk = keys.tls_psk(TGK, 1, CSB, RAND, 32, PrfFunc.PRF_HMAC_SHA_256)
    label = b"\x2a\xd0\x1c\x64\x01" + CSB.to_bytes(4, "big") + RAND
    assert psk == _reference_prf(TGK, label, 256, PrfFunc.PRF_HMAC_SHA_256)
    with pytest.raises(ValueError):
        keys.tls_psk(TGK, 1, CSB, RAND, 0)


@pytest.mark.parametrize("func", list(PrfFunc))
def test_message_keys_from_a_psk_or_mpk(func: PrfFunc) -> None:
    psk = b"\x77" * 32
    got = keys.message_keys(
        psk, CSB, RAND, encr_alg=EncrAlg.AES_CM_128, mac_alg=MacAlg.HMAC_SHA_256_256, prf_func=func
    )

    def ref(constant: bytes, bits: int) -> bytes:
        return _reference_prf(psk, constant + b"\xff" + CSB.to_bytes(4, "big") + RAND, bits, func)

    assert got.encr_key == ref(bytes.fromhex("150533e1"), 128)
    assert got.auth_key == ref(bytes.fromhex("2d22ac75"), 256)
    assert got.salt_key == ref(bytes.fromhex("29b88916"), 112)
    plain = keys.message_keys(psk, CSB, RAND)
    assert plain.encr_key == b"" and plain.salt_key == b"" and len(plain.auth_key) == 20


# --- MACs -------------------------------------------------------------------------------------


def test_hmac_sha1_rfc_2202_case_2() -> None:
    tag = keys.mac(MacAlg.HMAC_SHA_1_160, b"Jefe", b"what do ya want for nothing?")
    assert tag == bytes.fromhex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")


def test_hmac_sha256_rfc_4231_case_2() -> None:
    tag = keys.mac(MacAlg.HMAC_SHA_256_256, b"Jefe", b"what do ya want for nothing?")
    assert tag == bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_null_mac_and_verification() -> None:
    assert keys.mac(MacAlg.NULL, b"k", b"data") == b""
    tag = keys.mac(MacAlg.HMAC_SHA_1_160, b"k", b"data")
    assert keys.verify_mac(MacAlg.HMAC_SHA_1_160, b"k", b"data", tag)
    assert not keys.verify_mac(MacAlg.HMAC_SHA_1_160, b"k", b"datA", tag)


def test_a_psk_init_is_macced_and_verified_end_to_end() -> None:
    """RFC 3830 §3.1: the KEMAC MAC covers the whole message up to the MAC, keyed with the
    auth_key derived from the pre-shared key with the message's CSB ID and RAND."""
    psk = b"\x10" * 16
    unsigned = samples.psk_init()
    k = keys.message_keys(psk, unsigned.header.csb_id, samples.RAND.rand)
    signed = unsigned.with_trailer(
        keys.mac(MacAlg.HMAC_SHA_1_160, k.auth_key, unsigned.mac_input())
    )
    wire = signed.encode()

    received = decode(wire)
    (kemac,) = received.find(Kemac)
    assert isinstance(kemac, Kemac)
    expected_key = _reference_prf(
        psk, bytes.fromhex("2d22ac75ff") + wire[4:8] + samples.RAND.rand, 160, PrfFunc.MIKEY_1
    )
    expected_mac = _hmac(PrfFunc.MIKEY_1, expected_key, wire[:-20])
    assert kemac.mac == expected_mac
    assert keys.verify_mac(MacAlg.HMAC_SHA_1_160, k.auth_key, received.mac_input(), kemac.mac)


# --- RFC 6043 §5.1 and Appendix A.2 ---------------------------------------------------------


def test_the_rfc_6043_constants_continue_the_digits_of_e() -> None:
    """Table 5.1 and Table A.1: the 8th to 11th nine-digit groups of e."""
    getcontext().prec = 150
    digits = str(Decimal(1).exp()).replace(".", "")[1:]
    groups = [int(digits[9 * i : 9 * (i + 1)]) for i in range(7, 11)]
    assert groups == [keys.MPKR_FORK, keys.TGK_FORK, keys.MPKI, keys.MPKR]
    assert (keys.MPKR_FORK, keys.TGK_FORK) == (0x2B288856, 0x1512B54A)
    assert (keys.MPKI, keys.MPKR) == (0x220E99A2, 0x1F4D675B)


def test_ticket_message_label_by_hand() -> None:
    """constant || 0xFF || CSB ID || 0x01/0x02 || len RANDRi || RANDRi || len RANDRr || RANDRr."""
    label = keys.ticket_message_label(0x2D22AC75, 0x01020304, 0x01, b"\xaa\xbb", b"")
    assert label == bytes.fromhex("2d22ac75 ff 01020304 01 02 aabb 00")
    label = keys.ticket_message_label(0x150533E1, 0xFFFFFFFF, 0x02, b"\x01", b"\x02\x03")
    assert label == bytes.fromhex("150533e1 ff ffffffff 02 01 01 02 0203")
    with pytest.raises(ValueError):
        keys.ticket_message_label(0x150533E1, 0, 0x03)


@pytest.mark.parametrize("response", [False, True])
def test_ticket_message_keys_against_the_formula(response: bool) -> None:
    inkey, csb, ri, rr = b"\x11" * 16, 0xA1B2C3D4, bytes(range(16)), bytes(range(16, 32))
    k = keys.ticket_message_keys(
        inkey,
        csb,
        response=response,
        randri=ri,
        randrr=rr,
        encr_alg=EncrAlg.AES_CM_128,
        mac_alg=MacAlg.HMAC_SHA_256_256,
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )
    direction = "02" if response else "01"

    def label(constant: str) -> bytes:
        return bytes.fromhex(constant + "ff a1b2c3d4" + direction + "10") + ri + b"\x10" + rr

    f = PrfFunc.PRF_HMAC_SHA_256
    assert k.encr_key == _reference_prf(inkey, label("150533e1"), 128, f)
    assert k.auth_key == _reference_prf(inkey, label("2d22ac75"), 256, f)
    assert k.salt_key == _reference_prf(inkey, label("29b88916"), 112, f)
    other = keys.ticket_message_keys(inkey, csb, response=not response, randri=ri, randrr=rr)
    assert other.auth_key != k.auth_key
    with pytest.raises(ValueError):
        keys.ticket_message_keys(inkey, csb, response=response)  # no RAND at all


def test_ticket_tek_label_and_value() -> None:
    """constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || RANDRi || len RANDRr || RANDRr."""
    assert keys.ticket_tgk_label(0x2AD01C64, 7, b"\x01", b"\x02\x03") == bytes.fromhex(
        "2ad01c64 07 ffffffff 03 01 01 02 0203"
    )
    assert keys.ticket_tgk_label(0x2AD01C64, 1, b"\x09") == bytes.fromhex(
        "2ad01c64 01 ffffffff 03 01 09 00"
    )
    tgk, ri = bytes(range(32)), bytes(range(16))
    label = bytes.fromhex("2ad01c64 01 ffffffff 03 10") + ri + b"\x00"
    expected = _reference_prf(tgk, label, 256, PrfFunc.PRF_HMAC_SHA_256)
    assert keys.ticket_tek(tgk, 1, 32, randri=ri) == expected
    assert keys.ticket_tls_psk(tgk, 1, 32, randri=ri) == expected
    assert keys.ticket_tls_psk(tgk, 1, 32, randri=ri) != keys.tls_psk(tgk, 1, 0, ri, 32)
    with pytest.raises(ValueError):
        keys.ticket_tek(tgk, 1, 16)


def test_key_forking_by_hand() -> None:
    """RFC 6043 §5.1.1: constant || 0xFF || 0xFFFFFFFF || 0x00 || len16 ID Data || ID Data
    || len8 RANDRkms || RANDRkms; outkey as long as the inkey; the PRF of the Ticket Policy."""
    assert keys.fork_label(0x2B288856, b"sip:bob", b"\x09") == bytes.fromhex(
        "2b288856 ff ffffffff 00 0007 7369703a626f62 01 09"
    )
    mpkr, tgk = bytes(range(16)), bytes(range(100, 132))
    idrr, randrkms = b"sip:bob@ims.example.net", bytes(range(200, 216))
    tail = len(idrr).to_bytes(2, "big") + idrr + b"\x10" + randrkms
    f = PrfFunc.PRF_HMAC_SHA_256
    mpkr_f = keys.fork_mpkr(mpkr, idrr, randrkms, f)
    assert mpkr_f == _reference_prf(mpkr, bytes.fromhex("2b288856 ff ffffffff 00") + tail, 128, f)
    tgk_f = keys.fork_tgk(tgk, idrr, randrkms, f)
    assert len(tgk_f) == 32
    assert tgk_f == _reference_prf(tgk, bytes.fromhex("1512b54a ff ffffffff 00") + tail, 256, f)
    assert keys.fork_tgk(tgk, b"sip:carol@ims.example.net", randrkms, f) != tgk_f


def test_initiator_data_tpk_and_mpk_labels() -> None:
    mpkr = bytes(range(16))
    vr = keys.initiator_data_keys(mpkr, mac_alg=MacAlg.HMAC_SHA_1_160)
    assert vr.auth_key == _reference_prf(
        mpkr, bytes.fromhex("2d22ac75 ff ffffffff 04"), 160, PrfFunc.MIKEY_1
    )
    assert vr.encr_key == b"" and vr.salt_key == b""
    tpk, rand = bytes(range(32)), bytes(range(50, 66))
    tk = keys.tpk_keys(tpk, rand)
    tpk_label = bytes.fromhex("150533e1 ff ffffffff 05 10") + rand
    assert tk.encr_key == _reference_prf(tpk, tpk_label, 128, PrfFunc.MIKEY_1)
    mpk = bytes(range(20))
    pair = keys.mpk_split(mpk, rand, PrfFunc.PRF_HMAC_SHA_256)
    f = PrfFunc.PRF_HMAC_SHA_256
    assert pair.mpki == _reference_prf(
        mpk, bytes.fromhex("220e99a2 ff ffffffff 06 10") + rand, 160, f
    )
    assert pair.mpkr == _reference_prf(
        mpk, bytes.fromhex("1f4d675b ff ffffffff 06 10") + rand, 160, f
    )


def test_aes_kw_and_aes_cm_256_key_lengths() -> None:
    """RFC 3830 §4.2.3: AES-KW-128 takes a 128-bit key and a 64-bit salt (the key wrap IV);
    RFC 6043 §6.2: AES-CM-256 a 256-bit key (and the 112-bit salt of AES-CM)."""
    kw = keys.message_keys(b"k" * 16, 1, b"r" * 16, encr_alg=EncrAlg.AES_KW_128)
    assert (len(kw.encr_key), len(kw.salt_key)) == (16, 8)
    cm = keys.message_keys(b"k" * 16, 1, b"r" * 16, encr_alg=EncrAlg.AES_CM_256)
    assert (len(cm.encr_key), len(cm.salt_key)) == (32, 14)
