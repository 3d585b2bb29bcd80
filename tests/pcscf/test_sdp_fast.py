"""The fast ways of pcscf.sdp and pcscf.rewrite against the general ones they stand for.

A body in its simplest spelling is parsed into pieces (sections built when first looked at),
planned from each section's text in one pass and rewritten as text; every other description
goes line by line. Both must give equal descriptions, plans, results and errors.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs.fingerprint import Fingerprint
from pcscf.policy import Policy
from pcscf.rewrite import (
    OfferPlan,
    deterministic_reservations,
    plan_offer,
    rewrite_answer,
    rewrite_offer,
)
from pcscf.sdp import SessionDescription, _parse_lines

AGW_FP = Fingerprint.parse("sha-256 " + ":".join(f"{i * 11 % 256:02X}" for i in range(32)))
FP256 = "sha-256 " + ":".join(f"{i * 7 % 256:02X}" for i in range(32))
FP1 = "SHA-1 " + ":".join(f"{i * 3 % 256:02x}" for i in range(20))
KM = "mikey " + base64.b64encode(b"\x01\x02\x03").decode()
VALUES = {
    "fingerprint": [FP256, FP1, "md5 " + ":".join(["AB"] * 16), "sha-256 zz", "bogus 00", ""],
    "setup": ["active", "passive", "actpass", "holdconn", " ACTIVE ", "bogus"],
    "3ge2ae": ["requested", " Requested ", "applied"],
    "key-mgmt": [KM, "mikey !!!"],
}
NAMES = [*VALUES, "FINGERPRINT", "Setup", "3GE2AE", "setupx", "path", "rtpmap", "sendrecv"]
CONNS = ["IN IP4 192.0.2.1", "IN IP6 2001:db8::1", "IN IP4 224.2.1.1/127/3"]
PROTOS = ["TCP/TLS/MSRP", "tcp/tls/msrp", "TCP/MSRP", "TCP/TLS/BFCP", "TCP/BFCP", "RTP/AVP",
          "UDP/TLS/RTP/SAVP"]  # fmt: skip
POLICIES = [Policy(), Policy(non_e2ae_tls="reject"), Policy(accepted_hash_funcs=("sha-1",))]
MECHANISMS = [("msrp-tls", "bfcp-tls"), (), ("bfcp-tls",)]


@st.composite
def attribute(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    if draw(st.integers(0, 8)) == 0:
        return f"a={name}"
    return f"a={name}:{draw(st.sampled_from(VALUES.get(name.lower(), ['1', 'x y'])))}"


@st.composite
def sdp_body(draw: st.DrawFn) -> str:
    """Mostly simple CRLF or LF bodies; a few lines in other spellings or malformed."""
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-"]
    if draw(st.integers(0, 3)):
        lines.append("c=" + draw(st.sampled_from(CONNS)))
    lines.append("t=0 0")
    lines += draw(st.lists(attribute(), max_size=3))
    for _ in range(draw(st.sampled_from([0, 1, 2, 3, 6]))):
        port = draw(st.sampled_from(["0", "7394", "65535", "7394/2", "70000"]))
        lines.append(f"m=message {port} {draw(st.sampled_from(PROTOS))} *")
        if draw(st.booleans()):
            lines.append("i=chat")
        if draw(st.integers(0, 2)) == 0:
            lines.append("c=" + draw(st.sampled_from(CONNS)))
        lines += draw(st.lists(attribute(), max_size=5))
    if draw(st.integers(0, 6)) == 0:
        odd = ["c=IN  IP4 192.0.2.1", "a=bad name", "a=setup:active ", "m=audio  1 RTP/AVP 0"]
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(odd)))
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    return ending.join(lines) + ending


def _outcome(func: Any) -> Any:
    try:
        return ("ok", func())
    except Exception as exc:  # any error must be the same error
        return ("error", type(exc), str(exc))


def _general(sdp: SessionDescription) -> SessionDescription:
    """The same description with its sections built: the general ways are taken on it."""
    sdp.media  # noqa: B018 - builds the sections
    assert sdp._pieces is None
    return sdp


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sdp_body())
def test_fast_parse_equals_line_parser(text: str) -> None:
    parsed = _outcome(lambda: SessionDescription.parse(text))
    if parsed[0] == "error":
        return
    sdp = parsed[1]
    raw = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    by_lines = SessionDescription(*_parse_lines(raw, False))
    assert sdp.text() == by_lines.text()
    assert sdp.serialise() == by_lines.serialise()
    assert sdp == by_lines
    for name in ("fingerprint", "setup", "3ge2ae", "key-mgmt", "rtpmap"):
        assert sdp.session.attribute_values(name) == by_lines.session.attribute_values(name)
        for mine, theirs in zip(sdp.media, by_lines.media, strict=True):
            assert mine.attribute_values(name) == theirs.attribute_values(name)
            assert mine.attribute_lines(name) == theirs.attribute_lines(name)
    for index in range(len(sdp.media)):
        assert sdp.effective_connection(index) == by_lines.effective_connection(index)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sdp_body(),
    st.sampled_from(["orig-offer", "term-offer"]),
    st.sampled_from(MECHANISMS),
    st.sampled_from(POLICIES),
)
def test_fast_plan_and_rewrite_equal_general(
    text: str, step: Any, mechanisms: tuple[str, ...], policy: Policy
) -> None:
    try:
        fast = SessionDescription.parse(text)
    except Exception:  # the parse has its own tests
        return
    general = _general(SessionDescription.parse(text))
    fast_plan = _outcome(lambda: plan_offer(step, fast, mechanisms, policy))
    general_plan = _outcome(lambda: plan_offer(step, general, mechanisms, policy))
    assert fast_plan == general_plan
    if fast_plan[0] == "error":
        return
    plan: OfferPlan = fast_plan[1]
    reservations = deterministic_reservations(
        plan,
        access_address="198.51.100.1",
        core_address="2001:db8::9",
        fingerprint=AGW_FP,
        port_base=40000,
    )
    fast_result = _outcome(lambda: rewrite_offer(fast, plan, reservations))
    general_result = _outcome(lambda: rewrite_offer(general, plan, reservations))
    if fast_result[0] == "ok":
        assert fast_result[1].sdp.serialise() == general_result[1].sdp.serialise()
    assert fast_result == general_result
    assert fast == general  # the input is not changed
    if fast_result[0] == "error":
        return
    # the rewritten offer, read back as the answer to itself (same m-lines and protos)
    state = fast_result[1].state
    answer_text = fast_result[1].sdp.text()
    answer_step = "orig-answer" if step == "orig-offer" else "term-answer"
    lazy_answer = _outcome(
        lambda: rewrite_answer(answer_step, SessionDescription.parse(answer_text), state)
    )
    general_answer = _outcome(
        lambda: rewrite_answer(answer_step, _general(SessionDescription.parse(answer_text)), state)
    )
    assert lazy_answer == general_answer


@pytest.mark.parametrize("ending", ["\r\n", "\n"])
def test_fast_ways_are_taken(ending: str) -> None:
    """The bench's shape goes the fast way end to end (a description in pieces throughout)."""
    text = ending.join(
        [
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.10",
            "s=-",
            "c=IN IP4 192.0.2.10",
            "t=0 0",
            f"a=fingerprint:{FP256}",
            "m=message 7394 TCP/TLS/MSRP *",
            "a=setup:active",
            "a=3ge2ae:requested",
            "m=application 9 TCP/TLS/BFCP *",
            "m=audio 49170 RTP/AVP 0",
            "",
        ]
    )
    sdp = SessionDescription.parse(text)
    assert sdp._pieces is not None
    plan = plan_offer("orig-offer", sdp, ("msrp-tls",), Policy())
    reservations = deterministic_reservations(
        plan, access_address="198.51.100.1", core_address="203.0.113.1", fingerprint=AGW_FP,
        port_base=40000,
    )  # fmt: skip
    result = rewrite_offer(sdp, plan, reservations)
    assert sdp._pieces is not None and result.sdp._pieces is not None
    assert result.sdp.text().split("\r\n")[4:12] == [
        "t=0 0",
        "m=message 40002 TCP/MSRP *",
        "c=IN IP4 203.0.113.1",
        "a=setup:active",
        "m=application 9 TCP/TLS/BFCP *",
        f"a=fingerprint:{FP256}",
        "m=audio 49170 RTP/AVP 0",
        "",
    ]
    assert result == rewrite_offer(_general(SessionDescription.parse(text)), plan, reservations)


def test_streams_with_the_same_or_another_fingerprint_each_get_their_own() -> None:
    """The fast plan reads a fingerprint once for the streams that repeat the value before
    them: streams with another value (or one it cannot use) still get what their own says."""
    other = "sha-256 " + ":".join(f"{i * 13 % 256:02X}" for i in range(32))
    md5 = "md5 " + ":".join(["AB"] * 16)
    values = [FP256, FP256, other, other, md5, md5, FP256]
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0"]
    for n, value in enumerate(values):
        lines += [
            f"m=message {7000 + n} TCP/TLS/MSRP *",
            f"a=fingerprint:{value}",
            "a=setup:active",
            "a=3ge2ae:requested" if value != md5 else "a=sendrecv",
        ]
    text = "\r\n".join([*lines, ""])
    fast = SessionDescription.parse(text)
    assert fast._pieces is not None
    plan = plan_offer("orig-offer", fast, ("msrp-tls",), Policy())
    assert plan == plan_offer(
        "orig-offer", _general(SessionDescription.parse(text)), ("msrp-tls",), Policy()
    )
    want = [(Fingerprint.parse(v),) if v != md5 else () for v in values]
    assert [s.fingerprints for s in plan.streams] == want


def test_one_pass_scan_flags_what_is_not_simple_and_reads_the_m_fields() -> None:
    """:func:`pcscf.sdp._parse_fast`: the one regex pass gives the simplest m= lines' fields,
    refuses a body with a line that is not simple (or, for a body whose breaks are not known
    to be CRLF, an LF without its CR), and leaves other m= spellings to _parse_m_line."""
    from pcscf.sdp import _SCAN_CRLF, _SCAN_LINES, _parse_fast

    head = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0"
    body = head + "\r\nm=message 7394/2 TCP/TLS/MSRP *\r\na=setup:active\r\nm=audio 0 RTP/AVP 0 8"
    for scan in (_SCAN_LINES, _SCAN_CRLF):
        parsed = _parse_fast(body, scan)
        assert parsed is not None
        pieces, mlines = parsed
        assert pieces == [
            head,
            "message 7394/2 TCP/TLS/MSRP *\r\na=setup:active",
            "audio 0 RTP/AVP 0 8",
        ]
        assert mlines == [
            ("message", 7394, 2, "TCP/TLS/MSRP", ("*",)),
            ("audio", 0, None, "RTP/AVP", ("0", "8")),
        ]
        for odd in ("a=bad name", "c=IN  IP4 192.0.2.1", "A=setup:active", "=x", "a="):
            assert _parse_fast(body + "\r\n" + odd, scan) is None, odd
        for bad_m in ("m=audio 70000 RTP/AVP 0", "m=audio 1/0 RTP/AVP 0"):
            assert _parse_fast(body + "\r\n" + bad_m, scan) is None, bad_m
        # another spelling of m= (two spaces): not the simplest, read by _parse_m_line
        other = _parse_fast(body + "\r\nm=video  9 RTP/AVP 99", scan)
        assert other is not None and other[1][-1] == ("video", 9, None, "RTP/AVP", ("99",))
    stray_lf = head + "\na=x\r\nm=audio 1 RTP/AVP 0"
    assert _parse_fast(stray_lf, _SCAN_CRLF) is None
    assert _parse_fast(stray_lf, _SCAN_LINES) is not None  # its caller made every break CRLF
