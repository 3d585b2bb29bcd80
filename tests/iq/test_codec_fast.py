"""iq.codec: the token-list decoder (``_decode_fast``) against the reader-based one
(``_decode_general``) that ``decode`` falls back to for every input the first does not take."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iq import codec, samples
from iq.errors import CodecError, LocalIqError

_SAMPLES = [codec.encode(s.message) for s in samples.all_steps()]

_INSERTS = [
    b" ",
    b"\n",
    b"\t",
    b"\r\n",
    b";c\n",
    b"; a { comment\n",
    b"{",
    b"}",
    b",",
    b"=",
    b'"',
    b"\\",
    b"\\}",
    b":",
    b"O-",
    b"W-",
    b"$",
    b"*",
    b"-",
    b"\x00",
    b"\x01",
    b"\xff",
    b"Local {",
    b"l{x}",
    b"r {",
    b"0",
    b"a/b",
    b"\xc3\xa9",
]
_SHORT = [
    (b"Transaction", b"T"),
    (b"Reply", b"P"),
    (b"Context", b"c"),
    (b"Add", b"a"),
    (b"Modify", b"MF"),
    (b"Media", b"m"),
    (b"Stream", b"St"),
    (b"Local", b"L"),
    (b"Remote", b"r"),
    (b"LocalControl", b"O"),
    (b"Events", b"e"),
    (b"Mode", b"mo"),
    (b"SendReceive", b"sr"),
    (b"Statistics", b"SA"),
    (b"Subtract", b"s"),
    (b"Error", b"er"),
    (b"Notify", b"n"),
    (b"ObservedEvents", b"OE"),
    (b"Services", b"sv"),
    (b"Method", b"mt"),
    (b"Reason", b"re"),
]

_mutation = st.tuples(st.integers(0, 8), st.integers(0, 4000), st.integers(0, 2**20))


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Truncation, bit flips, inserted white space, comments and punctuation, case changes,
    short tokens, spacing around punctuation, pieces of other samples."""
    for kind, at, arg in ops:
        at %= len(data) + 1
        if kind == 0:
            data = data[:at]
        elif kind == 1 and at < len(data):
            data = data[:at] + bytes([data[at] ^ (1 << arg % 8)]) + data[at + 1 :]
        elif kind in (2, 5):
            data = data[:at] + _INSERTS[arg % len(_INSERTS)] + data[at:]
        elif kind == 3:
            data = data[:at] + data[at : at + 1 + arg % 12].swapcase() + data[at + 1 + arg % 12 :]
        elif kind == 4:
            data = data[:at] + data[at + 1 + arg % 5 :]
        elif kind == 6:
            long, short = _SHORT[arg % len(_SHORT)]
            data = data.replace(long, short, 1 + arg % 3)
        elif kind == 7:
            p = b"{}=,"[arg % 4 : arg % 4 + 1]
            data = data.replace(b" " + p, p) if arg % 2 else data.replace(p, b"\t" + p + b"  ")
        else:
            other = _SAMPLES[arg % len(_SAMPLES)]
            start = arg // len(_SAMPLES) % len(other)
            data = data[:at] + other[start : start + arg % 160] + data[at:]
    return data


def _outcome(text: str) -> object:
    try:
        return codec._decode_general(text)
    except CodecError as exc:
        return (str(exc), exc.code, exc.where, exc.transaction_id)


def _check(data: bytes) -> None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    if "\x00" in text:
        return
    general = _outcome(text)
    try:
        fast = codec._decode_fast(text)
    except (codec._Slow, IndexError):
        pass
    else:
        # what the fast decoder takes, the general one takes too, with the same result
        assert fast == general
    try:
        decoded: object = codec.decode(data)
    except CodecError as exc:
        decoded = (str(exc), exc.code, exc.where, exc.transaction_id)
    assert decoded == general


@pytest.mark.parametrize("data", _SAMPLES)
def test_the_samples_take_the_fast_path(data: bytes) -> None:
    assert codec._decode_fast(data.decode()) == codec._decode_general(data.decode())


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(_SAMPLES), st.lists(_mutation, max_size=4))
def test_fast_and_general_agree_on_mutated_samples(
    data: bytes, ops: list[tuple[int, int, int]]
) -> None:
    _check(_mutate(data, ops))


_ALPHABET = (
    'MEGACO/3 <>[]{}=,:;$-*"\\\n\r\tTransactionReplyContextAddModifySubtractNotify'
    "ServiceChangeMediaStreamLocalRemoteEventsSignalsObservedEventsStatisticsError0123456789"
    "acclrLR/"
)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=_ALPHABET, max_size=200))
def test_fast_and_general_agree_on_token_soup(text: str) -> None:
    _check(("MEGACO/3 mg1 " + text).encode())
    _check(text.encode())


# What may go in what (a few wrong choices are made on purpose), for a grammar-guided soup.
_ERR = 'Error = 510 { "no port" }'
_COMMAND_ITEMS = [
    "Media",
    "Events = 1",
    "Events",
    "Signals",
    "ObservedEvents = 1",
    "Statistics",
    "Audit",
    "Services",
    _ERR,
]
_GRAMMAR: dict[str, list[str]] = {
    "": ["Transaction = 1", "Reply = 2", "Reply = 2", "Pending = 3", _ERR],
    "Transaction = 1": ["Context = 7", "Context = $", "Context = -"],
    "Reply = 2": ["ImmAckRequired", _ERR, "Context = 7", "Context = $"],
    "Pending = 3": [],
    "Context": [
        "Add = acc/$",
        "Modify = core/7/1",
        "Subtract = *",
        "Notify = acc/7/1",
        "ServiceChange = ROOT",
        "AuditValue = ROOT",
        "O-Add = r",
        _ERR,
    ],
    "Add = acc/$": _COMMAND_ITEMS,
    "Modify = core/7/1": _COMMAND_ITEMS,
    "Subtract = *": _COMMAND_ITEMS,
    "Notify = acc/7/1": _COMMAND_ITEMS,
    "ServiceChange = ROOT": _COMMAND_ITEMS,
    "AuditValue = ROOT": _COMMAND_ITEMS,
    "O-Add = r": _COMMAND_ITEMS,
    "Media": ["Stream = 1", "Stream = 2", "LocalControl", "Local {\nv=0\n}"],
    "Stream = 1": ["LocalControl", "Local {\nv=0\n}", "Remote { a=setup:active }"],
    "Stream = 2": ["LocalControl", "Local {\nv=0\n}", "Remote { a=setup:active }"],
    "LocalControl": ["Mode = sr", "Mode = inactive", 'e2ae/callid = "a@b"', "nt/os = 5"],
    "Events = 1": ["tlsc/est", "tlsc/fail"],
    "Signals": ["tlsc/est", "tlsc/fail"],
    "tlsc/est": ["cause = fpmm", 'peer = "192.0.2.1:1"'],
    "tlsc/fail": ["cause = fpmm"],
    "ObservedEvents = 1": ["20261123T16000000:tlsc/estd", "tlsc/estd"],
    "20261123T16000000:tlsc/estd": ["cause = fpmm"],
    "tlsc/estd": ["peer = x"],
    "Statistics": ["nt/os = 5", "tlsc/res = none"],
    "Audit": ["Media", "Statistics", "sa"],
    "Services": [
        "Method = Restart",
        'Reason = "901"',
        "Delay = 5",
        "Profile = e2aeiq/1",
        "Version = 2",
        "ServiceChangeAddress = [192.0.2.1]:2944",
        "MgcIdToTry = <mgc.example>",
        "20261123T16000000",
    ],
}
_ALL_ITEMS = sorted({item for items in _GRAMMAR.values() for item in items})


@st.composite
def _tree(draw: st.DrawFn, head: str = "", depth: int = 0) -> str:
    """``head { items }`` with items that ``_GRAMMAR`` allows (now and then any item)."""
    allowed = _GRAMMAR.get(head if not head.startswith("Context") else "Context", [])
    if not head:
        count = draw(st.sampled_from([1, 1, 1, 2]))
    else:
        count = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3] if allowed and depth < 6 else [0]))
    items: list[str] = []
    for _ in range(count):
        wrong = draw(st.integers(0, 59)) == 0
        choices = _ALL_ITEMS if wrong or not allowed else allowed
        item = draw(st.sampled_from(choices))
        if item in _GRAMMAR or item.startswith("Context"):
            item = draw(_tree(item, depth + 1))
        items.append(item)
    if not head:
        return "\n".join(items)
    if not items:
        return draw(st.sampled_from([head, f"{head} {{ }}"]))
    return f"{head} {{ {', '.join(items)} }}"


# a tree grown from one of these heads, at the place the wrapper gives it
_WRAPPERS = {
    "": "{}",
    "Context = 7": "Reply = 2 {{ {} }}",
    "Add = acc/$": "Transaction = 1 {{ Context = $ {{ {} }} }}",
    "Media": "Reply = 2 {{ Context = 7 {{ Add = acc/7/1 {{ {} }} }} }}",
    "Stream = 1": "Transaction = 1 {{ Context = 7 {{ Modify = acc/7/1 {{ Media {{ {} }} }} }} }}",
    "LocalControl": (
        "Transaction = 1 {{ Context = 7 {{ Add = r {{ Media {{ Stream = 1 {{ {} }} }} }} }} }}"
    ),
    "Services": "Transaction = 1 {{ Context = - {{ ServiceChange = ROOT {{ {} }} }} }}",
    "ObservedEvents = 1": "Transaction = 1 {{ Context = 7 {{ Notify = acc/7/1 {{ {} }} }} }}",
}


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(_WRAPPERS)).flatmap(lambda h: st.tuples(st.just(h), _tree(h, 1))))
def test_fast_and_general_agree_on_grammar_trees(start: tuple[str, str]) -> None:
    head, tree = start
    _check(("MEGACO/3 mg1\n" + _WRAPPERS[head].format(tree)).encode())


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_tree(), st.lists(_mutation, min_size=1, max_size=2))
def test_fast_and_general_agree_on_mutated_grammar_trees(
    body: str, ops: list[tuple[int, int, int]]
) -> None:
    _check(_mutate(("MEGACO/3 mg1\n" + body).encode(), ops))


# ---------------------------------------------------------------- encoder output

_names = st.sampled_from(["e2ae/callid", "tlsc/est", "nt/os", "*/*", "peer", "cause", "bad"])
_values = st.sampled_from(["1", "abc", "a b", "$", "9F:01", "a;b", "x\\", "%22", 'a"b', ""])
_params = st.lists(st.builds(codec.Parameter, _names, _values), max_size=2).map(tuple)
_lines = st.lists(
    st.sampled_from(["v=0", "c=IN IP4 192.0.2.1", "a=x}y", "a=b\\", "a;b", "x\\}", "é"]),
    max_size=3,
).map(tuple)
_streams = st.builds(
    codec.Stream,
    st.integers(0, 3),
    st.none() | st.builds(codec.LocalControl, st.sampled_from([None, "sr", "SendOnly"]), _params),
    st.none() | _lines,
    st.none() | _lines,
)
_events = st.lists(
    st.builds(codec.Event, st.sampled_from(["tlsc/est", "a/b", "x"]), _params), max_size=2
).map(tuple)
_observed = st.lists(
    st.builds(
        codec.ObservedEvent,
        st.sampled_from(["tlsc/estd", "a/b"]),
        st.sampled_from([None, "20261123T16000000"]),
        _params,
    ),
    max_size=2,
).map(tuple)
_errors = st.builds(codec.ErrorDescriptor, st.sampled_from([400, 510, 10000]), _values)
_descriptors = st.one_of(
    st.builds(codec.Media, st.lists(_streams, max_size=2).map(tuple)),
    st.builds(codec.Events, st.integers(0, 2), _events),
    st.builds(codec.Signals, _events),
    st.builds(codec.ObservedEvents, st.integers(0, 2), _observed),
    st.builds(codec.Statistics, _params),
    st.builds(codec.Audit, st.lists(st.sampled_from(["Media", "sa"]), max_size=2).map(tuple)),
    st.builds(
        codec.ServiceChangeParameters,
        st.sampled_from([None, "Restart", "fo"]),
        st.sampled_from([None, "901 Cold Boot"]),
        st.sampled_from([None, 0, 5]),
        st.sampled_from([None, "[192.0.2.1]:2944", "mg1"]),
        st.sampled_from([None, "e2aeiq/1"]),
        st.sampled_from([None, 2]),
        st.sampled_from([None, "<mgc.example>"]),
        st.sampled_from([None, "20261123T16000000"]),
    ),
    _errors,
)
_commands = st.lists(
    st.builds(
        codec.Command,
        st.sampled_from(codec.COMMANDS),
        st.sampled_from(["acc/$", "core/7/1", "ROOT", "*", "r", "l"]),
        st.lists(_descriptors, max_size=3).map(tuple),
    ),
    max_size=3,
).map(tuple)
_actions = st.lists(
    st.builds(codec.Action, st.sampled_from([0, 7, "$", "-", "*"]), _commands, st.none() | _errors),
    max_size=2,
).map(tuple)
_messages = st.builds(
    codec.Message,
    st.sampled_from(["<agw1.example.net>", "[203.0.113.10]:2944", "mg1"]),
    st.lists(
        st.one_of(
            st.builds(codec.TransactionRequest, st.integers(0, 9), _actions),
            st.builds(
                codec.TransactionReply, st.integers(0, 9), _actions, st.none(), st.booleans()
            ),
            st.builds(codec.TransactionPending, st.integers(0, 9)),
        ),
        max_size=2,
    ).map(tuple),
    st.none() | _errors,
    st.sampled_from([1, 3]),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_messages)
def test_encoder_output_decodes_alike_and_is_canonical(message: codec.Message) -> None:
    try:
        data = codec.encode(message)
    except LocalIqError:
        return
    _check(data)
    try:
        decoded = codec.decode(data)
    except CodecError:
        return
    assert codec.encode(decoded) == data


@pytest.mark.parametrize("tail", [b"r{", b"r {\\}", b"Local {x\\", b'"a', b"; x {\n"])
def test_unterminated_pieces_are_read_in_linear_time(tail: bytes) -> None:
    # an unterminated Local/Remote runs to the end of the text: no "{" after it is scanned
    # again (quadratic time would take seconds here)
    data = b"MEGACO/3 mg1 Transaction = 1 { Context = 1 { Add = x { Media { Stream = 1 { "
    data += tail * (60000 // len(tail))
    start = time.process_time()
    _check(data)
    assert time.process_time() - start < 1.0
