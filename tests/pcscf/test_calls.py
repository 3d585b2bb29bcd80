"""The e2ae call table (pcscf/calls.py) without a reactor: offers, answers, re-offers, AGW
notifications, TLS establishment timers, failures per policy, releases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.fingerprint import Fingerprint
from iq import profile
from pcscf.calls import (
    AnswerWork,
    CallTable,
    EndCall,
    IqRelease,
    MediaDone,
    Note,
    OfferWork,
    Reoffer,
    agw_error,
)
from pcscf.policy import Policy
from pcscf.sdp import SessionDescription
from pcscf.sip.media import DialogId, Forward, MediaContext, Reject
from tests.media_helpers import MECHS, media_context

UE_FP = Fingerprint.parse("sha-256 " + ":".join(["4A"] * 32))
UE_FP2 = Fingerprint.parse("sha-256 " + ":".join(["5B"] * 32))
AGW_FP = Fingerprint.parse("sha-256 " + ":".join(["9F"] * 32))
ORIG = DialogId("call-1", "orig")
TERM = DialogId("call-2", "term")


def ctx(
    kind: str, from_ue: bool, dialog: DialogId = ORIG, mechanisms: frozenset[str] = MECHS
) -> MediaContext:
    return media_context(dialog, kind, from_ue, mechanisms)


def ue_offer(fp: Fingerprint = UE_FP, bfcp_port: int = 50000, msrp_port: int = 7394) -> bytes:
    return (
        "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        f"m=message {msrp_port} TCP/TLS/MSRP *\r\na=setup:active\r\n"
        f"a=fingerprint:{fp.value}\r\na=3ge2ae:requested\r\n"
        f"m=application {bfcp_port} TCP/TLS/BFCP *\r\na=setup:active\r\n"
        f"a=fingerprint:{fp.value}\r\na=3ge2ae:requested\r\n"
        "m=audio 49170 RTP/AVP 0\r\n"
    ).encode()


def core_answer(bfcp_port: int = 50002) -> bytes:
    return (
        "v=0\r\no=bob 1 1 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\nt=0 0\r\n"
        "m=message 12763 TCP/MSRP *\r\na=setup:passive\r\n"
        f"m=application {bfcp_port} TCP/BFCP *\r\na=setup:passive\r\n"
        "m=audio 5004 RTP/AVP 0\r\n"
    ).encode()


def core_offer() -> bytes:
    return (
        b"v=0\r\no=bob 1 1 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\nt=0 0\r\n"
        b"m=message 12765 TCP/MSRP *\r\na=setup:active\r\n"
    )


def ue_answer(fp: Fingerprint = UE_FP) -> bytes:
    return (
        "v=0\r\no=carol 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
        f"m=message 7396 TCP/TLS/MSRP *\r\na=setup:active\r\na=fingerprint:{fp.value}\r\n"
    ).encode()


def reply_for(request: profile.ReserveRequest, context: int = 7) -> profile.ReserveReply:
    return profile.ReserveReply(
        request.context or context,
        tuple(
            profile.ReservedStream(
                s.stream,
                f"acc/{context}{s.stream}",
                f"core/{context}{s.stream}",
                profile.Endpoint("198.51.100.1", 40000 + 2 * s.stream),
                profile.Endpoint("203.0.113.1", 40001 + 2 * s.stream),
                AGW_FP,
                s.access_setup,
                s.core_setup,
            )
            for s in request.streams
        ),
    )


def set_up_orig(table: CallTable, now: float = 0.0) -> tuple[bytes, bytes]:
    work = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], now)
    assert isinstance(work, OfferWork) and work.reserve is not None
    done = table.offer_reserved(work, reply_for(work.reserve.request), now)
    assert isinstance(done.result, Forward)
    answer = table.answer(ctx("answer", False), core_answer(), now)
    assert isinstance(answer, AnswerWork)
    final = table.answer_configured(answer, now)
    assert isinstance(final.result, Forward)
    return done.result.body, final.result.body


def releases(actions: Any) -> list[profile.ReleaseRequest]:
    return [a.request for a in actions if isinstance(a, IqRelease)]


def test_originating_call_reserves_rewrites_configures_and_releases() -> None:
    table = CallTable(Policy())
    work = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], 0.0)
    assert isinstance(work, OfferWork) and work.reserve is not None
    request = work.reserve.request
    assert request.call_id == "call-1" and request.context is None
    assert [(s.stream, s.media) for s in request.streams] == [(1, "message"), (2, "application")]
    assert request.streams[0].ue_fingerprints == (UE_FP,)
    assert request.streams[0].ue_address == profile.Endpoint("192.0.2.10", 7394)
    assert (request.streams[0].access_setup, request.streams[0].core_setup) == ("passive", "active")

    done = table.offer_reserved(work, reply_for(request), 0.0)
    assert isinstance(done.result, Forward)
    to_core = SessionDescription.parse(done.result.body)
    assert to_core.media[0].proto == "TCP/MSRP" and to_core.media[0].port == 40003
    assert to_core.media[1].proto == "TCP/BFCP" and to_core.media[1].port == 40005
    assert b"fingerprint" not in done.result.body and b"3ge2ae" not in done.result.body
    assert table.held() == {ORIG: ["acc/71", "core/71", "acc/72", "core/72"]}

    answer = table.answer(ctx("answer", False), core_answer(), 0.0)
    assert isinstance(answer, AnswerWork)
    (conf,) = answer.configures
    assert conf.gateway == "<agw1>" and conf.request.context == 7
    first = conf.request.streams[0]
    assert first.core_address == profile.Endpoint("203.0.113.50", 12763)
    # the AGW's core role (active, as reserved) is unchanged, so it is not sent again
    assert (first.core_setup, first.core_remote_setup, first.establish_tls) == (
        None,
        "passive",
        False,
    )
    final = table.answer_configured(answer, 5.0)
    assert isinstance(final.result, Forward)
    to_ue = SessionDescription.parse(final.result.body)
    assert to_ue.media[0].proto == "TCP/TLS/MSRP" and to_ue.media[0].port == 40002
    assert to_ue.media[0].attribute_values("fingerprint") == [AGW_FP.value]
    assert to_ue.media[0].attribute_values("3ge2ae") == ["applied"]
    assert table.next_deadline() == 5.0 + Policy().tls_establishment_timeout

    actions = table.ended(ORIG, "BYE")
    assert releases(actions) == [profile.ReleaseRequest(7)]
    assert table.held() == {} and table.next_deadline() is None


def test_same_answer_twice_is_rewritten_once() -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    again = table.answer(ctx("answer", False), core_answer(), 1.0)
    assert isinstance(again, MediaDone) and isinstance(again.result, Forward)
    assert b"TCP/TLS/MSRP" in again.result.body


def test_terminating_call_upgrades_towards_the_ue_and_pins_its_answer() -> None:
    table = CallTable(Policy())
    work = table.offer(ctx("offer", False, TERM), core_offer(), ["<agw1>"], 0.0)
    assert isinstance(work, OfferWork) and work.reserve is not None
    s = work.reserve.request.streams[0]
    assert s.core_address == profile.Endpoint("203.0.113.50", 12765)
    assert s.ue_fingerprints == () and s.core_remote_setup == "active"
    done = table.offer_reserved(work, reply_for(work.reserve.request), 0.0)
    assert isinstance(done.result, Forward)
    assert b"TCP/TLS/MSRP" in done.result.body and b"a=3ge2ae:applied" in done.result.body
    answer = table.answer(ctx("answer", True, TERM), ue_answer(), 0.0)
    assert isinstance(answer, AnswerWork)
    conf = answer.configures[0].request.streams[0]
    assert conf.ue_fingerprints == (UE_FP,)
    assert conf.ue_address == profile.Endpoint("192.0.2.20", 7396)
    final = table.answer_configured(answer, 0.0)
    assert isinstance(final.result, Forward)
    assert b"TCP/MSRP" in final.result.body and b"fingerprint" not in final.result.body


def test_no_agw_rejects_with_503_or_bypasses_per_policy() -> None:
    reject = CallTable(Policy()).offer(ctx("offer", True), ue_offer(), [], 0.0)
    assert isinstance(reject, MediaDone) and isinstance(reject.result, Reject)
    assert reject.result.status == 503 and "no AGW" in reject.result.warning
    bypass = CallTable(Policy(on_agw_failure="bypass")).offer(ctx("offer", True), ue_offer(), [], 0)
    assert isinstance(bypass, MediaDone) and bypass.result == Forward(ue_offer())


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (ue_offer().replace(b"a=fingerprint", b"a=x-fingerprint"), 488, "no a=fingerprint"),
        (b"v=0\r\nbogus\r\n", 488, "malformed SDP"),
    ],
)
def test_bad_offers_get_488_naming_the_cause(body: bytes, status: int, words: str) -> None:
    done = CallTable(Policy()).offer(ctx("offer", True), body, ["<agw1>"], 0.0)
    assert isinstance(done, MediaDone) and isinstance(done.result, Reject)
    assert done.result.status == status and words in done.result.warning
    bypass = CallTable(Policy(on_agw_failure="bypass")).offer(
        ctx("offer", True), body, ["<agw1>"], 0.0
    )
    assert isinstance(bypass, MediaDone) and bypass.result == Forward(body)


def test_policy_refusal_is_not_bypassed() -> None:
    plain_tls = ue_offer().replace(b"a=3ge2ae:requested\r\n", b"")
    table = CallTable(Policy(on_agw_failure="bypass", non_e2ae_tls="reject"))
    done = table.offer(ctx("offer", True), plain_tls, ["<agw1>"], 0.0)
    assert isinstance(done, MediaDone) and isinstance(done.result, Reject)
    assert done.result.status == 488 and "non_e2ae_tls" in done.result.warning


def test_iq_failure_after_reserve_releases_what_was_reserved() -> None:
    table = CallTable(Policy())
    work = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], 0.0)
    assert isinstance(work, OfferWork) and work.reserve is not None
    reply = reply_for(work.reserve.request)
    done = table.offer_failed(work, agw_error("no Iq reply (timeout)"), 0.0, reply)
    assert isinstance(done.result, Reject) and done.result.status == 503
    assert "timeout" in done.result.warning
    assert releases(done.actions) == [profile.ReleaseRequest(7)]
    assert table.held() == {}


def test_call_ended_during_reservation_releases_the_late_reply() -> None:
    table = CallTable(Policy())
    work = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], 0.0)
    assert isinstance(work, OfferWork) and work.reserve is not None
    assert table.ended(ORIG, "CANCEL") == []
    done = table.offer_reserved(work, reply_for(work.reserve.request), 0.0)
    assert releases(done.actions) == [profile.ReleaseRequest(7)]


def test_round_robin_over_gateways_in_service() -> None:
    table = CallTable(Policy())
    picks = [table.pick_gateway(["<a>", "<b>", "<c>"]) for _ in range(4)]
    assert picks == ["<a>", "<b>", "<c>", "<a>"]
    assert table.pick_gateway([]) is None


def test_reoffer_with_changed_fingerprint_reconfigures_and_port_zero_releases() -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    work = table.offer(ctx("offer", True), ue_offer(UE_FP2, bfcp_port=0), ["<agw1>"], 1.0)
    assert isinstance(work, OfferWork) and work.reserve is None
    (conf,) = work.configures
    assert conf.request.streams[0].ue_fingerprints == (UE_FP2,)
    assert conf.request.streams[0].access_termination == "acc/71"
    assert [r.request for r in work.releases] == [profile.ReleaseRequest(7, ("acc/72", "core/72"))]
    done = table.offer_reserved(work, None, 1.0)
    assert isinstance(done.result, Forward)
    assert table.held() == {ORIG: ["acc/71", "core/71"]}


def test_reoffer_adding_a_stream_reserves_in_the_same_context() -> None:
    table = CallTable(Policy())
    first = table.offer(ctx("offer", True), ue_offer(bfcp_port=0), ["<agw1>"], 0.0)
    assert isinstance(first, OfferWork) and first.reserve is not None
    assert [s.stream for s in first.reserve.request.streams] == [1]
    table.offer_reserved(first, reply_for(first.reserve.request), 0.0)
    again = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], 1.0)
    assert isinstance(again, OfferWork) and again.reserve is not None
    assert again.reserve.request.context == 7
    assert [s.stream for s in again.reserve.request.streams] == [2]


def _event(kind: str, term: str = "acc/71", cause: Any = None) -> profile.IqEvent:
    return profile.IqEvent(kind, 7, term, 1, "20261123T10000000", cause=cause, peer="192.0.2.66")  # type: ignore[arg-type]


def test_strangers_failed_handshake_is_counted_and_does_not_end_the_call() -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    actions = table.notification("<agw1>", _event("tls-failure", cause="fingerprint-mismatch"), 1)
    assert not any(isinstance(a, EndCall | IqRelease | Reoffer) for a in actions)
    assert table.stranger_failures == 1
    assert table.calls[ORIG].streams[0].failed_attempts == 1
    table.notification("<agw1>", _event("tls-established"), 2.0)
    assert table.calls[ORIG].streams[0].deadline is None


def test_attempts_after_the_verified_session_do_not_end_the_call() -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    table.notification("<agw1>", _event("tls-established"), 1.0)
    actions = table.notification("<agw1>", _event("tls-failure", cause="no-certificate"), 2.0)
    assert not any(isinstance(a, EndCall | IqRelease | Reoffer) for a in actions)
    assert table.stranger_failures == 1 and table.held()[ORIG]


@pytest.mark.parametrize(
    ("kind", "term", "words"),
    [
        ("stream-failed", "acc/71", "establishment timer"),
        ("tcp-failure", "core/71", "core TCP connection of stream 0"),
    ],
)
def test_stream_failure_ends_the_call_with_a_reason(kind: str, term: str, words: str) -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    actions = table.notification("<agw1>", _event(kind, term), 2.0)
    ends = [a for a in actions if isinstance(a, EndCall)]
    assert len(ends) == 1 and words in ends[0].text and ends[0].cause == 488
    assert releases(actions) == [profile.ReleaseRequest(7)]


def test_tls_timer_with_remove_stream_reoffers_port_zero_both_ways() -> None:
    policy = Policy(on_tls_failure="remove-stream", tls_establishment_timeout=10.0)
    table = CallTable(policy)
    set_up_orig(table, now=0.0)
    table.notification("<agw1>", _event("tls-established", "acc/72"), 1.0)
    assert table.tick(9.0) == []
    actions = table.tick(10.0)
    assert releases(actions) == [profile.ReleaseRequest(7, ("acc/71", "core/71"))]
    reoffers = [a for a in actions if isinstance(a, Reoffer)]
    assert sorted(r.side for r in reoffers) == ["core", "gm"]
    for r in reoffers:
        sdp = SessionDescription.parse(r.body)
        assert sdp.media[0].port == 0 and sdp.media[1].port != 0
        assert sdp.session.lines[1].split()[2] == "2"  # o= version bumped
    assert not any(isinstance(a, EndCall) for a in actions)
    assert table.held() == {ORIG: ["acc/72", "core/72"]}


def test_tls_timer_with_bye_ends_the_call() -> None:
    table = CallTable(Policy(tls_establishment_timeout=3.0))
    set_up_orig(table, now=0.0)
    actions = table.tick(3.0)
    (end,) = [a for a in actions if isinstance(a, EndCall)]
    assert "within 3 s" in end.text
    assert releases(actions) == [profile.ReleaseRequest(7)]
    assert table.held() == {}


def test_notifies_that_cross_the_release_are_told_apart_from_unknown_ones() -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    table.ended(ORIG, "BYE")
    (late,) = table.notification("<agw1>", _event("connection-closed", "core/71"), 3.0)
    assert isinstance(late, Note) and "after the context was released" in late.format
    assert dict(late.fields)["call_id"] == ORIG.call_id
    (unknown,) = table.notification("<agw2>", _event("connection-closed", "core/71"), 3.0)
    assert isinstance(unknown, Note) and "unknown" in unknown.format


@pytest.mark.parametrize(
    ("in_service", "reason", "words"),
    [(False, "forced", "went out of service"), (True, "register", "restarted and lost")],
)
def test_an_agw_that_lost_its_terminations_ends_its_calls(
    in_service: bool, reason: str, words: str
) -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    actions = table.gateway_status("<agw1>", in_service, reason, 2.0)
    (end,) = [a for a in actions if isinstance(a, EndCall)]
    assert end.dialog == ORIG and end.cause == 488 and words in end.text
    assert releases(actions) == []  # the AGW holds nothing any more
    assert table.held() == {}
    assert table.gateway_status("<agw1>", in_service, reason, 3.0) == []  # once
    assert releases(table.ended(ORIG, "BYE")) == []


def test_an_agw_that_lost_its_terminations_with_remove_stream_reoffers_port_zero() -> None:
    table = CallTable(Policy(on_tls_failure="remove-stream"))
    set_up_orig(table)
    actions = table.gateway_status("<agw1>", False, "forced", 2.0)
    assert not any(isinstance(a, EndCall) for a in actions) and releases(actions) == []
    reoffers = [a for a in actions if isinstance(a, Reoffer)]
    assert sorted(r.side for r in reoffers) == ["core", "gm"]
    for r in reoffers:
        sdp = SessionDescription.parse(r.body)
        assert [m.port for m in sdp.media][:2] == [0, 0] and sdp.media[2].port != 0  # audio stays
    assert table.held() == {}


@pytest.mark.parametrize(
    ("in_service", "reason"), [(False, "link lost"), (True, "restart"), (True, "register")]
)
def test_a_link_blip_or_warm_restart_leaves_calls_alone(in_service: bool, reason: str) -> None:
    table = CallTable(Policy())
    set_up_orig(table)
    other = "<agw2>" if reason == "register" else "<agw1>"  # a cold boot of another AGW
    actions = table.gateway_status(other, in_service, reason, 2.0)
    assert not any(isinstance(a, EndCall | Reoffer | IqRelease) for a in actions)
    assert table.held() == {ORIG: ["acc/71", "core/71", "acc/72", "core/72"]}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["offer", "reserve", "fail", "answer", "configured", "end", "tick"]),
        max_size=12,
    )
)
def test_nothing_leaks_whatever_the_order(ops: list[str]) -> None:
    """Whatever happens, after the call ends every reserved context has been released."""
    table = CallTable(Policy(tls_establishment_timeout=1.0))
    reserved: set[int] = set()
    released: set[int] = set()
    work: Any = None
    answer: Any = None
    context = 0

    def account(actions: Any) -> None:
        for request in releases(actions):
            if not request.terminations:
                released.add(request.context)

    for i, op in enumerate(ops):
        if op == "offer":
            step = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], float(i))
            work = step if isinstance(step, OfferWork) else None
            if isinstance(step, OfferWork):
                account(step.releases)
            else:
                account(step.actions)
        elif op in ("reserve", "fail") and work is not None:
            reply = None
            if work.reserve is not None:
                context += 1
                reply = reply_for(work.reserve.request, context)
                reserved.add(reply.context)
            if op == "reserve":
                account(table.offer_reserved(work, reply, float(i)).actions)
            else:
                account(table.offer_failed(work, agw_error("x"), float(i), reply).actions)
            work = None
        elif op == "answer":
            step2 = table.answer(ctx("answer", False), core_answer(), float(i))
            answer = step2 if isinstance(step2, AnswerWork) else None
            account(step2.releases if isinstance(step2, AnswerWork) else step2.actions)
        elif op == "configured" and answer is not None:
            account(table.answer_configured(answer, float(i)).actions)
            answer = None
        elif op == "end":
            account(table.ended(ORIG, "BYE"))
        elif op == "tick":
            account(table.tick(float(i)))
    account(table.ended(ORIG, "BYE"))
    if work is not None and work.reserve is not None:  # a late reply after the end
        context += 1
        reply = reply_for(work.reserve.request, context)
        reserved.add(reply.context)
        account(table.offer_reserved(work, reply, 99.0).actions)
    assert reserved <= released, (reserved, released)
    assert table.held() == {}


def test_configure_failure_after_the_answer_went_on_ends_the_call() -> None:
    table = CallTable(Policy())
    work = table.offer(ctx("offer", True), ue_offer(), ["<agw1>"], 0.0)
    assert isinstance(work, OfferWork) and work.reserve is not None
    table.offer_reserved(work, reply_for(work.reserve.request), 0.0)
    answer = table.answer(ctx("answer", False), core_answer(), 0.0)
    assert isinstance(answer, AnswerWork)
    done = table.answer_failed(answer, agw_error("AGW refused: 430"), 1.0, forwarded=True)
    (end,) = [a for a in done.actions if isinstance(a, EndCall)]
    assert end.cause == 503 and "430" in end.text
    assert releases(done.actions) == [profile.ReleaseRequest(7)]
    assert table.held() == {}


def test_failures_are_classified_by_type_not_by_text() -> None:
    from pcscf.calls import classify
    from pcscf.errors import PolicyRefusal, RemoteRewriteError

    assert classify(PolicyRefusal(0, "TLS stream refused"))[0] == "policy"
    # the words alone do not make a policy refusal (it would be bypassed on AGW failure)
    assert classify(RemoteRewriteError(0, "policy non_e2ae_tls = reject"))[0] == "sdp"
