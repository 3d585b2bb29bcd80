"""Shortcuts of the proxy core against what they stand for."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.headers import Via, split_list
from pcscf.sip.message import Request
from pcscf.sip.proxy import Peer, _same_flow, _with_top_via
from pcscf.sip.registrar import Flow

PIECES = [
    "SIP/2.0/UDP ",
    "sip / 2.0 / tcp ",
    "192.0.2.1",
    "[2001:db8::1]",
    "Host.Example",
    ":5060",
    ":05070",
    ";branch=z9hG4bK",
    ";BRANCH=z9hG4bKx",
    ";rport",
    ";rport=",
    ";received=1.2.3.4",
    ";x",
    ' ;a = "q;r,s" ',
    ";b=<c,d>",
    ";e=<f",
    ";g=>",
    ",",
    " ",
    "=",
    '"',
    ";;",
]


@settings(max_examples=3000, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=10), st.sampled_from(["::1", "h"]))
def test_the_received_via_reads_back_as_itself(pieces: list[str], host: str) -> None:
    """The loop check takes the received request's new top Via as the object it was made
    from, not a parse of its text: same sent-by and branch, and its text one list item."""
    line = "".join(pieces)
    try:
        items = split_list(line, "Via")
        if not items:
            return
        via = Via.parse(items[0])
    except RemoteSipError:
        return
    top = via.with_received(host, 40000)
    text = str(top)
    assert split_list(text, "Via") == [text]
    again = Via.parse(text)
    assert (again.sent_by, again.branch) == (top.sent_by, top.branch)
    msg = Request((("Via", line),), b"", "OPTIONS", "sip:a@b")
    edited = _with_top_via(msg, top)
    assert _outcome(lambda: edited.vias) == _outcome(
        lambda: [top, *map(Via.parse, edited._values("via")[1:])]
    )


def _outcome(vias: Callable[[], list[Via]]) -> object:
    try:
        return [(via.sent_by, via.branch) for via in vias()]
    except RemoteSipError as exc:
        return ("error", exc.status, exc.reason)


@given(
    st.sampled_from(["udp", "tcp"]),
    st.sampled_from(["192.0.2.1", "192.0.2.2"]),
    st.sampled_from([5060, 5061]),
    st.sampled_from(["udp", "tcp"]),
    st.sampled_from(["192.0.2.1", "192.0.2.2"]),
    st.sampled_from([5060, 5061]),
)
def test_same_flow_is_flow_equality(t1: str, h1: str, p1: int, t2: str, h2: str, p2: int) -> None:
    peer = Peer("gm", t2, h2, p2)  # type: ignore[arg-type]
    assert _same_flow(Flow(t1, h1, p1), peer) == (Flow(t1, h1, p1) == peer.flow)
