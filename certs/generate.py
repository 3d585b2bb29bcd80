"""Self-signed certificates and keys for UEs, the AGW and the Iq link.

Trust in e2ae comes from the fingerprint carried in integrity-protected signalling, not from a
CA, so every certificate here is self-signed. Time is a parameter (``now``).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Literal

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certs.errors import LocalCertsError
from certs.fingerprint import Fingerprint, fingerprint_of

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048"]
KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p384", "rsa-2048")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@attrs.frozen
class CertAndKey:
    """A certificate with its private key, and the encodings the rest of the lab needs."""

    name: str
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def fingerprint(self, hash_func: str = "sha-256") -> Fingerprint:
        return fingerprint_of(self.cert_der, hash_func)


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise LocalCertsError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def generate(
    name: str,
    *,
    key_type: str = "ec-p256",
    days: int = 365,
    now: datetime.datetime,
) -> CertAndKey:
    """A new self-signed certificate with CN=``name``, valid from ``now`` - 1 h for ``days``."""
    if not name:
        raise LocalCertsError("certificate name must not be empty")
    if days < 1:
        raise LocalCertsError(f"--days must be at least 1, got {days}")
    key = _new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = now - datetime.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    cert = builder.sign(key, hashes.SHA256())
    return CertAndKey(name=name, cert=cert, key=key)


def paths_for(name: str, out: Path) -> tuple[Path, Path]:
    """Where :func:`write` puts ``name``'s certificate and key below ``out``."""
    return out / f"{name}.crt", out / f"{name}.key"


def write(pair: CertAndKey, out: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.crt`` and ``NAME.key`` (mode 0600) below ``out``; never overwrite unless
    ``force``. Returns the two paths."""
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = paths_for(pair.name, out)
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise LocalCertsError(f"{path} exists; use --force to overwrite")
    if key_path.exists():
        key_path.unlink()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pair.key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(pair.cert_pem)
    return cert_path, key_path


def load_cert_der(path: Path) -> bytes:
    """DER bytes of a PEM or DER certificate file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LocalCertsError(f"cannot read certificate {path}: {exc.strerror}") from exc
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise LocalCertsError(f"{path} is not a PEM or DER certificate") from exc
    return cert.public_bytes(serialization.Encoding.DER)


def load_pair(cert: Path, key: Path) -> CertAndKey:
    """The one PEM loader for a certificate and its private key (EC or RSA, unencrypted);
    named after the certificate file's stem."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise LocalCertsError(f"cannot load certificate {cert} / key {key}: {exc}") from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise LocalCertsError(f"unsupported key type in {key}")
    return CertAndKey(cert.stem, certificate, private)
