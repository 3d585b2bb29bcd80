"""Fuzzing as property tests: the four parsers a network peer reaches take any bytes.

The property, with the oracle of ``bench/fuzz.py`` (the same checks its mutational runs make):
any input gives a result or the parser's documented ``Remote…`` error, never another exception;
what parses serialises to something that parses back the same; TCP framing gives the same
results fed whole or in pieces. Documented errors per parser:

- SIP (:func:`~pcscf.sip.message.parse_datagram`, :class:`~pcscf.sip.message.StreamParser`,
  and what the proxy reads of a message): :class:`~pcscf.sip.errors.RemoteSipError`, of which
  :class:`~pcscf.sip.message.MessageError` is the parser's own;
- SDP (:meth:`~pcscf.sdp.SessionDescription.parse`): :class:`~pcscf.errors.SdpError`;
- the e2ae rewrite (all four steps): ``SdpError`` and :class:`~pcscf.errors.RemoteRewriteError`;
- H.248 (:func:`iq.codec.decode`, the typed decode of :mod:`iq.profile`):
  :class:`~iq.errors.CodecError`, :class:`~iq.errors.ProfileError`,
  :class:`~iq.errors.RequestFailed`;
- TPKT (:class:`~iq.tpkt.TpktDecoder`): :class:`~iq.errors.CodecError`.

The strategies are structure-aware (near-valid SIP messages, SDP bodies of the golden cases with
lines mutated, the Iq sample messages with tokens mutated, TPKT frames with bad versions and
lengths) and also plain random bytes. At the end: the inputs the fuzzer found, as regressions.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iq import codec, profile, samples
from iq.errors import CodecError, LocalIqError, ProfileError
from iq.tpkt import frame
from pcscf.errors import SdpError
from pcscf.sdp import SessionDescription
from pcscf.sip.errors import RemoteSipError
from pcscf.sip.headers import Via
from pcscf.sip.message import (
    MessageError,
    Request,
    StreamParser,
    make_response,
    parse_datagram,
    validate_request,
)
from pcscf.sip.uri import SipUri
from tests.conftest import REPO


def _load_fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fuzz", REPO / "bench" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_fuzz", module)
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()
EXAMPLES = settings(max_examples=300)


def _holds(parser: str, data: bytes) -> str:
    """The fuzz property for one input; re-raises a crash so that the traceback is the real one."""
    outcome, exc = fuzz.classify(fuzz.TARGETS[parser], data)
    if exc is not None:
        raise exc
    return str(outcome)


# --- mutations shared by the strategies -----------------------------------------------------

_ODD_TEXT = st.text(
    alphabet=st.sampled_from(
        [*"09 :;,=<>\"'/@[]{}\\$*\t\r\n", "\u00b2", "\u0661", "\u2028", "\x85", "\x00", "ß"]
    ),
    max_size=12,
)
_ODD_NUMBERS = st.sampled_from(
    ["0", "65535", "65536", "4294967296", "-1", "\u00b2", "\u0661\u0662", "9" * 4400, ""]
)


@st.composite
def _mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """A few byte-level edits of ``data``: insert, delete, overwrite, truncate."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("insert", "delete", "overwrite", "truncate")))
        if op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 16)) :]
        elif op == "overwrite":
            data = data[:at] + draw(_ODD_TEXT).encode("utf-8", "surrogatepass") + data[at + 1 :]
        else:
            data = data[:at]
    return data


def _lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


# --- SIP ------------------------------------------------------------------------------------

_HEADER_NAMES = st.sampled_from(
    [
        "Via",
        "v",
        "From",
        "f",
        "To",
        "t",
        "Call-ID",
        "i",
        "CSeq",
        "Max-Forwards",
        "Contact",
        "m",
        "Route",
        "Record-Route",
        "Security-Client",
        "Proxy-Require",
        "Content-Length",
        "l",
        "Content-Type",
        "X-Odd",
    ]
)
_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport",
            "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKx;rport=5071;received=192.0.2.1",
            "<sip:alice@ims.test>;tag=a1",
            '"A, B" <sip:bob@ims.test:5061;transport=tcp>',
            "1 INVITE",
            "70",
            "msrp-tls;mediasec, bfcp-tls;mediasec",
            "application/sdp",
            "call-1@192.0.2.10",
        ]
    ),
    _ODD_TEXT,
    _ODD_NUMBERS,
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["sip:h:", "1 ", "<sip:a@", "SIP/2.0/UDP h:"]),
        _ODD_NUMBERS,
    ),
)


@st.composite
def sip_messages(draw: st.DrawFn) -> bytes:
    """Near-valid SIP: a real start line and header set with some values or lines bent."""
    seed = draw(st.sampled_from(fuzz.SIP_SEEDS))
    head, _, body = seed.partition(b"\r\n\r\n")
    lines = [line.decode() for line in _lines_of(head)]
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(lines)))
        line = (
            f"{draw(_HEADER_NAMES)}:{draw(st.sampled_from(['', ' ', '  ']))}{draw(_HEADER_VALUES)}"
        )
        if draw(st.booleans()) and 0 < at < len(lines):
            lines[at] = line
        else:
            lines.insert(max(at, 1), line)
    if draw(st.booleans()):
        lines.insert(
            draw(st.integers(1, len(lines))), draw(st.sampled_from([" folded", "\t", "  "]))
        )
    if draw(st.integers(0, 4)) == 0:
        lines[0] = draw(
            st.sampled_from(
                ["SIP/2.0 \u00b2\u00b2\u00b2 OK", "SIP/2.0 99 x", "INVITE sip:a SIP/3.0", "X y", ""]
            )
        )
    text = "\r\n".join(lines).encode("utf-8", "surrogatepass") + b"\r\n\r\n" + body
    return draw(_mutated(text)) if draw(st.booleans()) else text


@EXAMPLES
@given(sip_messages())
def test_sip_near_valid_messages(data: bytes) -> None:
    _holds("sip", data)


@EXAMPLES
@given(st.lists(sip_messages(), min_size=1, max_size=3).map(b"\r\n".join))
def test_sip_streams_of_messages(data: bytes) -> None:
    _holds("sip", data)


@EXAMPLES
@given(st.binary(max_size=600))
def test_sip_random_bytes(data: bytes) -> None:
    _holds("sip", data)


# --- SDP and the rewrite --------------------------------------------------------------------

_SDP_LINES = st.one_of(
    st.sampled_from([t.decode("utf-8", "replace").strip("\r\n") for t in fuzz.SDP_TOKENS]),
    st.builds(
        "{}={}".format,
        st.sampled_from([*"vocmtabkiz", "", "vv", "\u00e9"]),
        st.one_of(_ODD_TEXT, _ODD_NUMBERS),
    ),
    st.builds(
        "m={} {} {} {}".format,
        st.sampled_from(["message", "application", "audio", ""]),
        st.one_of(_ODD_NUMBERS, st.builds("{}/{}".format, _ODD_NUMBERS, _ODD_NUMBERS)),
        st.sampled_from(["TCP/TLS/MSRP", "TCP/MSRP", "TCP/TLS/BFCP", "tcp/bfcp", "RTP/AVP"]),
        st.sampled_from(["*", "0 96", ""]),
    ),
    st.builds(
        "a={}:{}".format,
        st.sampled_from(["setup", "fingerprint", "3ge2ae", "key-mgmt", "path", "Setup", "x y"]),
        st.one_of(
            st.sampled_from(["active", "passive", "actpass", "holdconn", "requested", "applied"]),
            _ODD_TEXT,
        ),
    ),
)


@st.composite
def sdp_bodies(draw: st.DrawFn) -> bytes:
    """A golden SDP case with lines replaced, inserted, removed or duplicated."""
    lines = draw(st.sampled_from(fuzz.sdp_seeds())).decode("utf-8", "replace").splitlines()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(("replace", "insert", "delete", "duplicate")))
        if op == "replace" and lines:
            lines[at] = draw(_SDP_LINES)
        elif op == "insert":
            lines.insert(at, draw(_SDP_LINES))
        elif op == "delete" and lines:
            del lines[at]
        elif lines:
            lines.insert(at, lines[at])
    end = draw(st.sampled_from(["\r\n", "\n", "\r\n\r\n", "\r"]))
    text = (end.join(lines) + end).encode("utf-8", "surrogatepass")
    return draw(_mutated(text)) if draw(st.integers(0, 3)) == 0 else text


@EXAMPLES
@given(sdp_bodies())
def test_sdp_mutated_lines(data: bytes) -> None:
    _holds("sdp", data)


@EXAMPLES
@given(sdp_bodies())
def test_rewrite_of_mutated_offers_and_answers(data: bytes) -> None:
    _holds("rewrite", data)


@EXAMPLES
@given(st.binary(max_size=400).map(lambda b: b"v=0\r\n" + b))
def test_sdp_random_bytes_after_the_version(data: bytes) -> None:
    _holds("sdp", data)
    _holds("rewrite", data)


# --- H.248 ----------------------------------------------------------------------------------

_H248_WORDS = st.one_of(
    st.sampled_from([t.decode("utf-8", "replace") for t in fuzz.H248_TOKENS]),
    _ODD_NUMBERS,
    _ODD_TEXT,
)


@st.composite
def h248_messages(draw: st.DrawFn) -> bytes:
    """An Iq sample message with some of its words or braces replaced."""
    text = draw(st.sampled_from(fuzz.h248_seeds())).decode()
    words = text.split(" ")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(words) - 1))
        words[at] = draw(_H248_WORDS)
    data = " ".join(words).encode("utf-8", "surrogatepass")
    return draw(_mutated(data)) if draw(st.booleans()) else data


@EXAMPLES
@given(h248_messages())
def test_h248_mutated_samples(data: bytes) -> None:
    _holds("h248", data)


@EXAMPLES
@given(st.binary(max_size=400).map(lambda b: b"MEGACO/3 <a>\n" + b))
def test_h248_random_bytes_after_the_header(data: bytes) -> None:
    _holds("h248", data)


# --- TPKT -----------------------------------------------------------------------------------


@st.composite
def tpkt_streams(draw: st.DrawFn) -> bytes:
    """Frames with the right header or a bent version, reserved octet or length."""
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        payload = draw(st.one_of(st.sampled_from(fuzz.h248_seeds()), st.binary(max_size=40)))
        length = len(payload) + 4
        length = draw(st.sampled_from([length, length - 1, length + 1, 0, 3, 4, 5, 0xFFFF]))
        version = draw(st.sampled_from([3, 3, 3, 0, 2, 255]))
        reserved = draw(st.sampled_from([0, 0, 1]))
        out += bytes([version, reserved]) + (length % 0x10000).to_bytes(2, "big") + payload
    return out[: draw(st.integers(0, len(out)))] if draw(st.booleans()) else out


@EXAMPLES
@given(tpkt_streams())
def test_tpkt_bent_frames(data: bytes) -> None:
    _holds("tpkt", data)


@EXAMPLES
@given(st.binary(max_size=300))
def test_tpkt_random_bytes(data: bytes) -> None:
    _holds("tpkt", data)


def test_every_seed_passes_and_parses() -> None:
    """The seed corpus is valid input: each parses (no error at all) and holds the property."""
    for seed in fuzz.SIP_SEEDS:
        assert _holds("sip", seed).split()[0] in ("Request", "Response")
    for seed in fuzz.h248_seeds():
        assert _holds("h248", seed).startswith(("decoded", "message-error"))
    for seed in fuzz.tpkt_seeds()[:-1]:
        assert _holds("tpkt", seed).startswith("frames:")
    for seed in fuzz.sdp_seeds():
        _holds("sdp", seed)
        _holds("rewrite", seed)


# --- regressions: inputs the fuzzer found ---------------------------------------------------

_INVITE = fuzz.SIP_SEEDS[1]


def _with_header(message: bytes, old: bytes, new: bytes) -> bytes:
    assert old in message
    return message.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"CSeq: 20 INVITE", "CSeq: \u00b9 INVITE".encode()),
        (b"Content-Length: ", "Content-Length: \u00b2".encode()),
        (b"SIP/2.0/UDP 192.0.2.10:5060", "SIP/2.0/UDP 192.0.2.10:507\u00b2".encode()),
        (b"SIP/2.0/UDP 192.0.2.10:5060", b"SIP/2.0/UDP 192.0.2.10:" + b"9" * 4401),
        (b"Max-Forwards: 70", "Max-Forwards: \u00b2".encode()),
    ],
    ids=["cseq", "content-length", "via-port", "via-port-4401-digits", "max-forwards"],
)
def test_unicode_digits_and_huge_numbers_are_400(old: bytes, new: bytes) -> None:
    """'²' passes str.isdigit() but not int(); 4301+ digits exceed Python's int() limit."""
    data = _with_header(_INVITE, old, new)
    with pytest.raises(RemoteSipError) as info:
        msg = parse_datagram(data)
        assert isinstance(msg, Request)
        validate_request(msg)
    assert info.value.status == 400
    _holds("sip", data)


def test_status_code_of_unicode_digits_is_400() -> None:
    with pytest.raises(MessageError) as info:
        parse_datagram("SIP/2.0 \u00b2\u00b2\u00b2 OK\r\nl: 0\r\n\r\n".encode())
    assert info.value.status == 400


def test_uri_port_of_unicode_digits_is_400() -> None:
    for port in ("507\u00b2", "9" * 4401):
        with pytest.raises(RemoteSipError):
            SipUri.parse(f"sip:bob@h:{port}")


def test_rport_that_is_not_a_port_falls_back_to_the_via_port() -> None:
    for rport in ("5060\u0966\u00b9", "9" * 4402, "70000"):
        via = Via.parse(f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1;rport={rport}")
        assert via.response_address() == ("192.0.2.10", 5062)


@pytest.mark.parametrize("bare", [b"\n", b"\r"], ids=["LF", "CR"])
def test_bare_line_break_in_a_header_is_400_and_the_400_can_be_sent(bare: bytes) -> None:
    """A bare CR/LF stayed in the value, and no response to the request could be serialised."""
    data = _with_header(_INVITE, b"CSeq: 20 INVITE", b"CSeq: 20" + bare + b"INVITE")
    with pytest.raises(MessageError) as info:
        parse_datagram(data)
    assert info.value.status == 400
    assert "Bare CR or LF" in info.value.reason
    if info.value.partial is not None:
        make_response(info.value.partial, 400).serialise()
    with pytest.raises(MessageError):
        parse_datagram(b"INVITE sip:a\nb SIP/2.0\r\n" + _INVITE.partition(b"\r\n")[2])
    _holds("sip", data)


def test_folded_continuation_of_an_empty_header_round_trips() -> None:
    data = _with_header(_INVITE, b"To: <sip:bob@ims.test>", b"To:\r\n <sip:bob@ims.test>")
    msg = parse_datagram(data)
    assert msg.get("to") == "<sip:bob@ims.test>"
    assert parse_datagram(msg.serialise()) == msg
    _holds("sip", data)


def test_stream_parser_reports_the_same_messages_in_pieces() -> None:
    parser = StreamParser()
    items = parser.feed(_INVITE[:100]) + parser.feed(_INVITE[100:] + fuzz.SIP_SEEDS[0])
    assert [type(i).__name__ for i in items] == ["Request", "Request"]


@pytest.mark.parametrize("port", ["9" * 4401, "4401/" + "9" * 4401], ids=["port", "count"])
def test_sdp_port_too_long_for_int_is_sdp_error(port: str) -> None:
    data = f"v=0\r\ns=-\r\nm=message {port} TCP/MSRP *\r\n".encode()
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(data)
    assert info.value.line == 3
    _holds("sdp", data)
    _holds("rewrite", data)


def test_sdp_port_with_leading_zeros_still_parses() -> None:
    sdp = SessionDescription.parse(b"v=0\r\ns=-\r\nm=message 0007394 TCP/MSRP *\r\n")
    assert sdp.media[0].port == 7394


def test_empty_services_descriptor_is_refused_both_ways() -> None:
    """'Services { }' decoded, then encoded as a bare 'Services' that nothing decodes."""
    text = b"MEGACO/3 <a>\nReply = 1 { Context = - { ServiceChange = ROOT { Services { } } } }"
    with pytest.raises(CodecError) as info:
        codec.decode(text)
    assert info.value.code == 400
    empty = codec.Message(
        "<a>",
        (
            codec.TransactionReply(
                1,
                (
                    codec.Action(
                        "-",
                        (
                            codec.Command(
                                "ServiceChange", "ROOT", (codec.ServiceChangeParameters(),)
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
    with pytest.raises(LocalIqError):
        codec.encode(empty)
    _holds("h248", text)


def test_sdp_port_too_long_in_an_iq_descriptor_is_profile_error() -> None:
    with pytest.raises(ProfileError) as info:
        profile.parse_sdp(["v=0", "m=message " + "9" * 4401 + " TCP/MSRP *"], "acc/1")
    assert info.value.code == 449


def test_statistic_too_long_is_profile_error() -> None:
    release = next(
        s for s in samples.all_steps() if isinstance(s.request, profile.ReleaseRequest) and s.reply
    )
    text = codec.encode(release.message).replace(b"= 1830", b"= " + b"9" * 4400)
    (reply,) = codec.decode(text).transactions
    assert isinstance(reply, codec.TransactionReply)
    with pytest.raises(ProfileError) as info:
        profile.decode_reply(release.request, reply.actions)
    assert info.value.code == 449
    _holds("h248", text)
    _holds("tpkt", frame(text))


def test_folded_header_longer_than_a_line_is_400() -> None:
    """Each continuation line was short, but the folded value is serialised as one line, which
    was then too long to parse back."""
    folds = b"".join([b"\r\n  continued"] * 1000)
    data = _with_header(_INVITE, b"Max-Forwards: 70", b"Subject: folded" + folds)
    with pytest.raises(MessageError) as info:
        parse_datagram(data)
    assert info.value.status == 400 and "Folded header too long" in info.value.reason
    _holds("sip", data)


@pytest.mark.parametrize(
    ("descriptor", "code"),
    [(b"Media { }", 450), (b"Media { Stream = 1 { } }", 450), (b"ObservedEvents = 2 { }", 457)],
    ids=["media", "stream", "observed-events"],
)
def test_empty_descriptors_the_abnf_forbids_are_refused(descriptor: bytes, code: int) -> None:
    """They decoded, and the encoder wrote them without braces, which nothing decodes."""
    text = b"MEGACO/3 <a>\nTransaction = 3 { Context = 8 { Notify = acc/8/2 { %s } } }" % descriptor
    with pytest.raises(CodecError) as info:
        codec.decode(text)
    assert info.value.code == code
    _holds("h248", text)


@pytest.mark.parametrize(
    "descriptor",
    [codec.Media(), codec.Media((codec.Stream(1),)), codec.ObservedEvents(2)],
    ids=["media", "stream", "observed-events"],
)
def test_encoder_refuses_empty_descriptors(descriptor: codec.Descriptor) -> None:
    command = codec.Command("Notify", "acc/8/2", (descriptor,))
    message = codec.Message("<a>", (codec.TransactionRequest(3, (codec.Action(8, (command,)),)),))
    with pytest.raises(LocalIqError):
        codec.encode(message)


def test_quoted_string_ending_in_a_line_break_is_refused() -> None:
    """``^...$`` let a quoted string end in a line feed (``$`` matches before a final one)."""
    with pytest.raises(CodecError) as info:
        codec.decode(b'MEGACO/3 <a>\nError = 400 { "abc\n" }')
    assert "control character" in info.value.reason
    with pytest.raises(LocalIqError):
        codec.encode(codec.Message("<a>", error=codec.ErrorDescriptor(400, "abc\n")))
