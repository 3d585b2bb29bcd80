"""CMS AuthEnvelopedData (RFC 5652, RFC 5083) with one KEKRecipientInfo: the protection of the
MIME body of a KMS-protected SIP MESSAGE.

The structure is the one ``openssl cms -encrypt -binary -aes-128-gcm -secretkey HEX
-secretkeyid HEX -outform DER`` writes, so that a body made here opens there and back::

    ContentInfo { id-ct-authEnvelopedData, [0] EXPLICIT AuthEnvelopedData {
        version 0,
        recipientInfos SET { [2] KEKRecipientInfo {
            version 4, kekid KEKIdentifier { keyIdentifier OCTET STRING },
            keyEncryptionAlgorithm { id-aes128-wrap | id-aes256-wrap },  -- RFC 3565, no params
            encryptedKey OCTET STRING } },                                -- RFC 3394 wrap of CEK
        authEncryptedContentInfo { id-data,
            { id-aes128-GCM, GCMParameters { aes-nonce (12 bytes), aes-ICVlen 16 } },  -- RFC 5084
            [0] IMPLICIT OCTET STRING ciphertext },
        mac OCTET STRING } }                                             -- the 16-byte GCM tag

The content-encryption key (CEK) is a fresh AES-128 key per body, wrapped under the key
encryption key (KEK) the two ends share; there are no authenticated attributes, so the GCM
additional data is empty (RFC 5083 §2.2).

The DER codec is written here, strict and small: one-byte tags only, definite and minimal
lengths, every element checked for its tag, no byte left over at any level, an input of at most
:data:`MAX_CMS_BYTES`. The decoder follows the fixed schema above, so its nesting is bounded by
it (seven levels). Every failure is a :class:`CmsError`; no key byte is ever in its text.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Literal

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

__all__ = [
    "MAX_CMS_BYTES",
    "CmsError",
    "Envelope",
    "ErrorKind",
    "open_",
    "open_message",
    "read",
    "seal",
]

#: The largest CMS body accepted or produced.
MAX_CMS_BYTES = 64 * 1024

ErrorKind = Literal["malformed", "unsupported", "wrong-key", "integrity"]

_CEK_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAPPED_CEK_BYTES = _CEK_BYTES + 8  # RFC 3394: one 64-bit block more than the key
_MAX_KEK_ID_BYTES = 255
_ENVELOPED_REFUSAL = (
    "EnvelopedData has no integrity: send AuthEnvelopedData (openssl cms -encrypt -aes-128-gcm)"
)


class CmsError(Exception):
    """A CMS body that cannot be read or opened.

    ``kind`` is ``"malformed"`` (not strict DER of the expected shape), ``"unsupported"``
    (well formed, but a content type, algorithm or option this profile does not take),
    ``"wrong-key"`` (for another key id, or the KEK does not unwrap the CEK) or
    ``"integrity"`` (the GCM tag does not match: the body was altered). ``reason`` says what was
    wrong; it never carries key material."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        self.kind: ErrorKind = kind
        self.reason = reason
        super().__init__(f"CMS {kind}: {reason}")


# --- DER encoding -------------------------------------------------------------------------

_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_OCTET_STRING = 0x04
_OID = 0x06
_CTX0_CONSTRUCTED = 0xA0
_CTX1_CONSTRUCTED = 0xA1
_CTX2_CONSTRUCTED = 0xA2
_CTX0_PRIMITIVE = 0x80

_TAG_NAMES = {
    _SEQUENCE: "SEQUENCE",
    _SET: "SET",
    _INTEGER: "INTEGER",
    _OCTET_STRING: "OCTET STRING",
    _OID: "OBJECT IDENTIFIER",
    _CTX0_CONSTRUCTED: "[0] constructed",
    _CTX1_CONSTRUCTED: "[1] constructed",
    _CTX2_CONSTRUCTED: "[2] constructed",
    _CTX0_PRIMITIVE: "[0] primitive",
}


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _integer(value: int) -> bytes:
    return _tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _oid(dotted: str) -> bytes:
    """The DER of an OBJECT IDENTIFIER (the whole TLV)."""
    arcs = [int(a) for a in dotted.split(".")]
    subids = [arcs[0] * 40 + arcs[1], *arcs[2:]]
    out = bytearray()
    for sub in subids:
        chunk = [sub & 0x7F]
        sub >>= 7
        while sub:
            chunk.append(0x80 | (sub & 0x7F))
            sub >>= 7
        out.extend(reversed(chunk))
    return _tlv(_OID, bytes(out))


OID_DATA = _oid("1.2.840.113549.1.7.1")
OID_ENVELOPED_DATA = _oid("1.2.840.113549.1.7.3")
OID_AUTH_ENVELOPED_DATA = _oid("1.2.840.113549.1.9.16.1.23")
OID_AES128_WRAP = _oid("2.16.840.1.101.3.4.1.5")
OID_AES256_WRAP = _oid("2.16.840.1.101.3.4.1.45")
OID_AES128_GCM = _oid("2.16.840.1.101.3.4.1.6")

#: key-wrap algorithm name -> (its OID TLV, the KEK length it takes)
_WRAP_ALGS: dict[str, tuple[bytes, int]] = {
    "aes128-wrap": (OID_AES128_WRAP, 16),
    "aes256-wrap": (OID_AES256_WRAP, 32),
}
_WRAP_BY_OID = {oid: name for name, (oid, _) in _WRAP_ALGS.items()}
_WRAP_BY_KEK_LENGTH = {size: name for name, (_, size) in _WRAP_ALGS.items()}

_OTHER_WRAP_OIDS = {
    _oid("2.16.840.1.101.3.4.1.25"): "id-aes192-wrap",
    _oid("2.16.840.1.101.3.4.1.8"): "id-aes128-wrap-pad",
    _oid("1.2.840.113549.1.9.16.3.6"): "id-alg-CMS3DESwrap",
}
_OTHER_CONTENT_ALGS = {
    _oid("2.16.840.1.101.3.4.1.26"): "id-aes192-GCM",
    _oid("2.16.840.1.101.3.4.1.46"): "id-aes256-GCM",
    _oid("2.16.840.1.101.3.4.1.7"): "id-aes128-CCM",
}


def _oid_text(tlv: bytes) -> str:
    """Dotted text of an OID TLV from the input (only ever shown in a reason)."""
    content = tlv[2:] if len(tlv) >= 2 else b""
    subids: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            subids.append(value)
            value = 0
    if not subids or content[-1] & 0x80:
        return "0x" + content.hex()
    first = subids[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in [*head, *subids[1:]])


# --- DER decoding -------------------------------------------------------------------------


def _malformed(reason: str) -> CmsError:
    return CmsError("malformed", reason)


def _unsupported(reason: str) -> CmsError:
    return CmsError("unsupported", reason)


class _Reader:
    """Consecutive DER elements inside ``data[start:end]``."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self._pos >= self._end

    def peek_tag(self) -> int | None:
        return None if self.at_end() else self._data[self._pos]

    def _header(self, what: str) -> tuple[int, int, int]:
        """(tag, content start, content end) of the element at the position."""
        data, pos, end = self._data, self._pos, self._end
        if end - pos < 2:
            raise _malformed(f"{what}: truncated at byte {pos}")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise _malformed(f"{what}: a high tag number at byte {pos} (not used by this profile)")
        first = data[pos + 1]
        start = pos + 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise _malformed(f"{what}: indefinite length at byte {pos} (DER needs definite)")
        else:
            count = first & 0x7F
            if count > 3:
                raise _malformed(f"{what}: a {count}-byte length at byte {pos} is too large")
            if end - start < count:
                raise _malformed(f"{what}: truncated length at byte {pos}")
            raw = data[start : start + count]
            if raw[0] == 0:
                raise _malformed(f"{what}: non-minimal length at byte {pos} (leading zero)")
            length = int.from_bytes(raw, "big")
            if length < 0x80:
                raise _malformed(
                    f"{what}: non-minimal length at byte {pos} (long form for {length})"
                )
            start += count
        if length > end - start:
            raise _malformed(f"{what}: {length} content bytes announced at byte {pos}, fewer left")
        return tag, start, start + length

    def element(self, tag: int, what: str) -> tuple[int, int]:
        """Read one element of ``tag``; (content start, content end) in the input."""
        found, start, stop = self._header(what)
        if found != tag:
            raise _malformed(
                f"{what}: expected {_TAG_NAMES.get(tag, hex(tag))} (tag 0x{tag:02x}) "
                f"at byte {self._pos}, found tag 0x{found:02x}"
            )
        self._pos = stop
        return start, stop

    def content(self, tag: int, what: str) -> bytes:
        start, stop = self.element(tag, what)
        return self._data[start:stop]

    def whole(self, tag: int, what: str) -> bytes:
        """Read one element of ``tag``; its whole TLV."""
        begin = self._pos
        self.element(tag, what)
        return self._data[begin : self._pos]

    def inner(self, tag: int, what: str) -> _Reader:
        start, stop = self.element(tag, what)
        return _Reader(self._data, start, stop)

    def integer(self, what: str) -> int:
        raw = self.content(_INTEGER, what)
        if not raw:
            raise _malformed(f"{what}: an INTEGER without content")
        if len(raw) > 1 and (
            (raw[0] == 0x00 and raw[1] < 0x80) or (raw[0] == 0xFF and raw[1] >= 0x80)
        ):
            raise _malformed(f"{what}: non-minimal INTEGER")
        if len(raw) > 4:
            raise _unsupported(f"{what}: an INTEGER of {len(raw)} bytes")
        return int.from_bytes(raw, "big", signed=True)

    def oid(self, what: str) -> bytes:
        tlv = self.whole(_OID, what)
        content = tlv[2:]
        if len(tlv) > 2 + 0x7F or tlv[1] & 0x80:
            raise _malformed(f"{what}: an OBJECT IDENTIFIER of more than 127 bytes")
        if not content or content[-1] & 0x80 or content[0] == 0x80:
            raise _malformed(f"{what}: not a valid OBJECT IDENTIFIER encoding")
        for i in range(1, len(content)):
            if content[i] == 0x80 and not content[i - 1] & 0x80:
                raise _malformed(f"{what}: non-minimal OBJECT IDENTIFIER arc")
        return tlv

    def done(self, what: str) -> None:
        if not self.at_end():
            raise _malformed(f"{what}: {self._end - self._pos} bytes left over at byte {self._pos}")


# --- the envelope -------------------------------------------------------------------------


@attrs.frozen
class Envelope:
    """What a CMS body says without a key: the KEK it is for and the encrypted parts."""

    kek_id: bytes
    wrap_alg: str  # "aes128-wrap" (16-byte KEK) or "aes256-wrap" (32-byte KEK)
    nonce: bytes  # the 12-byte GCM nonce
    encrypted_key: bytes  # the RFC 3394 wrap of the 16-byte CEK
    ciphertext: bytes  # encryptedContent: the GCM ciphertext without the tag
    mac: bytes  # the 16-byte GCM tag

    @property
    def kek_bytes(self) -> int:
        """The length of the KEK that ``wrap_alg`` takes."""
        return _WRAP_ALGS[self.wrap_alg][1]


def _encode(env: Envelope) -> bytes:
    wrap_oid = _WRAP_ALGS[env.wrap_alg][0]
    kekri = _tlv(
        _CTX2_CONSTRUCTED,
        _integer(4)
        + _tlv(_SEQUENCE, _tlv(_OCTET_STRING, env.kek_id))
        + _tlv(_SEQUENCE, wrap_oid)
        + _tlv(_OCTET_STRING, env.encrypted_key),
    )
    gcm = _tlv(
        _SEQUENCE,
        OID_AES128_GCM + _tlv(_SEQUENCE, _tlv(_OCTET_STRING, env.nonce) + _integer(_TAG_BYTES)),
    )
    aeci = _tlv(_SEQUENCE, OID_DATA + gcm + _tlv(_CTX0_PRIMITIVE, env.ciphertext))
    aed = _tlv(
        _SEQUENCE,
        _integer(0) + _tlv(_SET, kekri) + aeci + _tlv(_OCTET_STRING, env.mac),
    )
    return _tlv(_SEQUENCE, OID_AUTH_ENVELOPED_DATA + _tlv(_CTX0_CONSTRUCTED, aed))


def seal(
    content: bytes,
    kek: bytes,
    kek_id: bytes,
    *,
    random: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt ``content`` (the MIME entity) as the DER of a CMS AuthEnvelopedData for ``kek``.

    ``kek`` is 16 bytes (id-aes128-wrap) or 32 bytes (id-aes256-wrap); ``kek_id`` is the
    keyIdentifier the receiver finds its KEK by (1 to 255 bytes). A fresh CEK and GCM nonce come
    from ``random``. A bad key length or a body larger than :data:`MAX_CMS_BYTES` is the
    caller's error: ``ValueError``."""
    wrap_alg = _WRAP_BY_KEK_LENGTH.get(len(kek))
    if wrap_alg is None:
        raise ValueError(f"a KEK is 16 or 32 bytes, not {len(kek)}")
    if not 1 <= len(kek_id) <= _MAX_KEK_ID_BYTES:
        raise ValueError(f"a key id is 1 to {_MAX_KEK_ID_BYTES} bytes, not {len(kek_id)}")
    if len(content) > MAX_CMS_BYTES:
        raise ValueError(f"content of {len(content)} bytes does not fit in {MAX_CMS_BYTES}")
    cek = random(_CEK_BYTES)
    nonce = random(_NONCE_BYTES)
    if len(cek) != _CEK_BYTES or len(nonce) != _NONCE_BYTES:
        raise ValueError("the random source returned fewer bytes than asked for")
    sealed = AESGCM(cek).encrypt(nonce, bytes(content), None)
    der = _encode(
        Envelope(
            kek_id=bytes(kek_id),
            wrap_alg=wrap_alg,
            nonce=nonce,
            encrypted_key=aes_key_wrap(bytes(kek), cek),
            ciphertext=sealed[:-_TAG_BYTES],
            mac=sealed[-_TAG_BYTES:],
        )
    )
    if len(der) > MAX_CMS_BYTES:
        raise ValueError(f"the sealed body of {len(der)} bytes exceeds {MAX_CMS_BYTES}")
    return der


def read(der: bytes) -> Envelope:
    """Parse a CMS body (no key needed). Raises :class:`CmsError` ``malformed`` or
    ``unsupported``."""
    if not isinstance(der, bytes | bytearray):
        raise TypeError("a CMS body is bytes")
    der = bytes(der)
    if len(der) > MAX_CMS_BYTES:
        raise _malformed(f"{len(der)} bytes: larger than {MAX_CMS_BYTES}")
    top = _Reader(der)
    info = top.inner(_SEQUENCE, "ContentInfo")
    top.done("ContentInfo")
    content_type = info.oid("ContentInfo.contentType")
    explicit = info.inner(_CTX0_CONSTRUCTED, "ContentInfo.content")
    info.done("ContentInfo")
    if content_type == OID_ENVELOPED_DATA:
        raise _unsupported(_ENVELOPED_REFUSAL)
    if content_type != OID_AUTH_ENVELOPED_DATA:
        raise _unsupported(
            f"content type {_oid_text(content_type)} is not AuthEnvelopedData "
            "(1.2.840.113549.1.9.16.1.23)"
        )
    aed = explicit.inner(_SEQUENCE, "AuthEnvelopedData")
    explicit.done("ContentInfo.content")

    version = aed.integer("AuthEnvelopedData.version")
    if version != 0:
        raise _unsupported(f"AuthEnvelopedData version {version} (0 expected)")
    if aed.peek_tag() == _CTX0_CONSTRUCTED:
        raise _unsupported("AuthEnvelopedData with originatorInfo")
    recipients = aed.inner(_SET, "AuthEnvelopedData.recipientInfos")
    kek_id, wrap_alg, encrypted_key = _kek_recipient(recipients)

    aeci = aed.inner(_SEQUENCE, "authEncryptedContentInfo")
    inner_type = aeci.oid("authEncryptedContentInfo.contentType")
    if inner_type != OID_DATA:
        raise _unsupported(f"encrypted content type {_oid_text(inner_type)} (id-data expected)")
    nonce = _gcm_parameters(aeci.inner(_SEQUENCE, "contentEncryptionAlgorithm"))
    if aeci.at_end():
        raise _unsupported("detached content (no encryptedContent)")
    ciphertext = aeci.content(_CTX0_PRIMITIVE, "encryptedContent")
    aeci.done("authEncryptedContentInfo")

    if aed.peek_tag() == _CTX1_CONSTRUCTED:
        raise _unsupported("AuthEnvelopedData with authAttrs")
    mac = aed.content(_OCTET_STRING, "AuthEnvelopedData.mac")
    if len(mac) != _TAG_BYTES:
        raise _malformed(f"mac is {len(mac)} bytes; aes-ICVlen says {_TAG_BYTES}")
    if aed.peek_tag() == _CTX2_CONSTRUCTED:
        raise _unsupported("AuthEnvelopedData with unauthAttrs")
    aed.done("AuthEnvelopedData")
    return Envelope(
        kek_id=kek_id,
        wrap_alg=wrap_alg,
        nonce=nonce,
        encrypted_key=encrypted_key,
        ciphertext=ciphertext,
        mac=mac,
    )


_OTHER_RECIPIENTS = {
    _SEQUENCE: "KeyTransRecipientInfo",
    _CTX1_CONSTRUCTED: "KeyAgreeRecipientInfo",
    0xA3: "PasswordRecipientInfo",
    0xA4: "OtherRecipientInfo",
}


def _kek_recipient(recipients: _Reader) -> tuple[bytes, str, bytes]:
    """(keyIdentifier, wrap algorithm name, encryptedKey) of the one KEKRecipientInfo."""
    tag = recipients.peek_tag()
    if tag is None:
        raise _malformed("recipientInfos is empty")
    if tag in _OTHER_RECIPIENTS:
        raise _unsupported(f"a {_OTHER_RECIPIENTS[tag]} (only KEKRecipientInfo is taken)")
    kekri = recipients.inner(_CTX2_CONSTRUCTED, "KEKRecipientInfo")
    if not recipients.at_end():
        raise _unsupported("more than one recipientInfo")
    version = kekri.integer("KEKRecipientInfo.version")
    if version != 4:
        raise _unsupported(f"KEKRecipientInfo version {version} (4 expected)")
    kekid = kekri.inner(_SEQUENCE, "KEKIdentifier")
    kek_id = kekid.content(_OCTET_STRING, "KEKIdentifier.keyIdentifier")
    if not kekid.at_end():
        raise _unsupported("KEKIdentifier with a date or other key attribute")
    if not 1 <= len(kek_id) <= _MAX_KEK_ID_BYTES:
        raise _unsupported(f"a keyIdentifier of {len(kek_id)} bytes")
    alg = kekri.inner(_SEQUENCE, "keyEncryptionAlgorithm")
    alg_oid = alg.oid("keyEncryptionAlgorithm.algorithm")
    wrap_alg = _WRAP_BY_OID.get(alg_oid)
    if wrap_alg is None:
        name = _OTHER_WRAP_OIDS.get(alg_oid, _oid_text(alg_oid))
        raise _unsupported(f"key encryption algorithm {name} (id-aes128-wrap or id-aes256-wrap)")
    if not alg.at_end():
        raise _malformed("AES key wrap parameters must be absent (RFC 3565 §2.3.2)")
    encrypted_key = kekri.content(_OCTET_STRING, "KEKRecipientInfo.encryptedKey")
    kekri.done("KEKRecipientInfo")
    if len(encrypted_key) != _WRAPPED_CEK_BYTES:
        raise _malformed(
            f"encryptedKey is {len(encrypted_key)} bytes; a wrapped AES-128 CEK is "
            f"{_WRAPPED_CEK_BYTES}"
        )
    return kek_id, wrap_alg, encrypted_key


def _gcm_parameters(alg: _Reader) -> bytes:
    """The nonce of an id-aes128-GCM AlgorithmIdentifier with a 16-byte ICV."""
    alg_oid = alg.oid("contentEncryptionAlgorithm.algorithm")
    if alg_oid != OID_AES128_GCM:
        name = _OTHER_CONTENT_ALGS.get(alg_oid, _oid_text(alg_oid))
        raise _unsupported(f"content encryption algorithm {name} (id-aes128-GCM expected)")
    params = alg.inner(_SEQUENCE, "GCMParameters")
    alg.done("contentEncryptionAlgorithm")
    nonce = params.content(_OCTET_STRING, "GCMParameters.aes-nonce")
    if params.at_end():
        raise _unsupported("aes-ICVlen 12 (the default); 16 expected")
    icv = params.integer("GCMParameters.aes-ICVlen")
    params.done("GCMParameters")
    if icv == 12:
        raise _malformed("aes-ICVlen 12 is the DEFAULT and DER omits it")
    if icv != _TAG_BYTES:
        raise _unsupported(f"aes-ICVlen {icv}; 16 expected")
    if len(nonce) != _NONCE_BYTES:
        raise _unsupported(f"a GCM nonce of {len(nonce)} bytes; 12 expected")
    return nonce


def open_message(der: bytes, kek: bytes, kek_id: bytes) -> bytes:
    """The content of a CMS body sealed for ``kek`` under ``kek_id``.

    Raises :class:`CmsError`: ``malformed``/``unsupported`` from :func:`read`, ``wrong-key`` if
    the body is for another key id, for a KEK of another length, or the KEK does not unwrap
    its CEK, ``integrity`` if the GCM tag does not match."""
    env = read(der)
    if not hmac.compare_digest(env.kek_id, bytes(kek_id)):
        raise CmsError("wrong-key", f"the body is for key id {env.kek_id.hex()}")
    if len(kek) != env.kek_bytes:
        raise CmsError(
            "wrong-key",
            f"the body's CEK is wrapped with {env.wrap_alg} (a {env.kek_bytes}-byte KEK); "
            f"the KEK given is {len(kek)} bytes",
        )
    try:
        cek = aes_key_unwrap(bytes(kek), env.encrypted_key)
    except InvalidUnwrap:
        raise CmsError(
            "wrong-key", "the KEK does not unwrap the content-encryption key (RFC 3394 check)"
        ) from None
    try:
        return AESGCM(cek).decrypt(env.nonce, env.ciphertext + env.mac, None)
    except InvalidTag:
        raise CmsError("integrity", "the GCM tag does not match: the body was altered") from None


#: The same as :func:`open_message`.
open_ = open_message
