"""KEMAC protection: encrypting the key data sub-payloads and MACing the message.

Encryption of the Encr data field (RFC 3830 §4.2.3, §6.2; RFC 6043 §6.2), with the message
keys of :func:`mikey.keys.message_keys` (encr_key, salt_key; RFC 3830 §4.1.4):

- NULL: the chained key data sub-payloads as they are.
- AES-CM-128 (RFC 3830 §4.2.3): AES-128 in counter mode, key encr_key, initial counter block

      IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000

  where S is the 112-bit salt_key, CSB ID the 32-bit CSB ID of the HDR, T the 64-bit
  timestamp of the message's T payload (a 32-bit COUNTER is left-padded with zeros to 64 bits,
  as RFC 3830 §6.6 does for the PRF input) and the trailing 16 zero bits the block counter.
- AES-KW-128 (RFC 6043 §6.2, RFC 3394): AES key wrap with encr_key as key-encryption key and
  the RFC 3394 §2.2.3.1 default initial value. Key wrap takes a whole number of 64-bit blocks,
  at least two; the key data chain is padded with zero bytes up to that size and the padding
  is checked on unwrapping (the padding convention is the project's, see docs/kms.md).

The MAC (RFC 3830 §4.2.4, §5.2): the KEMAC MAC, or the V payload's, is the HMAC with
auth_key over :func:`mac_input`: the encoded message up to that MAC
(:meth:`mikey.message.Message.mac_input`), then the identities of the parties involved (their
ID data, not whole payloads) in the order given, then any other data the mode appends
(``extra``, e.g. the Initiator's timestamp in a verification message). RFC 6043 §5.5 fixes
which identities follow each ticket message and in what order; that table is not in the
project's texts (docs/kms.md, Open points), so the order is the caller's. :func:`protect` fills
the MAC in, :func:`verify` checks it.

Errors are :class:`mikey.errors.MikeyError`: a wrong MAC or a key wrap whose integrity check
fails is ERR 0 (Auth failure); an unknown or unusable encryption algorithm or key is 4
(Invalid EA); a wrong padding or a plaintext that is not a key data chain is 12 (Unspecified).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from mikey import keys as _keys
from mikey.constants import MAC_LENGTH, EncrAlg, ErrorNo, MacAlg
from mikey.errors import MikeyError
from mikey.keys import MessageKeys
from mikey.message import Message
from mikey.payloads import (
    Id,
    IdWithRole,
    Kemac,
    KeyData,
    Timestamp,
    Verification,
    encode_key_data,
    split_key_data,
)

#: An identity appended to the MAC input: an IDR or ID payload (its ID data is used) or the
#: identity bytes themselves.
Identity: TypeAlias = IdWithRole | Id | bytes

#: AES-128 key, AES-CM salt (112 bits) and AES block sizes, in bytes.
AES_KEY_LEN = 16
AES_CM_SALT_LEN = 14
BLOCK = 16
#: RFC 3394 works on 64-bit blocks and needs at least two of them.
KW_BLOCK = 8
KW_MIN = 16


def _ts64(timestamp: Timestamp | int) -> int:
    value = timestamp.value if isinstance(timestamp, Timestamp) else timestamp
    if not 0 <= value < 1 << 64:
        raise MikeyError(ErrorNo.INVALID_TS, "the AES-CM timestamp must fit in 64 bits")
    return value


def aes_cm_iv(salt_key: bytes, csb_id: int, timestamp: Timestamp | int) -> bytes:
    """IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000 (RFC 3830 §4.2.3)."""
    if len(salt_key) != AES_CM_SALT_LEN:
        raise MikeyError(
            ErrorNo.INVALID_EA,
            f"AES-CM needs a {AES_CM_SALT_LEN}-byte salt key, got {len(salt_key)}",
        )
    if not 0 <= csb_id < 1 << 32:
        raise MikeyError(ErrorNo.UNSPECIFIED, "CSB ID must be a 32-bit unsigned int")
    block = bytes(2) + csb_id.to_bytes(4, "big") + _ts64(timestamp).to_bytes(8, "big")
    return bytes(s ^ b for s, b in zip(salt_key, block, strict=True)) + bytes(2)


def aes_cm(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128 in counter mode from the initial counter block ``iv``; its own inverse."""
    if len(key) != AES_KEY_LEN:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-128 needs a 16-byte key, got {len(key)}")
    if len(iv) != BLOCK:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-CM needs a 16-byte IV, got {len(iv)}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def kw_padded_len(length: int) -> int:
    """The length a key data chain of ``length`` bytes is zero-padded to for AES key wrap."""
    return max(KW_MIN, -(-length // KW_BLOCK) * KW_BLOCK)


def wrap(kek: bytes, data: bytes) -> bytes:
    """RFC 3394 key wrap of ``data`` (a multiple of 8 bytes, at least 16) under ``kek``."""
    if len(kek) != AES_KEY_LEN:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-KW-128 needs a 16-byte key, got {len(kek)}")
    if len(data) < KW_MIN or len(data) % KW_BLOCK:
        raise MikeyError(
            ErrorNo.UNSPECIFIED, f"key wrap needs 8-byte blocks, at least 2; got {len(data)} bytes"
        )
    return aes_key_wrap(kek, data)


def unwrap(kek: bytes, data: bytes) -> bytes:
    """RFC 3394 key unwrap; a failed integrity check is ERR 0 (Auth failure)."""
    if len(kek) != AES_KEY_LEN:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-KW-128 needs a 16-byte key, got {len(kek)}")
    if len(data) < KW_MIN + KW_BLOCK or len(data) % KW_BLOCK:
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"wrapped key data must be 8-byte blocks, at least 3; got {len(data)} bytes",
        )
    try:
        return aes_key_unwrap(kek, data)
    except InvalidUnwrap:
        raise MikeyError(ErrorNo.AUTH_FAILURE, "AES key unwrap: integrity check failed") from None


def encrypt(
    plain: bytes, encr_alg: EncrAlg, keys: MessageKeys, csb_id: int, timestamp: Timestamp | int
) -> bytes:
    """The Encr data field for the key data chain ``plain``."""
    encr_alg = EncrAlg(encr_alg)
    if encr_alg is EncrAlg.NULL:
        return plain
    if encr_alg is EncrAlg.AES_CM_128:
        return aes_cm(keys.encr_key, aes_cm_iv(keys.salt_key, csb_id, timestamp), plain)
    return wrap(keys.encr_key, plain + bytes(kw_padded_len(len(plain)) - len(plain)))


def decrypt(
    kemac: Kemac, keys: MessageKeys, csb_id: int, timestamp: Timestamp | int
) -> tuple[KeyData, ...]:
    """The key data sub-payloads of ``kemac`` (no MAC check: see :func:`open_kemac`)."""
    if kemac.encr_alg is EncrAlg.NULL:
        return kemac.key_data()
    if kemac.encr_alg is EncrAlg.AES_CM_128:
        iv = aes_cm_iv(keys.salt_key, csb_id, timestamp)
        items, end = split_key_data(aes_cm(keys.encr_key, iv, kemac.encr_data))
        if end != len(kemac.encr_data):
            raise MikeyError(
                ErrorNo.UNSPECIFIED,
                f"{len(kemac.encr_data) - end} bytes after the last decrypted key data sub-payload",
            )
        return items
    plain = unwrap(keys.encr_key, kemac.encr_data)
    items, end = split_key_data(plain)
    if len(plain) != kw_padded_len(end) or any(plain[end:]):
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"unwrapped key data: {len(plain) - end} padding bytes after {end} bytes of key data; "
            f"expected {kw_padded_len(end) - end} zero bytes",
        )
    return items


def seal(
    key_data: Sequence[KeyData],
    encr_alg: EncrAlg,
    mac_alg: MacAlg,
    keys: MessageKeys,
    csb_id: int,
    timestamp: Timestamp | int,
) -> Kemac:
    """A KEMAC carrying ``key_data`` encrypted with ``encr_alg``; its MAC is zeros of the
    right length until the message is built and :func:`protect` computes it."""
    encr_alg, mac_alg = EncrAlg(encr_alg), MacAlg(mac_alg)
    encr_data = encrypt(encode_key_data(key_data), encr_alg, keys, csb_id, timestamp)
    return Kemac(encr_alg, encr_data, mac_alg, bytes(MAC_LENGTH[mac_alg]))


def _trailer(message: Message) -> tuple[MacAlg, bytes, str]:
    """MAC algorithm, MAC and payload name of the message's last payload."""
    last = message.payloads[-1] if message.payloads else None
    if isinstance(last, Kemac):
        return last.mac_alg, last.mac, "KEMAC"
    if isinstance(last, Verification):
        return last.auth_alg, last.ver_data, "V"
    raise MikeyError(ErrorNo.UNSPECIFIED, "the message does not end with a KEMAC or V payload")


def _check_auth_key(alg: MacAlg, keys: MessageKeys) -> None:
    if alg is not MacAlg.NULL and len(keys.auth_key) != _keys.AUTH_KEY_LENGTH[alg]:
        raise MikeyError(
            ErrorNo.INVALID_MAC,
            f"{alg.name} needs a {_keys.AUTH_KEY_LENGTH[alg]}-byte auth_key, "
            f"got {len(keys.auth_key)}",
        )


def identity_data(identity: Identity) -> bytes:
    """The bytes an identity contributes to a MAC input: the ID data of an IDR or ID payload."""
    if isinstance(identity, IdWithRole | Id):
        return identity.data
    return bytes(identity)


def mac_input(message: Message, identities: Sequence[Identity] = (), extra: bytes = b"") -> bytes:
    """What the MAC (or signature) at the end of ``message`` covers: the message up to it,
    the ID data of ``identities`` in order, then ``extra``."""
    return message.mac_input() + b"".join(identity_data(i) for i in identities) + extra


def protect(
    message: Message,
    keys: MessageKeys,
    extra: bytes = b"",
    *,
    identities: Sequence[Identity] = (),
) -> Message:
    """``message`` with the MAC of its last payload (KEMAC or V) computed with auth_key over
    :func:`mac_input`."""
    alg, _, _ = _trailer(message)
    _check_auth_key(alg, keys)
    data = mac_input(message, identities, extra)
    return message.with_trailer(_keys.mac(alg, keys.auth_key, data))


def verify(
    message: Message,
    keys: MessageKeys,
    extra: bytes = b"",
    *,
    identities: Sequence[Identity] = (),
) -> None:
    """Raise MikeyError(Auth failure) unless the MAC of the last payload (KEMAC or V) is the
    one :func:`protect` would compute. A NULL MAC algorithm is refused: nothing to verify."""
    alg, tag, name = _trailer(message)
    if alg is MacAlg.NULL:
        raise MikeyError(ErrorNo.INVALID_MAC, "the message has a NULL MAC: nothing to verify")
    _check_auth_key(alg, keys)
    if not _keys.verify_mac(alg, keys.auth_key, mac_input(message, identities, extra), tag):
        raise MikeyError(ErrorNo.AUTH_FAILURE, f"the {name} MAC does not verify")


def open_kemac(
    kemac: Kemac,
    keys: MessageKeys,
    csb_id: int,
    timestamp: Timestamp | int,
    *,
    message: Message | None = None,
    extra: bytes = b"",
    identities: Sequence[Identity] = (),
) -> tuple[KeyData, ...]:
    """The key data sub-payloads of ``kemac``. With ``message`` (the message carrying the
    KEMAC), its MAC is verified first (see :func:`verify`)."""
    if message is not None:
        verify(message, keys, extra, identities=identities)
    return decrypt(kemac, keys, csb_id, timestamp)


def open_message(
    message: Message,
    keys: MessageKeys,
    extra: bytes = b"",
    *,
    identities: Sequence[Identity] = (),
) -> tuple[KeyData, ...]:
    """Verify ``message``'s MAC (over :func:`mac_input`), then decrypt its (single) KEMAC with
    the message's CSB ID and the timestamp of its T payload. The KEMAC need not be last: in
    the ticket messages a V payload ends the message."""
    kemacs = message.find(Kemac)
    stamps = message.find(Timestamp)
    if len(kemacs) != 1:
        raise MikeyError(ErrorNo.UNSPECIFIED, f"{len(kemacs)} KEMAC payloads; one expected")
    if len(stamps) != 1:
        raise MikeyError(ErrorNo.INVALID_TS, f"{len(stamps)} T payloads; one expected")
    kemac, stamp = kemacs[0], stamps[0]
    assert isinstance(kemac, Kemac) and isinstance(stamp, Timestamp)
    return open_kemac(
        kemac,
        keys,
        message.header.csb_id,
        stamp,
        message=message,
        extra=extra,
        identities=identities,
    )
