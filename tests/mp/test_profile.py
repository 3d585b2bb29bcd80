"""The Mp profile: every operation through H.248 text and back, the error code of every
malformed action, and the PSK kept out of reprs and redacted text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certs.psk import ALLOWED_PSK_CIPHERS
from iq import codec
from iq.codec import Message, TransactionReply, TransactionRequest
from iq.errors import LocalIqError, ProfileError, RemoteIqError, RequestFailed
from mp import profile
from mp.profile import (
    AckReply,
    ConnectRequest,
    Endpoint,
    JoinReply,
    JoinRequest,
    LeaveReply,
    LeaveRequest,
    MpEvent,
    NotifyReply,
    NotifyRequest,
    PskConfig,
    ServiceChangeReply,
    ServiceChangeRequest,
    StartTlsRequest,
    StreamStatistics,
    redact,
)

KEY = bytes.fromhex("00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0")
PSK = PskConfig(KEY, b"e2ae-cs1", ("PSK-AES128-GCM-SHA256", "PSK-AES256-GCM-SHA384"))


def _msrp(**kw: object) -> JoinRequest:
    base: dict[str, object] = {
        "conference": "sip:conf1@mrfc.example.net",
        "context": None,
        "participant": "sip:alice@example.net",
        "media": "msrp",
        "tcp_role": "passive",
        "security": "tls-psk",
        "tls_role": "server",
        "psk": PSK,
        "remote": Endpoint("192.0.2.10", 5000),
        "remote_path": ("msrp://192.0.2.10:5000/a1;tcp",),
        "call_id": "c1@example.net",
    }
    base.update(kw)
    return JoinRequest(**base)  # type: ignore[arg-type]


def _bfcp(**kw: object) -> JoinRequest:
    base: dict[str, object] = {
        "conference": "sip:conf1@mrfc.example.net",
        "context": 7,
        "participant": "sip:bob@example.net",
        "media": "bfcp",
        "tcp_role": "active",
        "security": "plain",
        "bfcp_user": 2,
        "floors": (1, 11),
    }
    base.update(kw)
    return JoinRequest(**base)  # type: ignore[arg-type]


def _wire_request(req: profile.AnyRequest) -> profile.AnyRequest:
    text = codec.encode(Message("<mrfc>", (TransactionRequest(9, profile.encode_request(req)),)))
    (t,) = codec.decode(text).transactions
    assert isinstance(t, TransactionRequest)
    return profile.decode_request(t.actions)


def _wire_reply(req: profile.AnyRequest, reply: profile.AnyReply) -> profile.AnyReply:
    actions = profile.encode_reply(req, reply)
    text = codec.encode(Message("<mrfp>", (TransactionReply(9, actions),)))
    (t,) = codec.decode(text).transactions
    assert isinstance(t, TransactionReply)
    profile.reply_error(t.actions, t.error)
    return profile.decode_reply(req, t.actions)


EVENT = MpEvent(7, "msrp/3", "renegotiation-refused", "client asked for renegotiation")
CASES: list[tuple[profile.AnyRequest, profile.AnyReply]] = [
    (
        _msrp(),
        JoinReply(7, "msrp/3", Endpoint("198.51.100.1", 40000), "msrp://198.51.100.1:40000/x;tcp"),
    ),
    (
        _msrp(security="plain", tls_role=None, psk=None, remote=None),
        JoinReply(7, "msrp/4", Endpoint("2001:db8::1", 40001), "msrp://[2001:db8::1]:40001/y;tcp"),
    ),
    (_bfcp(), JoinReply(7, "bfcp/5", Endpoint("198.51.100.1", 40002), None)),
    (
        _bfcp(security="tls-psk", tls_role="client", psk=PSK, remote=Endpoint("192.0.2.11", 6000)),
        JoinReply(7, "bfcp/6", Endpoint("198.51.100.1", 40003), None),
    ),
    (ConnectRequest(7, "msrp/3", Endpoint("192.0.2.10", 5000)), AckReply()),
    (ConnectRequest(7, "bfcp/5", Endpoint("2001:db8::2", 5001)), AckReply()),
    (StartTlsRequest(7, "msrp/3"), AckReply()),
    (LeaveRequest(7, "msrp/3"), LeaveReply(StreamStatistics(1000, 2000, 3, 4))),
    (NotifyRequest(EVENT, "20261207T10000000"), NotifyReply()),
    (NotifyRequest(MpEvent(7, "msrp/3", "closed")), NotifyReply()),
    (ServiceChangeRequest("register"), ServiceChangeReply()),
    (ServiceChangeRequest("restart"), ServiceChangeReply()),
    (ServiceChangeRequest("forced"), ServiceChangeReply()),
]


@pytest.mark.parametrize(("request_", "reply"), CASES, ids=lambda c: type(c).__name__)
def test_every_operation_survives_the_wire(
    request_: profile.AnyRequest, reply: profile.AnyReply
) -> None:
    assert _wire_request(request_) == request_
    assert _wire_reply(request_, reply) == reply


def test_the_psk_is_a_property_of_e2aepsk_in_the_add() -> None:
    text = codec.encode(
        Message("<mrfc>", (TransactionRequest(1, profile.encode_request(_msrp())),))
    )
    assert f"e2aepsk/key = {KEY.hex()}".encode() in text
    assert b"e2aemp/sec = tls-psk" in text and b"e2aemp/tlsrole = server" in text
    assert b"m=message $ TCP/TLS/MSRP *" in text and b"a=setup:passive" in text


def test_no_repr_shows_the_key() -> None:
    req = _msrp()
    for shown in (repr(req), str(req), repr(req.psk), repr(NotifyRequest(EVENT))):
        assert KEY.hex() not in shown and repr(KEY) not in shown


def test_redact_hides_every_form_of_the_key() -> None:
    actions = profile.encode_request(_msrp())
    text = codec.encode(Message("<mrfc>", (TransactionRequest(1, actions),))).decode()
    for raw in (
        text,
        repr(actions),
        f'e2aepsk/key="{KEY.hex()}"',
        f"E2AEPSK/KEY = {KEY.hex().upper()}",
        f"offset 12 ({KEY.hex()[6:26]!r})",
    ):
        cleaned = redact(raw)
        assert KEY.hex() not in cleaned.lower()
        assert KEY.hex()[6:22] not in cleaned.lower()
    assert "e2aepsk/key=<redacted>" in redact(text)
    assert redact("context 7 msrp/3 sha-256 AB:CD") == "context 7 msrp/3 sha-256 AB:CD"


@given(
    conference=st.text(min_size=1, max_size=40),
    participant=st.text(min_size=1, max_size=40),
    call_id=st.none() | st.text(max_size=30),
    key=st.binary(min_size=1, max_size=64),
    identity=st.binary(max_size=32),
    suites=st.lists(st.sampled_from(ALLOWED_PSK_CIPHERS), min_size=1, max_size=3),
    context=st.none() | st.integers(1, 2**32 - 2),
    port=st.integers(0, 65535),
    role=st.sampled_from(("active", "passive")),
    tls_role=st.sampled_from(("client", "server")),
)
def test_any_join_survives_the_wire(
    conference: str,
    participant: str,
    call_id: str | None,
    key: bytes,
    identity: bytes,
    suites: list[str],
    context: int | None,
    port: int,
    role: str,
    tls_role: str,
) -> None:
    req = _msrp(
        conference=conference,
        participant=participant,
        call_id=call_id,
        psk=PskConfig(key, identity, tuple(suites)),
        context=context,
        remote=Endpoint("192.0.2.1", port),
        tcp_role=role,
        tls_role=tls_role,
    )
    assert _wire_request(req) == req


@given(
    reason=st.text(max_size=60),
    kind=st.sampled_from(profile.EVENT_KINDS),
    stats=st.tuples(*(st.integers(0, 2**64 - 1),) * 4),
)
def test_any_event_and_statistics_survive_the_wire(
    reason: str, kind: profile.EventKind, stats: tuple[int, int, int, int]
) -> None:
    req = NotifyRequest(MpEvent(3, "bfcp/1", kind, reason))
    decoded = _wire_request(req)
    assert isinstance(decoded, NotifyRequest)
    assert decoded.event.kind == kind
    assert decoded.event.reason == profile._unquote(profile._quote(reason)[:200], "")
    leave = LeaveRequest(3, "bfcp/1")
    assert _wire_reply(leave, LeaveReply(StreamStatistics(*stats))) == LeaveReply(
        StreamStatistics(*stats)
    )


@given(st.text(max_size=300))
def test_decoding_arbitrary_text_raises_only_h248_errors(text: str) -> None:
    try:
        message = codec.decode(text.encode())
    except RemoteIqError:
        return
    for t in message.transactions:
        if isinstance(t, TransactionRequest):
            try:
                profile.decode_request(t.actions)
            except RemoteIqError as exc:
                assert 400 <= exc.code < 600


def _decode_text(body: str) -> profile.AnyRequest:
    text = f"MEGACO/3 <mrfc>\nTransaction = 1 {{ {body} }}"
    (t,) = codec.decode(text.encode()).transactions
    assert isinstance(t, TransactionRequest)
    return profile.decode_request(t.actions)


def _add(
    props: str,
    local: str = "v=0\nc=IN IP4 $\nm=message $ TCP/TLS/MSRP *\na=setup:passive\n",
    term: str = "msrp/$",
    context: str = "$",
    extra: str = "",
) -> str:
    return (
        f"Context = {context} {{ Add = {term} {{ Media {{ Stream = 1 {{ LocalControl {{ {props} }},"
        f" Local {{\n{local}}} }} }}{extra} }} }}"
    )


GOOD = (
    'Mode = SendReceive, e2aemp/conf = "sip:c@x", e2aemp/part = "sip:a@x", e2aemp/sec = tls-psk,'
    " e2aemp/tlsrole = server, e2aepsk/key = 00112233, e2aepsk/id = 6964,"
    " e2aepsk/suites = PSK-AES128-GCM-SHA256"
)


def test_the_hand_written_add_decodes() -> None:
    req = _decode_text(_add(GOOD))
    assert isinstance(req, JoinRequest)
    assert req.psk is not None and req.psk.key == bytes.fromhex("00112233")


MALFORMED: list[tuple[str, str, int]] = [
    ("two actions", _add(GOOD) + ", " + _add(GOOD), 421),
    ("audit", "Context = 7 { AuditValue = msrp/1 { Audit { } } }", 421),
    ("add in the null context", _add(GOOD, context="-"), 421),
    ("bad termination", _add(GOOD, term="rtp/$"), 430),
    (
        "no local control",
        "Context = $ { Add = msrp/$ { Media { Stream = 1 { Local {\nv=0\n} } } } }",
        445,
    ),
    (
        "no local",
        "Context = $ { Add = msrp/$ { Media { Stream = 1 { LocalControl { " + GOOD + " } } } } }",
        445,
    ),
    ("no media", "Context = $ { Add = msrp/$ { Events = 1 { e2aemp/ev } } }", 445),
    ("unknown package", _add(GOOD + ", foo/bar = 1"), 444),
    ("unknown property", _add(GOOD + ", e2aemp/colour = red"), 449),
    ("no conference", _add(GOOD.replace('e2aemp/conf = "sip:c@x", ', "")), 449),
    ("bad security", _add(GOOD.replace("sec = tls-psk", "sec = rot13")), 449),
    ("bad tls role", _add(GOOD.replace("tlsrole = server", "tlsrole = both")), 449),
    ("tls-psk without key", _add(GOOD.split(", e2aepsk/key")[0]), 449),
    ("bad key", _add(GOOD.replace("00112233", "0011223")), 449),
    ("bad suite", _add(GOOD.replace("PSK-AES128-GCM-SHA256", "NULL-MD5")), 449),
    (
        "proto does not match",
        _add(GOOD.replace("tls-psk", "plain").split(", e2aemp/tlsrole")[0]),
        449,
    ),
    ("no setup", _add(GOOD, local="v=0\nm=message $ TCP/TLS/MSRP *\n"), 445),
    ("wrong media", _add(GOOD, local="v=0\nm=audio $ TCP/TLS/MSRP *\na=setup:active\n"), 449),
    ("property twice", _add(GOOD + ', e2aemp/conf = "x"'), 451),
    ("signals in add", _add(GOOD, extra=", Signals { e2aemp/connect }"), 450),
    ("modify in $", "Context = $ { Modify = msrp/1 { Signals { e2aemp/starttls } } }", 421),
    ("modify without signal", "Context = 7 { Modify = msrp/1 }", 421),
    ("unknown signal", "Context = 7 { Modify = msrp/1 { Signals { e2aemp/dance } } }", 447),
    ("signal of another package", "Context = 7 { Modify = msrp/1 { Signals { al/ri } } }", 444),
    (
        "connect without remote",
        "Context = 7 { Modify = msrp/1 { Signals { e2aemp/connect } } }",
        445,
    ),
    ("subtract wildcard", "Context = 7 { Subtract = msrp/* }", 430),
    (
        "subtract with signals",
        "Context = 7 { Subtract = msrp/1 { Signals { e2aemp/connect } } }",
        450,
    ),
    (
        "unknown event",
        "Context = 7 { Notify = msrp/1 { ObservedEvents = 1 { e2aemp/boom } } }",
        446,
    ),
    (
        "event without kind",
        "Context = 7 { Notify = msrp/1 { ObservedEvents = 1 { e2aemp/ev } } }",
        457,
    ),
    (
        "bad kind",
        "Context = 7 { Notify = msrp/1 { ObservedEvents = 1 { e2aemp/ev { kind = x } } } }",
        449,
    ),
    (
        "service change on a termination",
        "Context = - { ServiceChange = msrp/1 { Services { Method = Restart } } }",
        421,
    ),
    (
        "other profile",
        "Context = - { ServiceChange = ROOT { Services { Method = Restart, "
        "Profile = e2aeiq/1 } } }",
        449,
    ),
]


@pytest.mark.parametrize(
    ("body", "code"), [(b, c) for _, b, c in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_every_malformed_action_gets_its_error_code(body: str, code: int) -> None:
    with pytest.raises(ProfileError) as info:
        _decode_text(body)
    assert info.value.code == code


def test_an_error_about_a_bad_key_never_quotes_it() -> None:
    secret = "00112233445566778899aabbccddeeffX"
    with pytest.raises(ProfileError) as info:
        _decode_text(_add(GOOD.replace("00112233", secret)))
    assert secret[:16] not in str(info.value)


def test_inconsistent_requests_cannot_be_built() -> None:
    with pytest.raises(LocalIqError):
        _msrp(psk=None)
    with pytest.raises(LocalIqError):
        _msrp(security="plain")  # still has a PSK
    with pytest.raises(LocalIqError):
        _msrp(bfcp_user=3)
    with pytest.raises(LocalIqError):
        PskConfig(KEY, b"id", ("NULL-MD5",))
    with pytest.raises(LocalIqError):
        Endpoint("mrfp.example", 1)


def test_reply_errors_and_wrong_replies() -> None:
    err = codec.ErrorDescriptor(411, "unknown context")
    with pytest.raises(RequestFailed) as info:
        profile.reply_error((codec.Action(7, (), err),), None)
    assert info.value.code == 411
    with pytest.raises(LocalIqError):
        profile.encode_reply(StartTlsRequest(7, "msrp/1"), LeaveReply(StreamStatistics(0, 0, 0, 0)))
    join = _msrp(context=7)
    other = profile.encode_reply(_msrp(), JoinReply(8, "msrp/1", Endpoint("192.0.2.1", 1), "m"))
    with pytest.raises(ProfileError) as pinfo:
        profile.decode_reply(join, other)
    assert pinfo.value.code == 411
    no_path = profile.encode_reply(_msrp(), JoinReply(7, "msrp/1", Endpoint("192.0.2.1", 1), None))
    with pytest.raises(ProfileError):
        profile.decode_reply(join, no_path)


def test_every_example_in_the_documentation_is_an_mp_message() -> None:
    import re

    from tests.conftest import REPO

    text = (REPO / "docs" / "mp-profile.md").read_text()
    blocks = re.findall(r"```\n(MEGACO/3 .*?)\n```", text, re.S)
    assert len(blocks) >= 16
    kinds = set()
    for block in blocks:
        (t,) = codec.decode(block.encode()).transactions
        if isinstance(t, TransactionRequest):
            kinds.add(type(profile.decode_request(t.actions)).__name__)
        else:
            assert isinstance(t, TransactionReply)
    assert kinds == {
        "ServiceChangeRequest",
        "JoinRequest",
        "ConnectRequest",
        "StartTlsRequest",
        "LeaveRequest",
        "NotifyRequest",
    }
