"""Edits that carry a message's header index (and its list items) give what the general
composition gives: the same headers, and the same answers to every lookup as a message indexed
afresh from those headers."""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcscf.sip.headers import Via
from pcscf.sip.message import Request, Response, _index_of
from pcscf.sip.proxy import Peer, ProxyConfig, ProxyCore, _with_hop, _with_top_via

LINES = [
    ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
    ("v", "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2, SIP/2.0/TCP 192.0.2.3;branch=z9hG4bK3"),
    ("VIA", 'SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK4;x="a,b"'),
    ("Max-Forwards", "70"),
    ("max-forwards", "9"),
    ("To", "<sip:b@ims.test>"),
    ("Route", "<sip:a;lr>, <sip:b;lr>"),
    ("route", "<sip:c;lr>"),
    ("Record-Route", "<sip:rr1;lr>"),
    ("Record-Route", "<sip:rr2;lr>, <sip:rr3;lr>"),
    ("Contact", "<sip:x@192.0.2.9>"),
    ("m", "<sip:y@192.0.2.9>"),
    ("Path", "<sip:p;lr>"),
]
NAMES = ["Via", "v", "via", "Route", "Record-Route", "Max-Forwards", "Contact", "Path", "To"]
VALUES = st.sampled_from(["<sip:new;lr>", "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKn", "", "5"])


def _message(headers: list[tuple[str, str]], response: bool) -> Request | Response:
    if response:
        return Response(tuple(headers), b"", 200, "OK")
    return Request(tuple(headers), b"", "OPTIONS", "sip:a@b")


def _looked_up(msg: Request | Response, warm: bool) -> Request | Response:
    """``msg`` with its index (and some list items) built, or not at all."""
    if warm:
        for name in ("via", "Route", "contact", "Record-Route"):
            msg.values(name)
    return msg


def _same_answers(edited: Request | Response, fresh: Request | Response) -> None:
    assert edited == fresh
    assert edited.headers == fresh.headers
    if edited._index is not None:
        assert edited._index == _index_of(edited.headers)
    for name in {*NAMES, "m", "VIA", "record-route", "max-forwards"}:
        assert edited.get_all(name) == fresh.get_all(name)
        assert edited.values(name) == fresh.values(name)
    assert edited.serialise() == fresh.serialise()


def _fresh(msg: Request | Response, headers: tuple[tuple[str, str], ...]) -> Request | Response:
    if isinstance(msg, Request):
        return Request(headers, msg.body, msg.method, msg.uri)
    return Response(headers, msg.body, msg.status, msg.reason)


lines = st.lists(st.sampled_from(LINES), max_size=9)


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(lines, st.booleans(), st.booleans(), st.sampled_from(NAMES), st.lists(VALUES, max_size=3))
def test_with_replaced_is_evolve_of_replacing(
    headers: list[tuple[str, str]], response: bool, warm: bool, name: str, values: list[str]
) -> None:
    msg = _looked_up(_message(headers, response), warm)
    edited = msg.with_replaced(name, values)
    _same_answers(edited, _fresh(msg, msg.replacing(name, values)))


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(lines, st.booleans(), st.booleans(), st.sampled_from(NAMES), VALUES)
def test_with_prepended_is_evolve_of_prepending(
    headers: list[tuple[str, str]], response: bool, warm: bool, name: str, value: str
) -> None:
    msg = _looked_up(_message(headers, response), warm)
    edited = msg.with_prepended(name, value)
    _same_answers(edited, _fresh(msg, msg.prepending(name, value)))


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(lines, st.booleans(), st.booleans(), st.sampled_from(NAMES))
def test_with_first_value_dropped_is_evolve_of_dropping_first_value(
    headers: list[tuple[str, str]], response: bool, warm: bool, name: str
) -> None:
    msg = _looked_up(_message(headers, response), warm)
    edited = msg.with_first_value_dropped(name)
    _same_answers(edited, _fresh(msg, msg.dropping_first_value(name)))


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(lines, st.booleans())
def test_top_via_replaced_with_its_index(headers: list[tuple[str, str]], warm: bool) -> None:
    from pcscf.sip.proxy import _replace_top_via

    msg = _looked_up(_message(headers, False), warm)
    assert isinstance(msg, Request)
    via = Via("UDP", "127.0.0.1", 5060, (("branch", "z9hG4bKnew"), ("received", "127.0.0.2")))
    _same_answers(_with_top_via(msg, via), _fresh(msg, _replace_top_via(msg, via)))


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(lines, st.booleans(), st.sampled_from(["70", "0", "12"]))
def test_hop_edit_is_max_forwards_replaced_then_via_prepended(
    headers: list[tuple[str, str]], warm: bool, forwards: str
) -> None:
    msg = _looked_up(_message(headers, False), warm)
    assert isinstance(msg, Request)
    via = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKhop"
    step = msg.evolve(headers=msg.replacing("Max-Forwards", [forwards]))
    composed = step.prepending("Via", via)
    _same_answers(_with_hop(msg, forwards, via), _fresh(msg, composed))


@settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    lines,
    st.booleans(),
    st.sampled_from(["gm", "core"]),
    st.sampled_from(["udp", "tcp"]),
    st.sampled_from(["orig", "term"]),
)
def test_record_route_is_two_prepends(
    headers: list[tuple[str, str]], warm: bool, side: str, transport: str, direction: str
) -> None:
    from pcscf.sip.uri import NameAddr

    core = ProxyCore(
        ProxyConfig(("192.0.2.10", 5060), ("::1", 5070), Peer("core", "udp", "192.0.2.20", 6060))
    )
    msg = _looked_up(_message(headers, False), warm)
    assert isinstance(msg, Request)
    src = Peer(side, transport, "192.0.2.30", 5000)  # type: ignore[arg-type]
    other = "core" if side == "gm" else "gm"
    dest = Peer(other, "udp", "192.0.2.40", 5000)  # type: ignore[arg-type]
    for _ in range(2):  # the entries made, then the ones remembered
        inner = NameAddr(str(core._own_uri(src.side, src.transport, e2ae=direction)))
        outer = NameAddr(str(core._own_uri(dest.side, dest.transport, e2ae=direction)))
        step = msg.evolve(headers=msg.prepending("Record-Route", str(inner)))
        composed = step.prepending("Record-Route", str(outer))
        edited = core._record_route(msg, src, dest, direction)  # type: ignore[arg-type]
        _same_answers(edited, _fresh(msg, composed))


def test_serialise_is_made_once_and_equal_to_a_fresh_one() -> None:
    msg = Request((("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),), b"x", "OPTIONS", "sip:a@b")
    first = msg.serialise()
    assert msg.serialise() is first
    assert Request(msg.headers, b"x", "OPTIONS", "sip:a@b").serialise() == first


@given(lines, st.binary(max_size=4), st.sampled_from(["INVITE", "ACK"]), st.integers(100, 699))
def test_messages_made_through_their_slots_equal_attrs_made_ones(
    headers: list[tuple[str, str]], body: bytes, method: str, status: int
) -> None:
    from pcscf.sip.message import _new_request, _new_response

    made = [
        (
            _new_request(tuple(headers), body, method, "sip:a@b"),
            Request(tuple(headers), body, method, "sip:a@b"),
        ),
        (
            _new_response(tuple(headers), body, status, "OK"),
            Response(tuple(headers), body, status, "OK"),
        ),
    ]
    for fast, slow in made:
        assert type(fast) is type(slow)
        assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
        for field in attrs.fields(type(slow)):
            assert getattr(fast, field.name) == getattr(slow, field.name)
        assert fast.serialise() == slow.serialise()
