"""Certificate tooling: self-signed certificates, RFC 8122 fingerprints, pinning checks."""

from certs.errors import (
    CertsError,
    InvalidFingerprint,
    LocalCertsError,
    RemoteCertsError,
    UnsupportedHash,
)
from certs.fingerprint import (
    HASH_FUNCS,
    Fingerprint,
    all_fingerprints,
    fingerprint_of,
    matches_any,
    matching_fingerprint,
)
from certs.generate import KEY_TYPES, CertAndKey, generate, load_cert_der, load_pair, write

__all__ = [
    "HASH_FUNCS",
    "KEY_TYPES",
    "CertAndKey",
    "CertsError",
    "Fingerprint",
    "InvalidFingerprint",
    "LocalCertsError",
    "RemoteCertsError",
    "UnsupportedHash",
    "all_fingerprints",
    "fingerprint_of",
    "generate",
    "load_cert_der",
    "load_pair",
    "matches_any",
    "matching_fingerprint",
    "write",
]
