"""immsg.cms: AuthEnvelopedData with a KEKRecipientInfo, its strict DER, and openssl 3 as the
peer that writes and reads the same bodies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immsg import cms
from immsg.cms import CmsError, Envelope, open_, open_message, read, seal
from tests.conftest import require_tool

KEK = bytes(range(16))
KEK256 = bytes(range(100, 132))
KEK_ID = b"\x0a\x0b\x0c"


def _random_from(data: bytes):  # type: ignore[no-untyped-def]
    """A random source that hands out ``data`` in order."""
    buf = bytearray(data)

    def take(n: int) -> bytes:
        out = bytes(buf[:n])
        del buf[:n]
        return out

    return take


# --- an independent DER builder for hand-made bodies ---------------------------------------


def _len(n: int, *, long: bool = False, pad: bool = False) -> bytes:
    if n < 0x80 and not long:
        return bytes([n])
    body = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    if pad:
        body = b"\x00" + body
    return bytes([0x80 | len(body)]) + body


def _t(tag: int, content: bytes, **kw: bool) -> bytes:
    return bytes([tag]) + _len(len(content), **kw) + content


OID_AUTH = bytes.fromhex("060b2a864886f70d0109100117")
OID_ENV = bytes.fromhex("06092a864886f70d010703")
OID_SIGNED = bytes.fromhex("06092a864886f70d010702")
OID_DATA = bytes.fromhex("06092a864886f70d010701")
OID_WRAP128 = bytes.fromhex("0609608648016503040105")
OID_WRAP192 = bytes.fromhex("0609608648016503040119")
OID_GCM128 = bytes.fromhex("0609608648016503040106")
OID_GCM256 = bytes.fromhex("060960864801650304012e")


def _build(
    env: Envelope,
    *,
    version: bytes = b"\x02\x01\x00",
    kekri_version: bytes = b"\x02\x01\x04",
    kekid_extra: bytes = b"",
    wrap: bytes = OID_WRAP128,
    wrap_params: bytes = b"",
    data_oid: bytes = OID_DATA,
    gcm: bytes = OID_GCM128,
    icv: bytes = b"\x02\x01\x10",
    recipients_extra: bytes = b"",
    before_mac: bytes = b"",
    after_mac: bytes = b"",
    content_type: bytes = OID_AUTH,
    version_long: bool = False,
) -> bytes:
    if version_long:
        version = b"\x02\x81\x01\x00"
    kekri = _t(
        0xA2,
        kekri_version
        + _t(0x30, _t(0x04, env.kek_id) + kekid_extra)
        + _t(0x30, wrap + wrap_params)
        + _t(0x04, env.encrypted_key),
    )
    alg = _t(0x30, gcm + _t(0x30, _t(0x04, env.nonce) + icv))
    aeci = _t(0x30, data_oid + alg + _t(0x80, env.ciphertext))
    aed = _t(
        0x30,
        version
        + _t(0x31, kekri + recipients_extra)
        + aeci
        + before_mac
        + _t(0x04, env.mac)
        + after_mac,
    )
    return _t(0x30, content_type + _t(0xA0, aed))


@pytest.fixture
def sealed() -> bytes:
    return seal(b"Content-Type: text/plain\r\n\r\nhello", KEK, KEK_ID)


def _kind(der: bytes, kek: bytes = KEK, kek_id: bytes = KEK_ID) -> str:
    with pytest.raises(CmsError) as info:
        open_(der, kek, kek_id)
    return info.value.kind


# --- round trips -------------------------------------------------------------------------


def test_seal_then_open_gives_the_content(sealed: bytes) -> None:
    assert open_(sealed, KEK, KEK_ID) == b"Content-Type: text/plain\r\n\r\nhello"
    assert open_message is open_


def test_the_envelope_is_readable_without_a_key() -> None:
    cek, nonce = bytes(range(50, 66)), bytes(range(200, 212))
    der = seal(b"abc", KEK, KEK_ID, random=_random_from(cek + nonce))
    env = read(der)
    assert env.kek_id == KEK_ID
    assert env.wrap_alg == "aes128-wrap"
    assert env.nonce == nonce
    assert len(env.encrypted_key) == 24
    assert len(env.ciphertext) == 3 and len(env.mac) == 16
    # our own builder gives the same bytes: the layout is the one documented
    assert _build(env) == der


def test_a_32_byte_kek_uses_aes256_wrap() -> None:
    der = seal(b"x" * 100, KEK256, KEK_ID)
    assert read(der).wrap_alg == "aes256-wrap"
    assert open_(der, KEK256, KEK_ID) == b"x" * 100
    assert _kind(der, KEK, KEK_ID) == "wrong-key"


def test_every_body_has_a_fresh_cek_and_nonce() -> None:
    a, b = read(seal(b"same", KEK, KEK_ID)), read(seal(b"same", KEK, KEK_ID))
    assert a.nonce != b.nonce and a.encrypted_key != b.encrypted_key


def test_empty_and_large_contents() -> None:
    assert open_(seal(b"", KEK, KEK_ID), KEK, KEK_ID) == b""
    big = os.urandom(60000)
    assert open_(seal(big, KEK, KEK_ID), KEK, KEK_ID) == big


@pytest.mark.parametrize(
    ("content", "kek", "kek_id"),
    [
        (b"x", b"k" * 24, KEK_ID),
        (b"x", b"k" * 15, KEK_ID),
        (b"x", KEK, b""),
        (b"x", KEK, b"i" * 256),
        (b"x" * cms.MAX_CMS_BYTES, KEK, KEK_ID),
    ],
)
def test_seal_refuses_what_the_caller_got_wrong(content: bytes, kek: bytes, kek_id: bytes) -> None:
    with pytest.raises(ValueError):
        seal(content, kek, kek_id)


def test_seal_refuses_a_short_random_source() -> None:
    with pytest.raises(ValueError, match="fewer bytes"):
        seal(b"x", KEK, KEK_ID, random=lambda n: b"\x00" * (n - 1))


@given(st.binary(max_size=4096), st.sampled_from([KEK, KEK256]), st.binary(min_size=1, max_size=64))
def test_property_seal_open(content: bytes, kek: bytes, kek_id: bytes) -> None:
    der = seal(content, kek, kek_id)
    assert open_(der, kek, kek_id) == content
    assert read(der).kek_id == kek_id


# --- keys and integrity --------------------------------------------------------------------


def test_wrong_kek_is_wrong_key(sealed: bytes) -> None:
    with pytest.raises(CmsError) as info:
        open_(sealed, bytes(16), KEK_ID)
    assert info.value.kind == "wrong-key"
    assert "unwrap" in info.value.reason


def test_wrong_kek_id_is_wrong_key_and_names_the_body_s_id(sealed: bytes) -> None:
    with pytest.raises(CmsError) as info:
        open_(sealed, KEK, b"\x0a\x0b\x0d")
    assert info.value.kind == "wrong-key"
    assert info.value.reason == "the body is for key id 0a0b0c"


def test_no_key_byte_in_any_reason(sealed: bytes) -> None:
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for der, kek, kek_id in [
        (sealed, bytes(16), KEK_ID),
        (sealed, KEK256, KEK_ID),
        (sealed, KEK, b"other"),
        (tampered, KEK, KEK_ID),
    ]:
        with pytest.raises(CmsError) as info:
            open_(der, kek, kek_id)
        text = str(info.value)
        assert kek.hex() not in text and KEK.hex() not in text


def test_flipped_ciphertext_is_integrity() -> None:
    env = read(seal(b"hello world", KEK, KEK_ID))
    bad = bytearray(env.ciphertext)
    bad[3] ^= 0x40
    der = _build(
        Envelope(env.kek_id, env.wrap_alg, env.nonce, env.encrypted_key, bytes(bad), env.mac)
    )
    assert _kind(der) == "integrity"


def test_flipped_tag_is_integrity(sealed: bytes) -> None:
    assert _kind(sealed[:-1] + bytes([sealed[-1] ^ 0x01])) == "integrity"


def test_flipped_nonce_is_integrity(sealed: bytes) -> None:
    env = read(sealed)
    nonce = bytes([env.nonce[0] ^ 1]) + env.nonce[1:]
    der = _build(
        Envelope(env.kek_id, env.wrap_alg, nonce, env.encrypted_key, env.ciphertext, env.mac)
    )
    assert _kind(der) == "integrity"


def test_a_kek_of_the_other_length_is_wrong_key(sealed: bytes) -> None:
    with pytest.raises(CmsError) as info:
        open_(sealed, KEK256, KEK_ID)
    assert info.value.kind == "wrong-key"
    assert "aes128-wrap" in info.value.reason


def test_every_truncation_and_every_flip_is_a_cms_error(sealed: bytes) -> None:
    for n in range(len(sealed)):
        with pytest.raises(CmsError):
            open_(sealed[:n], KEK, KEK_ID)
    for i in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(sealed)
            bad[i] ^= mask
            with pytest.raises(CmsError):
                open_(bytes(bad), KEK, KEK_ID)


@given(st.binary(max_size=2048), st.data())
def test_property_truncation_or_flip_of_a_sealed_body(content: bytes, data: st.DataObject) -> None:
    der = seal(content, KEK, KEK_ID)
    cut = data.draw(st.integers(0, len(der) - 1))
    with pytest.raises(CmsError):
        open_(der[:cut], KEK, KEK_ID)
    pos = data.draw(st.integers(0, len(der) - 1))
    mask = data.draw(st.integers(1, 255))
    bad = bytearray(der)
    bad[pos] ^= mask
    with pytest.raises(CmsError):
        open_(bytes(bad), KEK, KEK_ID)


@given(st.binary(max_size=512))
def test_property_random_bytes_into_read(data: bytes) -> None:
    try:
        read(data)
    except CmsError as exc:
        assert exc.kind in ("malformed", "unsupported")


@given(st.binary(max_size=64), st.sampled_from([0x30, 0x31, 0x02, 0x04, 0x06, 0xA0, 0xA2]))
def test_property_random_bytes_after_a_plausible_start(data: bytes, tag: int) -> None:
    der = _t(0x30, OID_AUTH + _t(0xA0, _t(0x30, b"\x02\x01\x00" + _t(tag, data))))
    with pytest.raises(CmsError):
        read(der)


# --- strict DER --------------------------------------------------------------------------


def _env(sealed_der: bytes) -> Envelope:
    return read(sealed_der)


def test_the_builder_reproduces_a_valid_body(sealed: bytes) -> None:
    assert open_(_build(_env(sealed)), KEK, KEK_ID) == b"Content-Type: text/plain\r\n\r\nhello"


def test_non_minimal_long_form_length_is_malformed(sealed: bytes) -> None:
    with pytest.raises(CmsError, match="non-minimal length") as info:
        read(_build(_env(sealed), version_long=True))
    assert info.value.kind == "malformed"


def test_length_with_a_leading_zero_is_malformed(sealed: bytes) -> None:
    # the outer SEQUENCE: 30 81 xx -> 30 82 00 xx
    assert sealed[1] == 0x81
    der = b"\x30\x82\x00" + sealed[2:]
    with pytest.raises(CmsError, match="leading zero") as info:
        read(der)
    assert info.value.kind == "malformed"


def test_indefinite_length_is_malformed(sealed: bytes) -> None:
    der = b"\x30\x80" + sealed[3:] + b"\x00\x00"
    with pytest.raises(CmsError, match="indefinite") as info:
        read(der)
    assert info.value.kind == "malformed"


def test_trailing_bytes_are_malformed(sealed: bytes) -> None:
    with pytest.raises(CmsError, match="left over") as info:
        read(sealed + b"\x00")
    assert info.value.kind == "malformed"


def test_trailing_bytes_inside_are_malformed(sealed: bytes) -> None:
    with pytest.raises(CmsError, match="left over") as info:
        read(_build(_env(sealed), after_mac=b"\x04\x00"))
    assert info.value.kind == "malformed"


def test_oversize_is_malformed() -> None:
    der = b"\x30\x83" + (cms.MAX_CMS_BYTES).to_bytes(3, "big") + bytes(cms.MAX_CMS_BYTES)
    with pytest.raises(CmsError, match="larger than") as info:
        read(der)
    assert info.value.kind == "malformed"


def test_a_non_minimal_integer_is_malformed(sealed: bytes) -> None:
    with pytest.raises(CmsError, match="non-minimal INTEGER") as info:
        read(_build(_env(sealed), version=b"\x02\x02\x00\x00"))
    assert info.value.kind == "malformed"


def test_a_constructed_encrypted_content_is_malformed(sealed: bytes) -> None:
    env = _env(sealed)
    good = _build(env)
    marker = b"\x80" + bytes([len(env.ciphertext)]) + env.ciphertext
    assert good.count(marker) == 1
    der = good.replace(marker, b"\xa0" + bytes([len(env.ciphertext)]) + env.ciphertext)
    with pytest.raises(CmsError, match="encryptedContent") as info:
        read(der)
    assert info.value.kind == "malformed"


def test_an_explicit_default_icv_length_is_malformed(sealed: bytes) -> None:
    with pytest.raises(CmsError) as info:
        read(_build(_env(sealed), icv=b"\x02\x01\x0c"))
    assert info.value.kind == "malformed"


def test_wrap_parameters_are_malformed(sealed: bytes) -> None:
    with pytest.raises(CmsError, match="absent") as info:
        read(_build(_env(sealed), wrap_params=b"\x05\x00"))
    assert info.value.kind == "malformed"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"version": b"\x02\x01\x02"}, "version 2"),
        ({"kekri_version": b"\x02\x01\x02"}, "KEKRecipientInfo version 2"),
        ({"kekid_extra": b"\x18\x0f20260101000000Z"}, "date"),
        ({"wrap": OID_WRAP192}, "id-aes192-wrap"),
        ({"data_oid": OID_SIGNED}, "1.2.840.113549.1.7.2"),
        ({"gcm": OID_GCM256}, "id-aes256-GCM"),
        ({"icv": b""}, "aes-ICVlen 12"),
        ({"icv": b"\x02\x01\x08"}, "aes-ICVlen 8"),
        ({"recipients_extra": b"\xa2\x00"}, "more than one"),
        ({"before_mac": b"\xa1\x00"}, "authAttrs"),
        ({"after_mac": b"\xa2\x00"}, "unauthAttrs"),
        ({"content_type": OID_SIGNED}, "is not AuthEnvelopedData"),
    ],
)
def test_unsupported_options(sealed: bytes, change: dict[str, bytes], words: str) -> None:
    with pytest.raises(CmsError) as info:
        read(_build(_env(sealed), **change))  # type: ignore[arg-type]
    assert info.value.kind == "unsupported"
    assert words in info.value.reason


def test_other_recipient_kinds_are_unsupported() -> None:
    ktri = _t(0x30, b"\x02\x01\x00")
    der = _t(0x30, OID_AUTH + _t(0xA0, _t(0x30, b"\x02\x01\x00" + _t(0x31, ktri))))
    with pytest.raises(CmsError, match="KeyTransRecipientInfo") as info:
        read(der)
    assert info.value.kind == "unsupported"


def test_enveloped_data_is_refused_with_the_advice() -> None:
    der = _t(0x30, OID_ENV + _t(0xA0, _t(0x30, b"\x02\x01\x02")))
    with pytest.raises(CmsError) as info:
        read(der)
    assert info.value.kind == "unsupported"
    assert info.value.reason == (
        "EnvelopedData has no integrity: send AuthEnvelopedData (openssl cms -encrypt -aes-128-gcm)"
    )


# --- openssl 3 as the peer -----------------------------------------------------------------


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    tool = require_tool("openssl")
    done = subprocess.run([tool, *args], input=data, capture_output=True, check=False, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


CONTENT = b"Content-Type: text/plain\r\n\r\nhello \x00\xff over\r\n.\r\n" + bytes(range(256))


@pytest.mark.parametrize("kek", [KEK, KEK256], ids=["aes128-wrap", "aes256-wrap"])
def test_openssl_decrypts_ours(tmp_path: Path, kek: bytes) -> None:
    body = tmp_path / "ours.der"
    body.write_bytes(seal(CONTENT, kek, KEK_ID))
    out = _openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(body),
        "-secretkey", kek.hex(), "-secretkeyid", KEK_ID.hex(),
    )  # fmt: skip
    assert out == CONTENT


@pytest.mark.parametrize("kek", [KEK, KEK256], ids=["aes128-wrap", "aes256-wrap"])
def test_we_open_openssl_s(tmp_path: Path, kek: bytes) -> None:
    (tmp_path / "m").write_bytes(CONTENT)
    der = _openssl(
        "cms", "-encrypt", "-binary", "-aes-128-gcm", "-in", str(tmp_path / "m"),
        "-secretkey", kek.hex(), "-secretkeyid", KEK_ID.hex(), "-outform", "DER",
    )  # fmt: skip
    assert read(der).wrap_alg == ("aes128-wrap" if len(kek) == 16 else "aes256-wrap")
    assert open_(der, kek, KEK_ID) == CONTENT
    assert _kind(der, kek, b"\x01") == "wrong-key"


def test_openssl_default_enveloped_data_is_unsupported(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(CONTENT)
    der = _openssl(
        "cms", "-encrypt", "-binary", "-in", str(tmp_path / "m"),
        "-secretkey", KEK.hex(), "-secretkeyid", KEK_ID.hex(), "-outform", "DER",
    )  # fmt: skip
    with pytest.raises(CmsError) as info:
        open_(der, KEK, KEK_ID)
    assert info.value.kind == "unsupported"
    assert "EnvelopedData has no integrity" in info.value.reason


def test_openssl_asn1parse_accepts_ours(tmp_path: Path) -> None:
    body = tmp_path / "ours.der"
    body.write_bytes(seal(b"hello", KEK, KEK_ID))
    out = _openssl("asn1parse", "-inform", "DER", "-in", str(body), "-i").decode()
    for name in ("id-smime-ct-authEnvelopedData", "id-aes128-wrap", "pkcs7-data", "aes-128-gcm"):
        assert name in out
    assert "cont [ 2 ]" in out and "INTEGER           :10" in out
    assert "error" not in out.lower()


@settings(max_examples=10)
@given(st.binary(max_size=2000))
def test_property_openssl_decrypts_ours(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    body = tmp_path_factory.mktemp("cms") / "ours.der"
    body.write_bytes(seal(content, KEK, KEK_ID))
    out = _openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(body),
        "-secretkey", KEK.hex(), "-secretkeyid", KEK_ID.hex(),
    )  # fmt: skip
    assert out == content
