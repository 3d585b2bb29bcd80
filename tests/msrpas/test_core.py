"""The MSRP AS's pure rules: the SDP of each leg, MSRP re-addressing, the caller's MIKEY."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2ae import msrp
from mikey.constants import ErrorNo, IdRole
from mikey.errors import MikeyError
from mikey.payloads import IdWithRole, Ticket, TicketPolicy
from mikey.transfer import ticket_initiator, transfer_init, verify_transfer_init
from msrpas import core
from pcscf.sdp import SessionDescription

OFFER = (
    b"v=0\r\n"
    b"o=alice 1 1 IN IP4 127.0.0.2\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.2\r\n"
    b"t=0 0\r\n"
    b"a=key-mgmt:mikey AQID\r\n"
    b"m=message 9 TCP/TLS/MSRP *\r\n"
    b"a=accept-types:message/cpim text/plain\r\n"
    b"a=path:msrps://127.0.0.2:9/s1;tcp\r\n"
    b"a=setup:active\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"m=application 9 TCP/TLS/BFCP *\r\n"
    b"c=IN IP4 127.0.0.3\r\n"
    b"a=floorctrl:c-only\r\n"
    b"a=setup:passive\r\n"
    b"a=key-mgmt:mikey AQID\r\n"
)


def test_keyed_streams_reads_kind_setup_address_and_path() -> None:
    streams = core.keyed_streams(OFFER, offer=True)
    assert [(s.index, s.kind, s.setup, s.host) for s in streams] == [
        (0, "msrp", "active", "127.0.0.2"),
        (2, "bfcp", "passive", "127.0.0.3"),
    ]
    assert streams[0].path == ("msrps://127.0.0.2:9/s1;tcp",)
    assert core.answering_setup(streams[0]) == "passive"
    assert core.answering_setup(streams[1]) == "active"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (("a=setup:active", "a=setup:holdconn"), "a=setup:holdconn"),
        (("a=path:msrps://127.0.0.2:9/s1;tcp\r\n", ""), "without a=path"),
        (("v=0", "v=1"), "version"),
    ],
)
def test_keyed_streams_refuses_what_the_as_cannot_relay(edit: tuple[str, str], words: str) -> None:
    with pytest.raises(core.RemoteAsError, match=words):
        core.keyed_streams(OFFER.decode().replace(*edit).encode(), offer=True)


def test_rewrite_sdp_puts_the_as_on_the_leg_and_rejects_other_media() -> None:
    plan = core.LegPlan(
        "127.0.0.1",
        {0: 4000, 2: 4001},
        {0: "passive", 2: "passive"},
        "msrps://127.0.0.1:4000/as1;tcp",
        "mikey BAUG",
    )
    out = core.rewrite_sdp(OFFER, plan, session_id=77).decode()
    parsed = SessionDescription.parse(out)
    assert out.startswith("v=0\r\no=msrp-as 77 1 IN IP4 127.0.0.1\r\n")
    assert parsed.session.connection is not None
    assert parsed.session.connection.host == "127.0.0.1"
    assert parsed.session.attribute_values("key-mgmt") == ["mikey BAUG"]
    assert [m.port for m in parsed.media] == [4000, 0, 4001]
    assert all(m.connection is None for m in parsed.media)  # no media-level c= left
    assert all(not m.attribute_values("key-mgmt") for m in parsed.media)
    assert parsed.media[0].attribute_values("path") == ["msrps://127.0.0.1:4000/as1;tcp"]
    assert parsed.media[0].attribute_values("setup") == ["passive"]
    assert parsed.media[2].attribute_values("floorctrl") == ["c-only"]  # kept
    assert parsed.tls_key_mgmt() == bytes.fromhex("040506")


@given(
    st.lists(st.sampled_from(["msrp", "bfcp", "audio"]), min_size=1, max_size=6),
    st.integers(1, 65535),
)
def test_every_keyed_stream_gets_the_plan_and_every_other_is_rejected(
    kinds: list[str], port: int
) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.2", "s=-", "c=IN IP4 127.0.0.2", "t=0 0"]
    for n, kind in enumerate(kinds):
        if kind == "msrp":
            lines += ["m=message 9 TCP/TLS/MSRP *", f"a=path:msrps://127.0.0.2:9/x{n};tcp"]
        elif kind == "bfcp":
            lines += ["m=application 9 TCP/TLS/BFCP *"]
        else:
            lines += ["m=audio 5004 RTP/AVP 0"]
    sdp = ("\r\n".join(lines) + "\r\n").encode()
    streams = core.keyed_streams(sdp, offer=True)
    plan = core.LegPlan(
        "127.0.0.1",
        {s.index: port for s in streams},
        {s.index: "passive" for s in streams},
        f"msrps://127.0.0.1:{port}/as;tcp",
        "mikey AQID",
    )
    out = SessionDescription.parse(core.rewrite_sdp(sdp, plan, session_id=1))
    assert len(out.media) == len(kinds)
    for index, kind in enumerate(kinds):
        assert out.media[index].port == (0 if kind == "audio" else port)
    assert all(s.setup == "passive" for s in core.keyed_streams(out.serialise(), offer=True))


A = core.MsrpLeg("msrps://127.0.0.1:4000/asA;tcp", ("msrps://127.0.0.2:9/alice;tcp",))
B = core.MsrpLeg("msrps://127.0.0.1:4001/asB;tcp", ("msrps://127.0.0.3:5000/bob;tcp",))


def _send(body: bytes, flag: str = "$", to: str = A.local) -> msrp.Request:
    return msrp.Request(
        "tid12345",
        "SEND",
        (to,),
        A.remote,
        (("Message-ID", "msg12345"), ("Byte-Range", f"1-{len(body)}/{len(body)}")),
        "text/plain",
        body,
        flag,
    )


def test_the_relay_readdresses_each_frame_and_keeps_the_rest() -> None:
    relay = core.MsrpRelay(A, B)
    wire = _send(b"hello").to_bytes()
    out = relay.receive("caller", wire[:10]) + relay.receive("caller", wire[10:])
    (frame,) = msrp.parse_frames(out)
    assert isinstance(frame, msrp.Request)
    assert frame.to_path == B.remote and frame.from_path == (B.local,)
    assert (frame.transaction_id, frame.body, frame.message_id) == (
        "tid12345",
        b"hello",
        "msg12345",
    )
    response = msrp.Response("tid12345", 200, (B.local,), B.remote, "OK")
    (back,) = msrp.parse_frames(relay.receive("callee", response.to_bytes()))
    assert isinstance(back, msrp.Response)
    assert back.to_path == A.remote and back.from_path == (A.local,) and back.status == 200
    assert relay.frames == {"caller": 1, "callee": 1}


def test_the_relay_refuses_a_frame_for_another_session() -> None:
    relay = core.MsrpRelay(A, B)
    with pytest.raises(core.RemoteAsError, match="not this session"):
        relay.receive("caller", _send(b"x", to="msrps://127.0.0.1:4000/other;tcp").to_bytes())


def test_the_relay_refuses_what_is_not_msrp() -> None:
    relay = core.MsrpRelay(A, B)
    with pytest.raises(msrp.MsrpError):
        relay.receive("caller", b"GET / HTTP/1.1\r\n\r\n" + os.urandom(64))


def _ticket(initiator: str) -> Ticket:
    policy = TicketPolicy.with_payloads(2, (IdWithRole.uri(IdRole.IDRI, initiator),))
    return Ticket(policy, b"\x01" * 16)


def test_a_transfer_init_whose_idri_is_not_the_tickets_initiator_is_refused() -> None:
    mpk = b"\x02" * 16
    forged = transfer_init(
        "sip:mallory@x", "sip:bob@x", _ticket("sip:alice@x"), mpk, [b"\0\0\0\1"], 0.0
    )
    info = core.read_inbound(forged, me="sip:msrp-as@x", streams=1, now=0.0)
    assert ticket_initiator(info.ticket) == "sip:alice@x"
    with pytest.raises(MikeyError) as caught:
        verify_transfer_init(info, mpk, "sip:bob@x")
    assert caught.value.code == ErrorNo.INVALID_ID
    honest = transfer_init(
        "sip:alice@x", "sip:bob@x", _ticket("sip:alice@x"), mpk, [b"\0\0\0\1"], 0.0
    )
    info = core.read_inbound(honest, me="sip:msrp-as@x", streams=1, now=0.0)
    assert core.check_inbound(info, mpk) == "sip:bob@x"
    with pytest.raises(MikeyError) as caught:
        core.check_inbound(info, b"\x03" * 16)
    assert caught.value.code == ErrorNo.AUTH_FAILURE
