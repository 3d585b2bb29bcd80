"""The H.248 text codec, TPKT framing and the e2ae profile mapping, without a reactor."""

from __future__ import annotations

import typing

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iq import codec, profile, samples, tpkt
from iq.codec import (
    Action,
    Command,
    Message,
    TransactionReply,
    TransactionRequest,
)
from iq.errors import CodecError, LocalIqError, ProfileError, RemoteIqError, RequestFailed

STEPS = samples.all_steps()


@pytest.mark.parametrize("step", STEPS, ids=[f"{i}-{s.title}" for i, s in enumerate(STEPS)])
def test_every_sample_message_round_trips(step: samples.Step) -> None:
    data = codec.encode(step.message)
    assert codec.decode(data) == step.message
    # canonical: encoding what was decoded gives the same bytes
    assert codec.encode(codec.decode(data)) == data


@pytest.mark.parametrize(
    "step",
    [s for s in STEPS if s.request is not None],
    ids=lambda s: s.title,
)
def test_profile_operations_round_trip(step: samples.Step) -> None:
    assert step.request is not None
    (transaction,) = codec.decode(codec.encode(step.message)).transactions
    if step.reply is None:
        assert isinstance(transaction, TransactionRequest)
        assert profile.decode_request(transaction.actions) == _as_received(step.request)
    else:
        assert isinstance(transaction, TransactionReply)
        profile.reply_error(transaction.actions, transaction.error)
        assert profile.decode_reply(step.request, transaction.actions) == step.reply


def _as_received(request: profile.IqRequest) -> profile.IqRequest:
    """A Configure names only the terminations it modifies: the other one arrives empty."""
    if not isinstance(request, profile.ConfigureRequest):
        return request
    streams = tuple(
        attrs.evolve(
            s,
            access_termination=s.access_termination if s.changes_access else "",
            core_termination=s.core_termination if s.changes_core else "",
        )
        for s in request.streams
    )
    return attrs.evolve(request, streams=streams)


def test_reserve_carries_call_id_fingerprints_and_choose() -> None:
    reserve = samples.originating()[0]
    text = codec.encode(reserve.message).decode()
    assert "Add = acc/$" in text and "Add = core/$" in text and "Context = $" in text
    assert "e2ae/callid = a84b4c76e66710@pc33.example.com" in text
    assert "\na=fingerprint:$\n" in text
    assert "\na=fingerprint:" + samples.UE_FP.value + "\n" in text
    assert "\nc=IN IP4 $\n" in text and "\nm=message $ TCP/TLS/MSRP *\n" in text


def test_call_id_with_quote_survives() -> None:
    req = samples.originating()[0].request
    assert isinstance(req, profile.ReserveRequest)
    odd = profile.ReserveRequest(call_id='we"ird%22 id', streams=req.streams)
    message = Message("<a>", (TransactionRequest(1, profile.encode_request(odd)),))
    (t,) = codec.decode(codec.encode(message)).transactions
    assert isinstance(t, TransactionRequest)
    decoded = profile.decode_request(t.actions)
    assert isinstance(decoded, profile.ReserveRequest)
    assert decoded.call_id == 'we"ird%22 id'


def test_tolerant_input_short_tokens_case_comments() -> None:
    text = b"!/3 <agw1>\r\n"  # wrong start token
    with pytest.raises(CodecError):
        codec.decode(text)
    loose = (
        b"megaco/3   [10.0.0.1]:2944 ; a comment\n"
        b't=5{c=${a=acc/${m{st=1{o{mo=sr,e2ae/callid="x"},l{\n v=0 \r\nc=IN IP4 $\n'
        b"m=message $ TCP/TLS/MSRP *\na=setup:passive\na=fingerprint:$\n}}},e=1{tlsc/estd}},"
        b"A=core/${M{ST=1{L{v=0\nc=IN IP4 $\nm=message $ TCP/MSRP *\na=setup:active}}}}}}"
    )
    message = codec.decode(loose)
    assert message.mid == "[10.0.0.1]:2944"
    (t,) = message.transactions
    assert isinstance(t, TransactionRequest)
    req = profile.decode_request(t.actions)
    assert isinstance(req, profile.ReserveRequest)
    assert req.call_id == "x"
    assert req.streams[0].access_setup == "passive"
    assert req.streams[0].core_setup == "active"
    text = codec.encode(message).decode()
    assert text.startswith("MEGACO/3 [10.0.0.1]:2944\nTransaction = 5 {\n  Context = $ {\n")
    assert "LocalControl { Mode = SendReceive, e2ae/callid = x }" in text


def test_closing_brace_in_sdp_is_escaped() -> None:
    stream = codec.Stream(1, local=("v=0", "a=x:{y}"))
    message = Message(
        "<a>",
        (
            TransactionRequest(
                1, (Action(1, (Command("Modify", "acc/1", (codec.Media((stream,)),)),)),)
            ),
        ),
    )
    data = codec.encode(message)
    assert b"a=x:{y\\}" in data
    assert codec.decode(data) == message


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"", 400),
        (b"MEGACO/3 <a>", 400),
        (b"MEGACO/9 <a> Transaction = 1 { Context = 1 { Notify = acc/1 } }", 406),
        (b"MEGACO/3 <a> Transaction = 1 { }", 403),
        (b"MEGACO/3 <a> Transaction = 1 { Context = x { Notify = a } }", 422),
        (b"MEGACO/3 <a> Transaction = 1 { Context = 1 { Frobnicate = a } }", 422),
        (b"MEGACO/3 <a> Transaction = 1 { Context = 1 { Notify = a { Bogus { } } } }", 450),
        (b"MEGACO/3 <a> Transaction = 99999999999 { Context = 1 { Notify = a } }", 400),
        (b"MEGACO/3 <a> Transaction = 1 { Context = 1 { Notify = a { Media { Stream = 1 {", 400),
        (
            b"MEGACO/3 <a> Transaction = 1 { Context = 1 { Modify = a { Media { Stream = 1 "
            b"{ LocalControl { Mode = Sideways } } } } } }",
            449,
        ),
        (b"\xff\xfe", 400),
    ],
)
def test_malformed_input_gets_the_right_code(text: bytes, code: int) -> None:
    with pytest.raises(CodecError) as info:
        codec.decode(text)
    assert info.value.code == code


def test_codec_error_knows_the_transaction() -> None:
    with pytest.raises(CodecError) as info:
        codec.decode(b"MEGACO/3 <a> Transaction = 42 { Context = 1 { Notify = a { Bogus } } }")
    assert info.value.transaction_id == 42
    assert "Bogus" in str(info.value)


def test_encoder_refuses_what_it_cannot_write() -> None:
    with pytest.raises(LocalIqError):
        codec.encode(
            Message("<a>", (TransactionRequest(1, (Action(1, (Command("Notify", "bad id"),)),)),))
        )
    with pytest.raises(LocalIqError):
        codec.encode(Message("<a>"))
    with pytest.raises(LocalIqError):
        codec.encode(Message("<a>", error=codec.ErrorDescriptor(400, 'quote " inside')))


@pytest.mark.parametrize(
    ("actions", "code"),
    [
        ((Action(1, (Command("Add", "acc/$"),)),), 421),
        ((Action(1, (Command("Move", "acc/1"),)),), 421),  # type: ignore[arg-type]
        ((Action("-", (Command("Subtract", "acc/1"),)),), 421),
        ((Action(1, (Command("Modify", "rtp/1", ()),)),), 430),
        (
            (
                Action(
                    1,
                    (
                        Command(
                            "Notify",
                            "acc/1",
                            (
                                codec.ObservedEvents(
                                    1, (codec.ObservedEvent("x/y", "20260101T00000000"),)
                                ),
                            ),
                        ),
                    ),
                ),
            ),
            446,
        ),
        (
            (
                Action(
                    1,
                    (
                        Command(
                            "Notify",
                            "acc/1",
                            (
                                codec.ObservedEvents(
                                    1,
                                    (
                                        codec.ObservedEvent(
                                            "tlsc/fail",
                                            "20260101T00000000",
                                            (codec.Parameter("cause", "bored"),),
                                        ),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
            449,
        ),
        (
            (
                Action(
                    "-",
                    (
                        Command(
                            "ServiceChange",
                            "ROOT",
                            (codec.ServiceChangeParameters(method="Restart", profile="other/2"),),
                        ),
                    ),
                ),
            ),
            449,
        ),
        ((Action(1, (Command("Add", "acc/$"), Command("Add", "core/$"))),), 445),
    ],
)
def test_profile_rejects_with_codes(actions: tuple[Action, ...], code: int) -> None:
    with pytest.raises(ProfileError) as info:
        profile.decode_request(actions)
    assert info.value.code == code


def test_reply_errors_at_every_level_raise_request_failed() -> None:
    err = codec.ErrorDescriptor(510, "no port")
    with pytest.raises(RequestFailed) as info:
        profile.reply_error((), err)
    assert info.value.code == 510
    with pytest.raises(RequestFailed) as info:
        profile.reply_error((Action(7, error=codec.ErrorDescriptor(411, "ctx")),), None)
    assert info.value.code == 411
    with pytest.raises(RequestFailed) as info:
        profile.reply_error(
            (Action(7, (Command("Modify", "acc/1", (codec.ErrorDescriptor(430, "t"),)),)),), None
        )
    assert (info.value.code, info.value.where) == (430, "acc/1")


def test_timestamp_format() -> None:
    assert profile.timestamp(samples.T0 + 1.5) == "20261123T16000150"


def test_tpkt_frames_and_reassembles_across_any_split() -> None:
    payloads = [codec.encode(s.message) for s in STEPS[:6]]
    stream = b"".join(tpkt.frame(p) for p in payloads)
    assert stream[:2] == b"\x03\x00"
    for cut in (1, 3, 4, 5, 100, len(stream) - 1):
        decoder = tpkt.TpktDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == payloads
        assert decoder.buffered == 0
    decoder = tpkt.TpktDecoder()
    assert [p for b in stream for p in decoder.feed(bytes([b]))] == payloads


def test_tpkt_rejects_bad_headers() -> None:
    with pytest.raises(CodecError):
        tpkt.TpktDecoder().feed(b"\x04\x00\x00\x10")
    with pytest.raises(CodecError):
        tpkt.TpktDecoder().feed(b"\x03\x00\x00\x02")
    with pytest.raises(LocalIqError):
        tpkt.frame(b"x" * 70000)


# ---------------------------------------------------------------- fuzzing

_ALPHABET = (
    'MEGACO/3 <>[]{}=,:;$-*"\\\n\r\tTransactionReplyContextAddModifySubtractNotify'
    "ServiceChangeMediaStreamLocalRemoteEventsSignalsObservedEventsStatisticsError0123456789acc"
)
_SAMPLE_BYTES = [codec.encode(s.message) for s in STEPS]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=300))
def test_decoder_raises_only_codec_errors_on_token_soup(text: str) -> None:
    try:
        codec.decode(text.encode())
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_SAMPLE_BYTES),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=40),
    st.binary(max_size=8),
)
def test_decoder_and_profile_on_mutated_messages(
    data: bytes, at: int, cut: int, insert: bytes
) -> None:
    at = at % (len(data) + 1)
    mutated = data[:at] + insert + data[at + cut :]
    try:
        message = codec.decode(mutated)
    except CodecError:
        return
    # whatever decodes must encode again (or be refused as a local value) and the profile
    # may only reject it with its own error
    try:
        codec.encode(message)
    except LocalIqError:
        pass
    for t in message.transactions:
        if isinstance(t, TransactionRequest):
            try:
                profile.decode_request(t.actions)
            except RemoteIqError:
                pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_raises_only_codec_errors_on_bytes(data: bytes) -> None:
    try:
        codec.decode(data)
    except CodecError:
        pass


def test_documented_examples_are_the_profile_messages() -> None:
    from tests.conftest import REPO

    doc = (REPO / "docs" / "iq-profile.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```\n")[1:] if b.startswith("; ")]
    chunks = [c for block in blocks for c in block.split("\n; ") if "MEGACO/" in c]
    documented = [codec.decode(c[c.index("MEGACO/") :].encode()) for c in chunks]
    assert documented == [s.message for s in STEPS]


@pytest.mark.parametrize(
    ("kind", "cause"),
    [("tls-failure", c) for c in typing.get_args(profile.TlsFailureCause)]
    + [(k, None) for k in typing.get_args(profile.EventKind) if k != "tls-failure"],
)
def test_every_event_and_cause_round_trips(kind: str, cause: str | None) -> None:
    event = profile.IqEvent(
        kind,  # type: ignore[arg-type]
        3,
        "acc/3/2",
        2,
        profile.timestamp(samples.T0),
        cause=cause,  # type: ignore[arg-type]
        peer="[2001:db8::1]:5061",
    )
    message = Message(
        "<agw>", (TransactionRequest(9, profile.encode_request(profile.NotifyRequest(event))),)
    )
    (t,) = codec.decode(codec.encode(message)).transactions
    assert isinstance(t, TransactionRequest)
    assert profile.decode_request(t.actions) == profile.NotifyRequest(event)
