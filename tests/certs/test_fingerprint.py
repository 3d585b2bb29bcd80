from __future__ import annotations

import datetime
import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

import certs
from certs import Fingerprint, InvalidFingerprint, UnsupportedHash
from tests.conftest import require_tool, run_e2ae

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def pair() -> certs.CertAndKey:
    return certs.generate("ue-a", now=NOW)


def test_fingerprint_matches_hashlib(pair: certs.CertAndKey) -> None:
    der = pair.cert_der
    for name, algo in [("sha-1", "sha1"), ("sha-256", "sha256"), ("sha-512", "sha512")]:
        fp = certs.fingerprint_of(der, name)
        assert fp.digest == hashlib.new(algo, der).digest()
        assert fp.hex == ":".join(f"{b:02X}" for b in hashlib.new(algo, der).digest())


def test_all_hashes_listed(pair: certs.CertAndKey) -> None:
    names = [fp.hash_func for fp in certs.all_fingerprints(pair.cert_der)]
    assert names == ["sha-1", "sha-224", "sha-256", "sha-384", "sha-512"]


def test_parse_normalises_case(pair: certs.CertAndKey) -> None:
    fp = pair.fingerprint("sha-256")
    parsed = Fingerprint.parse("SHA-256 " + fp.hex.lower())
    assert parsed == fp
    assert parsed.value == "sha-256 " + fp.hex
    assert Fingerprint.parse("a=fingerprint:" + fp.value) == fp
    assert Fingerprint.parse("  sha-256   " + fp.hex + " \r\n") == fp


@pytest.mark.parametrize("name", ["md5", "MD5", "md2"])
def test_legacy_hashes_refused(name: str) -> None:
    with pytest.raises(UnsupportedHash, match="must not be used"):
        Fingerprint.parse(f"{name} " + ":".join(["AB"] * 16))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("sha-256", "expected"),
        ("sha-256 AB:CD", "32 bytes"),
        ("sha-256 " + ":".join(["ZZ"] * 32), "hex pairs"),
        ("sha-256 " + "AB" * 32, "hex pairs"),
        ("sha-256 " + ":".join(["A"] * 32), "hex pairs"),
        ("sha-999 AB:CD", "unsupported hash function"),
        ("sha-256 AB:CD extra", "expected"),
    ],
)
def test_parse_errors_say_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidFingerprint, match=reason) as info:
        Fingerprint.parse(value)
    assert info.value.value == value


def test_matches_any(pair: certs.CertAndKey) -> None:
    other = certs.generate("impostor", now=NOW)
    mine = [pair.fingerprint("sha-384"), pair.fingerprint("sha-1")]
    assert certs.matches_any(pair.cert_der, mine)
    assert not certs.matches_any(other.cert_der, mine)
    assert certs.matching_fingerprint(pair.cert_der, mine) == mine[0]
    # Only one of several fingerprints needs to match (RFC 8122 section 5).
    assert certs.matches_any(pair.cert_der, [other.fingerprint(), pair.fingerprint("sha-512")])
    # A hash function the verifier does not accept never matches.
    assert not certs.matches_any(pair.cert_der, mine, accepted=["sha-256"])
    assert not certs.matches_any(pair.cert_der, [])


def test_one_flipped_bit_does_not_match(pair: certs.CertAndKey) -> None:
    fp = pair.fingerprint()
    for i in range(len(fp.digest)):
        flipped = bytearray(fp.digest)
        flipped[i] ^= 0x01
        assert not certs.matches_any(pair.cert_der, [Fingerprint("sha-256", bytes(flipped))])


@given(st.sampled_from(certs.HASH_FUNCS), st.binary(min_size=1, max_size=200))
def test_parse_roundtrip(name: str, data: bytes) -> None:
    fp = certs.fingerprint_of(data, name)
    assert Fingerprint.parse(fp.value) == fp
    assert Fingerprint.parse(fp.attribute().lower()) == fp


@pytest.mark.parametrize("key_type", certs.KEY_TYPES)
def test_generate_key_types(key_type: str) -> None:
    pair = certs.generate("agw", key_type=key_type, days=2, now=NOW)
    cert = pair.cert
    assert cert.subject == cert.issuer
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(
        days=2, hours=1
    )
    cert.verify_directly_issued_by(cert)


def test_cli_new_and_fingerprint(tmp_path: Path) -> None:
    result = run_e2ae(["certs", "new", "ue-b", "--out", str(tmp_path), "--key", "ec-p384"])
    assert result.returncode == 0, result.stderr
    crt, key = tmp_path / "ue-b.crt", tmp_path / "ue-b.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    der = certs.load_cert_der(crt)
    line = result.stdout.decode().strip()
    assert line == certs.fingerprint_of(der).attribute()
    assert x509.load_pem_x509_certificate(crt.read_bytes()).subject.rfc4514_string() == "CN=ue-b"

    again = run_e2ae(["certs", "new", "ue-b", "--out", str(tmp_path)])
    assert again.returncode != 0
    assert b"--force" in again.stderr
    assert certs.load_cert_der(crt) == der  # untouched

    forced = run_e2ae(["certs", "new", "ue-b", "--out", str(tmp_path), "--force"])
    assert forced.returncode == 0
    assert certs.load_cert_der(crt) != der

    fp_all = run_e2ae(["certs", "fingerprint", str(crt), "--hash", "all"])
    assert fp_all.returncode == 0
    lines = fp_all.stdout.decode().splitlines()
    assert [ln.split()[0] for ln in lines] == ["a=fingerprint:" + n for n in certs.HASH_FUNCS]
    new_der = certs.load_cert_der(crt)
    assert lines == [fp.attribute() for fp in certs.all_fingerprints(new_der)]

    sha1 = run_e2ae(["certs", "fingerprint", str(crt), "--hash", "sha-1"])
    assert sha1.stdout.decode().strip() == certs.fingerprint_of(new_der, "sha-1").attribute()


def test_cli_fingerprint_bad_file(tmp_path: Path) -> None:
    bogus = tmp_path / "x.crt"
    bogus.write_text("not a certificate")
    result = run_e2ae(["certs", "fingerprint", str(bogus)])
    assert result.returncode != 0
    assert b"Traceback" not in result.stderr
    assert b"not a PEM or DER certificate" in result.stderr


def test_fingerprint_agrees_with_openssl(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    pair = certs.generate("x", now=NOW)
    crt, _ = certs.write(pair, tmp_path)
    out = subprocess.run(
        [openssl, "x509", "-in", str(crt), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    assert out.split("=", 1)[1] == pair.fingerprint("sha-256").hex
