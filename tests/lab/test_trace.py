"""lab.trace without a reactor: log events -> diagram -> SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lab.trace import AGW, CORE, PCSCF, build, call_ids, read_events, render_svg

CALL = "c1@127.0.0.1"


def _ev(t: float, ns: str, fmt: str, **fields: Any) -> dict[str, Any]:
    return {
        "log_time": t,
        "log_namespace": ns,
        "log_format": fmt,
        "log_level": {"name": "info"},
        **fields,
    }


def _sip(t: float, node: str, direction: str, summary: str, call: str = CALL) -> dict[str, Any]:
    fmt = "{node} -> {summary}" if direction == "out" else "{node} <- {summary}"
    return _ev(t, "lab.sip", fmt, node=node, direction=direction, summary=summary, call_id=call)


EVENTS = [
    _sip(1.0, "UE alice", "out", "INVITE sip:peer@lab.example [SDP TCP/TLS/MSRP]"),
    {
        **_ev(
            1.1,
            "iq",
            "Iq {what} to {gateway}",
            what="ReserveRequest",
            gateway="agw1",
            call_id=CALL,
            iq_context=None,
        ),
        "log_level": {"name": "debug"},
    },
    _ev(
        1.2,
        "accessgw",
        "reserved {termination} (TLS {tls_role}, core {core_role}) access port "
        "{access_port} core port {core_port}",
        termination="acc/1/1",
        stream="1",
        iq_context="1",
        access_port=4000,
        core_port=None,
    ),
    _ev(
        1.3,
        "accessgw.iq",
        "Iq reserved {count} stream(s) in context {iq_context} for call {call_id}",
        count=1,
        iq_context="1",
        call_id=CALL,
    ),
    _sip(1.4, "core", "in", "INVITE sip:peer@lab.example [SDP TCP/MSRP]"),
    _sip(1.5, "core", "out", "200 OK (INVITE) [SDP TCP/MSRP]"),
    _sip(1.6, "UE alice", "in", "200 OK (INVITE) [SDP TCP/TLS/MSRP]"),
    _ev(
        1.7,
        "accessgw",
        "TLS established on {termination} with {peer}, fingerprint {fingerprint}",
        termination="acc/1/1",
        iq_context="1",
        peer="127.0.0.1:5555",
    ),
    _ev(
        1.8,
        "accessgw",
        "TLS refused on {termination} from {peer}: {cause}",
        termination="acc/1/1",
        iq_context="1",
        peer="127.0.0.1:6666",
        cause="fingerprint-mismatch",
    ),
    _ev(
        1.9,
        "lab.media.MsrpConnection",
        "{stream}: TLS peer {peer} verified with {fingerprint}",
        stream="msrp",
        peer="127.0.0.1:4000",
        call_id=CALL,
    ),
    _ev(
        2.0,
        "iq",
        "Iq {kind} on {termination} context {iq_context} call {call_id} from {gateway}",
        kind="tls-established",
        termination="acc/1/1",
        iq_context="1",
        call_id=CALL,
        gateway="agw1",
    ),
    _sip(3.0, "UE bob", "out", "REGISTER sip:lab.example", call="reg-1"),
]


def test_lanes_and_arrows_of_one_call() -> None:
    d = build(EVENTS, call_id=CALL)
    assert d.lanes == ("UE alice", "other peer", PCSCF, AGW, CORE)
    got = [(a.source, a.target, a.kind, a.label) for a in d.arrows if a.kind != "note"]
    assert got == [
        ("UE alice", PCSCF, "sip", "INVITE +SDP · c1@127.0"),
        (PCSCF, AGW, "iq", "Add (Reserve)"),
        (AGW, PCSCF, "iq", "Reply Add: 1 stream(s), ctx 1"),
        (PCSCF, CORE, "sip", "INVITE +SDP · c1@127.0"),
        (CORE, PCSCF, "sip", "200 OK (INVITE) · c1@127.0"),
        (PCSCF, "UE alice", "sip", "200 OK (INVITE) · c1@127.0"),
        ("UE alice", AGW, "tls", "TLS verified acc/1/1 (AGW checked UE)"),
        ("other peer", AGW, "tls", "TLS refused acc/1/1: fingerprint-mismatch"),
        (AGW, "UE alice", "tls", "msrp: TLS verified (UE checked AGW acc/1/1)"),
        (AGW, PCSCF, "iq", "Notify tls-established acc/1/1 ctx 1"),
    ]
    # events naming only a context or a termination belong to the call of that context
    assert all(a.call_id == CALL for a in d.arrows)
    assert d.arrows[0].time == 0.0


def test_without_a_filter_every_call_is_drawn() -> None:
    d = build(EVENTS)
    assert call_ids(d) == [CALL, "reg-1"] and "UE bob" in d.lanes


def test_read_events_takes_record_separators_and_skips_junk() -> None:
    lines = ["\x1e" + json.dumps(EVENTS[0]), "", "not json", json.dumps(EVENTS[1])]
    assert read_events(lines) == EVENTS[:2]


def test_svg_golden_shape() -> None:
    svg = render_svg(build(EVENTS, call_id=CALL), title="one call")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and root.find(f"{ns}title").text == "one call"
    assert len(root.findall(f"{ns}g")) == len(build(EVENTS, call_id=CALL).arrows)
    assert [g.get("class") for g in root.findall(f"{ns}g")][:2] == ["sip", "iq"]
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert render_svg(build(EVENTS, call_id=CALL), title="one call") == svg  # deterministic


@given(st.lists(st.tuples(st.sampled_from(["UE a", "core", "UE <b&>"]), st.text()), max_size=8))
def test_any_labels_give_well_formed_svg(messages: list[tuple[str, str]]) -> None:
    events = [_sip(float(i), n, "out", s) for i, (n, s) in enumerate(messages)]
    ET.fromstring(render_svg(build(events)))
