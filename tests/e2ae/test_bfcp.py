"""BFCP (RFC 8855, version 1 over TCP): golden vectors laid out by hand from the RFC figures,
round trips, framing over arbitrary splits, strict errors, the floor control server, and
Wireshark's dissector as an independent reader."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ae.bfcp import (
    U16,
    AttrType,
    BfcpFramer,
    ErrorCode,
    ErrorCodeValue,
    FloorControlClient,
    FloorControlServer,
    Grouped,
    LocalBfcpError,
    Message,
    Primitive,
    Priority,
    RemoteBfcpError,
    RequestStatus,
    RequestStatusValue,
    SupportedAttributes,
    SupportedPrimitives,
    Text,
    Unknown,
    decode,
    floor_request_status,
    request_status_of,
)
from tests.conftest import require_tool


def h(text: str) -> bytes:
    """Hex with spaces/newlines and ``#`` comments, as the vectors below are written."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return bytes.fromhex("".join(lines))


# Common header: Ver=1 R=0 F=0 Res=0 -> 0x20 | Primitive | Payload Length (words)
#                Conference ID (32) | Transaction ID (16) | User ID (16)
HELLO = h("""
20 0b 0000      # ver 1, Hello (11), no payload
01020304        # conference 16909060
0005 0006       # transaction 5, user 6
""")
FLOOR_REQUEST = h("""
20 01 0002      # FloorRequest (1), 2 words
01020304 0007 0006
05 04 0009      # FLOOR-ID (2<<1|M) len 4, floor 9
05 04 000a      # FLOOR-ID 10
""")
FLOOR_REQUEST_STATUS_GRANTED = h("""
20 04 0005      # FloorRequestStatus (4), 5 words
01020304 0007 0006
1f 14 0003      # FLOOR-REQUEST-INFORMATION (15<<1|M) len 20, floor request id 3
25 08 0003      #   OVERALL-REQUEST-STATUS (18<<1|M) len 8, floor request id 3
0b 04 03 00     #     REQUEST-STATUS (5<<1|M) len 4, Granted (3), queue position 0
23 08 0009      #   FLOOR-REQUEST-STATUS (17<<1|M) len 8, floor 9
0b 04 03 00     #     REQUEST-STATUS Granted
""")
FLOOR_RELEASE = h("""
20 02 0001      # FloorRelease (2)
01020304 0008 0006
07 04 0003      # FLOOR-REQUEST-ID (3<<1|M) len 4, id 3
""")
HELLO_ACK = h("""
20 0c 0003      # HelloAck (12), 3 words
01020304 0005 0006
17 05 0b 0c 10 000000  # SUPPORTED-PRIMITIVES (11<<1|M) len 5: Hello HelloAck Goodbye, 3 pad
15 04 04 1e         # SUPPORTED-ATTRIBUTES (10<<1|M) len 4: FLOOR-ID(2<<1) FRI(15<<1)
""")
ERROR = h("""
20 0d 0003      # Error (13), 3 words
01020304 0009 0006
0d 03 06 00     # ERROR-CODE (6<<1|M) len 3: Invalid floor ID (6), 1 pad
0f 05 62 61 64 00 00 00 # ERROR-INFO (7<<1|M) len 5 "bad", 3 pad
""")
GOODBYE = h("20 10 0000 01020304 000a 0006")
GOODBYE_ACK = h("20 11 0000 01020304 000a 0006")

GOLDEN = [
    (HELLO, Message(Primitive.HELLO, 0x01020304, 5, 6)),
    (
        FLOOR_REQUEST,
        Message(
            Primitive.FLOOR_REQUEST,
            0x01020304,
            7,
            6,
            (U16(AttrType.FLOOR_ID, 9), U16(AttrType.FLOOR_ID, 10)),
        ),
    ),
    (
        FLOOR_REQUEST_STATUS_GRANTED,
        floor_request_status(0x01020304, 7, 6, 3, RequestStatusValue.GRANTED, [9]),
    ),
    (
        FLOOR_RELEASE,
        Message(Primitive.FLOOR_RELEASE, 0x01020304, 8, 6, (U16(AttrType.FLOOR_REQUEST_ID, 3),)),
    ),
    (
        HELLO_ACK,
        Message(
            Primitive.HELLO_ACK,
            0x01020304,
            5,
            6,
            (
                SupportedPrimitives((11, 12, 16)),
                SupportedAttributes((2, 15)),
            ),
        ),
    ),
    (
        ERROR,
        Message(
            Primitive.ERROR,
            0x01020304,
            9,
            6,
            (ErrorCode(6), Text(AttrType.ERROR_INFO, "bad")),
        ),
    ),
    (GOODBYE, Message(Primitive.GOODBYE, 0x01020304, 10, 6)),
    (GOODBYE_ACK, Message(Primitive.GOODBYE_ACK, 0x01020304, 10, 6)),
]


@pytest.mark.parametrize(("wire", "message"), GOLDEN, ids=lambda v: getattr(v, "primitive", ""))
def test_golden_vectors(wire: bytes, message: Message) -> None:
    assert message.to_bytes() == wire
    assert decode(wire) == message


def test_request_status_helper() -> None:
    assert request_status_of(decode(FLOOR_REQUEST_STATUS_GRANTED)) == (3, 3, [9])


# -- property tests --------------------------------------------------------------------------

_u16 = st.integers(0, 0xFFFF)
_text = st.text(max_size=20)
_leaf = st.one_of(
    st.builds(U16, st.sampled_from(sorted(AttrType)[:3]), _u16, st.booleans()),
    st.builds(Priority, st.integers(0, 7), st.booleans()),
    st.builds(RequestStatus, st.integers(0, 255), st.integers(0, 255), st.booleans()),
    st.builds(ErrorCode, st.integers(0, 255), st.binary(max_size=8), st.booleans()),
    st.builds(
        Text,
        st.sampled_from(
            [
                AttrType.ERROR_INFO,
                AttrType.STATUS_INFO,
                AttrType.USER_URI,
                AttrType.USER_DISPLAY_NAME,
            ]
        ),
        _text,
        st.booleans(),
    ),
    st.builds(SupportedPrimitives, st.lists(st.integers(1, 17), max_size=17).map(tuple)),
    st.builds(SupportedAttributes, st.lists(st.integers(1, 18), max_size=18).map(tuple)),
    st.builds(Unknown, st.integers(19, 127), st.binary(max_size=12), st.just(False)),
)
_grouped = st.builds(
    Grouped,
    st.sampled_from(
        [
            AttrType.FLOOR_REQUEST_INFORMATION,
            AttrType.FLOOR_REQUEST_STATUS,
            AttrType.OVERALL_REQUEST_STATUS,
            AttrType.BENEFICIARY_INFORMATION,
            AttrType.REQUESTED_BY_INFORMATION,
        ]
    ),
    _u16,
    st.lists(_leaf, max_size=4).map(tuple),
    st.booleans(),
)
_messages = st.builds(
    Message,
    st.sampled_from(
        [
            Primitive.HELLO,
            Primitive.GOODBYE,
            Primitive.GOODBYE_ACK,
            Primitive.FLOOR_QUERY,
            Primitive.USER_QUERY,
        ]
    ),
    st.integers(0, 0xFFFFFFFF),
    _u16,
    _u16,
    st.lists(st.one_of(_leaf, _grouped), max_size=6).map(tuple),
)


@settings(max_examples=300)
@given(st.lists(_messages, min_size=1, max_size=4), st.lists(st.integers(0, 2000), max_size=6))
def test_round_trip_over_any_split(messages: list[Message], cuts: list[int]) -> None:
    wire = b"".join(m.to_bytes() for m in messages)
    assert all(len(m.to_bytes()) % 4 == 0 for m in messages)
    framer = BfcpFramer()
    got: list[Message] = []
    points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    for a, b in itertools.pairwise(points):
        framer.feed(wire[a:b])
        while (msg := framer.next_message()) is not None:
            got.append(msg)
    assert got == messages
    assert framer.buffered == 0


@given(st.binary(min_size=12, max_size=80))
def test_random_bytes_decode_or_raise_remote(data: bytes) -> None:
    try:
        msg = decode(data)
    except RemoteBfcpError:
        return
    assert msg.to_bytes()[:12] == data[:12]


# -- strictness ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code", "where"),
    [
        (b"\x20\x0b\x00", ErrorCodeValue.INCORRECT_MESSAGE_LENGTH, "common header"),
        (HELLO[:3] + b"\x01" + HELLO[4:], ErrorCodeValue.INCORRECT_MESSAGE_LENGTH, "common header"),
        (b"\x40" + HELLO[1:], ErrorCodeValue.UNSUPPORTED_VERSION, "common header"),
        (b"\x28" + HELLO[1:], ErrorCodeValue.UNABLE_TO_PARSE_MESSAGE, "common header"),
        (HELLO[:1] + b"\x63" + HELLO[2:], ErrorCodeValue.UNKNOWN_PRIMITIVE, "common header"),
        (FLOOR_REQUEST[:13] + b"\x0c" + FLOOR_REQUEST[14:], 13, "FLOOR_REQUEST/FLOOR-ID"),
        (FLOOR_REQUEST[:13] + b"\x08" + FLOOR_REQUEST[14:], 10, "FLOOR_REQUEST/FLOOR-ID"),
        (FLOOR_REQUEST[:13] + b"\x03" + FLOOR_REQUEST[14:], 10, "FLOOR_REQUEST/FLOOR-ID"),
        (h("20 01 0000 01020304 0007 0006"), 10, "FLOOR_REQUEST"),
        (h("20 0b 0001 01020304 0005 0006 c9 04 0000"), 4, "HELLO"),
        (h("20 0b 0001 01020304 0005 0006 0f 04 ff fe"), 10, "HELLO/ERROR-INFO"),
    ],
)
def test_malformed_messages(wire: bytes, code: int, where: str) -> None:
    with pytest.raises(RemoteBfcpError) as info:
        decode(wire)
    assert info.value.error_code == code
    assert info.value.where == where
    if len(wire) >= 12:
        answer = info.value.error_message()
        assert answer is not None and answer.primitive == Primitive.ERROR
        assert answer.transaction_id == int.from_bytes(wire[8:10], "big")
        error = answer.first(AttrType.ERROR_CODE)
        assert isinstance(error, ErrorCode) and error.code == code


def test_unknown_mandatory_attribute_lists_it_in_details() -> None:
    with pytest.raises(RemoteBfcpError) as info:
        decode(h("20 0b 0001 01020304 0005 0006 c9 04 0000"))  # type 100, M set
    assert info.value.details == bytes([100 << 1])
    # without M it is carried along and ignored
    msg = decode(h("20 0b 0001 01020304 0005 0006 c8 04 abcd"))
    assert msg.attributes == (Unknown(100, b"\xab\xcd", False),)


def test_framer_skips_a_bad_message_and_goes_on() -> None:
    framer = BfcpFramer()
    framer.feed(HELLO[:1] + b"\x63" + HELLO[2:] + GOODBYE)
    with pytest.raises(RemoteBfcpError):
        framer.next_message()
    assert framer.next_message() == decode(GOODBYE)


def test_encoding_limits_are_local_errors() -> None:
    with pytest.raises(LocalBfcpError):
        U16(AttrType.FLOOR_ID, 70000)
    with pytest.raises(LocalBfcpError):
        Text(AttrType.ERROR_INFO, "x" * 300).to_bytes()
    with pytest.raises(LocalBfcpError):
        Grouped(
            AttrType.FLOOR_REQUEST_INFORMATION,
            1,
            tuple(Text(AttrType.STATUS_INFO, "y" * 100) for _ in range(3)),
        ).to_bytes()
    with pytest.raises(LocalBfcpError):
        Unknown(2, b"")
    with pytest.raises(LocalBfcpError):
        FloorControlClient(1, 1).floor_request([])


# -- floor control ---------------------------------------------------------------------------


def _exchange(server: FloorControlServer, msg: Message) -> Message:
    (reply,) = server.handle(decode(msg.to_bytes()))
    return decode(reply.to_bytes())


def test_floor_control_server_grants_and_releases() -> None:
    client = FloorControlClient(0x01020304, 6)
    server = FloorControlServer(0x01020304, frozenset({9}))
    hello = client.hello()
    ack = _exchange(server, hello)
    assert ack.primitive == Primitive.HELLO_ACK and ack.transaction_id == hello.transaction_id
    prims = ack.first(AttrType.SUPPORTED_PRIMITIVES)
    assert isinstance(prims, SupportedPrimitives) and Primitive.FLOOR_REQUEST in prims.primitives
    request = client.floor_request([9])
    status = _exchange(server, request)
    assert status.transaction_id == request.transaction_id
    frid, value, floors = request_status_of(status) or (0, 0, [])
    assert value == RequestStatusValue.GRANTED and floors == [9]
    assert list(server.granted) == [frid]
    released = _exchange(server, client.floor_release(frid))
    assert request_status_of(released) == (frid, RequestStatusValue.RELEASED, [9])
    assert server.granted == {} and [g.floor_request_id for g in server.released] == [frid]
    again = _exchange(server, client.floor_release(frid))
    error = again.first(AttrType.ERROR_CODE)
    assert isinstance(error, ErrorCode) and error.code == 7
    bye = _exchange(server, client.goodbye())
    assert bye.primitive == Primitive.GOODBYE_ACK


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (FloorControlClient(99, 6).hello(), ErrorCodeValue.CONFERENCE_DOES_NOT_EXIST),
        (FloorControlClient(1, 6).floor_request([5]), ErrorCodeValue.INVALID_FLOOR_ID),
        (Message(Primitive.FLOOR_QUERY, 1, 3, 6), ErrorCodeValue.UNKNOWN_PRIMITIVE),
    ],
)
def test_floor_control_server_errors(message: Message, code: int) -> None:
    reply = _exchange(FloorControlServer(1, frozenset({9})), message)
    error = reply.first(AttrType.ERROR_CODE)
    assert reply.primitive == Primitive.ERROR and isinstance(error, ErrorCode)
    assert error.code == code and reply.transaction_id == message.transaction_id


def test_wireshark_reads_what_we_write(tmp_path: Path) -> None:
    text2pcap = require_tool("text2pcap")
    tshark = require_tool("tshark")
    client = FloorControlClient(77, 6)
    server = FloorControlServer(77)
    flow: list[Message] = []
    for msg in (client.hello(), client.floor_request([4, 5]), client.floor_release(1)):
        flow.append(msg)
        flow.extend(server.handle(msg))
    dump = "".join("0000 " + " ".join(f"{b:02x}" for b in m.to_bytes()) + "\n" for m in flow)
    (tmp_path / "bfcp.txt").write_text(dump)
    subprocess.run(
        [text2pcap, "-q", "-T", "40000,5070", str(tmp_path / "bfcp.txt"), str(tmp_path / "b.pcap")],
        check=True,
    )
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(tmp_path / "b.pcap"),
            "-d",
            "tcp.port==5070,bfcp",
            "-T",
            "fields",
            "-e",
            "bfcp.primitive",
            "-e",
            "bfcp.conference_id",
            "-e",
            "bfcp.floor_id",
            "-e",
            "bfcp.request_status",
            "-e",
            "_ws.expert.message",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [line.split("\t") for line in out]
    assert [r[0] for r in rows] == [str(int(m.primitive)) for m in flow]
    assert all(r[1] == "77" for r in rows)
    assert rows[2][2] == "4,5"  # FloorRequest floors
    assert rows[3][2] == "4,5" and rows[3][3].split(",")[0] == "3"  # granted
    assert rows[5][3].split(",")[0] == "6"  # released
    assert all(r[4] == "" for r in rows), rows  # no expert warnings
