"""The e2ae rewrite: the proxy-facing API, every a=setup combination, and property tests of
the invariants on generated offers and answers (all four steps)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.fingerprint import Fingerprint
from pcscf.errors import LocalRewriteError, PcscfError, RemotePcscfError, RemoteRewriteError
from pcscf.policy import Policy
from pcscf.rewrite import (
    VALID_ANSWERS,
    AgwAddresses,
    RewriteState,
    Setup,
    deterministic_reservations,
    plan_offer,
    rewrite_answer,
    rewrite_offer,
)
from pcscf.sdp import SessionDescription

UE_FP = Fingerprint.parse("sha-256 " + ":".join(["4A"] * 32))
UE_FP2 = Fingerprint.parse("sha-1 " + ":".join(["4B"] * 20))
AGW_FP = Fingerprint.parse("sha-256 " + ":".join(["9F"] * 32))
CORE_FP = Fingerprint.parse("sha-256 " + ":".join(["C0"] * 32))
ACCESS, CORE = "198.51.100.1", "203.0.113.1"
SETUP_VALUES: tuple[Setup, ...] = ("active", "passive", "actpass")


def _head(host: str, extra: str = "") -> str:
    return f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n{extra}"


def _ue_msrp(setup: str | None, port: int = 7394, fp: Fingerprint | None = UE_FP) -> str:
    s = f"m=message {port} TCP/TLS/MSRP *\r\na=path:msrps://192.0.2.10:{port}/a;tcp\r\n"
    if setup:
        s += f"a=setup:{setup}\r\n"
    if fp is not None:
        s += f"{fp.attribute()}\r\n"
    return s + "a=3ge2ae:requested\r\n"


def _core_msrp(setup: str | None, port: int = 12763) -> str:
    s = f"m=message {port} TCP/MSRP *\r\na=path:msrp://203.0.113.50:{port}/b;tcp\r\n"
    return s + (f"a=setup:{setup}\r\n" if setup else "")


def _reserve(plan: Any) -> dict[int, AgwAddresses]:
    return deterministic_reservations(
        plan, access_address=ACCESS, core_address=CORE, fingerprint=AGW_FP, port_base=40000
    )


def _offer(step: Any, text: str, mechanisms: tuple[str, ...] = ("msrp-tls", "bfcp-tls")) -> Any:
    sdp = SessionDescription.parse(text)
    plan = plan_offer(step, sdp, mechanisms, Policy())
    return plan, rewrite_offer(sdp, plan, _reserve(plan))


def _setup(sdp: SessionDescription, index: int, default: str) -> str:
    values = sdp.effective_attribute_values(index, "setup")
    return values[0] if values else default


def _roundtrip_state(state: RewriteState) -> RewriteState:
    return RewriteState.from_json(json.loads(json.dumps(state.to_json())))


# --- the API a proxy uses ---------------------------------------------------------------------


def test_plan_gives_what_the_iq_reservation_needs() -> None:
    sdp = SessionDescription.parse(_head("192.0.2.10") + _ue_msrp("passive"))
    plan = plan_offer("orig-offer", sdp, ["msrp-tls"], Policy())
    (stream,) = plan.e2ae_streams
    assert stream.fingerprints == (UE_FP,)
    assert (stream.ue_setup, stream.access_setup, stream.access_role) == (
        "passive",
        "active",
        "client",
    )
    assert stream.core_setup == "passive"
    assert (stream.remote_address, stream.remote_port) == ("192.0.2.10", 7394)


def test_rewrite_with_reservation_from_the_agw_and_input_untouched() -> None:
    text = _head("192.0.2.10") + _ue_msrp("active")
    sdp = SessionDescription.parse(text)
    plan = plan_offer("orig-offer", sdp, ["msrp-tls"], Policy())
    reservation = AgwAddresses("198.51.100.7", 5001, "203.0.113.9", 6001, AGW_FP)
    result = rewrite_offer(sdp, plan, {0: reservation})
    assert sdp.serialise() == text.encode()
    assert result.sdp.media[0].lines[:2] == ["m=message 6001 TCP/MSRP *", "c=IN IP4 203.0.113.9"]
    with pytest.raises(LocalRewriteError):
        rewrite_offer(sdp, plan, {})


def test_steps_are_checked() -> None:
    sdp = SessionDescription.parse(_head("192.0.2.10") + _ue_msrp("active"))
    with pytest.raises(LocalRewriteError):
        plan_offer("orig-answer", sdp, [], Policy())
    _, result = _offer("orig-offer", _head("192.0.2.10") + _ue_msrp("active"))
    with pytest.raises(LocalRewriteError):
        rewrite_answer("term-answer", sdp, result.state)
    with pytest.raises(LocalRewriteError):
        RewriteState.from_json({"version": 99})


def test_state_round_trips_through_json() -> None:
    _, result = _offer("orig-offer", _head("192.0.2.10") + _ue_msrp("actpass"))
    assert _roundtrip_state(result.state) == result.state


def test_registration_indication_per_mechanism() -> None:
    bfcp = (
        "m=application 50000 TCP/TLS/BFCP *\r\na=setup:active\r\n"
        f"{UE_FP.attribute()}\r\na=3ge2ae:requested\r\n"
    )
    text = _head("192.0.2.10") + _ue_msrp("active") + bfcp
    sdp = SessionDescription.parse(text)
    only_bfcp = plan_offer("orig-offer", sdp, ["bfcp-tls"], Policy())
    assert [s.treatment for s in only_bfcp.streams] == ["passthrough", "e2ae"]
    network_msrp_only = Policy(network_mechanisms=["msrp-tls"])
    plan = plan_offer("orig-offer", sdp, ["msrp-tls", "bfcp-tls"], network_msrp_only)
    assert [s.treatment for s in plan.streams] == ["e2ae", "passthrough"]


def test_e2ae_without_usable_fingerprint_is_a_remote_error() -> None:
    sdp = SessionDescription.parse(_head("192.0.2.10") + _ue_msrp("active", fp=UE_FP2))
    with pytest.raises(RemoteRewriteError) as info:
        plan_offer("orig-offer", sdp, ["msrp-tls"], Policy(accepted_hash_funcs=["sha-256"]))
    assert info.value.stream == 0
    assert "sha-1" in info.value.reason


# --- every a=setup combination ----------------------------------------------------------------


@pytest.mark.parametrize("ue", SETUP_VALUES)
@pytest.mark.parametrize("core", SETUP_VALUES)
def test_originating_setup_matrix(ue: Setup, core: Setup) -> None:
    """UE offers ``ue``; the AGW offers the same role to the core, which answers ``core``."""
    _, offer = _offer("orig-offer", _head("192.0.2.10") + _ue_msrp(ue))
    to_core = offer.sdp
    offered_to_core = _setup(to_core, 0, "active")
    assert offered_to_core == ue  # the UE's role is carried to the core side
    answer = SessionDescription.parse(_head("203.0.113.50") + _core_msrp(core))
    if core not in VALID_ANSWERS[ue]:
        with pytest.raises(RemoteRewriteError, match="RFC 4145"):
            rewrite_answer("orig-answer", answer, _roundtrip_state(offer.state))
        return
    result = rewrite_answer("orig-answer", answer, _roundtrip_state(offer.state))
    to_ue = _setup(result.sdp, 0, "passive")
    assert to_ue in VALID_ANSWERS[ue]
    assert to_ue == ("active" if ue == "passive" else "passive")  # AGW prefers passive
    (update,) = result.agw_updates
    assert update.side == "core" and not update.release
    assert (update.remote_address, update.remote_port) == ("203.0.113.50", 12763)
    assert update.core_setup == {"active": "passive", "passive": "active"}[core]
    assert update.access_role == ("client" if to_ue == "active" else "server")


@pytest.mark.parametrize("core", SETUP_VALUES)
@pytest.mark.parametrize("ue", SETUP_VALUES)
def test_terminating_setup_matrix(core: Setup, ue: Setup) -> None:
    """The core offers ``core``; the AGW offers to the UE, which answers ``ue``."""
    _, offer = _offer("term-offer", _head("203.0.113.50") + _core_msrp(core))
    offered_to_ue = _setup(offer.sdp, 0, "active")
    assert offered_to_ue == ("actpass" if core == "actpass" else "passive")
    ue_answer = (
        _head("192.0.2.20")
        + f"m=message 9000 TCP/TLS/MSRP *\r\na=setup:{ue}\r\n{UE_FP.attribute()}\r\n"
    )
    answer = SessionDescription.parse(ue_answer)
    if ue not in VALID_ANSWERS[offered_to_ue]:  # type: ignore[index]
        with pytest.raises(RemoteRewriteError, match="RFC 4145"):
            rewrite_answer("term-answer", answer, _roundtrip_state(offer.state))
        return
    result = rewrite_answer("term-answer", answer, _roundtrip_state(offer.state))
    to_core = _setup(result.sdp, 0, "passive")
    assert to_core in VALID_ANSWERS[core]
    if ue in VALID_ANSWERS[core]:
        assert to_core == ue  # the UE's role carried to the core side
    (update,) = result.agw_updates
    assert update.side == "access" and update.fingerprints == (UE_FP,)
    assert (update.remote_address, update.remote_port) == ("192.0.2.20", 9000)
    assert update.access_role == ("server" if ue == "active" else "client")
    assert update.core_setup == to_core


def test_rejected_answers_release_the_terminations() -> None:
    _, offer = _offer("orig-offer", _head("192.0.2.10") + _ue_msrp("active"))
    answer = SessionDescription.parse(_head("203.0.113.50") + _core_msrp("passive", port=0))
    result = rewrite_answer("orig-answer", answer, offer.state)
    assert result.sdp.media[0].lines[0] == "m=message 0 TCP/TLS/MSRP *"
    assert result.agw_updates[0].release
    assert result.streams[0].treatment == "rejected"


# --- property tests: invariants on generated offers and answers ------------------------------

STREAM_KINDS = ["msrp-e2ae", "bfcp-e2ae", "msrp-tls-plain", "msrp-kms", "audio", "dtls", "port0"]


@st.composite
def ue_offers(draw: st.DrawFn) -> tuple[str, bool]:
    session_fp = draw(st.booleans())
    session_c = draw(st.booleans())
    head = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\n"
    if session_c:
        head += "c=IN IP4 192.0.2.10\r\n"
    head += "t=0 0\r\n"
    if session_fp:
        head += f"{UE_FP.attribute()}\r\n"
    body = ""
    kinds = draw(st.lists(st.sampled_from(STREAM_KINDS), min_size=1, max_size=6))
    for n, kind in enumerate(kinds):
        port = 7000 + 2 * n
        conn = "" if session_c else f"c=IN IP4 192.0.2.{10 + n}\r\n"
        setup = draw(st.sampled_from([None, "active", "passive", "actpass"]))
        setup_line = f"a=setup:{setup}\r\n" if setup else ""
        own_fp = not session_fp or draw(st.booleans())
        fp_lines = f"{UE_FP.attribute()}\r\n{UE_FP2.attribute()}\r\n" if own_fp else ""
        if kind in ("msrp-e2ae", "bfcp-e2ae", "msrp-tls-plain", "msrp-kms", "port0"):
            media, proto = (
                ("application", "TCP/TLS/BFCP")
                if kind == "bfcp-e2ae"
                else ("message", "TCP/TLS/MSRP")
            )
            body += f"m={media} {0 if kind == 'port0' else port} {proto} *\r\n{conn}"
            body += f"a=path:msrps://192.0.2.10:{port}/s{n};tcp\r\n{setup_line}{fp_lines}"
            if kind in ("msrp-e2ae", "bfcp-e2ae", "port0"):
                body += "a=3ge2ae:requested\r\n"
            if kind == "msrp-kms":
                body += "a=key-mgmt:mikey AQAFgM0X\r\n"
            body += "a=x-unknown:Kept\r\n"
        elif kind == "audio":
            body += f"m=audio {port} RTP/AVP 0\r\n{conn}a=sendrecv\r\n"
        else:
            body += f"m=audio {port} UDP/TLS/RTP/SAVP 0\r\n{conn}a=setup:actpass\r\n"
            if draw(st.booleans()):
                body += f"{UE_FP2.attribute()}\r\n"
    return head + body, session_fp


def _check_offer_invariants(
    before: SessionDescription, after: SessionDescription, plan: Any, towards_ue: bool
) -> None:
    assert [m.media for m in after.media] == [m.media for m in before.media]
    session_fps = before.session.attribute_lines("fingerprint")
    any_e2ae = any(s.treatment == "e2ae" for s in plan.streams)
    if any_e2ae:
        assert after.session.attribute_lines("fingerprint") == []
    for stream in plan.streams:
        b, a = before.media[stream.index], after.media[stream.index]
        if stream.treatment != "e2ae":
            parts = b.proto.upper().split("/")
            relies = ("TLS" in parts or "DTLS" in parts) and not b.attribute_lines("fingerprint")
            copied = session_fps if (any_e2ae and relies) else []
            assert a.lines == b.lines + copied
            # a TLS/DTLS stream that relied on the session fingerprint still has it
            assert not relies or after.effective_attribute_values(stream.index, "fingerprint") == (
                before.effective_attribute_values(stream.index, "fingerprint")
            )
            continue
        conns = [line for line in a.lines if line.startswith("c=")]
        assert a.lines.count("a=x-unknown:Kept") == b.lines.count("a=x-unknown:Kept")
        if towards_ue:
            assert a.proto.startswith("TCP/TLS/")
            assert conns == [f"c=IN IP4 {ACCESS}"]
            assert a.port == 40000 + 2 * stream.index + 1
            assert after.effective_attribute_values(stream.index, "fingerprint") == [AGW_FP.value]
            assert a.attribute_values("3ge2ae") == ["applied"]
        else:
            assert a.proto in ("TCP/MSRP", "TCP/BFCP")
            assert conns == [f"c=IN IP4 {CORE}"]
            assert a.port == 40000 + 2 * stream.index + 2
            assert after.effective_attribute_values(stream.index, "fingerprint") == []
            assert a.attribute_values("3ge2ae") == []


def _answer_for(offer: SessionDescription, host: str, draw: st.DrawFn, proto_map: Any) -> str:
    text = f"v=0\r\no=- 2 2 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    for n, m in enumerate(offer.media):
        if m.port == 0 or draw(st.integers(0, 9)) == 0:
            text += f"m={m.media} 0 {m.proto} {' '.join(m.fmts)}\r\n"
            continue
        offered = _setup(offer, n, "active")
        if offered == "holdconn":
            offered = "active"
        answer = draw(st.sampled_from(sorted(VALID_ANSWERS[offered])))  # type: ignore[index]
        text += f"m={m.media} {9000 + n} {proto_map(m.proto)} {' '.join(m.fmts)}\r\n"
        text += f"a=setup:{answer}\r\n{UE_FP.attribute()}\r\na=y-unknown\r\n"
    return text


@settings(max_examples=60, deadline=None)
@given(ue_offers(), st.data())
def test_originating_invariants(offer: tuple[str, bool], data: st.DataObject) -> None:
    text, _ = offer
    before = SessionDescription.parse(text)
    plan, result = _offer("orig-offer", text)
    _check_offer_invariants(before, result.sdp, plan, towards_ue=False)
    for stream in plan.e2ae_streams:
        assert _setup(result.sdp, stream.index, "active") == stream.ue_setup
        own = bool(before.media[stream.index].attribute_lines("fingerprint"))
        assert stream.fingerprints == ((UE_FP, UE_FP2) if own else (UE_FP,))
    # the core answers every stream with a valid setup (some rejected)
    answer_text = _answer_for(result.sdp, "203.0.113.50", data.draw, lambda p: p)
    answer = SessionDescription.parse(answer_text)
    final = rewrite_answer("orig-answer", answer, _roundtrip_state(result.state))
    assert len(final.sdp.media) == len(before.media)
    updates = {u.index: u for u in final.agw_updates}
    for stream in plan.e2ae_streams:
        i = stream.index
        section = final.sdp.media[i]
        assert section.proto == stream.proto_in
        if answer.media[i].port == 0:
            assert section.port == 0 and updates[i].release
            continue
        assert section.port == 40000 + 2 * i + 1
        assert final.sdp.effective_attribute_values(i, "fingerprint") == [AGW_FP.value]
        assert section.attribute_values("3ge2ae") == ["applied"]
        assert stream.ue_setup is not None
        assert _setup(final.sdp, i, "passive") in VALID_ANSWERS[stream.ue_setup]
    for i, section in enumerate(final.sdp.media):
        if i not in updates:
            assert section.lines[: len(answer.media[i].lines)] == answer.media[i].lines


@st.composite
def core_offers(draw: st.DrawFn) -> str:
    session_fp = draw(st.booleans())
    text = "v=0\r\no=- 1 1 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\nt=0 0\r\n"
    if session_fp:
        text += f"{CORE_FP.attribute()}\r\n"
    kinds = draw(st.lists(st.sampled_from(["msrp", "bfcp", "audio", "dtls", "port0"]), min_size=1))
    for n, kind in enumerate(kinds[:6]):
        setup = draw(st.sampled_from([None, "active", "passive", "actpass"]))
        setup_line = f"a=setup:{setup}\r\n" if setup else ""
        if kind in ("msrp", "bfcp", "port0"):
            media, proto = (
                ("application", "TCP/BFCP") if kind == "bfcp" else ("message", "TCP/MSRP")
            )
            port = 0 if kind == "port0" else 12000 + 2 * n
            text += f"m={media} {port} {proto} *\r\n{setup_line}a=x-unknown:Kept\r\n"
        elif kind == "audio":
            text += f"m=audio {3000 + n} RTP/AVP 0\r\n"
        else:
            text += f"m=audio {3000 + n} UDP/TLS/RTP/SAVP 0\r\na=setup:actpass\r\n"
    return text


@settings(max_examples=60, deadline=None)
@given(core_offers(), st.data())
def test_terminating_invariants(text: str, data: st.DataObject) -> None:
    before = SessionDescription.parse(text)
    plan, result = _offer("term-offer", text)
    _check_offer_invariants(before, result.sdp, plan, towards_ue=True)
    answer_text = _answer_for(
        result.sdp, "192.0.2.20", data.draw, lambda p: {"TCP/MSRP": "TCP/TLS/MSRP"}.get(p, p)
    )
    answer = SessionDescription.parse(answer_text)
    final = rewrite_answer("term-answer", answer, _roundtrip_state(result.state))
    for stream in plan.e2ae_streams:
        i = stream.index
        section = final.sdp.media[i]
        assert section.proto == stream.proto_in
        assert section.attribute_values("3ge2ae") == []
        assert final.sdp.effective_attribute_values(i, "fingerprint") == []
        if answer.media[i].port == 0:
            continue
        assert section.port == 40000 + 2 * i + 2
        assert [line for line in section.lines if line.startswith("c=")] == [f"c=IN IP4 {CORE}"]
        assert _setup(final.sdp, i, "passive") in VALID_ANSWERS[_setup(before, i, "active")]  # type: ignore[index]


# --- robustness: hostile but parseable SDP never escapes as anything but a PcscfError ---------

_hostile_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n\x00"),
    max_size=20,
)
_known_line = st.sampled_from(
    [
        "a=3ge2ae:requested",
        "a=3ge2ae:applied",
        "a=3GE2AE:Requested",
        "a=key-mgmt:mikey AQ==",
        "a=setup:active",
        "a=setup:passive",
        "a=setup:actpass",
        "a=setup:holdconn",
        f"a=fingerprint:{UE_FP.value}",
        f"a=fingerprint:{UE_FP2.value}",
        "a=fingerprint:md5 00:11",
        "c=IN IP4 192.0.2.99",
        "c=IN IP6 2001:db8::99",
    ]
)
_hostile_line = st.one_of(
    _known_line,
    _known_line,
    _known_line,
    _known_line,
    _hostile_value.map(lambda v: f"a=setup:{v}"),
    _hostile_value.map(lambda v: f"a=fingerprint:{v}"),
    _hostile_value.map(lambda v: f"a=3ge2ae:{v}"),
)
_hostile_m = st.tuples(
    st.sampled_from(["message", "application", "audio"]),
    st.sampled_from([0, 5000]),
    st.sampled_from(["TCP/TLS/MSRP", "TCP/MSRP", "tcp/tls/bfcp", "TCP/BFCP", "RTP/AVP"]),
).map(lambda t: f"m={t[0]} {t[1]} {t[2]} *")


@st.composite
def hostile_sdp(draw: st.DrawFn) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-"]
    if draw(st.integers(0, 4)):
        lines.append("c=IN IP4 192.0.2.1")
    lines.append("t=0 0")
    lines += draw(st.lists(_hostile_line, max_size=3))
    for _ in range(draw(st.integers(1, 4))):
        lines.append(draw(_hostile_m))
        lines += draw(st.lists(_hostile_line, max_size=5))
    return "\r\n".join(lines) + "\r\n"


@settings(max_examples=150, deadline=None)
@given(hostile_sdp(), hostile_sdp(), st.sampled_from(["orig", "term"]))
def test_hostile_sdp_gives_protocol_errors_only(offer: str, answer: str, direction: str) -> None:
    try:
        _, result = _offer(f"{direction}-offer", offer)
        rewrite_answer(
            f"{direction}-answer",  # type: ignore[arg-type]
            SessionDescription.parse(answer),
            _roundtrip_state(result.state),
        )
    except PcscfError as exc:
        assert isinstance(exc, RemotePcscfError), exc
