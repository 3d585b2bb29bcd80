"""The plain-head fast path of the SIP parser gives what the line-by-line parser gives."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import MAX_HEADERS, _parse_head, _parse_head_lines, parse_datagram

NAMES = [
    "Via",
    "v",
    "Content-Length",
    "l",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "X-A",
    "Bad Name",
    "",
    " Via",
    "Via ",
    "Via\t",
    "Contact",
    "a.b!%*_+`'~",
]
VALUES = [
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
    "<sip:a@b>;tag=1",
    "1 INVITE",
    "",
    " x ",
    "a\rb",
    "a\nb",
    "\t7",
    "é",
    "x" * 9000,
    "a:b",
]
SEPARATORS = [":", ": ", " : ", "\t:", ":\t", "", "::"]
OTHER_LINES = [" folded", "\tfolded", "", "no colon", "a\rb: c", "a\nb: c"]

line = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS), st.sampled_from(VALUES)).map(
        "".join
    ),
    st.sampled_from(OTHER_LINES),
)


def _outcome(parse: object, head: str) -> object:
    try:
        return parse(head)  # type: ignore[operator]
    except RemoteSipError as exc:
        return ("error", exc.status, exc.reason)


@settings(max_examples=3000, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    st.sampled_from(["INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "BYE sip:x SIP/2.0", "A\rB"]),
    st.lists(line, max_size=30),
    st.sampled_from(["\r\n", "\r\n", "\n", "\r"]),
)
def test_fast_head_parse_equals_line_parser(start: str, lines: list[str], newline: str) -> None:
    head = newline.join([start, *lines])
    assert _outcome(_parse_head, head) == _outcome(_parse_head_lines, head)


@given(st.integers(min_value=MAX_HEADERS - 2, max_value=MAX_HEADERS + 2))
def test_header_count_limit_is_the_same_on_both_paths(count: int) -> None:
    head = "\r\n".join(["OPTIONS sip:a SIP/2.0", *(f"X-{i}: {i}" for i in range(count))])
    assert _outcome(_parse_head, head) == _outcome(_parse_head_lines, head)


def test_a_plain_message_parses_with_its_spelling_kept() -> None:
    msg = parse_datagram(
        b"OPTIONS sip:a@b SIP/2.0\r\nv :  SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1 \r\nl: 0\r\n\r\n"
    )
    assert msg.headers == (("v", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"), ("l", "0"))
    assert msg.top_via.branch == "z9hG4bK1"


@given(st.text(alphabet=";=ab \t,\"'x", max_size=30))
def test_parameters_without_quotes_split_as_the_quote_aware_splitter_does(text: str) -> None:
    from pcscf.sip.headers import _split_params_quoted, parse_params

    unquoted = text.replace('"', "")
    assert unquoted.split(";") == _split_params_quoted(unquoted)
    try:
        parse_params(text, "Via")
    except RemoteSipError as exc:
        assert exc.status == 400


VIA_LINES = [
    ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
    ("v", "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2, SIP/2.0/TCP 192.0.2.3;branch=z9hG4bK3"),
    ("VIA", "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK4"),
    ("Max-Forwards", "70"),
    ("To", "<sip:b@ims.test>"),
    ("Route", "<sip:a;lr>, <sip:b;lr>"),
]


@given(st.lists(st.sampled_from(VIA_LINES), max_size=8))
def test_top_via_replaced_in_one_pass_as_drop_then_prepend(headers: list[tuple[str, str]]) -> None:
    from pcscf.sip.headers import Via
    from pcscf.sip.message import Request
    from pcscf.sip.proxy import _replace_top_via

    msg = Request(tuple(headers), b"", "OPTIONS", "sip:a@b")
    via = Via("UDP", "127.0.0.1", 5060, (("branch", "z9hG4bKnew"), ("received", "127.0.0.2")))
    composed = msg.evolve(headers=msg.dropping_first_value("via")).prepending("Via", str(via))
    assert _replace_top_via(msg, via) == composed
