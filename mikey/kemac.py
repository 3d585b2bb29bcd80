"""KEMAC protection: encrypting the key data sub-payloads and MACing the message.

Encryption of the Encr data field (RFC 3830 §4.2.3; RFC 6043 §6.2), with message keys from
:mod:`mikey.keys` (encr_key, salt_key):

- NULL: the chained key data sub-payloads as they are.
- AES-CM-128 (RFC 3830 §4.2.3) and AES-CM-256 (RFC 6043 §6.2, the same with a 256-bit key):
  AES in counter mode as SRTP defines it, key encr_key, initial counter block

      IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000

  where S is the 112-bit salt_key, CSB ID the 32-bit CSB ID of the HDR and T "the 64-bit
  timestamp sent by the Initiator"; a 32-bit COUNTER is left-padded with zeros, an NTP-UTC-32
  becomes the 64-bit NTP-UTC with a zero fraction (RFC 6043 §6.3). The last 16 bits are the
  block counter.
- AES-KW-128 (RFC 3830 §4.2.3, RFC 3394): AES key wrap with encr_key as key-encryption key and
  the 64-bit salt_key S as the key wrap IV ("the key wrap IV is then set to S"). Key wrap
  takes whole 64-bit blocks, at least two; the key data chain is padded with zero bytes up to
  that size and the padding is checked on unwrapping (RFC 3830 gives no padding rule: the
  convention is the project's, see docs/kms.md).

The MAC (RFC 3830 §4.2.4, §5.2; RFC 6043 §5.5): the KEMAC MAC, or the V payload's, is the HMAC
with auth_key over the encoded message up to that MAC (:meth:`mikey.message.Message.mac_input`)
followed by what the mode appends. :func:`ticket_mac_input` builds that for the MIKEY-TICKET
messages from RFC 6043 Table 5.2 (initial messages: the identities, not whole payloads, of the
parties; responses: the whole initial message; TRANSFER_INIT without the Initiator Data);
:func:`mac_input` appends identities and other data in the caller's order. :func:`protect`
fills the MAC in, :func:`verify` checks it; both take the covered data ready-made through
``mac_data`` or build it with :func:`mac_input`.

Errors are :class:`mikey.errors.MikeyError`: a wrong MAC or a key wrap whose integrity check
fails is ERR 0 (Auth failure); an unknown or unusable encryption algorithm or key is 4
(Invalid EA); an auth_key of the wrong length 3 (Invalid MAC); a missing identity 7 (Invalid
ID); a wrong padding or a plaintext that is not a key data chain is 12 (Unspecified).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TypeAlias

import attrs
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mikey import keys as _keys
from mikey.constants import (
    MAC_LENGTH,
    DataType,
    EncrAlg,
    ErrorNo,
    IdRole,
    MacAlg,
    PrfFunc,
    TsType,
)
from mikey.errors import MikeyError
from mikey.keys import MessageKeys
from mikey.message import Message
from mikey.payloads import (
    Id,
    IdWithRole,
    Kemac,
    KeyData,
    Signature,
    Ticket,
    Timestamp,
    Verification,
    encode_key_data,
    encode_payload_chain,
    split_key_data,
)

#: An identity appended to the MAC input: an IDR or ID payload (its ID data is used) or the
#: identity bytes themselves.
Identity: TypeAlias = IdWithRole | Id | bytes

#: AES-128 key, AES-CM salt (112 bits) and AES block sizes, in bytes.
AES_KEY_LEN = 16
AES_CM_SALT_LEN = 14
BLOCK = 16
#: RFC 3394 works on 64-bit blocks and needs at least two of them; its default IV.
KW_BLOCK = 8
KW_MIN = 16
KW_DEFAULT_IV = b"\xa6" * 8
_AES_CM_KEY_LEN = {EncrAlg.AES_CM_128: 16, EncrAlg.AES_CM_256: 32}


def _ts64(timestamp: Timestamp | int) -> int:
    if isinstance(timestamp, Timestamp):
        value = timestamp.value
        if timestamp.ts_type is TsType.NTP_UTC_32:
            value <<= 32  # RFC 6043 §6.3: padded to a 64-bit NTP-UTC, fraction zero
    else:
        value = timestamp
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
    """AES (128- or 256-bit key) in counter mode from the initial counter block ``iv``; its own
    inverse. RFC 3830 §4.2.3 limits it to 2^16 blocks (the 16-bit block counter)."""
    if len(key) not in (16, 32):
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-CM needs a 16- or 32-byte key, got {len(key)}")
    if len(data) > BLOCK << 16:
        raise MikeyError(ErrorNo.UNSPECIFIED, "AES-CM encrypts at most 2^16 blocks")
    if len(iv) != BLOCK:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-CM needs a 16-byte IV, got {len(iv)}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def kw_padded_len(length: int) -> int:
    """The length a key data chain of ``length`` bytes is zero-padded to for AES key wrap."""
    return max(KW_MIN, -(-length // KW_BLOCK) * KW_BLOCK)


def _ecb(kek: bytes, block: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(kek), modes.ECB())  # noqa: S305  the one-block AES of RFC 3394
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(block) + ctx.finalize()


def _check_kek(kek: bytes) -> None:
    if len(kek) != AES_KEY_LEN:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-KW-128 needs a 16-byte key, got {len(kek)}")


def _check_kw_iv(iv: bytes) -> None:
    if len(iv) != KW_BLOCK:
        raise MikeyError(ErrorNo.INVALID_EA, f"AES-KW needs a 64-bit IV (salt_key), got {len(iv)}")


def wrap(kek: bytes, data: bytes, iv: bytes = KW_DEFAULT_IV) -> bytes:
    """RFC 3394 §2.2.1 key wrap of ``data`` (a multiple of 8 bytes, at least 16) under ``kek``
    with the initial value ``iv`` (RFC 3830 §4.2.3: the 64-bit salt_key)."""
    _check_kek(kek)
    _check_kw_iv(iv)
    if len(data) < KW_MIN or len(data) % KW_BLOCK:
        raise MikeyError(
            ErrorNo.UNSPECIFIED, f"key wrap needs 8-byte blocks, at least 2; got {len(data)} bytes"
        )
    n = len(data) // KW_BLOCK
    a = iv
    r = [data[i : i + KW_BLOCK] for i in range(0, len(data), KW_BLOCK)]
    for j in range(6):
        for i in range(n):
            b = _ecb(kek, a + r[i])
            t = n * j + i + 1
            a = (int.from_bytes(b[:8], "big") ^ t).to_bytes(8, "big")
            r[i] = b[8:]
    return a + b"".join(r)


def unwrap(kek: bytes, data: bytes, iv: bytes = KW_DEFAULT_IV) -> bytes:
    """RFC 3394 §2.2.2 key unwrap; an integrity check that fails (the recovered initial value
    is not ``iv``) is ERR 0 (Auth failure)."""
    _check_kek(kek)
    _check_kw_iv(iv)
    if len(data) < KW_MIN + KW_BLOCK or len(data) % KW_BLOCK:
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"wrapped key data must be 8-byte blocks, at least 3; got {len(data)} bytes",
        )
    n = len(data) // KW_BLOCK - 1
    a = data[:8]
    r = [data[8 * (i + 1) : 8 * (i + 2)] for i in range(n)]
    for j in reversed(range(6)):
        for i in reversed(range(n)):
            t = n * j + i + 1
            b = _ecb(kek, (int.from_bytes(a, "big") ^ t).to_bytes(8, "big") + r[i], True)
            a, r[i] = b[:8], b[8:]
    if not hmac.compare_digest(a, iv):
        raise MikeyError(ErrorNo.AUTH_FAILURE, "AES key unwrap: integrity check failed")
    return b"".join(r)


def encrypt(
    plain: bytes, encr_alg: EncrAlg, keys: MessageKeys, csb_id: int, timestamp: Timestamp | int
) -> bytes:
    """The Encr data field for the key data chain ``plain``."""
    encr_alg = EncrAlg(encr_alg)
    if encr_alg is EncrAlg.NULL:
        return plain
    if encr_alg in _AES_CM_KEY_LEN:
        _check_cm_key(encr_alg, keys.encr_key)
        return aes_cm(keys.encr_key, aes_cm_iv(keys.salt_key, csb_id, timestamp), plain)
    padded = plain + bytes(kw_padded_len(len(plain)) - len(plain))
    return wrap(keys.encr_key, padded, keys.salt_key)


def _check_cm_key(alg: EncrAlg, key: bytes) -> None:
    if len(key) != _AES_CM_KEY_LEN[alg]:
        raise MikeyError(
            ErrorNo.INVALID_EA,
            f"{alg.name} needs a {_AES_CM_KEY_LEN[alg]}-byte key, got {len(key)}",
        )


def decrypt(
    kemac: Kemac, keys: MessageKeys, csb_id: int, timestamp: Timestamp | int
) -> tuple[KeyData, ...]:
    """The key data sub-payloads of ``kemac`` (no MAC check: see :func:`open_kemac`)."""
    if kemac.encr_alg is EncrAlg.NULL:
        return kemac.key_data()
    if kemac.encr_alg in _AES_CM_KEY_LEN:
        _check_cm_key(kemac.encr_alg, keys.encr_key)
        iv = aes_cm_iv(keys.salt_key, csb_id, timestamp)
        items, end = split_key_data(aes_cm(keys.encr_key, iv, kemac.encr_data))
        if end != len(kemac.encr_data):
            raise MikeyError(
                ErrorNo.UNSPECIFIED,
                f"{len(kemac.encr_data) - end} bytes after the last decrypted key data sub-payload",
            )
        return items
    plain = unwrap(keys.encr_key, kemac.encr_data, keys.salt_key)
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


def _covered(
    message: Message, identities: Sequence[Identity], extra: bytes, mac_data: bytes | None
) -> bytes:
    if mac_data is None:
        return mac_input(message, identities, extra)
    if identities or extra:
        raise ValueError("give either mac_data or identities/extra")
    return mac_data


def protect(
    message: Message,
    keys: MessageKeys,
    extra: bytes = b"",
    *,
    identities: Sequence[Identity] = (),
    mac_data: bytes | None = None,
) -> Message:
    """``message`` with the MAC of its last payload (KEMAC or V) computed with auth_key over
    ``mac_data`` (e.g. :func:`ticket_mac_input`), or over :func:`mac_input` of
    ``identities`` and ``extra``."""
    alg, _, _ = _trailer(message)
    _check_auth_key(alg, keys)
    data = _covered(message, identities, extra, mac_data)
    return message.with_trailer(_keys.mac(alg, keys.auth_key, data))


def verify(
    message: Message,
    keys: MessageKeys,
    extra: bytes = b"",
    *,
    identities: Sequence[Identity] = (),
    mac_data: bytes | None = None,
) -> None:
    """Raise MikeyError(Auth failure) unless the MAC of the last payload (KEMAC or V) is the
    one :func:`protect` would compute. A NULL MAC algorithm is refused: nothing to verify."""
    alg, tag, name = _trailer(message)
    if alg is MacAlg.NULL:
        raise MikeyError(ErrorNo.INVALID_MAC, "the message has a NULL MAC: nothing to verify")
    _check_auth_key(alg, keys)
    data = _covered(message, identities, extra, mac_data)
    if not _keys.verify_mac(alg, keys.auth_key, data, tag):
        raise MikeyError(ErrorNo.AUTH_FAILURE, f"the {name} MAC does not verify")


#: RFC 6043 Table 5.2: the identities that follow each initial message in its MAC input.
TICKET_MAC_IDENTITIES: dict[DataType, tuple[IdRole, IdRole]] = {
    DataType.REQUEST_INIT_PSK: (IdRole.IDRI, IdRole.IDRKMS),
    DataType.REQUEST_INIT_PK: (IdRole.IDRI, IdRole.IDRKMS),
    DataType.TRANSFER_INIT: (IdRole.IDRI, IdRole.IDRR),
    DataType.RESOLVE_INIT_PSK: (IdRole.IDRR, IdRole.IDRKMS),
    DataType.RESOLVE_INIT_PK: (IdRole.IDRR, IdRole.IDRKMS),
}
#: RFC 6043 Table 5.2: the responses, followed by their whole initial message.
TICKET_RESPONSES: dict[DataType, DataType] = {
    DataType.REQUEST_RESP: DataType.REQUEST_INIT_PSK,
    DataType.TRANSFER_RESP: DataType.TRANSFER_INIT,
    DataType.RESOLVE_RESP: DataType.RESOLVE_INIT_PSK,
}


def _without_initiator_data(message: Message) -> bytes:
    """The message up to its MAC/signature with the Initiator Data length and Initiator Data
    of its TICKET payloads left out (RFC 6043 §5.5, TRANSFER_INIT)."""
    types = [p.TYPE for p in message.payloads]
    out = bytearray(message.header.encode(types[0] if types else 0))
    for i, payload in enumerate(message.payloads):
        if not isinstance(payload, Signature):
            out.append(types[i + 1] if i + 1 < len(types) else 0)
        body = payload.encode_body()
        if isinstance(payload, Ticket):
            body = body[: len(body) - payload.initiator_data_len]
        out += body
    last = message.payloads[-1]
    assert isinstance(last, Kemac | Verification | Signature)
    return bytes(out[: len(out) - last.trailer_len])


def _identity(message: Message, role: IdRole, given: Identity | None) -> bytes:
    if given is not None:
        return identity_data(given)
    for p in message.payloads:
        if isinstance(p, IdWithRole) and p.role == role:
            return p.data
    raise MikeyError(
        ErrorNo.INVALID_ID, f"{message.data_type.name}: no {role.name} in the message; give it"
    )


def ticket_mac_input(
    message: Message,
    *,
    initial: Message | bytes | None = None,
    identity_i: Identity | None = None,
    identity_r: Identity | None = None,
    identity_kms: Identity | None = None,
) -> bytes:
    """What the V/SIGN of a MIKEY-TICKET message covers (RFC 6043 §5.5, Table 5.2):

    - REQUEST_INIT: the message || Identity_i || Identity_kms;
    - TRANSFER_INIT: the message without the TICKET's Initiator Data length and Initiator Data
      || Identity_i || Identity_r;
    - RESOLVE_INIT: the message || Identity_r || Identity_kms;
    - REQUEST_RESP, TRANSFER_RESP, RESOLVE_RESP: the message || the entire initial message
      (``initial``, MAC or signature included);
    - Error message: the message alone.

    "The message" ends before the MAC/signature field. Identities are ID Data only; each
    defaults to the ID Data of the message's IDR payload of that role (Identity_r in a
    TRANSFER_RESP may differ from the one in TRANSFER_INIT: give it when it does not travel
    in an IDR)."""
    kind = message.data_type
    given = {IdRole.IDRI: identity_i, IdRole.IDRR: identity_r, IdRole.IDRKMS: identity_kms}
    if kind in TICKET_MAC_IDENTITIES:
        if initial is not None:
            raise ValueError(f"{kind.name} is an initial message: no initial message follows it")
        body = _without_initiator_data(message) if kind is DataType.TRANSFER_INIT else None
        first, second = TICKET_MAC_IDENTITIES[kind]
        return (
            (message.mac_input() if body is None else body)
            + _identity(message, first, given[first])
            + _identity(message, second, given[second])
        )
    if kind in TICKET_RESPONSES:
        if initial is None:
            raise MikeyError(ErrorNo.UNSPECIFIED, f"{kind.name}: the initial message is needed")
        return message.mac_input() + (initial.encode() if isinstance(initial, Message) else initial)
    if kind is DataType.ERROR:
        return message.mac_input()
    raise MikeyError(ErrorNo.INVALID_DT, f"{kind.name} is not a MIKEY-TICKET message")


def open_kemac(
    kemac: Kemac,
    keys: MessageKeys,
    csb_id: int,
    timestamp: Timestamp | int,
    *,
    message: Message | None = None,
    extra: bytes = b"",
    identities: Sequence[Identity] = (),
    mac_data: bytes | None = None,
) -> tuple[KeyData, ...]:
    """The key data sub-payloads of ``kemac``. With ``message`` (the message carrying the
    KEMAC), its MAC is verified first (see :func:`verify`)."""
    if message is not None:
        verify(message, keys, extra, identities=identities, mac_data=mac_data)
    return decrypt(kemac, keys, csb_id, timestamp)


def open_message(
    message: Message,
    keys: MessageKeys,
    extra: bytes = b"",
    *,
    identities: Sequence[Identity] = (),
    mac_data: bytes | None = None,
    timestamp: Timestamp | int | None = None,
) -> tuple[KeyData, ...]:
    """Verify ``message``'s MAC (over ``mac_data`` or :func:`mac_input`), then decrypt its
    (single) KEMAC with the message's CSB ID and ``timestamp`` (default: the message's T
    payload; RFC 3830 §4.2.3 says "the timestamp sent by the Initiator"). The KEMAC need not
    be last: in the ticket messages a V payload ends the message."""
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
        stamp if timestamp is None else timestamp,
        message=message,
        extra=extra,
        identities=identities,
        mac_data=mac_data,
    )


# --- RFC 6043 §6.10: the Initiator Data of a forked ticket ----------------------------------


def initiator_data(vi: Verification, mpkr: bytes, prf_func: PrfFunc = PrfFunc.MIKEY_1) -> bytes:
    """Initiator Data = First Payload, Vi, Vr (RFC 6043 §6.10): Vi is the V payload of the
    TRANSFER_INIT; Vr, with Vi's authentication algorithm and the auth_key derived from MPKr
    (not forked, :func:`mikey.keys.initiator_data_keys`), MACs the whole Initiator Data up to
    its own MAC field. ``prf_func`` is that of the Ticket Policy."""
    alg = vi.auth_alg
    if alg is MacAlg.NULL:
        raise MikeyError(ErrorNo.INVALID_MAC, "Vi has the NULL MAC: Vr would have nothing")
    key = _keys.initiator_data_keys(mpkr, mac_alg=alg, prf_func=prf_func).auth_key
    unsigned = encode_payload_chain((vi, Verification.placeholder(alg)))
    covered = unsigned[: len(unsigned) - MAC_LENGTH[alg]]
    return encode_payload_chain((vi, Verification(alg, _keys.mac(alg, key, covered))))


def verify_initiator_data(
    ticket: Ticket,
    mpkr: bytes,
    *,
    transfer_init: Message | None = None,
    prf_func: PrfFunc | None = None,
) -> None:
    """Raise MikeyError unless the ticket's Initiator Data is ``Vi, Vr`` with a Vr MAC that
    verifies under MPKr (ERR 0 otherwise) and, given the TRANSFER_INIT, a Vi identical to its
    V payload (RFC 6043 §4.2.3.6). ``prf_func`` defaults to the Ticket Policy's."""
    payloads = ticket.initiator_payloads()
    if len(payloads) < 2 or not all(isinstance(p, Verification) for p in payloads[-2:]):
        raise MikeyError(ErrorNo.INVALID_TICKET, "Initiator Data does not end with Vi, Vr")
    vi, vr = payloads[-2], payloads[-1]
    assert isinstance(vi, Verification) and isinstance(vr, Verification)
    if vr.auth_alg is not vi.auth_alg:
        raise MikeyError(ErrorNo.INVALID_MAC, "Vr and Vi use different MAC algorithms")
    prf = ticket.policy.prf_func if prf_func is None else prf_func
    key = _keys.initiator_data_keys(mpkr, mac_alg=vr.auth_alg, prf_func=prf).auth_key
    covered = ticket.initiator_data[: len(ticket.initiator_data) - MAC_LENGTH[vr.auth_alg]]
    if vr.auth_alg is MacAlg.NULL or not _keys.verify_mac(vr.auth_alg, key, covered, vr.ver_data):
        raise MikeyError(ErrorNo.AUTH_FAILURE, "the Vr MAC of the Initiator Data fails")
    if transfer_init is not None:
        last = transfer_init.payloads[-1] if transfer_init.payloads else None
        if last != vi:
            raise MikeyError(ErrorNo.AUTH_FAILURE, "Vi differs from the TRANSFER_INIT's V")


def protect_transfer_init(
    message: Message,
    keys: MessageKeys,
    *,
    mpkr: bytes | None = None,
    identity_i: Identity | None = None,
    identity_r: Identity | None = None,
) -> Message:
    """A TRANSFER_INIT with its V computed over RFC 6043 Table 5.2 (with MPKi's keys) and,
    when ``mpkr`` is given (key forking), the Initiator Data ``Vi, Vr`` put into its TICKET;
    the MAC does not cover the Initiator Data, so it stays valid."""
    if message.data_type is not DataType.TRANSFER_INIT:
        raise MikeyError(ErrorNo.INVALID_DT, f"{message.data_type.name} is not a TRANSFER_INIT")
    data = ticket_mac_input(message, identity_i=identity_i, identity_r=identity_r)
    protected = protect(message, keys, mac_data=data)
    if mpkr is None:
        return protected
    vi = protected.payloads[-1]
    tickets = [p for p in protected.payloads if isinstance(p, Ticket)]
    if not isinstance(vi, Verification) or len(tickets) != 1:
        raise MikeyError(ErrorNo.UNSPECIFIED, "a TRANSFER_INIT has one TICKET and ends with V")
    ticket = tickets[0]
    forked = attrs.evolve(ticket, initiator_data=initiator_data(vi, mpkr, ticket.policy.prf_func))
    payloads = tuple(forked if p is ticket else p for p in protected.payloads)
    return attrs.evolve(protected, payloads=payloads)
