"""A MIKEY message: the common header (HDR, RFC 3830 §6.1) and its chain of payloads.

:func:`decode` turns bytes into a :class:`Message` and :func:`encode` back; for every input
``decode`` accepts, ``encode(decode(b)) == b``, and ``decode(encode(m)) == m`` for every
message that can be built. Anything else raises :class:`mikey.errors.MikeyError`.

HDR layout (bits): version 8 | data type 8 | next payload 8 | V 1 | PRF func 7 | CSB ID 32
| #CS 8 | CS ID map type 8 | CS ID map info. The map info is, per type:

- SRTP-ID (0, RFC 3830 §6.1.1): #CS x (Policy no 8 | SSRC 32 | ROC 32)
- Empty map (1, RFC 4563): nothing
- GENERIC-ID (2, RFC 6043 §6.1.1; the entry format TS 33.328 Annex H.1 gives for the TLS
  Prot Type): #CS x (CS ID 8 | Prot type 8 | S 1 | #P 7 | #P x policy no 8
  | Session data length 16 | Session data | SPI length 8 | SPI)

:func:`check_composition` is a separate, stricter step: the payloads a message of each type
must carry (RFC 3830 §3.1/§3.2/§5.1.2, RFC 6043 §4.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, TypeAlias

import attrs

from mikey import convert
from mikey.constants import (
    MIKEY_VERSION,
    CsIdMapType,
    DataType,
    ErrorNo,
    PayloadType,
    PrfFunc,
    RandRole,
)
from mikey.errors import MikeyError
from mikey.payloads import (
    PARSERS,
    Err,
    Kemac,
    Payload,
    Rand,
    RandWithRole,
    Signature,
    Ticket,
    TicketPolicy,
    Timestamp,
    Verification,
    encode_chain_body,
    read_payload_chain,
)
from mikey.wire import Reader, max_len, uint_bits

U8 = uint_bits(8)
U32 = uint_bits(32)


@attrs.frozen
class SrtpIdEntry:
    """One crypto session of an SRTP-ID map."""

    policy_no: int = attrs.field(validator=U8)
    ssrc: int = attrs.field(validator=U32)
    roc: int = attrs.field(default=0, validator=U32)


@attrs.frozen
class SrtpIdMap:
    """CS ID map type SRTP-ID (0): CS ID i is the i-th entry (from 1)."""

    entries: tuple[SrtpIdEntry, ...] = attrs.field(converter=convert.srtp_entries, default=())

    MAP_TYPE: ClassVar[CsIdMapType] = CsIdMapType.SRTP_ID


@attrs.frozen
class EmptyMap:
    """CS ID map type Empty (1): no map info; ``cs_count`` is the HDR #CS as sent."""

    cs_count: int = attrs.field(default=0, validator=U8)

    MAP_TYPE: ClassVar[CsIdMapType] = CsIdMapType.EMPTY


@attrs.frozen
class GenericIdEntry:
    """One crypto session of a GENERIC-ID map.

    For the TLS Prot Type (TS 33.328 Annex H.1) ``s_flag`` is False, ``policies`` and
    ``session_data`` are empty and ``spi`` names the TGK (or TEK) the PSK comes from."""

    cs_id: int = attrs.field(validator=U8)
    prot_type: int = attrs.field(validator=U8)
    s_flag: bool = False
    policies: tuple[int, ...] = attrs.field(converter=convert.ints, default=())
    session_data: bytes = attrs.field(default=b"", validator=max_len(0xFFFF))
    spi: bytes = attrs.field(default=b"", validator=max_len(0xFF))

    def __attrs_post_init__(self) -> None:
        if len(self.policies) > 0x7F:
            raise MikeyError(ErrorNo.UNSPECIFIED, "a GENERIC-ID entry lists at most 127 policies")
        for p in self.policies:
            U8(self, attrs.fields(GenericIdEntry).policies, p)

    def encode(self) -> bytes:
        return (
            bytes([self.cs_id, self.prot_type, (self.s_flag << 7) | len(self.policies)])
            + bytes(self.policies)
            + len(self.session_data).to_bytes(2, "big")
            + self.session_data
            + bytes([len(self.spi)])
            + self.spi
        )

    @classmethod
    def parse(cls, r: Reader) -> GenericIdEntry:
        cs_id = r.u8("CS ID")
        prot_type = r.u8("prot type")
        sp = r.u8("S/#P")
        policies = tuple(r.take(sp & 0x7F, "policy numbers"))
        session_data = r.take(r.u16("session data length"), "session data")
        spi = r.take(r.u8("SPI length"), "SPI")
        return cls(cs_id, prot_type, bool(sp & 0x80), policies, session_data, spi)


@attrs.frozen
class GenericIdMap:
    """CS ID map type GENERIC-ID (2)."""

    entries: tuple[GenericIdEntry, ...] = attrs.field(converter=convert.generic_entries, default=())

    MAP_TYPE: ClassVar[CsIdMapType] = CsIdMapType.GENERIC_ID


CsIdMap: TypeAlias = SrtpIdMap | EmptyMap | GenericIdMap


def _cs_count(cs_map: CsIdMap) -> int:
    return cs_map.cs_count if isinstance(cs_map, EmptyMap) else len(cs_map.entries)


@attrs.frozen
class Header:
    """HDR. ``v`` asks the responder for a verification message (PSK/PK modes)."""

    data_type: DataType = attrs.field(converter=convert.data_type)
    csb_id: int = attrs.field(validator=U32)
    cs_map: CsIdMap = attrs.field(factory=EmptyMap)
    v: bool = False
    prf_func: PrfFunc = attrs.field(default=PrfFunc.MIKEY_1, converter=convert.prf_func)

    def __attrs_post_init__(self) -> None:
        if _cs_count(self.cs_map) > 0xFF:
            raise MikeyError(ErrorNo.UNSPECIFIED, "more than 255 crypto sessions")

    @property
    def cs_count(self) -> int:
        return _cs_count(self.cs_map)

    def encode(self, next_payload: int) -> bytes:
        out = bytearray([MIKEY_VERSION, self.data_type, next_payload])
        out.append((self.v << 7) | self.prf_func)
        out += self.csb_id.to_bytes(4, "big")
        out += bytes([self.cs_count, self.cs_map.MAP_TYPE])
        if isinstance(self.cs_map, SrtpIdMap):
            for e in self.cs_map.entries:
                out += bytes([e.policy_no]) + e.ssrc.to_bytes(4, "big") + e.roc.to_bytes(4, "big")
        elif isinstance(self.cs_map, GenericIdMap):
            for g in self.cs_map.entries:
                out += g.encode()
        return bytes(out)

    @classmethod
    def parse(cls, r: Reader) -> tuple[Header, int]:
        """The header and the type of the first payload."""
        version = r.u8("version")
        if version != MIKEY_VERSION:
            raise r.fail(ErrorNo.UNSPECIFIED, f"MIKEY version {version}, not 1", 0)
        at = r.offset
        raw_type = r.u8("data type")
        try:
            data_type = DataType(raw_type)
        except ValueError:
            raise r.fail(ErrorNo.INVALID_DT, f"unknown data type {raw_type}", at) from None
        next_payload = r.u8("next payload")
        at = r.offset
        vp = r.u8("V/PRF func")
        try:
            prf_func = PrfFunc(vp & 0x7F)
        except ValueError:
            raise r.fail(ErrorNo.INVALID_PRF, f"unknown PRF func {vp & 0x7F}", at) from None
        csb_id = r.u32("CSB ID")
        count = r.u8("#CS")
        at = r.offset
        raw_map = r.u8("CS ID map type")
        cs_map: CsIdMap
        if raw_map == CsIdMapType.SRTP_ID:
            srtp: list[SrtpIdEntry] = []
            for _ in range(count):
                policy_no = r.u8("policy no")
                srtp.append(SrtpIdEntry(policy_no, r.u32("SSRC"), r.u32("ROC")))
            cs_map = SrtpIdMap(tuple(srtp))
        elif raw_map == CsIdMapType.EMPTY:
            cs_map = EmptyMap(count)
        elif raw_map == CsIdMapType.GENERIC_ID:
            cs_map = GenericIdMap(tuple(GenericIdEntry.parse(r) for _ in range(count)))
        else:
            raise r.fail(ErrorNo.UNSPECIFIED, f"unknown CS ID map type {raw_map}", at)
        return cls(data_type, csb_id, cs_map, bool(vp & 0x80), prf_func), next_payload


@attrs.frozen
class Message:
    """A MIKEY message: HDR and its payloads in wire order (each payload's Next payload
    field is derived from the one that follows it)."""

    header: Header
    payloads: tuple[Payload, ...] = attrs.field(converter=convert.payloads, default=())

    def __attrs_post_init__(self) -> None:
        for i, p in enumerate(self.payloads):
            if not hasattr(p, "TYPE") or p.TYPE not in PARSERS:
                raise MikeyError(ErrorNo.UNSPECIFIED, f"payload {i} is not a MIKEY payload")
            if isinstance(p, Signature) and i != len(self.payloads) - 1:
                raise MikeyError(ErrorNo.UNSPECIFIED, "SIGN must be the last payload")

    @property
    def data_type(self) -> DataType:
        return self.header.data_type

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        return decode(data)

    def find(self, kind: type[Payload]) -> tuple[Payload, ...]:
        """The payloads of class ``kind``, in order."""
        return tuple(p for p in self.payloads if isinstance(p, kind))

    def mac_input(self) -> bytes:
        """The encoded message without the MAC/signature at its end: what the last payload's
        MAC (KEMAC in PSK init, V in a verification or ticket message) or signature (SIGN)
        covers (RFC 3830 §5.2, RFC 6043 §5.5). Identity data that some modes add to the MAC
        input is the caller's to append."""
        last = self.payloads[-1] if self.payloads else None
        if not isinstance(last, Kemac | Verification | Signature):
            raise MikeyError(ErrorNo.UNSPECIFIED, "the last payload carries no MAC or signature")
        data = self.encode()
        return data[: len(data) - last.trailer_len]

    def with_trailer(self, mac: bytes) -> Message:
        """The message with the MAC/signature of its last payload replaced by ``mac``."""
        last = self.payloads[-1] if self.payloads else None
        new: Payload
        if isinstance(last, Kemac):
            new = attrs.evolve(last, mac=mac)
        elif isinstance(last, Verification):
            new = attrs.evolve(last, ver_data=mac)
        elif isinstance(last, Signature):
            new = attrs.evolve(last, signature=mac)
        else:
            raise MikeyError(ErrorNo.UNSPECIFIED, "the last payload carries no MAC or signature")
        return attrs.evolve(self, payloads=(*self.payloads[:-1], new))


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``."""
    first = message.payloads[0].TYPE if message.payloads else PayloadType.LAST
    return message.header.encode(first) + encode_chain_body(message.payloads)


def decode(data: bytes) -> Message:
    """Parse one MIKEY message; it must end exactly where the payload chain ends."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MikeyError(ErrorNo.UNSPECIFIED, "a MIKEY message is bytes")
    r = Reader(bytes(data))
    header, next_type = Header.parse(r)
    payloads = read_payload_chain(r, next_type)
    if r.remaining:
        raise r.fail(ErrorNo.UNSPECIFIED, f"{r.remaining} bytes after the last payload")
    return Message(header, payloads)


# --- composition (what each message type must carry) ----------------------------------------

#: data type -> (payload classes that must be present, classes the last payload may be).
_RULES: dict[DataType, tuple[tuple[type[Payload], ...], tuple[type[Payload], ...]]] = {
    DataType.PSK_INIT: ((Timestamp, Rand, Kemac), (Kemac,)),
    DataType.PSK_VERIFY: ((Timestamp,), (Verification,)),
    DataType.ERROR: ((Timestamp, Err), (Err, Verification, Signature)),
    # RFC 6043 §4.2.1
    DataType.REQUEST_INIT_PSK: ((Timestamp, RandWithRole, TicketPolicy), (Verification,)),
    DataType.REQUEST_INIT_PK: ((Timestamp, RandWithRole, TicketPolicy), (Signature,)),
    DataType.REQUEST_RESP: ((Timestamp, Ticket, Kemac), (Verification,)),
    # RFC 6043 §4.2.2
    DataType.TRANSFER_INIT: ((Timestamp, RandWithRole, Ticket), (Verification,)),
    DataType.TRANSFER_RESP: ((Timestamp,), (Verification,)),
    # RFC 6043 §4.2.3
    DataType.RESOLVE_INIT_PSK: ((Timestamp, RandWithRole, Ticket), (Verification,)),
    DataType.RESOLVE_INIT_PK: ((Timestamp, RandWithRole, Ticket), (Signature,)),
    DataType.RESOLVE_RESP: ((Timestamp, Kemac), (Verification,)),
}

#: The RANDR an initial ticket message must carry (RFC 6043 §4.2.1.1, §4.2.2.1, §4.2.3.1).
_RANDR_ROLE: dict[DataType, RandRole] = {
    DataType.REQUEST_INIT_PSK: RandRole.RANDRI,
    DataType.REQUEST_INIT_PK: RandRole.RANDRI,
    DataType.TRANSFER_INIT: RandRole.RANDRI,
    DataType.RESOLVE_INIT_PSK: RandRole.RANDRR,
    DataType.RESOLVE_INIT_PK: RandRole.RANDRR,
}


def check_composition(message: Message) -> None:
    """Raise MikeyError unless ``message`` has the payloads its data type requires: exactly one
    T, the RAND/RANDR/KEMAC/TP/TICKET/ERR the exchange needs (RFC 3830 §3.1, §5.1.2; RFC 6043
    §4.2: RANDRi in REQUEST_INIT and TRANSFER_INIT, RANDRr in RESOLVE_INIT), and the MAC (V)
    or signature (SIGN) last. Data types without a rule here (PK, DH, RSA-R) pass."""
    rule = _RULES.get(message.data_type)
    if rule is None:
        return
    required, last_kinds = rule
    name = message.data_type.name
    for kind in required:
        if not message.find(kind):
            raise MikeyError(ErrorNo.UNSPECIFIED, f"{name} without a {kind.__name__} payload")
    if len(message.find(Timestamp)) != 1:
        raise MikeyError(ErrorNo.INVALID_TS, f"{name} must carry exactly one T payload")
    role = _RANDR_ROLE.get(message.data_type)
    if role is not None and not any(
        isinstance(p, RandWithRole) and p.role == role for p in message.payloads
    ):
        raise MikeyError(ErrorNo.UNSPECIFIED, f"{name} without a RANDR of role {role.name}")
    if not message.payloads or not isinstance(message.payloads[-1], last_kinds):
        allowed = " or ".join(k.__name__ for k in last_kinds)
        raise MikeyError(ErrorNo.UNSPECIFIED, f"{name} must end with {allowed}")


def message(
    data_type: DataType,
    csb_id: int,
    payloads: Sequence[Payload],
    *,
    cs_map: CsIdMap | None = None,
    v: bool = False,
    prf_func: PrfFunc = PrfFunc.MIKEY_1,
) -> Message:
    """Build a message; shorthand for ``Message(Header(...), payloads)``."""
    header = Header(data_type, csb_id, cs_map if cs_map is not None else EmptyMap(), v, prf_func)
    return Message(header, tuple(payloads))
