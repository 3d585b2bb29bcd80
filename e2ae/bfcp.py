"""BFCP (RFC 8855) version 1 over TCP: binary codec, framing and a floor control server, sans I/O.

Wire layout (RFC 8855 section 5.1), 12-byte common header, big-endian::

    Ver(3) R(1) F(1) Res(3) | Primitive(8) | Payload Length(16, in 4-octet units)
    Conference ID(32)
    Transaction ID(16) | User ID(16)

then attributes (section 5.2): ``Type(7) M(1) | Length(8, octets incl. this 2-byte header,
excluding padding) | contents``, each padded with zeros to a multiple of 4 octets.

- :class:`Message` and the attribute value objects encode with ``to_bytes()``;
  :func:`decode` parses one whole message; :class:`BfcpFramer` splits a TCP byte stream.
- Errors: :class:`RemoteBfcpError` carries the RFC 8855 error code to answer with (an ``Error``
  message) and the header fields when they were readable; :class:`LocalBfcpError` for values
  that cannot be encoded.
- :class:`FloorControlServer` answers ``Hello``, grants every floor request at once, handles
  ``FloorRelease`` and ``Goodbye``; :class:`FloorControlClient` builds a participant's requests.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence

import attrs

VERSION_TCP = 1
HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHIHH")


class Primitive(enum.IntEnum):
    FLOOR_REQUEST = 1
    FLOOR_RELEASE = 2
    FLOOR_REQUEST_QUERY = 3
    FLOOR_REQUEST_STATUS = 4
    USER_QUERY = 5
    USER_STATUS = 6
    FLOOR_QUERY = 7
    FLOOR_STATUS = 8
    CHAIR_ACTION = 9
    CHAIR_ACTION_ACK = 10
    HELLO = 11
    HELLO_ACK = 12
    ERROR = 13
    FLOOR_REQUEST_STATUS_ACK = 14
    FLOOR_STATUS_ACK = 15
    GOODBYE = 16
    GOODBYE_ACK = 17


class AttrType(enum.IntEnum):
    BENEFICIARY_ID = 1
    FLOOR_ID = 2
    FLOOR_REQUEST_ID = 3
    PRIORITY = 4
    REQUEST_STATUS = 5
    ERROR_CODE = 6
    ERROR_INFO = 7
    PARTICIPANT_PROVIDED_INFO = 8
    STATUS_INFO = 9
    SUPPORTED_ATTRIBUTES = 10
    SUPPORTED_PRIMITIVES = 11
    USER_DISPLAY_NAME = 12
    USER_URI = 13
    BENEFICIARY_INFORMATION = 14
    FLOOR_REQUEST_INFORMATION = 15
    REQUESTED_BY_INFORMATION = 16
    FLOOR_REQUEST_STATUS = 17
    OVERALL_REQUEST_STATUS = 18


class RequestStatusValue(enum.IntEnum):
    PENDING = 1
    ACCEPTED = 2
    GRANTED = 3
    DENIED = 4
    CANCELLED = 5
    RELEASED = 6
    REVOKED = 7


class ErrorCodeValue(enum.IntEnum):
    CONFERENCE_DOES_NOT_EXIST = 1
    USER_DOES_NOT_EXIST = 2
    UNKNOWN_PRIMITIVE = 3
    UNKNOWN_MANDATORY_ATTRIBUTE = 4
    UNAUTHORIZED_OPERATION = 5
    INVALID_FLOOR_ID = 6
    FLOOR_REQUEST_ID_DOES_NOT_EXIST = 7
    MAX_FLOOR_REQUESTS_REACHED = 8
    USE_TLS = 9
    UNABLE_TO_PARSE_MESSAGE = 10
    USE_DTLS = 11
    UNSUPPORTED_VERSION = 12
    INCORRECT_MESSAGE_LENGTH = 13
    GENERIC_ERROR = 14


U16_TYPES = frozenset({AttrType.BENEFICIARY_ID, AttrType.FLOOR_ID, AttrType.FLOOR_REQUEST_ID})
TEXT_TYPES = frozenset(
    {
        AttrType.ERROR_INFO,
        AttrType.PARTICIPANT_PROVIDED_INFO,
        AttrType.STATUS_INFO,
        AttrType.USER_DISPLAY_NAME,
        AttrType.USER_URI,
    }
)
GROUPED_TYPES = frozenset(
    {
        AttrType.BENEFICIARY_INFORMATION,
        AttrType.FLOOR_REQUEST_INFORMATION,
        AttrType.REQUESTED_BY_INFORMATION,
        AttrType.FLOOR_REQUEST_STATUS,
        AttrType.OVERALL_REQUEST_STATUS,
    }
)
MAX_ATTRIBUTE_LENGTH = 255


class BfcpError(Exception):
    """Root of every BFCP error."""


class LocalBfcpError(BfcpError, ValueError):
    """A message or attribute we were asked to build cannot be encoded."""

    def __init__(self, reason: str, *, where: str = "", value: object = None) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where
        self.value = value


class RemoteBfcpError(BfcpError):
    """The peer sent bytes that are not a valid BFCP message.

    ``error_code`` is the RFC 8855 code to put in the ``Error`` answer; ``conference_id``,
    ``transaction_id`` and ``user_id`` are set when the common header could be read (to address
    that answer). ``recoverable`` says the message was skipped whole and the stream can go on.
    """

    def __init__(
        self,
        reason: str,
        *,
        where: str,
        value: object = None,
        error_code: ErrorCodeValue = ErrorCodeValue.UNABLE_TO_PARSE_MESSAGE,
        header: tuple[int, int, int] | None = None,
        recoverable: bool = False,
        details: bytes = b"",
    ) -> None:
        shown = "" if value is None else f" ({value!r})"
        super().__init__(f"malformed BFCP in {where}: {reason}{shown}")
        self.reason = reason
        self.where = where
        self.value = value
        self.error_code = error_code
        self.header = header
        self.recoverable = recoverable
        self.details = details

    def error_message(self) -> Message | None:
        """The ``Error`` message that answers this, if the header was readable."""
        if self.header is None:
            return None
        conference_id, transaction_id, user_id = self.header
        attrs_: list[Attribute] = [ErrorCode(int(self.error_code), self.details)]
        info = self.reason.encode("utf-8")[:200].decode("utf-8", "ignore")
        attrs_.append(Text(AttrType.ERROR_INFO, info))
        return Message(Primitive.ERROR, conference_id, transaction_id, user_id, tuple(attrs_))


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _u16(value: int, where: str) -> None:
    if not 0 <= value <= 0xFFFF:
        raise LocalBfcpError("must fit in 16 bits", where=where, value=value)


def _attr_bytes(attr_type: int, mandatory: bool, contents: bytes) -> bytes:
    length = 2 + len(contents)
    if length > MAX_ATTRIBUTE_LENGTH:
        raise LocalBfcpError(
            f"attribute is {length} octets, at most {MAX_ATTRIBUTE_LENGTH}",
            where=_type_name(attr_type),
            value=length,
        )
    head = bytes([(attr_type << 1) | int(mandatory), length])
    return head + contents + bytes(_pad(length))


def _type_name(attr_type: int) -> str:
    try:
        return AttrType(attr_type).name.replace("_", "-")
    except ValueError:
        return f"attribute type {attr_type}"


# ---------------------------------------------------------------------------------------------
# Attributes


@attrs.frozen
class U16:
    """BENEFICIARY-ID, FLOOR-ID or FLOOR-REQUEST-ID: an unsigned 16-bit value."""

    type: AttrType
    value: int
    mandatory: bool = True

    def __attrs_post_init__(self) -> None:
        if self.type not in U16_TYPES:
            raise LocalBfcpError("not an Unsigned16 attribute", where=_type_name(self.type))
        _u16(self.value, _type_name(self.type))

    def to_bytes(self) -> bytes:
        return _attr_bytes(self.type, self.mandatory, struct.pack("!H", self.value))


@attrs.frozen
class Priority:
    """PRIORITY: a 3-bit priority (0 lowest .. 4 highest), 13 reserved bits."""

    priority: int
    mandatory: bool = True

    @property
    def type(self) -> AttrType:
        return AttrType.PRIORITY

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.priority <= 7:
            raise LocalBfcpError("priority must fit in 3 bits", where="PRIORITY")

    def to_bytes(self) -> bytes:
        return _attr_bytes(AttrType.PRIORITY, self.mandatory, bytes([self.priority << 5, 0]))


@attrs.frozen
class RequestStatus:
    """REQUEST-STATUS: the status of a floor request and its queue position."""

    status: int
    queue_position: int = 0
    mandatory: bool = True

    @property
    def type(self) -> AttrType:
        return AttrType.REQUEST_STATUS

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.status <= 255 or not 0 <= self.queue_position <= 255:
            raise LocalBfcpError("status and queue position are octets", where="REQUEST-STATUS")

    def to_bytes(self) -> bytes:
        contents = bytes([self.status, self.queue_position])
        return _attr_bytes(AttrType.REQUEST_STATUS, self.mandatory, contents)


@attrs.frozen
class ErrorCode:
    """ERROR-CODE: an error code and its error-specific details."""

    code: int
    details: bytes = b""
    mandatory: bool = True

    @property
    def type(self) -> AttrType:
        return AttrType.ERROR_CODE

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.code <= 255:
            raise LocalBfcpError("error code is an octet", where="ERROR-CODE", value=self.code)

    def to_bytes(self) -> bytes:
        contents = bytes([self.code]) + self.details
        return _attr_bytes(AttrType.ERROR_CODE, self.mandatory, contents)


@attrs.frozen
class Text:
    """ERROR-INFO, PARTICIPANT-PROVIDED-INFO, STATUS-INFO, USER-DISPLAY-NAME, USER-URI (UTF-8)."""

    type: AttrType
    text: str
    mandatory: bool = True

    def __attrs_post_init__(self) -> None:
        if self.type not in TEXT_TYPES:
            raise LocalBfcpError("not a text attribute", where=_type_name(self.type))

    def to_bytes(self) -> bytes:
        return _attr_bytes(self.type, self.mandatory, self.text.encode("utf-8"))


@attrs.frozen
class SupportedPrimitives:
    """SUPPORTED-PRIMITIVES: one octet per primitive."""

    primitives: tuple[int, ...]
    mandatory: bool = True

    @property
    def type(self) -> AttrType:
        return AttrType.SUPPORTED_PRIMITIVES

    def __attrs_post_init__(self) -> None:
        if not all(0 <= p <= 255 for p in self.primitives):
            raise LocalBfcpError("primitives are octets", where="SUPPORTED-PRIMITIVES")

    def to_bytes(self) -> bytes:
        contents = bytes(self.primitives)
        return _attr_bytes(AttrType.SUPPORTED_PRIMITIVES, self.mandatory, contents)


@attrs.frozen
class SupportedAttributes:
    """SUPPORTED-ATTRIBUTES: one octet per attribute type (7 bits, then a reserved bit)."""

    attributes: tuple[int, ...]
    mandatory: bool = True

    @property
    def type(self) -> AttrType:
        return AttrType.SUPPORTED_ATTRIBUTES

    def __attrs_post_init__(self) -> None:
        if not all(0 <= a <= 127 for a in self.attributes):
            raise LocalBfcpError("attribute types are 7 bits", where="SUPPORTED-ATTRIBUTES")

    def to_bytes(self) -> bytes:
        contents = bytes(a << 1 for a in self.attributes)
        return _attr_bytes(AttrType.SUPPORTED_ATTRIBUTES, self.mandatory, contents)


@attrs.frozen
class Grouped:
    """A grouped attribute: a 16-bit id (floor, floor request, beneficiary or requester) and
    sub-attributes. FLOOR-REQUEST-INFORMATION, FLOOR-REQUEST-STATUS, OVERALL-REQUEST-STATUS,
    BENEFICIARY-INFORMATION, REQUESTED-BY-INFORMATION."""

    type: AttrType
    id: int
    attributes: tuple[Attribute, ...] = ()
    mandatory: bool = True

    def __attrs_post_init__(self) -> None:
        if self.type not in GROUPED_TYPES:
            raise LocalBfcpError("not a grouped attribute", where=_type_name(self.type))
        _u16(self.id, _type_name(self.type))

    def find(self, attr_type: AttrType) -> list[Attribute]:
        return [a for a in self.attributes if a.type == attr_type]

    def to_bytes(self) -> bytes:
        inner = b"".join(a.to_bytes() for a in self.attributes)
        contents = struct.pack("!H", self.id) + inner
        if 2 + len(contents) > MAX_ATTRIBUTE_LENGTH:
            raise LocalBfcpError(
                "grouped attribute longer than 255 octets",
                where=_type_name(self.type),
                value=2 + len(contents),
            )
        # Sub-attributes are padded; the group's length covers them (RFC 8855 section 5.2).
        return _attr_bytes(self.type, self.mandatory, contents)


@attrs.frozen
class Unknown:
    """An attribute type this codec does not know, carried with its raw contents."""

    type: int
    data: bytes
    mandatory: bool = False

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.type <= 127:
            raise LocalBfcpError("attribute types are 7 bits", value=self.type)
        if self.type in AttrType._value2member_map_:
            raise LocalBfcpError("known attribute type", where=_type_name(self.type))

    def to_bytes(self) -> bytes:
        return _attr_bytes(self.type, self.mandatory, self.data)


Attribute = (
    U16
    | Priority
    | RequestStatus
    | ErrorCode
    | Text
    | SupportedPrimitives
    | SupportedAttributes
    | Grouped
    | Unknown
)


# ---------------------------------------------------------------------------------------------
# Messages

#: Attributes each primitive must carry (RFC 8855 section 5.3), checked on decode.
REQUIRED: dict[Primitive, tuple[AttrType, ...]] = {
    Primitive.FLOOR_REQUEST: (AttrType.FLOOR_ID,),
    Primitive.FLOOR_RELEASE: (AttrType.FLOOR_REQUEST_ID,),
    Primitive.FLOOR_REQUEST_QUERY: (AttrType.FLOOR_REQUEST_ID,),
    Primitive.FLOOR_REQUEST_STATUS: (AttrType.FLOOR_REQUEST_INFORMATION,),
    Primitive.CHAIR_ACTION: (AttrType.FLOOR_REQUEST_INFORMATION,),
    Primitive.HELLO_ACK: (AttrType.SUPPORTED_PRIMITIVES, AttrType.SUPPORTED_ATTRIBUTES),
    Primitive.ERROR: (AttrType.ERROR_CODE,),
}


@attrs.frozen
class Message:
    """One BFCP message: the common header fields and its attributes, in order."""

    primitive: Primitive
    conference_id: int
    transaction_id: int
    user_id: int
    attributes: tuple[Attribute, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.conference_id <= 0xFFFFFFFF:
            raise LocalBfcpError("conference id must fit in 32 bits", value=self.conference_id)
        _u16(self.transaction_id, "transaction id")
        _u16(self.user_id, "user id")

    def find(self, attr_type: AttrType) -> list[Attribute]:
        return [a for a in self.attributes if a.type == attr_type]

    def first(self, attr_type: AttrType) -> Attribute | None:
        found = self.find(attr_type)
        return found[0] if found else None

    @property
    def floor_ids(self) -> list[int]:
        return [
            a.value for a in self.attributes if isinstance(a, U16) and a.type == AttrType.FLOOR_ID
        ]

    def to_bytes(self) -> bytes:
        payload = b"".join(a.to_bytes() for a in self.attributes)
        units = len(payload) // 4
        if units > 0xFFFF:
            raise LocalBfcpError("payload too long", value=len(payload))
        header = _HEADER.pack(
            VERSION_TCP << 5,
            int(self.primitive),
            units,
            self.conference_id,
            self.transaction_id,
            self.user_id,
        )
        return header + payload


def request_status_of(message: Message) -> tuple[int, int, list[int]] | None:
    """(floor request id, overall status, floor ids) of a FloorRequestStatus, if present."""
    info = message.first(AttrType.FLOOR_REQUEST_INFORMATION)
    if not isinstance(info, Grouped):
        return None
    status = 0
    overall = info.find(AttrType.OVERALL_REQUEST_STATUS)
    floors: list[int] = []
    for group in (*overall, *info.find(AttrType.FLOOR_REQUEST_STATUS)):
        assert isinstance(group, Grouped)
        rs = group.find(AttrType.REQUEST_STATUS)
        if group.type == AttrType.FLOOR_REQUEST_STATUS:
            floors.append(group.id)
        if rs and isinstance(rs[0], RequestStatus) and not status:
            status = rs[0].status
    return info.id, status, floors


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode_attrs(
    data: bytes, where: str, header: tuple[int, int, int]
) -> tuple[list[Attribute], list[int]]:
    """Attributes in ``data``; also the types of unknown attributes that had M set."""
    out: list[Attribute] = []
    unknown_mandatory: list[int] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise _bad(f"{len(data) - pos} stray octet(s) after the attributes", where, header)
        attr_type, mandatory = data[pos] >> 1, bool(data[pos] & 1)
        length = data[pos + 1]
        name = f"{where}/{_type_name(attr_type)}"
        if length < 2 or pos + length > len(data):
            raise _bad(
                f"attribute length {length} does not fit ({len(data) - pos} octets left)",
                name,
                header,
                ErrorCodeValue.INCORRECT_MESSAGE_LENGTH,
            )
        contents = data[pos + 2 : pos + length]
        padded = length + _pad(length)
        if pos + padded > len(data):
            raise _bad("padding missing", name, header, ErrorCodeValue.INCORRECT_MESSAGE_LENGTH)
        pos += padded
        attr, unknown = _decode_one(attr_type, mandatory, contents, name, header)
        out.append(attr)
        unknown_mandatory.extend(unknown)
    return out, unknown_mandatory


def _bad(
    reason: str,
    where: str,
    header: tuple[int, int, int],
    code: ErrorCodeValue = ErrorCodeValue.UNABLE_TO_PARSE_MESSAGE,
) -> RemoteBfcpError:
    return RemoteBfcpError(reason, where=where, error_code=code, header=header, recoverable=True)


def _decode_one(
    attr_type: int, mandatory: bool, contents: bytes, where: str, header: tuple[int, int, int]
) -> tuple[Attribute, list[int]]:
    def need(size: int) -> None:
        if len(contents) != size:
            raise _bad(f"contents must be {size} octets, got {len(contents)}", where, header)

    try:
        known = AttrType(attr_type)
    except ValueError:
        return Unknown(attr_type, contents, mandatory), ([attr_type] if mandatory else [])
    if known in U16_TYPES:
        need(2)
        return U16(known, struct.unpack("!H", contents)[0], mandatory), []
    if known == AttrType.PRIORITY:
        need(2)
        return Priority(contents[0] >> 5, mandatory), []
    if known == AttrType.REQUEST_STATUS:
        need(2)
        return RequestStatus(contents[0], contents[1], mandatory), []
    if known == AttrType.ERROR_CODE:
        if not contents:
            raise _bad("ERROR-CODE needs an error code", where, header)
        return ErrorCode(contents[0], contents[1:], mandatory), []
    if known in TEXT_TYPES:
        try:
            text = contents.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("text is not UTF-8", where, header) from None
        return Text(known, text, mandatory), []
    if known == AttrType.SUPPORTED_PRIMITIVES:
        return SupportedPrimitives(tuple(contents), mandatory), []
    if known == AttrType.SUPPORTED_ATTRIBUTES:
        return SupportedAttributes(tuple(b >> 1 for b in contents), mandatory), []
    # grouped
    if len(contents) < 2:
        raise _bad("grouped attribute needs its 16-bit id", where, header)
    inner, unknown = _decode_attrs(contents[2:], where, header)
    return Grouped(known, struct.unpack("!H", contents[:2])[0], tuple(inner), mandatory), unknown


def _decode_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    first, primitive, units, conference_id, transaction_id, user_id = _HEADER.unpack_from(data)
    return first, primitive, units, conference_id, transaction_id, user_id


def decode(data: bytes) -> Message:
    """Decode exactly one whole message; raises :class:`RemoteBfcpError`."""
    if len(data) < HEADER_SIZE:
        raise RemoteBfcpError(
            f"{len(data)} octets, the common header alone is {HEADER_SIZE}",
            where="common header",
            error_code=ErrorCodeValue.INCORRECT_MESSAGE_LENGTH,
        )
    first, primitive, units, conference_id, transaction_id, user_id = _decode_header(data)
    header = (conference_id, transaction_id, user_id)
    if HEADER_SIZE + units * 4 != len(data):
        raise _bad(
            f"payload length says {units * 4} octets, got {len(data) - HEADER_SIZE}",
            "common header",
            header,
            ErrorCodeValue.INCORRECT_MESSAGE_LENGTH,
        )
    version = first >> 5
    if version != VERSION_TCP:
        raise _bad(
            f"version {version}; only version 1 (TCP) is supported",
            "common header",
            header,
            ErrorCodeValue.UNSUPPORTED_VERSION,
        )
    if first & 0x08:
        raise _bad("F (fragmentation) must not be set over TCP", "common header", header)
    try:
        prim = Primitive(primitive)
    except ValueError:
        raise _bad(
            f"unknown primitive {primitive}",
            "common header",
            header,
            ErrorCodeValue.UNKNOWN_PRIMITIVE,
        ) from None
    where = prim.name
    attributes, unknown = _decode_attrs(data[HEADER_SIZE:], where, header)
    if unknown:
        error = _bad(
            f"unknown mandatory attribute type(s) {unknown}",
            where,
            header,
            ErrorCodeValue.UNKNOWN_MANDATORY_ATTRIBUTE,
        )
        error.details = bytes(t << 1 for t in unknown)
        raise error
    message = Message(prim, conference_id, transaction_id, user_id, tuple(attributes))
    for required in REQUIRED.get(prim, ()):
        if not message.find(required):
            raise _bad(f"{prim.name} needs {_type_name(required)}", where, header)
    return message


class BfcpFramer:
    """Splits a TCP byte stream into messages: ``feed(data)``, then ``next_message()``.

    A message whose header was readable is skipped whole when it is bad (``recoverable``).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_message(self) -> Message | None:
        if len(self._buf) < HEADER_SIZE:
            return None
        first, _, units, conference_id, transaction_id, user_id = _decode_header(bytes(self._buf))
        if first >> 5 != VERSION_TCP:
            # Without a version we understand, the length cannot be trusted: resync is impossible.
            raise RemoteBfcpError(
                f"version {first >> 5}; only version 1 (TCP) is supported",
                where="common header",
                error_code=ErrorCodeValue.UNSUPPORTED_VERSION,
                header=(conference_id, transaction_id, user_id),
            )
        size = HEADER_SIZE + units * 4
        if len(self._buf) < size:
            return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return decode(data)


# ---------------------------------------------------------------------------------------------
# Participants

#: Primitives the floor control server of this module handles.
SERVER_PRIMITIVES: tuple[int, ...] = (
    Primitive.FLOOR_REQUEST,
    Primitive.FLOOR_RELEASE,
    Primitive.FLOOR_REQUEST_STATUS,
    Primitive.HELLO,
    Primitive.HELLO_ACK,
    Primitive.ERROR,
    Primitive.GOODBYE,
    Primitive.GOODBYE_ACK,
)
SUPPORTED_ATTRIBUTE_TYPES: tuple[int, ...] = tuple(int(t) for t in AttrType)


def floor_request_status(
    conference_id: int,
    transaction_id: int,
    user_id: int,
    floor_request_id: int,
    status: RequestStatusValue,
    floor_ids: Sequence[int],
    *,
    queue_position: int = 0,
) -> Message:
    """A FloorRequestStatus with FLOOR-REQUEST-INFORMATION, OVERALL-REQUEST-STATUS and one
    FLOOR-REQUEST-STATUS per floor."""
    rs = RequestStatus(int(status), queue_position)
    groups: list[Attribute] = [
        Grouped(AttrType.OVERALL_REQUEST_STATUS, floor_request_id, (rs,)),
        *(Grouped(AttrType.FLOOR_REQUEST_STATUS, f, (rs,)) for f in floor_ids),
    ]
    info = Grouped(AttrType.FLOOR_REQUEST_INFORMATION, floor_request_id, tuple(groups))
    return Message(Primitive.FLOOR_REQUEST_STATUS, conference_id, transaction_id, user_id, (info,))


def error_message(
    conference_id: int,
    transaction_id: int,
    user_id: int,
    code: ErrorCodeValue,
    info: str | None = None,
) -> Message:
    attributes: list[Attribute] = [ErrorCode(int(code))]
    if info:
        attributes.append(Text(AttrType.ERROR_INFO, info))
    return Message(Primitive.ERROR, conference_id, transaction_id, user_id, tuple(attributes))


@attrs.frozen
class Grant:
    """A floor request the server holds."""

    floor_request_id: int
    user_id: int
    floor_ids: tuple[int, ...]


@attrs.define
class FloorControlServer:
    """A floor control server that grants every request at once.

    ``floors`` restricts the floor ids it knows (``None``: any). Requests for another
    conference get error 1, unknown floors error 6, unknown floor request ids error 7.
    """

    conference_id: int
    floors: frozenset[int] | None = None
    granted: dict[int, Grant] = attrs.Factory(dict)
    released: list[Grant] = attrs.Factory(list)
    _next_id: int = 1

    def handle(self, msg: Message) -> list[Message]:
        """Replies to one received message."""
        header = (msg.conference_id, msg.transaction_id, msg.user_id)
        if msg.primitive in (
            Primitive.HELLO_ACK,
            Primitive.GOODBYE_ACK,
            Primitive.ERROR,
            Primitive.FLOOR_REQUEST_STATUS_ACK,
            Primitive.FLOOR_STATUS_ACK,
        ):
            return []
        if msg.conference_id != self.conference_id:
            return [
                error_message(
                    *header,
                    ErrorCodeValue.CONFERENCE_DOES_NOT_EXIST,
                    f"conference {msg.conference_id} does not exist",
                )
            ]
        if msg.primitive == Primitive.HELLO:
            return [
                Message(
                    Primitive.HELLO_ACK,
                    *header,
                    (
                        SupportedPrimitives(SERVER_PRIMITIVES),
                        SupportedAttributes(SUPPORTED_ATTRIBUTE_TYPES),
                    ),
                )
            ]
        if msg.primitive == Primitive.GOODBYE:
            return [Message(Primitive.GOODBYE_ACK, *header)]
        if msg.primitive == Primitive.FLOOR_REQUEST:
            floor_ids = tuple(msg.floor_ids)
            unknown = [f for f in floor_ids if self.floors is not None and f not in self.floors]
            if unknown:
                return [
                    error_message(
                        *header, ErrorCodeValue.INVALID_FLOOR_ID, f"unknown floor {unknown[0]}"
                    )
                ]
            request_id = self._allocate()
            self.granted[request_id] = Grant(request_id, msg.user_id, floor_ids)
            return [
                floor_request_status(*header, request_id, RequestStatusValue.GRANTED, floor_ids)
            ]
        if msg.primitive == Primitive.FLOOR_RELEASE:
            attr = msg.first(AttrType.FLOOR_REQUEST_ID)
            assert isinstance(attr, U16)
            grant = self.granted.get(attr.value)
            if grant is None or grant.user_id != msg.user_id:
                return [
                    error_message(
                        *header,
                        ErrorCodeValue.FLOOR_REQUEST_ID_DOES_NOT_EXIST,
                        f"floor request {attr.value} does not exist",
                    )
                ]
            del self.granted[attr.value]
            self.released.append(grant)
            return [
                floor_request_status(
                    *header, attr.value, RequestStatusValue.RELEASED, grant.floor_ids
                )
            ]
        return [
            error_message(
                *header, ErrorCodeValue.UNKNOWN_PRIMITIVE, f"{msg.primitive.name} not supported"
            )
        ]

    def _allocate(self) -> int:
        while True:
            candidate = self._next_id
            self._next_id = self._next_id % 0xFFFF + 1
            if candidate not in self.granted:
                return candidate


@attrs.define
class FloorControlClient:
    """A floor participant: builds requests with fresh transaction ids (never 0)."""

    conference_id: int
    user_id: int
    _next_tid: int = 1

    def _tid(self) -> int:
        tid = self._next_tid
        self._next_tid = self._next_tid % 0xFFFF + 1
        return tid

    def hello(self) -> Message:
        return Message(Primitive.HELLO, self.conference_id, self._tid(), self.user_id)

    def goodbye(self) -> Message:
        return Message(Primitive.GOODBYE, self.conference_id, self._tid(), self.user_id)

    def floor_request(self, floor_ids: Iterable[int]) -> Message:
        ids = tuple(U16(AttrType.FLOOR_ID, f) for f in floor_ids)
        if not ids:
            raise LocalBfcpError("a FloorRequest needs at least one floor id")
        return Message(Primitive.FLOOR_REQUEST, self.conference_id, self._tid(), self.user_id, ids)

    def floor_release(self, floor_request_id: int) -> Message:
        return Message(
            Primitive.FLOOR_RELEASE,
            self.conference_id,
            self._tid(),
            self.user_id,
            (U16(AttrType.FLOOR_REQUEST_ID, floor_request_id),),
        )
