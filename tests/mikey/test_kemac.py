"""KEMAC encryption and the message MAC, each against a second computation written in the test:
the RFC 3830 §4.2.3 IV assembled byte by byte, AES-CM as AES-ECB of hand-built counter blocks
XORed in, the NIST SP 800-38A F.5.1 counter-mode and RFC 3394 §4.1 key wrap vectors, key wrap
with the salt as IV against the "shifting" formulation of RFC 3394 §2.2.1, the HMAC of the
encoded message computed with ``cryptography``'s HMAC, and the MAC coverage of RFC 6043
Table 5.2 assembled from the encoded bytes."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import given
from hypothesis import strategies as st

from mikey import MikeyError, decode, kemac, keys, samples
from mikey.constants import (
    DataType,
    EncrAlg,
    ErrorNo,
    IdRole,
    IdType,
    KeyType,
    MacAlg,
    PrfFunc,
    TsType,
)
from mikey.message import Message, message
from mikey.payloads import (
    IdWithRole,
    Kemac,
    KeyData,
    KvSpi,
    Rand,
    Ticket,
    Timestamp,
    Verification,
    encode_key_data,
)

PSK = bytes(range(0x40, 0x60))
CSB_ID = 0x1A2B3C4D
RAND = bytes(range(0xA0, 0xB0))
T = Timestamp(TsType.NTP_UTC, 0xE3D2C1B0_12345678)
TGK = bytes(range(0x10, 0x30))
ITEMS = (
    KeyData(KeyType.TGK, TGK, kv=KvSpi(b"\x00\x00\x00\x01")),
    KeyData(KeyType.TEK_SALT, bytes(16), salt=bytes(range(14))),
)


def _keys(encr_alg: EncrAlg, mac_alg: MacAlg = MacAlg.HMAC_SHA_1_160) -> keys.MessageKeys:
    return keys.message_keys(PSK, CSB_ID, RAND, encr_alg=encr_alg, mac_alg=mac_alg)


def _ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _reference_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Counter mode written out: E(K, IV + i) XOR the i-th block."""
    out = bytearray()
    counter = int.from_bytes(iv, "big")
    for i in range(0, len(data), 16):
        stream = _ecb(key, ((counter + i // 16) % (1 << 128)).to_bytes(16, "big"))
        out += bytes(a ^ b for a, b in zip(data[i : i + 16], stream, strict=False))
    return bytes(out)


def _reference_wrap(kek: bytes, data: bytes, iv: bytes) -> bytes:
    """RFC 3394 §2.2.1, the second ("shifting") description: for t = 1..6n,
    B = AES(K, A | R1), A = MSB64(B) ^ t, R1..Rn-1 = R2..Rn, Rn = LSB64(B)."""
    n = len(data) // 8
    a, r = iv, [data[8 * i : 8 * i + 8] for i in range(n)]
    for t in range(1, 6 * n + 1):
        b = _ecb(kek, a + r[0])
        a = (int.from_bytes(b[:8], "big") ^ t).to_bytes(8, "big")
        r = [*r[1:], b[8:]]
    return a + b"".join(r)


def _psk_init(encr_alg: EncrAlg, mac_alg: MacAlg = MacAlg.HMAC_SHA_1_160) -> Message:
    sealed = kemac.seal(ITEMS, encr_alg, mac_alg, _keys(encr_alg, mac_alg), CSB_ID, T)
    return message(DataType.PSK_INIT, CSB_ID, (T, Rand(RAND), sealed))


# --- RFC 3830 §4.2.3: the AES-CM IV ---------------------------------------------------------


def test_aes_cm_iv_written_out() -> None:
    # S = 00 01 .. 0d; 0x0000 || CSB ID || T = 00 00 01 02 03 04 11 22 33 44 55 66 77 88
    iv = kemac.aes_cm_iv(bytes(range(14)), 0x01020304, 0x1122334455667788)
    assert iv == bytes.fromhex("0001 0301 0701 1725 3b4d 5f6d 7b85 0000")


def test_aes_cm_iv_counter_timestamp_is_left_padded() -> None:
    # 0x0000 || CSB ID 0 || T = 00 00 | 00 00 00 00 | 00 00 00 00 de ad be ef, XOR ff..ff
    salt = bytes([0xFF] * 14)
    iv = kemac.aes_cm_iv(salt, 0, Timestamp(TsType.COUNTER, 0xDEADBEEF))
    assert iv == bytes.fromhex("ffffffffffffffffffff215241100000")
    assert iv == kemac.aes_cm_iv(salt, 0, 0xDEADBEEF)


def test_aes_cm_iv_takes_the_t_payload_value() -> None:
    salt = bytes(14)
    assert kemac.aes_cm_iv(salt, CSB_ID, T) == bytes(2) + CSB_ID.to_bytes(4, "big") + (
        T.value.to_bytes(8, "big")
    ) + bytes(2)


@pytest.mark.parametrize("salt_len", [0, 13, 15, 16])
def test_aes_cm_iv_needs_a_112_bit_salt(salt_len: int) -> None:
    with pytest.raises(MikeyError) as e:
        kemac.aes_cm_iv(bytes(salt_len), 0, 0)
    assert e.value.code == ErrorNo.INVALID_EA


# --- AES-CM and AES-KW primitives ------------------------------------------------------------


def test_aes_cm_sp800_38a_f51() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    cipher = bytes.fromhex("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff")
    assert kemac.aes_cm(key, iv, plain) == cipher
    assert kemac.aes_cm(key, iv, cipher) == plain


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=14, max_size=14), st.binary())
def test_aes_cm_is_counter_mode_from_the_rfc_3830_iv(key: bytes, salt: bytes, data: bytes) -> None:
    iv = kemac.aes_cm_iv(salt, CSB_ID, T)
    assert kemac.aes_cm(key, iv, data) == _reference_ctr(key, iv, data)


def test_key_wrap_rfc_3394_4_1() -> None:
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    data = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    wrapped = bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
    assert kemac.wrap(kek, data) == wrapped
    assert kemac.unwrap(kek, wrapped) == data


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=8),
    st.integers(2, 12).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)),
)
def test_key_wrap_with_the_salt_as_iv(kek: bytes, iv: bytes, data: bytes) -> None:
    wrapped = kemac.wrap(kek, data, iv)
    assert wrapped == _reference_wrap(kek, data, iv)
    assert kemac.unwrap(kek, wrapped, iv) == data
    assert kemac.wrap(kek, data) == aes_key_wrap(kek, data)  # the default IV A6A6...


def test_key_unwrap_with_another_iv_is_auth_failure() -> None:
    kek, data = bytes(16), bytes(range(16))
    with pytest.raises(MikeyError) as e:
        kemac.unwrap(kek, kemac.wrap(kek, data, b"\x01" * 8), b"\x02" * 8)
    assert e.value.code == ErrorNo.AUTH_FAILURE


def test_key_unwrap_integrity_failure_is_auth_failure() -> None:
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    wrapped = bytearray.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
    wrapped[-1] ^= 1
    with pytest.raises(MikeyError) as e:
        kemac.unwrap(kek, bytes(wrapped))
    assert e.value.code == ErrorNo.AUTH_FAILURE


@pytest.mark.parametrize("size", [0, 8, 16, 23, 25])
def test_key_unwrap_needs_three_blocks(size: int) -> None:
    with pytest.raises(MikeyError) as e:
        kemac.unwrap(bytes(16), bytes(size))
    assert e.value.code == ErrorNo.UNSPECIFIED


@pytest.mark.parametrize(("length", "padded"), [(1, 16), (15, 16), (16, 16), (17, 24), (24, 24)])
def test_key_wrap_padding_length(length: int, padded: int) -> None:
    assert kemac.kw_padded_len(length) == padded


# --- seal / open ---------------------------------------------------------------------------


def test_seal_null_is_the_plain_chain() -> None:
    sealed = kemac.seal(ITEMS, EncrAlg.NULL, MacAlg.NULL, _keys(EncrAlg.NULL), CSB_ID, T)
    assert sealed == Kemac.plain(ITEMS)
    assert kemac.open_kemac(sealed, _keys(EncrAlg.NULL), CSB_ID, T) == ITEMS


def test_seal_aes_cm_against_hand_built_counter_mode() -> None:
    k = _keys(EncrAlg.AES_CM_128)
    assert len(k.encr_key) == 16 and len(k.salt_key) == 14
    sealed = kemac.seal(ITEMS, EncrAlg.AES_CM_128, MacAlg.HMAC_SHA_1_160, k, CSB_ID, T)
    block = bytes(2) + CSB_ID.to_bytes(4, "big") + T.value.to_bytes(8, "big")
    iv = bytes(s ^ b for s, b in zip(k.salt_key, block, strict=True)) + b"\x00\x00"
    plain = encode_key_data(ITEMS)
    assert sealed.encr_alg is EncrAlg.AES_CM_128
    assert sealed.encr_data == _reference_ctr(k.encr_key, iv, plain)
    assert sealed.encr_data != plain
    assert sealed.mac == bytes(20)
    assert kemac.open_kemac(sealed, k, CSB_ID, T) == ITEMS


def test_seal_aes_kw_wraps_with_the_salt_and_pads_with_zeros() -> None:
    """RFC 3830 §4.2.3: a 128-bit key and a 64-bit salt S from §4.1.4; the key wrap IV is S."""
    k = _keys(EncrAlg.AES_KW_128)
    assert len(k.encr_key) == 16 and len(k.salt_key) == 8
    assert k.salt_key == keys.prf(PSK, keys.message_label(keys.MSG_SALT, CSB_ID, RAND), 8)
    sealed = kemac.seal(ITEMS, EncrAlg.AES_KW_128, MacAlg.HMAC_SHA_256_256, k, CSB_ID, T)
    plain = encode_key_data(ITEMS)
    pad = -len(plain) % 8
    assert sealed.encr_data == _reference_wrap(k.encr_key, plain + bytes(pad), k.salt_key)
    assert len(sealed.encr_data) == len(plain) + pad + 8
    assert sealed.mac == bytes(32)
    assert kemac.open_kemac(sealed, k, CSB_ID, T) == ITEMS


def test_seal_aes_kw_short_chain_is_padded_to_two_blocks() -> None:
    items = (KeyData(KeyType.TGK, b"\x01\x02"),)
    k = _keys(EncrAlg.AES_KW_128)
    sealed = kemac.seal(items, EncrAlg.AES_KW_128, MacAlg.NULL, k, CSB_ID, T)
    plain = encode_key_data(items)  # 00 | 00 | 00 02 | 01 02: six bytes
    assert plain == bytes.fromhex("000000020102")
    assert sealed.encr_data == _reference_wrap(k.encr_key, plain + bytes(10), k.salt_key)
    assert kemac.open_kemac(sealed, k, CSB_ID, T) == items


@pytest.mark.parametrize(
    "padding",
    [b"\x00\x00\x01", b"\x01\x00\x00", bytes(3 + 8)],
    ids=["nonzero-last", "nonzero-first", "an-extra-block"],
)
def test_open_aes_kw_bad_padding(padding: bytes) -> None:
    k = _keys(EncrAlg.AES_KW_128)
    plain = encode_key_data(ITEMS)
    assert (len(plain) + 3) % 8 == 0  # the chain needs exactly three bytes of padding
    wrapped = _reference_wrap(k.encr_key, plain + padding, k.salt_key)
    bad = Kemac(EncrAlg.AES_KW_128, wrapped, MacAlg.NULL)
    with pytest.raises(MikeyError) as e:
        kemac.open_kemac(bad, k, CSB_ID, T)
    assert e.value.code == ErrorNo.UNSPECIFIED


def test_open_aes_kw_wrong_key_is_auth_failure() -> None:
    sealed = kemac.seal(
        ITEMS, EncrAlg.AES_KW_128, MacAlg.NULL, _keys(EncrAlg.AES_KW_128), CSB_ID, T
    )
    other = keys.message_keys(PSK[::-1], CSB_ID, RAND, encr_alg=EncrAlg.AES_KW_128)
    with pytest.raises(MikeyError) as e:
        kemac.open_kemac(sealed, other, CSB_ID, T)
    assert e.value.code == ErrorNo.AUTH_FAILURE


def test_open_aes_cm_wrong_timestamp_does_not_give_the_keys() -> None:
    k = _keys(EncrAlg.AES_CM_128)
    sealed = kemac.seal(ITEMS, EncrAlg.AES_CM_128, MacAlg.NULL, k, CSB_ID, T)
    try:
        got = kemac.open_kemac(sealed, k, CSB_ID, T.value + 1)
    except MikeyError:
        return
    assert got != ITEMS


def test_seal_aes_cm_256() -> None:
    """RFC 6043 §6.2: AES-CM-256 is RFC 3830 §4.2.3 with a 256-bit key."""
    k = _keys(EncrAlg.AES_CM_256)
    assert len(k.encr_key) == 32 and len(k.salt_key) == 14
    sealed = kemac.seal(ITEMS, EncrAlg.AES_CM_256, MacAlg.NULL, k, CSB_ID, T)
    iv = kemac.aes_cm_iv(k.salt_key, CSB_ID, T)
    assert sealed.encr_data == _reference_ctr(k.encr_key, iv, encode_key_data(ITEMS))
    assert kemac.open_kemac(sealed, k, CSB_ID, T) == ITEMS
    short = keys.MessageKeys(bytes(16), b"", bytes(14))
    with pytest.raises(MikeyError) as e:
        kemac.seal(ITEMS, EncrAlg.AES_CM_256, MacAlg.NULL, short, CSB_ID, T)
    assert e.value.code == ErrorNo.INVALID_EA


def test_aes_cm_iv_ntp_utc_32_is_a_64_bit_ntp_utc() -> None:
    """RFC 6043 §6.3: padded with zeros in the fractional part."""
    salt = bytes(14)
    iv = kemac.aes_cm_iv(salt, 0, Timestamp(TsType.NTP_UTC_32, 0xE9A1B2C3))
    assert iv == bytes(6) + bytes.fromhex("e9a1b2c3 00000000") + bytes(2)


def test_open_aes_cm_trailing_bytes() -> None:
    k = _keys(EncrAlg.AES_CM_128)
    plain = encode_key_data(ITEMS) + b"\x00"
    iv = kemac.aes_cm_iv(k.salt_key, CSB_ID, T)
    bad = Kemac(EncrAlg.AES_CM_128, _reference_ctr(k.encr_key, iv, plain), MacAlg.NULL)
    with pytest.raises(MikeyError) as e:
        kemac.open_kemac(bad, k, CSB_ID, T)
    assert e.value.code == ErrorNo.UNSPECIFIED


def test_seal_wrong_key_length_is_invalid_ea() -> None:
    k = keys.MessageKeys(bytes(15), bytes(20), bytes(14))
    for alg in (EncrAlg.AES_CM_128, EncrAlg.AES_KW_128):
        with pytest.raises(MikeyError) as e:
            kemac.seal(ITEMS, alg, MacAlg.NULL, k, CSB_ID, T)
        assert e.value.code == ErrorNo.INVALID_EA


# --- the MAC over the message --------------------------------------------------------------


def _hmac(alg: MacAlg, key: bytes, data: bytes) -> bytes:
    h = HMAC(key, hashes.SHA1() if alg is MacAlg.HMAC_SHA_1_160 else hashes.SHA256())
    h.update(data)
    return h.finalize()


@pytest.mark.parametrize("encr_alg", list(EncrAlg))
@pytest.mark.parametrize("mac_alg", [MacAlg.HMAC_SHA_1_160, MacAlg.HMAC_SHA_256_256])
def test_psk_init_end_to_end(encr_alg: EncrAlg, mac_alg: MacAlg) -> None:
    k = _keys(encr_alg, mac_alg)
    msg = kemac.protect(_psk_init(encr_alg, mac_alg), k)
    wire = msg.encode()
    n = len(wire) - {MacAlg.HMAC_SHA_1_160: 20, MacAlg.HMAC_SHA_256_256: 32}[mac_alg]
    assert wire[n:] == _hmac(mac_alg, k.auth_key, wire[:n])
    received = decode(wire)
    assert kemac.open_message(received, k) == ITEMS
    kemac.verify(received, k)


def test_psk_init_extra_mac_input() -> None:
    k = _keys(EncrAlg.AES_CM_128)
    msg = kemac.protect(_psk_init(EncrAlg.AES_CM_128), k, b"sip:alice")
    wire = msg.encode()
    assert wire[-20:] == _hmac(MacAlg.HMAC_SHA_1_160, k.auth_key, wire[:-20] + b"sip:alice")
    kemac.verify(msg, k, b"sip:alice")
    with pytest.raises(MikeyError) as e:
        kemac.verify(msg, k)
    assert e.value.code == ErrorNo.AUTH_FAILURE


@pytest.mark.parametrize("where", ["mac", "ciphertext", "csb_id", "timestamp"])
def test_tampered_psk_init_is_auth_failure(where: str) -> None:
    k = _keys(EncrAlg.AES_CM_128)
    wire = bytearray(kemac.protect(_psk_init(EncrAlg.AES_CM_128), k).encode())
    offset = {"mac": len(wire) - 1, "ciphertext": len(wire) - 25, "csb_id": 7, "timestamp": 12}
    wire[offset[where]] ^= 0x40
    with pytest.raises(MikeyError) as e:
        kemac.open_message(decode(bytes(wire)), k)
    assert e.value.code == ErrorNo.AUTH_FAILURE


def test_wrong_psk_is_auth_failure() -> None:
    msg = kemac.protect(_psk_init(EncrAlg.AES_KW_128), _keys(EncrAlg.AES_KW_128))
    other = keys.message_keys(b"another key", CSB_ID, RAND, encr_alg=EncrAlg.AES_KW_128)
    with pytest.raises(MikeyError) as e:
        kemac.open_message(msg, other)
    assert e.value.code == ErrorNo.AUTH_FAILURE


def test_verification_payload_mac() -> None:
    k = keys.message_keys(PSK, CSB_ID, RAND, mac_alg=MacAlg.HMAC_SHA_1_160)
    msg = kemac.protect(samples.psk_verify(), k)
    wire = msg.encode()
    assert wire[-20:] == _hmac(MacAlg.HMAC_SHA_1_160, k.auth_key, wire[:-20])
    kemac.verify(decode(wire), k)


def test_verify_refuses_null_mac_and_missing_trailer() -> None:
    k = _keys(EncrAlg.NULL)
    with pytest.raises(MikeyError) as e:
        kemac.verify(_psk_init(EncrAlg.NULL, MacAlg.NULL), k)
    assert e.value.code == ErrorNo.INVALID_MAC
    with pytest.raises(MikeyError) as e:
        kemac.protect(samples.error(), k)
    assert e.value.code == ErrorNo.UNSPECIFIED


def test_protect_checks_the_auth_key_length() -> None:
    short = attrs.evolve(_keys(EncrAlg.NULL), auth_key=bytes(19))
    with pytest.raises(MikeyError) as e:
        kemac.protect(_psk_init(EncrAlg.NULL), short)
    assert e.value.code == ErrorNo.INVALID_MAC


def test_open_message_needs_one_kemac_and_one_t() -> None:
    k = _keys(EncrAlg.NULL)
    msg = kemac.protect(_psk_init(EncrAlg.NULL), k)
    no_t = attrs.evolve(msg, payloads=msg.payloads[1:])
    with pytest.raises(MikeyError) as e:
        kemac.open_message(no_t, k)
    assert e.value.code == ErrorNo.INVALID_TS
    with pytest.raises(MikeyError):
        kemac.open_message(kemac.protect(samples.psk_verify(), k), k)


# --- identities in the MAC input -----------------------------------------------------------


def test_mac_input_appends_the_identity_data_in_order() -> None:
    msg = samples.transfer_init()
    wire = msg.encode()
    assert kemac.mac_input(msg) == wire[:-32]
    got = kemac.mac_input(msg, (samples.IDRI, samples.IDRR, b"raw-id"), b"\x01\x02")
    assert got == wire[:-32] + b"sip:alice@ims.example.net" + b"sip:bob@ims.example.net" + (
        b"raw-id\x01\x02"
    )
    assert kemac.identity_data(samples.IDRKMS) == b"https://kms.ims.example.net"


def _resolve_resp(k: keys.MessageKeys) -> Message:
    """A RESOLVE_RESP whose KEMAC (AES-KW) is followed by the V payload that MACs it."""
    base = samples.resolve_resp()
    sealed = kemac.seal(ITEMS, EncrAlg.AES_KW_128, MacAlg.NULL, k, base.header.csb_id, samples.T)
    payloads = tuple(sealed if isinstance(p, Kemac) else p for p in base.payloads)
    return attrs.evolve(base, payloads=payloads)


def test_ticket_message_mac_covers_the_identities() -> None:
    k = keys.message_keys(
        PSK,
        samples.CSB_ID,
        RAND,
        encr_alg=EncrAlg.AES_KW_128,
        mac_alg=MacAlg.HMAC_SHA_256_256,
    )
    ids = (samples.IDRKMS, samples.IDRR)
    msg = kemac.protect(_resolve_resp(k), k, identities=ids)
    wire = msg.encode()
    covered = wire[:-32] + b"https://kms.ims.example.net" + b"sip:bob@ims.example.net"
    assert wire[-32:] == _hmac(MacAlg.HMAC_SHA_256_256, k.auth_key, covered)
    received = decode(wire)
    assert kemac.open_message(received, k, identities=ids) == ITEMS
    for wrong in ((), ids[::-1], (samples.IDRKMS, samples.IDRI)):
        with pytest.raises(MikeyError) as e:
            kemac.open_message(received, k, identities=wrong)
        assert e.value.code == ErrorNo.AUTH_FAILURE


# --- RFC 6043 §5.5: the MAC coverage of the ticket messages ---------------------------------


def test_request_init_covers_identity_i_then_identity_kms() -> None:
    m = samples.request_init()
    wire = m.encode()
    expected = wire[:-32] + b"sip:alice@ims.example.net" + b"https://kms.ims.example.net"
    assert kemac.ticket_mac_input(m) == expected


def test_resolve_init_covers_identity_r_then_identity_kms() -> None:
    m = samples.resolve_init()
    wire = m.encode()
    expected = wire[:-32] + b"sip:bob@ims.example.net" + b"https://kms.ims.example.net"
    assert kemac.ticket_mac_input(m) == expected
    other = IdWithRole(IdRole.IDRR, IdType.URI, b"sip:it-support@ims.example.net")
    assert kemac.ticket_mac_input(m, identity_r=other).endswith(
        b"sip:it-support@ims.example.net" + b"https://kms.ims.example.net"
    )


def test_transfer_init_leaves_out_the_initiator_data() -> None:
    m = samples.transfer_init()
    wire = m.encode()
    init_data = samples.TICKET_FORKED.initiator_data
    assert len(init_data) == 69  # 09 | 09 02 + 32 | 00 02 + 32
    end_of_ticket = len(wire) - 34  # then V: next payload 00, auth alg 02, 32-byte MAC
    cut = 2 + len(init_data)
    assert wire[end_of_ticket - cut : end_of_ticket] == b"\x00\x45" + init_data
    covered = wire[: end_of_ticket - cut] + wire[end_of_ticket:-32]
    expected = covered + b"sip:alice@ims.example.net" + b"sip:bob@ims.example.net"
    assert kemac.ticket_mac_input(m) == expected


@pytest.mark.parametrize(
    ("resp", "init"),
    [
        (samples.request_resp, samples.request_init),
        (samples.transfer_resp, samples.transfer_init),
        (samples.resolve_resp, samples.resolve_init),
    ],
)
def test_responses_cover_the_whole_initial_message(
    resp: Callable[[], Message], init: Callable[[], Message]
) -> None:
    r, i = resp(), init()
    i_wire = i.with_trailer(b"\x77" * 32).encode()  # MAC field included
    assert kemac.ticket_mac_input(r, initial=i_wire) == r.encode()[:-32] + i_wire
    assert kemac.ticket_mac_input(r, initial=decode(i_wire)) == r.encode()[:-32] + i_wire
    with pytest.raises(MikeyError):
        kemac.ticket_mac_input(r)


def test_error_message_covers_itself_and_missing_identities_are_invalid_id() -> None:
    err = attrs.evolve(samples.error(), payloads=(*samples.error().payloads, samples.V_SHA256))
    assert kemac.ticket_mac_input(err) == err.encode()[:-32]
    m = samples.request_init()
    no_kms = attrs.evolve(m, payloads=tuple(p for p in m.payloads if p != samples.IDRKMS))
    with pytest.raises(MikeyError) as e:
        kemac.ticket_mac_input(no_kms)
    assert e.value.code == ErrorNo.INVALID_ID
    given = kemac.ticket_mac_input(no_kms, identity_kms=b"kms.example")
    assert given.endswith(b"sip:alice@ims.example.net" + b"kms.example")
    with pytest.raises(MikeyError) as e:
        kemac.ticket_mac_input(samples.psk_init())
    assert e.value.code == ErrorNo.INVALID_DT


def test_ticket_transfer_protected_end_to_end() -> None:
    """TRANSFER_INIT MACed with keys from MPKi (RFC 6043 §5.1.2, 0x01, RANDRi), TRANSFER_RESP
    with keys from MPKr' (0x02, RANDRi and RANDRr), each over its Table 5.2 coverage."""
    mpki, mpkr = bytes(range(0x60, 0x70)), bytes(range(0x70, 0x80))
    randri, randrr = samples.RANDRI.rand, samples.RANDRR.rand
    csb = samples.CSB_ID
    ki = keys.ticket_message_keys(mpki, csb, response=False, randri=randri)
    init = samples.transfer_init()
    init = kemac.protect(init, ki, mac_data=kemac.ticket_mac_input(init))
    wire = init.encode()
    assert wire[-32:] == _hmac(MacAlg.HMAC_SHA_256_256, ki.auth_key, kemac.ticket_mac_input(init))
    kemac.verify(decode(wire), ki, mac_data=kemac.ticket_mac_input(decode(wire)))
    mpkr_f = keys.fork_mpkr(
        mpkr, samples.IDRR.data, samples.RANDRKMS.rand, PrfFunc.PRF_HMAC_SHA_256
    )
    kr = keys.ticket_message_keys(mpkr_f, csb, response=True, randri=randri, randrr=randrr)
    resp = samples.transfer_resp()
    resp = kemac.protect(resp, kr, mac_data=kemac.ticket_mac_input(resp, initial=wire))
    kemac.verify(resp, kr, mac_data=kemac.ticket_mac_input(resp, initial=wire))
    with pytest.raises(MikeyError) as e:  # protected with MPKi instead of MPKr'
        kemac.verify(resp, ki, mac_data=kemac.ticket_mac_input(resp, initial=wire))
    assert e.value.code == ErrorNo.AUTH_FAILURE
    with pytest.raises(ValueError):
        kemac.protect(resp, kr, b"x", mac_data=b"y")


# --- RFC 6043 §6.10: Initiator Data -----------------------------------------------------------


def _forked_transfer_init() -> tuple[Message, keys.MessageKeys, bytes]:
    mpki, mpkr = bytes(range(0x60, 0x70)), bytes(range(0x70, 0x80))
    ki = keys.ticket_message_keys(mpki, samples.CSB_ID, response=False, randri=samples.RANDRI.rand)
    base = samples.transfer_init()
    bare = tuple(
        attrs.evolve(p, initiator_data=b"") if isinstance(p, Ticket) else p for p in base.payloads
    )
    m = kemac.protect_transfer_init(attrs.evolve(base, payloads=bare), ki, mpkr=mpkr)
    return m, ki, mpkr


def test_initiator_data_is_vi_then_vr_over_it() -> None:
    m, ki, mpkr = _forked_transfer_init()
    (ticket,) = m.find(Ticket)
    assert isinstance(ticket, Ticket)
    v = m.payloads[-1]
    assert isinstance(v, Verification)
    idata = ticket.initiator_data
    # 09 (first: V) | Vi: 09 (next: V) 02 MAC(32) | Vr: 00 (last) 02 MAC(32)
    assert idata[:3] == b"\x09\x09\x02" and idata[3:35] == v.ver_data
    assert idata[35:37] == b"\x00\x02"
    vr_key = keys.prf(mpkr, bytes.fromhex("2d22ac75 ff ffffffff 04"), 32, PrfFunc.PRF_HMAC_SHA_256)
    assert idata[37:] == _hmac(MacAlg.HMAC_SHA_256_256, vr_key, idata[:37])
    kemac.verify(m, ki, mac_data=kemac.ticket_mac_input(m))  # inserting it kept V valid
    received = decode(m.encode())
    (rt,) = received.find(Ticket)
    assert isinstance(rt, Ticket)
    kemac.verify_initiator_data(rt, mpkr, transfer_init=received)


def test_initiator_data_failures() -> None:
    m, _, mpkr = _forked_transfer_init()
    (ticket,) = m.find(Ticket)
    assert isinstance(ticket, Ticket)
    with pytest.raises(MikeyError) as e:
        kemac.verify_initiator_data(ticket, bytes(16))
    assert e.value.code == ErrorNo.AUTH_FAILURE
    bad = bytearray(ticket.initiator_data)
    bad[-1] ^= 1
    with pytest.raises(MikeyError) as e:
        kemac.verify_initiator_data(attrs.evolve(ticket, initiator_data=bytes(bad)), mpkr)
    assert e.value.code == ErrorNo.AUTH_FAILURE
    other_v = m.with_trailer(b"\x01" * 32)
    with pytest.raises(MikeyError) as e:
        kemac.verify_initiator_data(ticket, mpkr, transfer_init=other_v)
    assert e.value.code == ErrorNo.AUTH_FAILURE
    with pytest.raises(MikeyError) as e:
        kemac.verify_initiator_data(attrs.evolve(ticket, initiator_data=b""), mpkr)
    assert e.value.code == ErrorNo.INVALID_TICKET
