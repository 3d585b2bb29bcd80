"""The MIKEY payloads (RFC 3830 §6, RFC 6043 §6) as frozen values, and their wire bodies.

Each payload class has ``TYPE`` (its ``Next payload`` number), ``encode_body()`` (the bytes
after the payload's own ``Next payload`` field) and a parser in :data:`PARSERS`. The
``Next payload`` byte itself is written by :mod:`mikey.message`, which knows what follows: a
payload value never stores it, so a message built from values always chains correctly, and a
decoded message re-encodes to the same bytes.

The key data sub-payloads of a KEMAC (RFC 3830 §6.13) chain the same way among themselves
(20 = another key data sub-payload follows, 0 = last): :func:`encode_key_data` and
:func:`decode_key_data` handle that list, for the plaintext of an encrypted KEMAC as well as
for a KEMAC with the NULL encryption algorithm.

Layouts (``|`` separates fields, sizes in bits; every payload starts with Next payload (8)):

- KEMAC (1): Encr alg 8 | Encr data len 16 | Encr data | Mac alg 8 | MAC (0/160/256 by alg)
- KEY data (20): Type 4 | KV 4 | Key data len 16 | Key data | [Salt len 16 | Salt]
  | [KV data: SPI len 8 | SPI, or VF len 8 | VF | VT len 8 | VT]
- SIGN (4): S type 4 | Signature len 12 | Signature   (no Next payload: always last)
- T (5): TS type 8 | TS value (64 bits NTP-UTC/NTP, 32 bits COUNTER/NTP-UTC-32)
- ID (6) / CERT (7): type 8 | len 16 | data
- V (9): Auth alg 8 | Ver data (0/160/256 by alg)
- SP (10): Policy no 8 | Prot type 8 | Policy param length 16 | {Type 8 | Length 8 | Value}
- RAND (11): RAND len 8 | RAND
- ERR (12): Error no 8 | Reserved 16 (zero)
- TR (13): TS role 8 | TS type 8 | TS value                      (RFC 6043 §6.4)
- IDR (14): ID role 8 | ID type 8 | ID len 16 | ID data           (RFC 6043 §6.6)
- RANDR (15): RAND role 8 | RAND len 8 | RAND                     (RFC 6043 §6.8)
- TP (16): Ticket type 16 | Subtype 8 | Version 8 | PRF func 7 | D E F G H I J K L M N O
  (1 each) | Res 5 | TP Data length 16 | TP Data                  (RFC 6043 §6.10)
- TICKET (17): the TP fields | Ticket Data length 16 | Ticket Data
  | Initiator Data length 16 | Initiator Data                     (RFC 6043 §6.10)
- GEN EXT (21): Type 8 | Length 16 | Data

TP Data and Initiator Data are themselves chains of MIKEY payloads (first payload type 8,
then payloads each led by its Next payload), kept as on the wire and read with
:func:`decode_payload_chain`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntFlag
from typing import ClassVar, TypeAlias

import attrs

from mikey import convert
from mikey.constants import (
    MAC_LENGTH,
    EncrAlg,
    ErrorNo,
    IdType,
    KeyType,
    KvType,
    MacAlg,
    PayloadType,
    PrfFunc,
    TsType,
)
from mikey.errors import MikeyError
from mikey.wire import E, Reader, max_len, uint_bits

U8 = uint_bits(8)
U16 = uint_bits(16)

_TS_SIZE: dict[TsType, int] = {
    TsType.NTP_UTC: 8,
    TsType.NTP: 8,
    TsType.COUNTER: 4,
    TsType.NTP_UTC_32: 4,
}
_SALTED = (KeyType.TGK_SALT, KeyType.TEK_SALT, KeyType.GTGK_SALT)

# Seconds from the NTP era (1900-01-01) to the Unix epoch.
NTP_UNIX_OFFSET = 2_208_988_800


def _check_mac(alg: MacAlg, mac: bytes, what: str) -> None:
    if len(mac) != MAC_LENGTH[alg]:
        raise MikeyError(
            ErrorNo.INVALID_MAC,
            f"{what} is {len(mac)} bytes; {alg.name} needs {MAC_LENGTH[alg]}",
        )


# --- key data sub-payloads (RFC 3830 §6.13) -------------------------------------------------


@attrs.frozen
class KvSpi:
    """Key validity by SPI/MKI (KV type 1)."""

    spi: bytes = attrs.field(validator=max_len(0xFF))


@attrs.frozen
class KvInterval:
    """Key validity by interval (KV type 2): Valid From / Valid To, e.g. SRTP indexes."""

    valid_from: bytes = attrs.field(validator=max_len(0xFF))
    valid_to: bytes = attrs.field(validator=max_len(0xFF))


KeyValidity: TypeAlias = KvSpi | KvInterval | None


@attrs.frozen
class KeyData:
    """A key data sub-payload: a TGK or TEK, with a salt for the ``*_SALT`` types."""

    TYPE: ClassVar[PayloadType] = PayloadType.KEY_DATA

    key_type: KeyType = attrs.field(converter=convert.key_type)
    key: bytes = attrs.field(validator=max_len(0xFFFF))
    salt: bytes | None = attrs.field(default=None)
    kv: KeyValidity = None

    def __attrs_post_init__(self) -> None:
        if (self.salt is not None) != (self.key_type in _SALTED):
            raise MikeyError(
                ErrorNo.UNSPECIFIED,
                f"key type {self.key_type.name} "
                + ("needs a salt" if self.key_type in _SALTED else "has no salt"),
            )
        if self.salt is not None:
            max_len(0xFFFF)(self, attrs.fields(KeyData).salt, self.salt)

    @property
    def kv_type(self) -> KvType:
        if isinstance(self.kv, KvSpi):
            return KvType.SPI
        if isinstance(self.kv, KvInterval):
            return KvType.INTERVAL
        return KvType.NULL

    def encode_body(self) -> bytes:
        out = bytearray([(self.key_type << 4) | self.kv_type])
        out += len(self.key).to_bytes(2, "big") + self.key
        if self.salt is not None:
            out += len(self.salt).to_bytes(2, "big") + self.salt
        if isinstance(self.kv, KvSpi):
            out += bytes([len(self.kv.spi)]) + self.kv.spi
        elif isinstance(self.kv, KvInterval):
            out += bytes([len(self.kv.valid_from)]) + self.kv.valid_from
            out += bytes([len(self.kv.valid_to)]) + self.kv.valid_to
        return bytes(out)

    @classmethod
    def parse(cls, r: Reader) -> KeyData:
        start = r.offset
        first = r.u8("key data type/KV")
        try:
            key_type = KeyType(first >> 4)
        except ValueError:
            raise r.fail(ErrorNo.UNSPECIFIED, f"unknown key type {first >> 4}", start) from None
        try:
            kv_type = KvType(first & 0x0F)
        except ValueError:
            raise r.fail(ErrorNo.UNSPECIFIED, f"unknown KV type {first & 0x0F}", start) from None
        key = r.take(r.u16("key data len"), "key data")
        salt = r.take(r.u16("salt len"), "salt") if key_type in _SALTED else None
        kv: KeyValidity = None
        if kv_type is KvType.SPI:
            kv = KvSpi(r.take(r.u8("SPI len"), "SPI"))
        elif kv_type is KvType.INTERVAL:
            valid_from = r.take(r.u8("VF len"), "VF")
            kv = KvInterval(valid_from, r.take(r.u8("VT len"), "VT"))
        return cls(key_type, key, salt, kv)


def encode_key_data(items: Sequence[KeyData]) -> bytes:
    """The key data sub-payloads of a KEMAC, chained (20 = another follows, 0 = last)."""
    out = bytearray()
    for i, item in enumerate(items):
        last = i == len(items) - 1
        out.append(PayloadType.LAST if last else PayloadType.KEY_DATA)
        out += item.encode_body()
    return bytes(out)


def decode_key_data(data: bytes, offset: int = 0) -> tuple[KeyData, ...]:
    """Parse a chained list of key data sub-payloads (the plaintext of a KEMAC's Encr data).

    ``offset`` only labels error positions."""
    items, end = split_key_data(data, offset)
    if end != len(data):
        raise MikeyError(
            ErrorNo.UNSPECIFIED,
            f"{len(data) - end} bytes after the last key data sub-payload",
            offset=offset + end,
        )
    return items


def split_key_data(data: bytes, offset: int = 0) -> tuple[tuple[KeyData, ...], int]:
    """Parse the chained key data sub-payloads at the start of ``data`` and return them with
    the position where the chain ends (the last one has Next payload 0). Whatever follows is
    the caller's to judge: nothing for a NULL-encrypted KEMAC, the padding of an AES key
    wrap.

    ``offset`` only labels error positions."""
    r = Reader(data)
    items: list[KeyData] = []
    more = bool(data)
    while more:
        at = r.offset
        nxt = r.u8("key data next payload")
        if nxt not in (PayloadType.LAST, PayloadType.KEY_DATA):
            raise MikeyError(
                ErrorNo.UNSPECIFIED,
                f"key data sub-payload chained to payload {nxt}",
                offset=offset + at,
            )
        try:
            items.append(KeyData.parse(r))
        except MikeyError as e:
            raise MikeyError(e.code, e.reason, offset=offset + max(e.offset, 0)) from None
        more = nxt == PayloadType.KEY_DATA
    return tuple(items), r.offset


# --- the payloads ---------------------------------------------------------------------------


@attrs.frozen
class Kemac:
    """KEMAC (RFC 3830 §6.2): the key data sub-payloads, encrypted or not, and the MAC.

    ``encr_data`` is the Encr data field as on the wire. With ``EncrAlg.NULL`` it must be a
    valid chained list of key data sub-payloads (see :meth:`key_data`); with AES-CM or AES-KW
    it is ciphertext, and :func:`decode_key_data` reads it once decrypted. ``mac`` covers the
    whole message up to it (see :meth:`mikey.message.Message.mac_input`)."""

    TYPE: ClassVar[PayloadType] = PayloadType.KEMAC

    encr_alg: EncrAlg = attrs.field(converter=convert.encr_alg)
    encr_data: bytes = attrs.field(validator=max_len(0xFFFF))
    mac_alg: MacAlg = attrs.field(converter=convert.mac_alg)
    mac: bytes = attrs.field(default=b"")

    def __attrs_post_init__(self) -> None:
        _check_mac(self.mac_alg, self.mac, "KEMAC MAC")
        if self.encr_alg is EncrAlg.NULL:
            decode_key_data(self.encr_data)

    @classmethod
    def plain(
        cls, items: Sequence[KeyData], mac_alg: MacAlg = MacAlg.NULL, mac: bytes | None = None
    ) -> Kemac:
        """A KEMAC with the NULL encryption algorithm carrying ``items``; ``mac`` defaults to
        zeros of the right length (to be filled in once the message is encoded)."""
        if mac is None:
            mac = bytes(MAC_LENGTH[MacAlg(mac_alg)])
        return cls(EncrAlg.NULL, encode_key_data(items), mac_alg, mac)

    def key_data(self) -> tuple[KeyData, ...]:
        """The key data sub-payloads of a NULL-encrypted KEMAC."""
        if self.encr_alg is not EncrAlg.NULL:
            raise MikeyError(
                ErrorNo.INVALID_EA,
                f"KEMAC is encrypted with {self.encr_alg.name}: decrypt, then decode_key_data",
            )
        return decode_key_data(self.encr_data)

    def encode_body(self) -> bytes:
        return (
            bytes([self.encr_alg])
            + len(self.encr_data).to_bytes(2, "big")
            + self.encr_data
            + bytes([self.mac_alg])
            + self.mac
        )

    @property
    def trailer_len(self) -> int:
        """Length of the MAC at the end of the body."""
        return len(self.mac)

    @classmethod
    def parse(cls, r: Reader) -> Kemac:
        at = r.offset
        encr_alg = _read_enum(r, EncrAlg, ErrorNo.INVALID_EA, "encr alg")
        encr_data = r.take(r.u16("encr data len"), "encr data")
        mac_alg = _read_enum(r, MacAlg, ErrorNo.INVALID_MAC, "mac alg")
        mac = r.take(MAC_LENGTH[mac_alg], "MAC")
        if encr_alg is EncrAlg.NULL:
            decode_key_data(encr_data, offset=at + 3)
        return cls(encr_alg, encr_data, mac_alg, mac)


@attrs.frozen
class Signature:
    """SIGN (RFC 3830 §6.5): always the last payload, and without a Next payload field."""

    TYPE: ClassVar[PayloadType] = PayloadType.SIGN

    sig_type: int = attrs.field(validator=uint_bits(4))
    signature: bytes = attrs.field(validator=max_len(0x0FFF))

    def encode_body(self) -> bytes:
        return ((self.sig_type << 12) | len(self.signature)).to_bytes(2, "big") + self.signature

    @property
    def trailer_len(self) -> int:
        return len(self.signature)

    @classmethod
    def parse(cls, r: Reader) -> Signature:
        word = r.u16("S type/signature len")
        return cls(word >> 12, r.take(word & 0x0FFF, "signature"))


def _check_ts(ts_type: TsType, value: int) -> None:
    uint_bits(8 * _TS_SIZE[ts_type])(None, attrs.fields(Timestamp).value, value)


@attrs.frozen
class Timestamp:
    """T (RFC 3830 §6.6). ``value`` is the 64-bit NTP timestamp (seconds << 32 | fraction)
    for NTP-UTC and NTP, a 32-bit counter for COUNTER."""

    TYPE: ClassVar[PayloadType] = PayloadType.T

    ts_type: TsType = attrs.field(converter=convert.ts_type)
    value: int = attrs.field()

    def __attrs_post_init__(self) -> None:
        _check_ts(self.ts_type, self.value)

    @classmethod
    def ntp_utc(cls, unix_time: float) -> Timestamp:
        """An NTP-UTC timestamp for a Unix time."""
        return cls(TsType.NTP_UTC, ntp_from_unix(unix_time))

    def encode_body(self) -> bytes:
        return bytes([self.ts_type]) + self.value.to_bytes(_TS_SIZE[self.ts_type], "big")

    @classmethod
    def parse(cls, r: Reader) -> Timestamp:
        ts_type = _read_enum(r, TsType, ErrorNo.INVALID_TS, "TS type")
        return cls(ts_type, r.uint(_TS_SIZE[ts_type], "TS value"))


@attrs.frozen
class TimestampWithRole:
    """TR (RFC 6043 §6.4): a timestamp with a role (:class:`mikey.constants.TsRole`)."""

    TYPE: ClassVar[PayloadType] = PayloadType.TR

    role: int = attrs.field(validator=U8)
    ts_type: TsType = attrs.field(converter=convert.ts_type)
    value: int = attrs.field()

    def __attrs_post_init__(self) -> None:
        _check_ts(self.ts_type, self.value)

    def encode_body(self) -> bytes:
        return bytes([self.role, self.ts_type]) + self.value.to_bytes(_TS_SIZE[self.ts_type], "big")

    @classmethod
    def parse(cls, r: Reader) -> TimestampWithRole:
        role = r.u8("TS role")
        ts_type = _read_enum(r, TsType, ErrorNo.INVALID_TS, "TS type")
        return cls(role, ts_type, r.uint(_TS_SIZE[ts_type], "TS value"))


@attrs.frozen
class Id:
    """ID (RFC 3830 §6.7): an identity (:class:`mikey.constants.IdType` names the types)."""

    TYPE: ClassVar[PayloadType] = PayloadType.ID

    id_type: int = attrs.field(validator=U8)
    data: bytes = attrs.field(validator=max_len(0xFFFF))

    def encode_body(self) -> bytes:
        return bytes([self.id_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def parse(cls, r: Reader) -> Id:
        id_type = r.u8("ID type")
        return cls(id_type, r.take(r.u16("ID len"), "ID data"))


@attrs.frozen
class IdWithRole:
    """IDR (RFC 6043 §6.6): an identity with its role (:class:`mikey.constants.IdRole`)."""

    TYPE: ClassVar[PayloadType] = PayloadType.IDR

    role: int = attrs.field(validator=U8)
    id_type: int = attrs.field(validator=U8)
    data: bytes = attrs.field(validator=max_len(0xFFFF))

    @classmethod
    def uri(cls, role: int, identity: str) -> IdWithRole:
        """An IDR of ``role`` carrying the URI ``identity`` (UTF-8)."""
        return cls(role, IdType.URI, identity.encode("utf-8"))

    def encode_body(self) -> bytes:
        return bytes([self.role, self.id_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def parse(cls, r: Reader) -> IdWithRole:
        role = r.u8("ID role")
        id_type = r.u8("ID type")
        return cls(role, id_type, r.take(r.u16("ID len"), "ID data"))


@attrs.frozen
class Cert:
    """CERT (RFC 3830 §6.7): a certificate (type 0 X.509v3, 1 URL, 2 sign, 3 encr)."""

    TYPE: ClassVar[PayloadType] = PayloadType.CERT

    cert_type: int = attrs.field(validator=U8)
    data: bytes = attrs.field(validator=max_len(0xFFFF))

    def encode_body(self) -> bytes:
        return bytes([self.cert_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def parse(cls, r: Reader) -> Cert:
        cert_type = r.u8("cert type")
        return cls(cert_type, r.take(r.u16("cert len"), "cert data"))


@attrs.frozen
class Verification:
    """V (RFC 3830 §6.9): the MAC of a verification message (last payload)."""

    TYPE: ClassVar[PayloadType] = PayloadType.V

    auth_alg: MacAlg = attrs.field(converter=convert.mac_alg)
    ver_data: bytes = attrs.field(default=b"")

    def __attrs_post_init__(self) -> None:
        _check_mac(self.auth_alg, self.ver_data, "V ver data")

    @classmethod
    def placeholder(cls, auth_alg: MacAlg) -> Verification:
        """A V payload with a zero MAC of the right length, to fill in after encoding."""
        return cls(auth_alg, bytes(MAC_LENGTH[MacAlg(auth_alg)]))

    @property
    def trailer_len(self) -> int:
        return len(self.ver_data)

    def encode_body(self) -> bytes:
        return bytes([self.auth_alg]) + self.ver_data

    @classmethod
    def parse(cls, r: Reader) -> Verification:
        alg = _read_enum(r, MacAlg, ErrorNo.INVALID_MAC, "auth alg")
        return cls(alg, r.take(MAC_LENGTH[alg], "ver data"))


@attrs.frozen
class SpParam:
    """One policy parameter of an SP payload (:class:`mikey.constants.SrtpParam` for SRTP)."""

    param_type: int = attrs.field(validator=U8)
    value: bytes = attrs.field(validator=max_len(0xFF))


@attrs.frozen
class SecurityPolicy:
    """SP (RFC 3830 §6.10): the parameters of policy ``policy_no`` for ``prot_type``."""

    TYPE: ClassVar[PayloadType] = PayloadType.SP

    policy_no: int = attrs.field(validator=U8)
    prot_type: int = attrs.field(validator=U8)
    params: tuple[SpParam, ...] = attrs.field(converter=convert.sp_params, default=())

    def __attrs_post_init__(self) -> None:
        if len(self._params_bytes()) > 0xFFFF:
            raise MikeyError(ErrorNo.INVALID_SPPAR, "SP parameters exceed 65535 bytes")

    def _params_bytes(self) -> bytes:
        return b"".join(bytes([p.param_type, len(p.value)]) + p.value for p in self.params)

    def get(self, param_type: int) -> bytes | None:
        """The value of the first parameter of ``param_type``, if any."""
        return next((p.value for p in self.params if p.param_type == param_type), None)

    def encode_body(self) -> bytes:
        body = self._params_bytes()
        return bytes([self.policy_no, self.prot_type]) + len(body).to_bytes(2, "big") + body

    @classmethod
    def parse(cls, r: Reader) -> SecurityPolicy:
        policy_no = r.u8("policy no")
        prot_type = r.u8("prot type")
        body = Reader(r.take(r.u16("policy param length"), "policy params"))
        base = r.offset - len(body.data)
        params: list[SpParam] = []
        while body.remaining:
            try:
                param_type = body.u8("param type")
                params.append(SpParam(param_type, body.take(body.u8("param len"), "param")))
            except MikeyError as e:
                raise MikeyError(ErrorNo.INVALID_SPPAR, e.reason, offset=base + e.offset) from None
        return cls(policy_no, prot_type, tuple(params))


@attrs.frozen
class Rand:
    """RAND (RFC 3830 §6.11). RFC 3830 asks for at least 16 bytes; the codec takes 0..255."""

    TYPE: ClassVar[PayloadType] = PayloadType.RAND

    rand: bytes = attrs.field(validator=max_len(0xFF))

    def encode_body(self) -> bytes:
        return bytes([len(self.rand)]) + self.rand

    @classmethod
    def parse(cls, r: Reader) -> Rand:
        return cls(r.take(r.u8("RAND len"), "RAND"))


@attrs.frozen
class RandWithRole:
    """RANDR (RFC 6043 §6.8): a RAND with its role (:class:`mikey.constants.RandRole`)."""

    TYPE: ClassVar[PayloadType] = PayloadType.RANDR

    role: int = attrs.field(validator=U8)
    rand: bytes = attrs.field(validator=max_len(0xFF))

    def encode_body(self) -> bytes:
        return bytes([self.role, len(self.rand)]) + self.rand

    @classmethod
    def parse(cls, r: Reader) -> RandWithRole:
        role = r.u8("RAND role")
        return cls(role, r.take(r.u8("RAND len"), "RAND"))


@attrs.frozen
class Err:
    """ERR (RFC 3830 §6.12): an error number (:class:`mikey.constants.ErrorNo`)."""

    TYPE: ClassVar[PayloadType] = PayloadType.ERR

    error_no: int = attrs.field(validator=U8)

    def encode_body(self) -> bytes:
        return bytes([self.error_no, 0, 0])

    @classmethod
    def parse(cls, r: Reader) -> Err:
        error_no = r.u8("error no")
        at = r.offset
        if r.u16("ERR reserved"):
            raise r.fail(ErrorNo.UNSPECIFIED, "ERR reserved field is not zero", at)
        return cls(error_no)


@attrs.frozen
class GeneralExtension:
    """GEN EXT (RFC 3830 §6.15): type (:class:`mikey.constants.GenExtType`) and data."""

    TYPE: ClassVar[PayloadType] = PayloadType.GEN_EXT

    ext_type: int = attrs.field(validator=U8)
    data: bytes = attrs.field(validator=max_len(0xFFFF))

    def encode_body(self) -> bytes:
        return bytes([self.ext_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def parse(cls, r: Reader) -> GeneralExtension:
        ext_type = r.u8("ext type")
        return cls(ext_type, r.take(r.u16("ext length"), "ext data"))


class TicketFlag(IntFlag):
    """The twelve flags D..O of the Ticket Policy (RFC 6043 §6.10), as bits of
    :attr:`TicketPolicy.flags` (D the most significant). On the wire they follow the 7-bit
    PRF func and precede 5 reserved bits."""

    D = 0x800  # the ticket was generated by the KMS (1) or by the Initiator (0)
    E = 0x400  # the Ticket Resolve exchange is mandatory
    F = 0x200  # TRANSFER_RESP shall be sent
    G = 0x100  # the Responder shall generate RANDRr
    H = 0x080  # RANDRi shall be used when deriving keys from a TGK/GTGK
    I = 0x040  # noqa: E741  (the RFC's letter) key forking shall be used
    J = 0x020  # the ticket may be reused (and cached)
    K = 0x010  # the KMS changed the desired Ticket Policy or KEMAC
    L = 0x008  # the Initiator may supply session keys
    M = 0x004  # the Responder may supply session keys
    N = 0x002  # an Initiator following RFC 6043 can use the ticket in a TRANSFER_INIT
    O = 0x001  # noqa: E741  a Responder following RFC 6043 can process the ticket


U12 = uint_bits(12)


def _check_chain(data: bytes, code: ErrorNo, what: str) -> None:
    try:
        decode_payload_chain(data)
    except MikeyError as e:
        raise MikeyError(code, f"{what}: {e.reason}") from None


@attrs.frozen
class TicketPolicy:
    """TP (RFC 6043 §6.10): the desired (TP) or granted (in TICKET) Ticket Policy.

    ``data`` is the TP Data field as on the wire: empty, or a chain of MIKEY payloads
    (``First Payload, [IDRkms], [IDRi], [TRs], [TRe], [TRr], [KEMAC], {IDRapp}, (IDRr)``);
    :meth:`payloads` reads it, :meth:`with_payloads` builds one. ``prf_func`` is the PRF of
    key forking and of the ticket's own key derivations."""

    TYPE: ClassVar[PayloadType] = PayloadType.TP

    ticket_type: int = attrs.field(validator=U16)
    subtype: int = attrs.field(default=0, validator=U8)
    version: int = attrs.field(default=0, validator=U8)
    prf_func: PrfFunc = attrs.field(default=PrfFunc.MIKEY_1, converter=convert.prf_func)
    flags: int = attrs.field(default=0, validator=U12)
    data: bytes = attrs.field(default=b"", validator=max_len(0xFFFF))

    def __attrs_post_init__(self) -> None:
        if self.data:
            _check_chain(self.data, ErrorNo.INVALID_TPPAR, "TP Data")

    @classmethod
    def with_payloads(
        cls,
        ticket_type: int,
        payloads: Sequence[Payload],
        subtype: int = 0,
        version: int = 0,
        prf_func: PrfFunc = PrfFunc.MIKEY_1,
        flags: int = 0,
    ) -> TicketPolicy:
        """A Ticket Policy whose TP Data carries ``payloads``."""
        return cls(ticket_type, subtype, version, prf_func, flags, encode_payload_chain(payloads))

    def has(self, flag: TicketFlag) -> bool:
        return bool(self.flags & flag)

    def payloads(self) -> tuple[Payload, ...]:
        """The payloads of the TP Data field."""
        return decode_payload_chain(self.data)

    def encode_body(self) -> bytes:
        word = (self.prf_func << 17) | (self.flags << 5)
        return (
            self.ticket_type.to_bytes(2, "big")
            + bytes([self.subtype, self.version])
            + word.to_bytes(3, "big")
            + len(self.data).to_bytes(2, "big")
            + self.data
        )

    @classmethod
    def parse(cls, r: Reader) -> TicketPolicy:
        ticket_type = r.u16("ticket type")
        subtype = r.u8("ticket subtype")
        version = r.u8("ticket version")
        at = r.offset
        word = r.uint(3, "PRF func/flags")
        if word & 0x1F:
            raise r.fail(ErrorNo.INVALID_TPPAR, "TP reserved bits are set", at)
        try:
            prf_func = PrfFunc(word >> 17)
        except ValueError:
            raise r.fail(ErrorNo.INVALID_PRF, f"unknown PRF func {word >> 17}", at) from None
        data_at = r.offset + 2
        data = r.take(r.u16("TP Data length"), "TP Data")
        try:
            return cls(ticket_type, subtype, version, prf_func, (word >> 5) & 0xFFF, data)
        except MikeyError as e:
            raise MikeyError(e.code, e.reason, offset=data_at) from None


@attrs.frozen
class Ticket:
    """TICKET (RFC 6043 §6.10): the granted Ticket Policy, the Ticket Data (opaque: only the
    party that resolves the ticket reads it) and the Initiator Data (present if and only if
    key forking is used: ``First Payload, Vi, Vr``), each as on the wire."""

    TYPE: ClassVar[PayloadType] = PayloadType.TICKET

    policy: TicketPolicy
    data: bytes = attrs.field(validator=max_len(0xFFFF))
    initiator_data: bytes = attrs.field(default=b"", validator=max_len(0xFFFF))

    def __attrs_post_init__(self) -> None:
        if self.initiator_data:
            _check_chain(self.initiator_data, ErrorNo.INVALID_TICKET, "Initiator Data")

    def initiator_payloads(self) -> tuple[Payload, ...]:
        """The payloads of the Initiator Data field."""
        return decode_payload_chain(self.initiator_data)

    @property
    def initiator_data_len(self) -> int:
        """Bytes at the end of the body taken by Initiator Data length and Initiator Data
        (which the TRANSFER_INIT MAC does not cover, RFC 6043 §5.5)."""
        return 2 + len(self.initiator_data)

    def encode_body(self) -> bytes:
        return (
            self.policy.encode_body()
            + len(self.data).to_bytes(2, "big")
            + self.data
            + len(self.initiator_data).to_bytes(2, "big")
            + self.initiator_data
        )

    @classmethod
    def parse(cls, r: Reader) -> Ticket:
        policy = TicketPolicy.parse(r)
        data = r.take(r.u16("Ticket Data length"), "Ticket Data")
        at = r.offset + 2
        initiator = r.take(r.u16("Initiator Data length"), "Initiator Data")
        try:
            return cls(policy, data, initiator)
        except MikeyError as e:
            raise MikeyError(e.code, e.reason, offset=at) from None


Payload: TypeAlias = (
    Kemac
    | Signature
    | Timestamp
    | TimestampWithRole
    | Id
    | IdWithRole
    | Cert
    | Verification
    | SecurityPolicy
    | Rand
    | RandWithRole
    | Err
    | GeneralExtension
    | TicketPolicy
    | Ticket
)

#: Body parser of each top-level payload type the codec knows.
PARSERS: dict[PayloadType, Callable[[Reader], Payload]] = {
    PayloadType.KEMAC: Kemac.parse,
    PayloadType.SIGN: Signature.parse,
    PayloadType.T: Timestamp.parse,
    PayloadType.TR: TimestampWithRole.parse,
    PayloadType.ID: Id.parse,
    PayloadType.IDR: IdWithRole.parse,
    PayloadType.CERT: Cert.parse,
    PayloadType.V: Verification.parse,
    PayloadType.SP: SecurityPolicy.parse,
    PayloadType.RAND: Rand.parse,
    PayloadType.RANDR: RandWithRole.parse,
    PayloadType.ERR: Err.parse,
    PayloadType.GEN_EXT: GeneralExtension.parse,
    PayloadType.TP: TicketPolicy.parse,
    PayloadType.TICKET: Ticket.parse,
}


def encode_chain_body(payloads: Sequence[Payload]) -> bytes:
    """Each payload led by the type of the next (0 after the last; SIGN, always last, has no
    such field): the chain after its first-payload type, as a message and TP Data share it."""
    types = [p.TYPE for p in payloads]
    out = bytearray()
    for i, payload in enumerate(payloads):
        if not isinstance(payload, Signature):
            out.append(types[i + 1] if i + 1 < len(types) else PayloadType.LAST)
        elif i != len(payloads) - 1:
            raise MikeyError(ErrorNo.UNSPECIFIED, "SIGN must be the last payload")
        out += payload.encode_body()
    return bytes(out)


def encode_payload_chain(payloads: Sequence[Payload]) -> bytes:
    """A chain of payloads without a HDR, as TP Data and Initiator Data carry them: the type
    of the first payload, then each payload led by the type of the next (0 after the last).
    Empty for no payloads."""
    if not payloads:
        return b""
    return bytes([payloads[0].TYPE]) + encode_chain_body(payloads)


def read_payload_chain(r: Reader, next_type: int) -> tuple[Payload, ...]:
    """The payloads from ``r`` whose first has type ``next_type``, up to the one whose Next
    payload is 0 (or SIGN); a payload's error carries the offset where the payload begins."""
    out: list[Payload] = []
    while next_type != PayloadType.LAST:
        at = r.offset
        try:
            kind = PayloadType(next_type)
            parser = PARSERS[kind]
        except (ValueError, KeyError):
            raise r.fail(ErrorNo.UNSPECIFIED, f"unsupported payload type {next_type}") from None
        if kind is PayloadType.SIGN:
            out.append(parser(r))
            break
        next_type = r.u8(f"{kind.name} next payload")
        try:
            out.append(parser(r))
        except MikeyError as e:
            if e.offset >= 0:
                raise
            raise MikeyError(e.code, e.reason, offset=at) from None
    return tuple(out)


def decode_payload_chain(data: bytes) -> tuple[Payload, ...]:
    """Parse a payload chain written by :func:`encode_payload_chain`; it must end exactly
    where ``data`` ends."""
    if not data:
        return ()
    r = Reader(data)
    out = read_payload_chain(r, r.u8("first payload"))
    if r.remaining:
        raise r.fail(ErrorNo.UNSPECIFIED, f"{r.remaining} bytes after the last payload")
    return out


def ntp_from_unix(unix_time: float) -> int:
    """The 64-bit NTP timestamp (RFC 5905 era 0) of a Unix time."""
    seconds = int(unix_time // 1)
    fraction = int((unix_time - seconds) * (1 << 32))
    return (((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | (fraction & 0xFFFFFFFF)


def unix_from_ntp(value: int) -> float:
    """The Unix time of a 64-bit NTP timestamp (RFC 5905 era 0)."""
    return (value >> 32) - NTP_UNIX_OFFSET + (value & 0xFFFFFFFF) / (1 << 32)


def _read_enum(r: Reader, enum: type[E], code: ErrorNo, what: str) -> E:
    at = r.offset
    value = r.u8(what)
    try:
        return enum(value)
    except ValueError:
        raise r.fail(code, f"unknown {what} {value}", at) from None
