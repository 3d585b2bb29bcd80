"""Fuzzer for the parsers a network peer reaches: SIP, SDP (and the e2ae rewrite), H.248, TPKT.

For each parser it feeds ``--inputs`` inputs (default 10^6) made by mutating a seed corpus taken
from the project's own examples: the golden SDP cases (``tests/sdp_cases``), the Iq sample
exchanges (:mod:`iq.samples`, H.248 text and the same messages in TPKT frames) and a set of SIP
messages of the kinds the P-CSCF sees (REGISTER with Security-Client, INVITE with SDP, responses,
compact forms, folded lines, IPv6). Mutations: bit flips, interesting bytes, byte insertion and
deletion, repeated chunks, truncation, line splicing between seeds (delete, duplicate, swap, take
a line from another seed), dictionary tokens (numbers at the limits, Unicode digits, keywords),
random Unicode and bytes that are not UTF-8. An input that gives an outcome not seen before joins
the corpus, so later mutations start from it.

The property, per parser: any bytes in -> a result or one of the parser's documented ``Remote…``
errors, never any other exception; and where there is a serialiser, what parses serialises to
something that parses back to the same thing (``parse(serialise(parse(x)))`` is stable).

- ``sip``: :func:`pcscf.sip.message.parse_datagram` and :class:`~pcscf.sip.message.StreamParser`
  (fed whole and in pieces: same results), then what the proxy reads of a message (validation,
  Via, Route/Contact URIs, Security-Client, option tags, the response it would build, the 400
  for a malformed request). Documented: :class:`~pcscf.sip.errors.RemoteSipError` (and its
  :class:`~pcscf.sip.message.MessageError`).
- ``sdp``: :meth:`pcscf.sdp.SessionDescription.parse` and the readers the rewrite uses.
  Documented: :class:`~pcscf.errors.SdpError`.
- ``rewrite``: the input as an ``orig-offer`` and a ``term-offer`` (plan, deterministic
  reservation, rewrite), and as an ``orig-answer`` / ``term-answer`` to an offer with the same
  m-lines; the rewritten SDP must parse again. Documented: ``SdpError``,
  :class:`~pcscf.errors.RemoteRewriteError`.
- ``h248``: :func:`iq.codec.decode`, ``encode`` of what decoded, and the typed decode of each
  transaction (:func:`iq.profile.decode_request`, :func:`~iq.profile.reply_error` and
  :func:`~iq.profile.decode_reply` against every sample request). Documented:
  :class:`~iq.errors.CodecError`, :class:`~iq.errors.ProfileError`,
  :class:`~iq.errors.RequestFailed` (all :class:`~iq.errors.RemoteIqError`).
- ``tpkt``: :class:`iq.tpkt.TpktDecoder` fed whole and in pieces (same payloads, each payload
  is the frame it came from). Documented: :class:`~iq.errors.CodecError`.

It prints per parser the inputs, inputs/s, the distinct outcome classes and every crash (an
exception outside the documented set, or a broken round trip), with a reproducer written to
``--crashes DIR`` (one file per distinct crash site). Exit status 1 if there was a crash.
``--replay FILE...`` runs saved reproducers through the parser again.

Usage: ``python bench/fuzz.py [--parser sip|sdp|rewrite|h248|tpkt|all] [--inputs N] [--seed S]
[--crashes DIR] [--json] [--replay FILE ...]``. ``--atheris`` runs one parser under atheris
(coverage-guided; ``pip install atheris``, never a dependency of the project).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from certs.fingerprint import Fingerprint  # noqa: E402
from iq import codec, profile, samples  # noqa: E402
from iq.errors import CodecError, ProfileError, RequestFailed  # noqa: E402
from iq.tpkt import HEADER_SIZE, VERSION, TpktDecoder, frame  # noqa: E402
from pcscf.errors import RemoteRewriteError, SdpError  # noqa: E402
from pcscf.policy import Policy  # noqa: E402
from pcscf.rewrite import (  # noqa: E402
    RewriteState,
    deterministic_reservations,
    plan_offer,
    rewrite_answer,
    rewrite_offer,
)
from pcscf.sdp import SessionDescription  # noqa: E402
from pcscf.sip.errors import RemoteSipError  # noqa: E402
from pcscf.sip.headers import media_mechanisms, option_tags  # noqa: E402
from pcscf.sip.message import (  # noqa: E402
    Message,
    MessageError,
    Request,
    Response,
    StreamParser,
    make_response,
    parse_datagram,
    validate_request,
    validate_response,
)
from pcscf.sip.uri import SipUri  # noqa: E402

#: Longest input made (a little over the biggest SIP message and TPKT frame).
MAX_INPUT = 70_000
PARSERS = ("sip", "sdp", "rewrite", "h248", "tpkt")


class PropertyViolation(Exception):
    """A round trip or a framing invariant does not hold (never a documented error)."""


def _ensure(condition: bool, what: str) -> None:
    if not condition:
        raise PropertyViolation(what)


def _split_points(data: bytes, pieces: int) -> list[bytes]:
    """``data`` cut into up to ``pieces`` chunks at places derived from its content."""
    if len(data) < 2:
        return [data]
    crc = zlib.crc32(data)
    cuts = sorted({(crc >> (8 * i)) % len(data) for i in range(pieces - 1)})
    out, last = [], 0
    for cut in cuts:
        out.append(data[last:cut])
        last = cut
    out.append(data[last:])
    return out


# ============================================================================ SIP

SIP_DOCUMENTED: tuple[type[BaseException], ...] = (RemoteSipError,)

_SDP_BODY = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\nm=message 7394 TCP/TLS/MSRP *\r\na=path:msrps://192.0.2.10:7394/jshA7we;tcp\r\n"
    b"a=setup:active\r\na=fingerprint:sha-256 43:E2:BE:FF:2A:DB:95:08:8F:FD:6E:92:C6:23:8A:7A:"
    b"6E:B6:94:8F:B1:33:7D:FD:D3:8D:48:20:28:44:CC:A5\r\na=3ge2ae:requested\r\n"
)


def _sip(start: str, headers: Sequence[str], body: bytes = b"", length: bool = True) -> bytes:
    lines = [start, *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SIP_SEEDS: tuple[bytes, ...] = (
    _sip(
        "REGISTER sip:ims.test SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport",
            "Max-Forwards: 70",
            "From: <sip:alice@ims.test>;tag=a1",
            "To: <sip:alice@ims.test>",
            "Call-ID: reg-1@192.0.2.10",
            "CSeq: 1 REGISTER",
            "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=600",
            "Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec, ipsec-3gpp;alg=hmac-sha-1-96",
            "Require: sec-agree",
            "Proxy-Require: sec-agree",
            "Supported: path, outbound",
        ],
    ),
    _sip(
        "INVITE sip:bob@ims.test SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK2;rport",
            "Max-Forwards: 70",
            'From: "Alice, A." <sip:alice@ims.test>;tag=a2',
            "To: <sip:bob@ims.test>",
            "Call-ID: call-2@192.0.2.10",
            "CSeq: 20 INVITE",
            "Contact: <sip:alice@192.0.2.10:5060>",
            "Route: <sip:pcscf.ims.test:5060;lr>, <sip:[2001:db8::5]:5070;lr;transport=tcp>",
            "Content-Type: application/sdp",
        ],
        _SDP_BODY,
    ),
    _sip(
        "SIP/2.0 200 OK",
        [
            "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK3;received=203.0.113.9",
            "Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKx;rport=5071",
            "Record-Route: <sip:scscf.ims.test;lr>",
            "From: <sip:alice@ims.test>;tag=a2",
            "To: <sip:bob@ims.test>;tag=b2",
            "Call-ID: call-2@192.0.2.10",
            "CSeq: 20 INVITE",
            "Contact: <sip:bob@203.0.113.50:5060;transport=tcp>",
            "c: application/sdp",
        ],
        _SDP_BODY,
    ),
    _sip(
        "ACK sip:bob@203.0.113.50:5060 SIP/2.0",
        [
            "v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK4",
            "f: <sip:alice@ims.test>;tag=a2",
            "t: <sip:bob@ims.test>;tag=b2",
            "i: call-2@192.0.2.10",
            "CSeq: 20 ACK",
            "Max-Forwards: 70",
        ],
    ),
    _sip(
        "SIP/2.0 100 Trying",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK2;rport=5060;received=192.0.2.10",
            "From: <sip:alice@ims.test>;tag=a2",
            "To: <sip:bob@ims.test>",
            "Call-ID: call-2@192.0.2.10",
            "CSeq: 20 INVITE",
        ],
        length=False,
    ),
    _sip(
        "BYE sip:alice@192.0.2.10:5060 SIP/2.0",
        [
            "Via: SIP/2.0/TCP 203.0.113.50:5060;branch=z9hG4bK5",
            "Subject: folded",
            "  continued",
            "From: <sip:bob@ims.test>;tag=b2",
            "To: <sip:alice@ims.test>;tag=a2",
            "Call-ID: call-2@192.0.2.10",
            "CSeq: 21 BYE",
            'Reason: SIP;cause=200;text="Call completed"',
            "Max-Forwards: 69",
        ],
    ),
)
SIP_TOKENS: tuple[bytes, ...] = (
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b'"',
    b"<",
    b">",
    b"[",
    b"]",
    b"@",
    b"=",
    b"Content-Length: ",
    b"l: 99999\r\n",
    b"Via: ",
    b"SIP/2.0",
    b"SIP/2.0/UDP ",
    b"sip:",
    b"sips:",
    b";branch=",
    b";rport=",
    b";tag=",
    b"CSeq: ",
    b"0",
    b"65536",
    b"2147483648",
    b"99999999999",
    b"-1",
    "\u00b2".encode(),
    "\u0661\u0662".encode(),
    "\u2028".encode(),
    "\x85".encode(),
)


def _attempt(
    out: list[str], call: Callable[[], object], documented: tuple[type[BaseException], ...]
) -> bool:
    try:
        call()
    except documented as exc:
        out.append(type(exc).__name__)
        return False
    return True


def _exercise_sip(msg: Message) -> list[str]:
    """What the proxy reads of a parsed message; documented errors recorded, others raised."""
    seen: list[str] = []
    doc = SIP_DOCUMENTED
    if isinstance(msg, Request):
        valid = _attempt(seen, lambda: validate_request(msg), doc)
        forwards = msg.get("max-forwards")
        if valid and forwards is not None:
            int(forwards.strip())  # the proxy counts down what validation let through
        _attempt(seen, lambda: SipUri.parse(msg.uri, "Request-URI").address(), doc)
        if valid:
            made = make_response(msg, 200, to_tag="fz1", extra=[("Contact", "<sip:p@h>")])
            reply = parse_datagram(made.serialise())
            _ensure(reply.serialise() == made.serialise(), "response to a request round trip")
    else:
        _attempt(seen, lambda: validate_response(msg), doc)

    def vias() -> None:
        for via in msg.vias:
            via.response_address()
            str(via.with_received("192.0.2.99", 5099))

    _attempt(seen, vias, doc)
    for name in ("route", "record-route", "path", "contact", "service-route"):

        def addresses(name: str = name) -> None:
            for addr in msg.addresses(name):
                str(addr)
                if addr.uri.lower().startswith("sip"):
                    uri = addr.sip_uri(name)
                    uri.address()
                    uri.aor()
                    str(uri)

        _attempt(seen, addresses, doc)
    _attempt(seen, lambda: media_mechanisms(msg.get_all("security-client")), doc)
    _attempt(seen, lambda: option_tags(msg.get_all("proxy-require")), doc)
    _attempt(seen, lambda: msg.cseq, doc)
    _attempt(seen, lambda: (msg.call_id, msg.from_, msg.to, msg.has_sdp), doc)
    return seen


def _sip_roundtrip(msg: Message) -> None:
    once = msg.serialise()
    try:
        again = parse_datagram(once)
    except RemoteSipError as exc:
        raise PropertyViolation("serialised message does not parse") from exc
    _ensure(type(again) is type(msg), "message kind changed in the round trip")
    _ensure(again.body == msg.body, "body changed in the round trip")
    _ensure(again.serialise() == once, "serialise(parse(serialise(m))) differs")


def _stream_outcomes(chunks: Iterable[bytes]) -> list[object]:
    parser = StreamParser()
    out: list[object] = []
    for chunk in chunks:
        for item in parser.feed(chunk):
            out.append((item.status, item.reason) if isinstance(item, MessageError) else item)
    if parser.broken:
        # the fatal error is the last item; which limit it names may depend on the chunking
        # (a head too long for the buffer, or one with too many fields), not whether it comes
        out[-1] = "fatal"
    else:
        out.append(("pending", parser.pending))
    return out


def check_sip(data: bytes) -> str:
    """One datagram and the same bytes as a TCP stream; returns the outcome class."""
    parts: list[str] = []
    try:
        msg = parse_datagram(data)
    except MessageError as exc:
        parts.append(f"MessageError:{exc.status}")
        if exc.partial is not None:
            answer = make_response(exc.partial, exc.status, exc.reason).serialise()
            parse_datagram(answer)
            parts.append("partial")
    except RemoteSipError as exc:
        parts.append(f"RemoteSipError:{exc.status}")
    else:
        parts.append(type(msg).__name__)
        parts.extend(sorted(set(_exercise_sip(msg))))
        _sip_roundtrip(msg)
    whole = _stream_outcomes([data])
    pieces = _stream_outcomes(_split_points(data, 3))
    _ensure(whole == pieces, "StreamParser: fed in pieces differs from fed whole")
    for item in whole[:-1]:
        if isinstance(item, Request | Response):
            _sip_roundtrip(item)
    parts.append(f"stream:{min(len(whole) - 1, 3)}")
    return " ".join(parts)


# ============================================================================ SDP

SDP_DOCUMENTED: tuple[type[BaseException], ...] = (SdpError,)
SDP_CASES = REPO / "tests" / "sdp_cases"


@functools.cache
def sdp_seeds() -> tuple[bytes, ...]:
    out = []
    for case in sorted(SDP_CASES.iterdir()):
        for name in ("in.sdp", "out.sdp"):
            if (case / name).exists():
                out.append((case / name).read_bytes())
    return tuple(out)


SDP_TOKENS: tuple[bytes, ...] = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"/",
    b":",
    b"=",
    b"v=0\r\n",
    b"v=1",
    b"m=",
    b"c=",
    b"a=",
    b"m=message 0 TCP/TLS/MSRP *\r\n",
    b"m=application 9 TCP/TLS/BFCP *\r\n",
    b"m=message 9/2 TCP/MSRP *\r\n",
    b"c=IN IP4 192.0.2.1\r\n",
    b"c=IN IP6 2001:db8::1\r\n",
    b"c=IN IP4 233.252.0.1/127/2\r\n",
    b"a=3ge2ae:requested\r\n",
    b"a=3ge2ae:applied\r\n",
    b"a=key-mgmt:mikey AQ==\r\n",
    b"a=setup:actpass\r\n",
    b"a=setup:holdconn\r\n",
    b"a=setup:bogus\r\n",
    b"a=fingerprint:sha-1 4B:4B\r\n",
    b"a=fingerprint:md5 00:11\r\n",
    b"a=fingerprint:sha-256 " + b":".join([b"4A"] * 32) + b"\r\n",
    b"a=fingerprint:sha-512 " + b":".join([b"C0"] * 64) + b"\r\n",
    b"TCP/TLS/MSRP",
    b"TCP/MSRP",
    b"TCP/TLS/BFCP",
    b"tcp/tls/msrp",
    b"65535",
    b"65536",
    b"0",
    b"99999999999999999999",
    "\u00b2".encode(),
    "\u0663".encode(),
    "\u2028".encode(),
    b"\xff",
    b"\xc3",
)


def _exercise_sdp(sdp: SessionDescription) -> list[str]:
    seen: list[str] = []
    for index in range(len(sdp.media)):
        sdp.effective_connection(index)
        sdp.effective_attribute_values(index, "setup")
        sdp.line_number_of(index, "fingerprint")
        _attempt(seen, lambda index=index: sdp.effective_fingerprints(index), SDP_DOCUMENTED)
    return seen


def _sdp_roundtrip(sdp: SessionDescription, what: str) -> bytes:
    once = sdp.serialise()
    try:
        again = SessionDescription.parse(once)
    except SdpError as exc:
        raise PropertyViolation(f"{what}: serialised SDP does not parse") from exc
    _ensure(again.text() == sdp.text(), f"{what}: SDP text changed in the round trip")
    _ensure(len(again.media) == len(sdp.media), f"{what}: m-line count changed")
    for a, b in zip(again.media, sdp.media, strict=True):
        _ensure(
            (a.media, a.port, a.port_count, a.proto, a.fmts)
            == (b.media, b.port, b.port_count, b.proto, b.fmts),
            f"{what}: m-line fields changed in the round trip",
        )
    return once


def check_sdp(data: bytes) -> str:
    sdp = SessionDescription.parse(data)
    seen = _exercise_sdp(sdp)
    _sdp_roundtrip(sdp, "parse")
    _ensure(sdp.copy().text() == sdp.text(), "copy differs")
    return " ".join(["parsed", f"m:{min(len(sdp.media), 3)}", *sorted(set(seen))])


# ============================================================================ rewrite

REWRITE_DOCUMENTED: tuple[type[BaseException], ...] = (SdpError, RemoteRewriteError)
_MECHANISMS = ("msrp-tls", "bfcp-tls")
_POLICY = Policy()
_AGW_FP = Fingerprint.parse("sha-256 " + ":".join(["9F"] * 32))
_UE_FP = Fingerprint.parse("sha-256 " + ":".join(["4A"] * 32))
_SETUP_ROTATION = ("active", "passive", "actpass", None)


def _reserve(plan: Any) -> Any:
    return deterministic_reservations(
        plan,
        access_address="198.51.100.1",
        core_address="203.0.113.1",
        fingerprint=_AGW_FP,
        port_base=40000,
    )


@functools.lru_cache(maxsize=512)
def _answer_state(step: str, kinds: tuple[str, ...]) -> RewriteState:
    """The state of an offer whose every m-line is an e2ae stream of the given media kinds."""
    head = "v=0\r\no=- 1 1 IN IP4 {h}\r\ns=-\r\nc=IN IP4 {h}\r\nt=0 0\r\n"
    lines = [head.format(h="192.0.2.10" if step == "orig-answer" else "203.0.113.50")]
    for i, kind in enumerate(kinds):
        setup = _SETUP_ROTATION[i % len(_SETUP_ROTATION)]
        proto = "BFCP" if kind == "application" else "MSRP"
        if step == "orig-answer":
            lines.append(f"m={kind} {7394 + i} TCP/TLS/{proto} *\r\n")
            lines.append(f"{_UE_FP.attribute()}\r\na=3ge2ae:requested\r\n")
        else:
            lines.append(f"m={kind} {12763 + i} TCP/{proto} *\r\n")
        if setup:
            lines.append(f"a=setup:{setup}\r\n")
    offer_step: Any = "orig-offer" if step == "orig-answer" else "term-offer"
    sdp = SessionDescription.parse("".join(lines))
    plan = plan_offer(offer_step, sdp, _MECHANISMS, _POLICY)
    return rewrite_offer(sdp, plan, _reserve(plan)).state


def check_rewrite(data: bytes) -> str:
    sdp = SessionDescription.parse(data)
    parts = ["parsed"]
    for step in ("orig-offer", "term-offer"):
        try:
            plan = plan_offer(step, sdp, _MECHANISMS, _POLICY)  # type: ignore[arg-type]
            result = rewrite_offer(sdp, plan, _reserve(plan))
        except REWRITE_DOCUMENTED as exc:
            parts.append(f"{step}:{type(exc).__name__}")
            continue
        _sdp_roundtrip(result.sdp, step)
        parts.append(f"{step}:e2ae={min(len(plan.e2ae_streams), 3)}")
    kinds = tuple("application" if m.media == "application" else "message" for m in sdp.media[:16])
    if kinds and len(sdp.media) <= 16:
        for step in ("orig-answer", "term-answer"):
            state = _answer_state(step, kinds)
            try:
                result = rewrite_answer(step, sdp, state)  # type: ignore[arg-type]
            except REWRITE_DOCUMENTED as exc:
                parts.append(f"{step}:{type(exc).__name__}")
                continue
            _sdp_roundtrip(result.sdp, step)
            parts.append(f"{step}:ok")
    return " ".join(parts)


# ============================================================================ H.248

H248_DOCUMENTED: tuple[type[BaseException], ...] = (CodecError, ProfileError, RequestFailed)


@functools.cache
def h248_seeds() -> tuple[bytes, ...]:
    return tuple(codec.encode(step.message) for step in samples.all_steps())


@functools.cache
def sample_requests() -> tuple[profile.IqRequest, ...]:
    out: list[profile.IqRequest] = []
    for step in samples.all_steps():
        if step.request is not None and step.request not in out:
            out.append(step.request)
    return tuple(out)


H248_TOKENS: tuple[bytes, ...] = (
    b"{",
    b"}",
    b"\\}",
    b",",
    b"=",
    b" ",
    b"\n",
    b"\r\n",
    b"; comment\n",
    b'"',
    b"$",
    b"*",
    b"-",
    b"/",
    b":",
    b"MEGACO/3 ",
    b"!/1 ",
    b"MEGACO/99 ",
    b"Transaction = ",
    b"Reply = ",
    b"Pending = 1 { }",
    b"Context = $ {",
    b"Context = - {",
    b'Error = 400 { "x" }',
    b"ImmAckRequired,",
    b"Add = acc/$",
    b"Modify = core/1",
    b"Subtract = *",
    b"O-",
    b"W-",
    b"Media {",
    b"Stream = 1 {",
    b"LocalControl { Mode = SendReceive }",
    b"Local {\nv=0\n}",
    b"Remote {\nv=0\n}",
    b"Events = 1 { tlsc/estd }",
    b"Signals { tlsc/est }",
    b"ObservedEvents = 1 { 20261123T16000000:tlsc/estd }",
    b"Statistics { nt/os = 1 }",
    b'Services { Method = Restart, Reason = "901" }',
    b"Audit { Media }",
    b"a=fingerprint:$",
    b"a=setup:passive",
    b"c=IN IP4 $",
    b"m=message $ TCP/TLS/MSRP *",
    b"0",
    b"4294967295",
    b"4294967296",
    b"65536",
    b"99999999999",
    "\u00b2".encode(),
    "\u0661".encode(),
    "\u2028".encode(),
    b"\x00",
    b"\xff",
)


def check_h248(data: bytes) -> str:
    message = codec.decode(data)
    text = codec.encode(message)
    try:
        again = codec.decode(text)
    except CodecError as exc:
        raise PropertyViolation("encoded message does not decode") from exc
    _ensure(again == message, "decode(encode(m)) != m")
    _ensure(codec.encode(again) == text, "encode is not stable")
    parts = ["decoded" if message.error is None else "message-error"]
    for transaction in message.transactions:
        seen: list[str] = []
        if isinstance(transaction, codec.TransactionRequest):
            _attempt(seen, lambda t=transaction: profile.decode_request(t.actions), H248_DOCUMENTED)
            parts.append("request:" + (seen[0] if seen else "ok"))
        elif isinstance(transaction, codec.TransactionReply):
            if _attempt(
                seen, lambda t=transaction: profile.reply_error(t.actions, t.error), H248_DOCUMENTED
            ):
                for request in sample_requests():
                    _attempt(
                        seen,
                        lambda t=transaction, r=request: profile.decode_reply(r, t.actions),
                        H248_DOCUMENTED,
                    )
            parts.append("reply:" + (",".join(sorted(set(seen))) or "ok"))
        else:
            parts.append("pending")
    return " ".join(parts[:4])


# ============================================================================ TPKT

TPKT_DOCUMENTED: tuple[type[BaseException], ...] = (CodecError,)


@functools.cache
def tpkt_seeds() -> tuple[bytes, ...]:
    framed = [frame(seed) for seed in h248_seeds()]
    joined = [b"".join(framed[i : i + 3]) for i in range(0, len(framed), 3)]
    return (*framed, *joined, frame(b"x"), framed[0][:10])


TPKT_TOKENS: tuple[bytes, ...] = (
    b"\x03\x00\x00\x04",
    b"\x03\x00\x00\x05x",
    b"\x03\x00\xff\xff",
    b"\x03\x00\x00\x00",
    b"\x03\x01\x00\x08abcd",
    b"\x02\x00\x00\x08",
    b"\x03",
    b"\x00\x00",
    b"\xff\xff",
)


def _tpkt_run(chunks: Iterable[bytes]) -> tuple[list[bytes], int] | str:
    decoder = TpktDecoder()
    payloads: list[bytes] = []
    try:
        for chunk in chunks:
            payloads.extend(decoder.feed(chunk))
    except CodecError as exc:
        return exc.reason.split(" ", 2)[1]
    return payloads, decoder.buffered


def check_tpkt(data: bytes) -> str:
    whole = _tpkt_run([data])
    pieces = _tpkt_run(_split_points(data, 4))
    bytewise = (
        _tpkt_run([data[i : i + 1] for i in range(min(len(data), 64))]) if len(data) <= 64 else None
    )
    if isinstance(whole, str):
        _ensure(isinstance(pieces, str), "TPKT: an error fed whole but not fed in pieces")
        return f"CodecError:{whole}"
    _ensure(pieces == whole, "TPKT: fed in pieces differs from fed whole")
    _ensure(bytewise is None or bytewise == whole, "TPKT: fed byte by byte differs")
    payloads, buffered = whole
    offset = 0
    for payload in payloads:
        header = data[offset : offset + HEADER_SIZE]
        _ensure(header[0] == VERSION, "TPKT: payload from a frame of another version")
        length = int.from_bytes(header[2:4], "big")
        _ensure(length == len(payload) + HEADER_SIZE, "TPKT: payload length differs from header")
        _ensure(data[offset + HEADER_SIZE : offset + length] == payload, "TPKT: payload differs")
        _ensure(frame(payload)[HEADER_SIZE:] == payload, "TPKT: frame() differs")
        offset += length
    _ensure(buffered == len(data) - offset, "TPKT: buffered count is wrong")
    return f"frames:{min(len(payloads), 4)} partial:{int(buffered > 0)}"


# ============================================================================ harness


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], str]
    documented: tuple[type[BaseException], ...]
    seeds: Callable[[], Sequence[bytes]]
    tokens: Sequence[bytes]


TARGETS: dict[str, Target] = {
    "sip": Target("sip", check_sip, SIP_DOCUMENTED, lambda: SIP_SEEDS, SIP_TOKENS),
    "sdp": Target("sdp", check_sdp, SDP_DOCUMENTED, sdp_seeds, SDP_TOKENS),
    "rewrite": Target("rewrite", check_rewrite, REWRITE_DOCUMENTED, sdp_seeds, SDP_TOKENS),
    "h248": Target("h248", check_h248, H248_DOCUMENTED, h248_seeds, H248_TOKENS),
    "tpkt": Target("tpkt", check_tpkt, TPKT_DOCUMENTED, tpkt_seeds, TPKT_TOKENS),
}


def _planted(check: Callable[[bytes], str]) -> Callable[[bytes], str]:
    """``--self-test-crash``: the parser with a deliberate bug (IndexError on a NUL byte)."""

    def broken(data: bytes) -> str:
        if b"\x00" in data:
            return "planted"[len(data) + 10]  # IndexError
        return check(data)

    return broken


def classify(target: Target, data: bytes) -> tuple[str, BaseException | None]:
    """(outcome class, the exception if the input crashed the parser)."""
    try:
        return target.check(data), None
    except target.documented as exc:
        code = getattr(exc, "status", None) or getattr(exc, "code", None)
        return type(exc).__name__ + (f":{code}" if code is not None else ""), None
    except Exception as exc:  # every other exception is a crash
        return "CRASH " + type(exc).__name__, exc


def crash_signature(exc: BaseException) -> str:
    """Exception type and the innermost frame in the project: one per distinct bug."""
    if isinstance(exc, PropertyViolation):
        cause = exc.__cause__
        why = f" ({type(cause).__name__}: {getattr(cause, 'reason', cause)})" if cause else ""
        return f"PropertyViolation: {exc}{why}"
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if str(REPO) in f.filename and "/.venv/" not in f.filename]
    where = inner[-1] if inner else frames[-1]
    path = Path(where.filename)
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return f"{type(exc).__name__} at {shown}:{where.lineno} ({where.name})"


# -------------------------------------------------------------------- mutations

_INTERESTING = b"\x00\x01\x7f\x80\xff\r\n\t ;:,={}<>\"'\\/$*@[]"
_UNICODE = "\u00b2\u00b9\u0661\u0966\uff11\u2028\u2029\x85\u00a0\u200b\ufeff\u00df\U0001f600\ud7ff"
_DIGITS = tuple(s.encode() for s in ("\u00b2", "\u0661\u0662", "\uff11"))
_NUMBER = re.compile(rb"[0-9]+")
_BIG = (b"9" * 30, b"9" * 4400)
_NOT_UTF8 = (b"\x80", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff\xfe")


class Mutator:
    """Stacked random mutations of a corpus; inputs with a new outcome join the corpus."""

    def __init__(self, rng: random.Random, seeds: Sequence[bytes], tokens: Sequence[bytes]):
        self.rng = rng
        self.corpus: list[bytes] = list(seeds)
        self.seeds = list(seeds)
        self.tokens = list(tokens)
        self.ops: list[Callable[[bytes], bytes]] = [
            self.flip_bits,
            self.set_byte,
            self.insert_bytes,
            self.delete_range,
            self.repeat_chunk,
            self.truncate,
            self.insert_token,
            self.insert_token,
            self.replace_number,
            self.splice_lines,
            self.splice_lines,
            self.line_edit,
            self.insert_unicode,
            self.insert_not_utf8,
            self.crossover,
        ]

    def add(self, data: bytes) -> None:
        if len(self.corpus) < 2000:
            self.corpus.append(data)

    def next(self) -> bytes:
        rng = self.rng
        data = rng.choice(self.corpus if rng.random() < 0.5 else self.seeds)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
            data = rng.choice(self.ops)(data)
        return data[:MAX_INPUT]

    def _pos(self, data: bytes) -> int:
        return self.rng.randint(0, len(data))

    def flip_bits(self, data: bytes) -> bytes:
        if not data:
            return data
        buf = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            i = self.rng.randrange(len(buf))
            buf[i] ^= 1 << self.rng.randrange(8)
        return bytes(buf)

    def set_byte(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        return data[:i] + bytes([self.rng.choice(_INTERESTING)]) + data[i + 1 :]

    def insert_bytes(self, data: bytes) -> bytes:
        i = self._pos(data)
        junk = self.rng.randbytes(self.rng.randint(1, 8))
        return data[:i] + junk + data[i:]

    def delete_range(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        return data[:i] + data[i + self.rng.randint(1, 32) :]

    def repeat_chunk(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        chunk = data[i : i + self.rng.randint(1, 64)]
        times = self.rng.choice((2, 2, 3, 16, 100, 1000))
        return data[:i] + chunk * times + data[i:]

    def truncate(self, data: bytes) -> bytes:
        return data[: self._pos(data)]

    def insert_token(self, data: bytes) -> bytes:
        i = self._pos(data)
        token = self.rng.choice(self.tokens)
        if self.rng.random() < 0.5:  # replace what was there
            return data[:i] + token + data[i + len(token) :]
        return data[:i] + token + data[i:]

    def replace_number(self, data: bytes) -> bytes:
        found = _NUMBER.search(data, self._pos(data)) or _NUMBER.search(data)
        if found is None:
            return data
        i, j = found.span()
        number = self.rng.choice(
            (b"0", b"1", b"65535", b"65536", b"4294967296", b"-1", b"00001", *_BIG, *_DIGITS)
        )
        return data[:i] + number + data[j:]

    def _lines(self, data: bytes) -> list[bytes]:
        return data.splitlines(keepends=True) or [b""]

    def splice_lines(self, data: bytes) -> bytes:
        lines = self._lines(data)
        donor = self._lines(self.rng.choice(self.seeds))
        pick = donor[self.rng.randrange(len(donor)) :][: self.rng.randint(1, 4)]
        at = self.rng.randint(0, len(lines))
        return b"".join(lines[:at] + pick + lines[at:])

    def line_edit(self, data: bytes) -> bytes:
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        j = self.rng.randrange(len(lines))
        choice = self.rng.randrange(5)
        if choice == 0:
            del lines[i]
        elif choice == 1:
            lines.insert(i, lines[j])
        elif choice == 2:
            lines[i], lines[j] = lines[j], lines[i]
        elif choice == 3:
            lines[i] = lines[i].rstrip(b"\r\n") + self.rng.choice((b"\n", b"\r", b"", b"\r\r\n"))
        else:
            lines[i : i + 1] = [lines[i]] * self.rng.choice((2, 50, 300))
        return b"".join(lines)

    def insert_unicode(self, data: bytes) -> bytes:
        i = self._pos(data)
        text = "".join(self.rng.choice(_UNICODE) for _ in range(self.rng.randint(1, 3)))
        return data[:i] + text.encode("utf-8", "surrogatepass") + data[i:]

    def insert_not_utf8(self, data: bytes) -> bytes:
        i = self._pos(data)
        return data[:i] + self.rng.choice(_NOT_UTF8) + data[i:]

    def crossover(self, data: bytes) -> bytes:
        other = self.rng.choice(self.corpus)
        return data[: self._pos(data)] + other[self._pos(other) :]


# -------------------------------------------------------------------- running


@dataclass
class Crash:
    signature: str
    exception: str
    count: int
    reproducer: str


@dataclass
class Report:
    parser: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, Crash] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "parser": self.parser,
            "inputs": self.inputs,
            "seconds": round(self.seconds, 3),
            "inputs_per_second": round(self.inputs / self.seconds) if self.seconds else None,
            "outcome_classes": len(self.outcomes),
            "outcomes": dict(sorted(self.outcomes.items(), key=lambda kv: -kv[1])),
            "crashes": [vars(c) for c in self.crashes.values()],
        }


def _save(crashes_dir: Path, parser: str, data: bytes, exc: BaseException) -> Path:
    crashes_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:16]
    path = crashes_dir / f"{parser}-{digest}.bin"
    path.write_bytes(data)
    trace = "".join(traceback.format_exception(exc))
    path.with_suffix(".txt").write_text(f"{parser}: {crash_signature(exc)}\n\n{trace}")
    return path


def fuzz(target: Target, inputs: int, seed: int, crashes_dir: Path) -> Report:
    rng = random.Random(f"{seed}:{target.name}")
    seeds = list(target.seeds())
    mutator = Mutator(rng, seeds, target.tokens)
    report = Report(target.name)
    outcomes = report.outcomes
    started = time.perf_counter()
    for n in range(inputs):
        data = seeds[n] if n < len(seeds) else mutator.next()
        outcome, exc = classify(target, data)
        if outcome not in outcomes:
            outcomes[outcome] = 0
            mutator.add(data)
        outcomes[outcome] += 1
        if exc is not None:
            signature = crash_signature(exc)
            crash = report.crashes.get(signature)
            if crash is None:
                path = _save(crashes_dir, target.name, data, exc)
                report.crashes[signature] = Crash(signature, repr(exc)[:300], 1, str(path))
            else:
                crash.count += 1
    report.inputs = inputs
    report.seconds = time.perf_counter() - started
    return report


def replay(target: Target, paths: Sequence[Path]) -> int:
    """Run saved inputs; print each outcome; 1 if any of them still crashes."""
    status = 0
    for path in paths:
        outcome, exc = classify(target, path.read_bytes())
        if exc is not None:
            status = 1
            print(f"{path}: CRASH {crash_signature(exc)}")
            traceback.print_exception(exc)
        else:
            print(f"{path}: {outcome}")
    return status


def run_atheris(target: Target) -> None:  # pragma: no cover - optional tool
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        sys.exit("--atheris needs atheris (pip install atheris); the plain mode needs nothing")

    def one(data: bytes) -> None:
        try:
            target.check(data)
        except target.documented:
            pass

    corpus = Path(tempfile.mkdtemp(prefix=f"e2ae-fuzz-{target.name}-corpus-"))
    for index, seed in enumerate(target.seeds()):
        (corpus / f"seed-{index}").write_bytes(seed)
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *ATHERIS_ARGS, str(corpus)], one)
    atheris.Fuzz()


ATHERIS_ARGS: list[str] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parser", choices=(*PARSERS, "all"), default="all")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per parser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crashes", type=Path, help="where reproducers go (default: temp dir)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--replay", type=Path, nargs="+", help="run saved inputs instead")
    parser.add_argument("--atheris", nargs=argparse.REMAINDER, help="run under atheris")
    parser.add_argument("--self-test-crash", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = PARSERS if args.parser == "all" else (args.parser,)
    targets = [TARGETS[n] for n in names]
    if args.self_test_crash:
        targets = [
            Target(t.name, _planted(t.check), t.documented, t.seeds, t.tokens) for t in targets
        ]
    if args.replay:
        if len(targets) != 1:
            parser.error("--replay needs one --parser")
        return replay(targets[0], args.replay)
    if args.atheris is not None:
        if len(targets) != 1:
            parser.error("--atheris needs one --parser")
        ATHERIS_ARGS[:] = args.atheris
        run_atheris(targets[0])
        return 0
    crashes_dir = args.crashes or Path(tempfile.mkdtemp(prefix="e2ae-fuzz-"))
    reports = []
    for target in targets:
        report = fuzz(target, args.inputs, args.seed, crashes_dir)
        reports.append(report)
        if not args.json:
            _print(report)
    crashed = any(r.crashes for r in reports)
    if args.json:
        doc = {
            "seed": args.seed,
            "crashes_dir": str(crashes_dir),
            "crashed": crashed,
            "parsers": [r.as_dict() for r in reports],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"reproducers: {crashes_dir}" if crashed else "no crash")
    return 1 if crashed else 0


def _print(report: Report) -> None:
    d = report.as_dict()
    crashes = sum(c.count for c in report.crashes.values())
    print(
        f"{report.parser}: {d['inputs']} inputs in {d['seconds']:.1f} s "
        f"({d['inputs_per_second']} inputs/s), {d['outcome_classes']} outcome classes, "
        f"{crashes} crashing inputs at {len(report.crashes)} sites",
        flush=True,
    )
    for crash in report.crashes.values():
        print(f"  CRASH {crash.signature} x{crash.count}: {crash.exception}")
        print(f"    reproducer {crash.reproducer}")


if __name__ == "__main__":
    sys.exit(main())
