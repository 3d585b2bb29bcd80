"""Certificate fingerprints as used in SDP (RFC 8122, which obsoletes RFC 4572).

A fingerprint is a hash of the DER encoding of a certificate, written in SDP as
``a=fingerprint:<hash-func> <HEX>:<HEX>:...``. Hash names compare case-insensitively, hex
digits are case-insensitive and are normalised to upper case. ``md5`` and ``md2`` are legacy
and refused. Comparison against a presented certificate is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

import attrs

from certs.errors import InvalidFingerprint, UnsupportedHash

#: RFC 8122 hash functions we compute and accept, strongest last.
HASH_FUNCS: tuple[str, ...] = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")
_HASHLIB = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
_DIGEST_SIZE = {name: hashlib.new(algo).digest_size for name, algo in _HASHLIB.items()}
#: Registered in the IANA "Hash Function Textual Names" registry but not to be used.
REFUSED_HASH_FUNCS: frozenset[str] = frozenset({"md5", "md2"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_HEX_PAIR = re.compile(r"^[0-9A-Fa-f]{2}$")

ATTRIBUTE_PREFIX = "a=fingerprint:"


def normalise_hash_func(name: str, *, value: str | None = None) -> str:
    """Return the canonical (lower-case) name of a supported hash function, or raise."""
    lowered = name.lower()
    shown = name if value is None else value
    if lowered in REFUSED_HASH_FUNCS:
        raise UnsupportedHash(shown, lowered, f"hash function {name!r} must not be used (RFC 8122)")
    if lowered not in _HASHLIB:
        if not _TOKEN.match(name):
            raise InvalidFingerprint(shown, f"hash function {name!r} is not a token")
        raise UnsupportedHash(shown, lowered, f"unsupported hash function {name!r}")
    return lowered


@attrs.frozen
class Fingerprint:
    """One certificate fingerprint: a hash function name and the digest bytes."""

    hash_func: str
    digest: bytes

    def __attrs_post_init__(self) -> None:
        canonical = normalise_hash_func(self.hash_func)
        if canonical != self.hash_func:
            raise InvalidFingerprint(self.hash_func, "hash function name must be canonical")
        if len(self.digest) != _DIGEST_SIZE[self.hash_func]:
            raise InvalidFingerprint(
                self.value,
                f"{self.hash_func} digest must be {_DIGEST_SIZE[self.hash_func]} bytes, "
                f"got {len(self.digest)}",
            )

    @property
    def hex(self) -> str:
        """Upper-case colon-separated hex, as RFC 8122 writes it."""
        return self.digest.hex(":").upper()

    @property
    def value(self) -> str:
        """The attribute value: ``sha-256 AB:CD:...`` (also the JSON form)."""
        return f"{self.hash_func} {self.hex}"

    def attribute(self) -> str:
        """The whole SDP line without line ending: ``a=fingerprint:sha-256 AB:...``."""
        return ATTRIBUTE_PREFIX + self.value

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str) -> Fingerprint:
        """Parse an ``a=fingerprint`` value (``<hash-func> <hex>``).

        A leading ``a=fingerprint:`` or ``fingerprint:`` is tolerated so that a whole SDP line
        can be passed. Surrounding white space is ignored; inside, the hash function and the
        hex are separated by one or more spaces.
        """
        # The usual spelling, ``<canonical hash> <HEX:HEX:...>`` with one space and nothing
        # around it: the colons at every third place, the pairs read by bytes.fromhex with the
        # colons as spaces (a same-length replace: far cheaper than removing them). A digest of
        # the hash's size means every pair was two hex digits (white space in a pair is refused
        # or shortens the digest, anything else is refused), so it is the digest the general
        # parser reads, the name and size the ones it checks. Any other spelling, and every
        # error, is the general parser's.
        name, _, hexpart = value.partition(" ")
        usual = _USUAL.get(name)
        if usual is not None and len(hexpart) == usual[1] and cls is Fingerprint:
            if hexpart[2::3] == usual[0]:
                try:
                    digest = _fromhex(hexpart.replace(":", " "))
                except ValueError:
                    digest = b""
                if len(digest) == usual[2]:
                    fp: Fingerprint = _new_object(Fingerprint)  # both fields just checked
                    _set_hash_func(fp, name)
                    _set_digest(fp, digest)
                    return fp
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: str) -> Fingerprint:
        """:meth:`parse` for any spelling (the general parser)."""
        text = value.strip()
        for prefix in (ATTRIBUTE_PREFIX, "fingerprint:"):
            if text[: len(prefix)].lower() == prefix:
                text = text[len(prefix) :].strip()
                break
        parts = text.split()
        if len(parts) != 2:
            raise InvalidFingerprint(value, "expected '<hash-func> <HEX:HEX:...>'")
        name, hexpart = parts
        hash_func = normalise_hash_func(name, value=value)
        pairs = hexpart.split(":")
        if not all(_HEX_PAIR.match(p) for p in pairs):
            raise InvalidFingerprint(value, "fingerprint must be colon-separated hex pairs")
        digest = bytes(int(p, 16) for p in pairs)
        if len(digest) != _DIGEST_SIZE[hash_func]:
            raise InvalidFingerprint(
                value,
                f"{hash_func} fingerprint must have {_DIGEST_SIZE[hash_func]} bytes, "
                f"got {len(digest)}",
            )
        return cls(hash_func, digest)


#: For the usual spelling of each hash function's digest: its colons, its length, its size.
_USUAL = {name: (":" * (size - 1), 3 * size - 1, size) for name, size in _DIGEST_SIZE.items()}
_fromhex = bytes.fromhex
_new_object = object.__new__
_set_hash_func = Fingerprint.__dict__["hash_func"].__set__
_set_digest = Fingerprint.__dict__["digest"].__set__


def fingerprint_of(der: bytes, hash_func: str = "sha-256") -> Fingerprint:
    """Fingerprint of a DER-encoded certificate with the given RFC 8122 hash function."""
    name = normalise_hash_func(hash_func)
    return Fingerprint(name, hashlib.new(_HASHLIB[name], der).digest())


def all_fingerprints(der: bytes) -> list[Fingerprint]:
    """The certificate's fingerprint in every supported hash function."""
    return [fingerprint_of(der, name) for name in HASH_FUNCS]


def matching_fingerprint(
    der: bytes,
    fingerprints: Iterable[Fingerprint],
    *,
    accepted: Iterable[str] | None = None,
) -> Fingerprint | None:
    """Return the first of ``fingerprints`` that the certificate matches, or ``None``.

    Every candidate (of an ``accepted`` hash function, all by default) is compared, with
    :func:`hmac.compare_digest`, so the time taken does not depend on where a digest differs
    or on which candidate matched.
    """
    allowed = set(HASH_FUNCS if accepted is None else (normalise_hash_func(a) for a in accepted))
    found: Fingerprint | None = None
    cache: dict[str, bytes] = {}
    for candidate in fingerprints:
        if candidate.hash_func not in allowed:
            continue
        digest = cache.get(candidate.hash_func)
        if digest is None:
            digest = fingerprint_of(der, candidate.hash_func).digest
            cache[candidate.hash_func] = digest
        if hmac.compare_digest(digest, candidate.digest) and found is None:
            found = candidate
    return found


def matches_any(
    der: bytes,
    fingerprints: Iterable[Fingerprint],
    *,
    accepted: Iterable[str] | None = None,
) -> bool:
    """Does the DER certificate match at least one of the fingerprints? (constant-time)"""
    return matching_fingerprint(der, fingerprints, accepted=accepted) is not None
