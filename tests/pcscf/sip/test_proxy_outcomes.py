"""What the proxy core tells the edge's counters (docs/metrics.md): each ended call's outcome
and cause in a bounded vocabulary, and whether a response it sends is its own or relayed."""

from __future__ import annotations

import pytest

from pcscf.sip.media import DialogId, Reject
from pcscf.sip.message import Response
from pcscf.sip.proxy import DialogEnded, ProxyConfig, ProxyCore, Send
from tests.pcscf.sip.test_proxy import (
    CORE,
    GM,
    SCSCF,
    UE,
    _forward_first_invite,
    _ids,
    invite,
    media,
    register,
    req,
    resp_to,
    sends,
)


@pytest.fixture
def core() -> ProxyCore:
    ids = _ids()
    return ProxyCore(ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF), new_id=lambda: next(ids))


def _ended(actions: list[object]) -> list[tuple[str, str]]:
    return [(a.outcome, a.cause) for a in actions if isinstance(a, DialogEnded)]


def _origins(actions: list[object]) -> list[tuple[int, bool]]:
    return [
        (s.message.status, s.relayed) for s in sends(actions) if isinstance(s.message, Response)
    ]


CANCEL = """CANCEL sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKb1
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>
Call-ID: c1
CSeq: 1 CANCEL"""


def test_an_offer_refused_by_the_media_handler_is_rejected(core: ProxyCore) -> None:
    register(core)
    ask = media(invite(core))[0]
    out = core.media_result(ask.token, Reject(488, "no AGW in service"), 1.1)
    assert _ended(out) == [("rejected", "offer_rejected")]
    assert _origins(out) == [(488, False)]


def test_a_busy_callee_is_rejected_and_its_response_relayed(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    out = core.receive(SCSCF, resp_to(sent, 486), 2)
    assert _ended(out) == [("rejected", "final_response")]
    assert _origins(out) == [(486, True)]


def test_a_cancel_is_cancelled_whoever_answers_the_invite(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    core.receive(SCSCF, resp_to(sent, 180), 2)
    out = core.receive(UE, req(CANCEL), 2.5)
    assert _origins(out) == [(200, False)]  # the CANCEL's own 200
    out = core.receive(SCSCF, resp_to(sent, 487), 3)
    assert _ended(out) == [("cancelled", "cancel")]
    assert _origins(out) == [(487, True)]


def test_an_answered_call_ended_by_bye_is_answered(core: ProxyCore) -> None:
    sent = _forward_first_invite(core)
    out = core.receive(SCSCF, resp_to(sent, 200), 2)
    assert _origins(out) == [(200, True)]
    bye = req(
        """BYE sip:bob@192.0.2.20 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bKbye1
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>
From: <sip:alice@ims.test>;tag=a1
To: <sip:bob@ims.test>;tag=callee
Call-ID: c1
CSeq: 2 BYE"""
    )
    out = core.receive(UE, bye, 3)
    assert _ended(out) == [("answered", "bye")]


def test_the_counters_fields_are_not_part_of_an_actions_identity() -> None:
    dialog = DialogId("c1", "orig")
    assert DialogEnded(dialog, "BYE") == DialogEnded(dialog, "BYE", "answered", "bye")
    assert Send(UE, req(CANCEL)) == Send(UE, req(CANCEL), relayed=True)
