"""The MRFC's pure decisions: offers read, roles, who may join, Joins, the SDP answered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mp.profile import Endpoint, JoinReply
from mrfc import core
from pcscf.sdp import SessionDescription

CONF = core.Conference(
    "sip:conf1@lab.example", ("sip:alice@lab.example", "sip:bob@lab.example"), floors=(1, 2)
)


def offer(
    *, tls: bool = True, keyed: bool = True, msrp_setup: str = "active", bfcp_setup: str = "active"
) -> bytes:
    p = "TCP/TLS/" if tls else "TCP/"
    lines = ["v=0", "o=ue 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    if keyed:
        lines.append("a=key-mgmt:mikey AQID")
    lines += [
        f"m=message 9 {p}MSRP *",
        "a=accept-types:text/plain",
        "a=path:msrps://192.0.2.1:9/abc;tcp",
        f"a=setup:{msrp_setup}",
        f"m=application 7000 {p}BFCP *",
        "a=floorctrl:c-only",
        f"a=setup:{bfcp_setup}",
        "m=audio 4000 RTP/AVP 0",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_a_keyed_offer_is_tls_psk_and_its_crypto_sessions_follow_the_tls_m_lines() -> None:
    o = core.read_offer(offer())
    assert o.keyed and o.security == "tls-psk"
    assert [s.media for s in o.streams] == ["msrp", "bfcp", None]
    assert [s.media for s in o.media_streams] == ["msrp", "bfcp"]
    assert o.streams[0].path == ("msrps://192.0.2.1:9/abc;tcp",)
    assert o.streams[0].accept_types == "text/plain"
    assert core.crypto_sessions(o) == {0: 1, 1: 2}


def test_a_plain_offer_is_plain() -> None:
    o = core.read_offer(offer(tls=False, keyed=False))
    assert not o.keyed and o.security == "plain"
    assert core.crypto_sessions(o) == {}


@pytest.mark.parametrize(
    ("tls", "keyed", "words"),
    [(True, False, "without a=key-mgmt"), (False, True, "in a keyed offer")],
)
def test_tls_without_mikey_and_plain_with_mikey_are_488(tls: bool, keyed: bool, words: str) -> None:
    with pytest.raises(core.Refused) as info:
        core.read_offer(offer(tls=tls, keyed=keyed))
    assert info.value.status == 488 and words in info.value.warning


def test_msrp_without_path_and_bad_setup_and_no_stream_are_488() -> None:
    without_path = offer().replace(b"a=path:msrps://192.0.2.1:9/abc;tcp\r\n", b"")
    for bad in (without_path, offer(msrp_setup="holdconn"), offer(bfcp_setup="sideways")):
        with pytest.raises(core.Refused) as info:
            core.read_offer(bad)
        assert info.value.status == 488
    audio = b"v=0\r\no=ue 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    with pytest.raises(core.Refused, match="no MSRP or BFCP"):
        core.read_offer(audio)
    with pytest.raises(core.Refused):
        core.read_offer(b"not sdp")


@pytest.mark.parametrize(
    ("offered", "tcp", "tls"),
    [
        ("active", "passive", "server"),
        ("actpass", "passive", "server"),
        ("passive", "active", "client"),
    ],
)
def test_rfc_4145_answers_and_the_active_end_is_the_tls_client(
    offered: core.Setup, tcp: str, tls: str
) -> None:
    assert core.answer_role(offered) == (tcp, tls)


def test_only_listed_participants_may_join() -> None:
    core.authorize(CONF, "sip:alice@lab.example")
    with pytest.raises(core.Refused) as info:
        core.authorize(CONF, "sip:mallory@lab.example")
    assert info.value.status == 403 and "not authorized" in info.value.warning


@pytest.mark.parametrize(
    ("participants", "setups", "status"),
    [(0, 0, None), (1, 2, None), (2, 0, 486), (3, 3, 486), (1, 3, 503), (0, 4, 503)],
)
def test_check_room_refuses_a_full_conference_486_and_too_many_set_ups_503(
    participants: int, setups: int, status: int | None
) -> None:
    def check() -> None:
        core.check_room(CONF, participants, setups, max_participants=2, max_setups=3)

    if status is None:
        check()
        return
    with pytest.raises(core.Refused) as info:
        check()
    assert info.value.status == status
    want = f"{CONF.uri} is full: 2 participants" if status == 486 else f"{setups} set-ups"
    assert want in info.value.warning


def test_join_requests_carry_the_psk_roles_and_floors() -> None:
    o = core.read_offer(offer(bfcp_setup="passive"))
    msrp, bfcp = o.media_streams
    key = bytes(range(16))
    j = core.join_request(
        CONF,
        "sip:alice@lab.example",
        msrp,
        context=None,
        psk=key,
        ciphersuites=("PSK-AES128-GCM-SHA256",),
        bfcp_user=3,
        call_id="c1",
    )
    assert (j.media, j.tcp_role, j.tls_role, j.security) == ("msrp", "passive", "server", "tls-psk")
    assert j.psk is not None and j.psk.key == key and j.psk.identity == b""
    assert j.remote is None and j.remote_path == msrp.path and j.bfcp_user is None
    assert key.hex() not in repr(j)
    b = core.join_request(
        CONF,
        "sip:alice@lab.example",
        bfcp,
        context=7,
        psk=key,
        ciphersuites=("PSK-AES256-GCM-SHA384",),
        bfcp_user=3,
    )
    assert (b.tcp_role, b.tls_role, b.context) == ("active", "client", 7)
    assert b.remote == Endpoint("192.0.2.1", 7000)
    assert (b.bfcp_user, b.floors) == (3, (1, 2))
    plain = core.join_request(
        CONF, "sip:bob@lab.example", msrp, context=None, psk=None, ciphersuites=(), bfcp_user=1
    )
    assert (plain.security, plain.tls_role, plain.psk) == ("plain", None, None)


def test_the_answer_points_at_the_mrfp_and_is_the_floor_control_server() -> None:
    o = core.read_offer(offer())
    joined = {
        0: core.Answered(
            JoinReply(5, "T1", Endpoint("127.0.0.1", 4001), "msrp://127.0.0.1:4001/x;tcp"),
            "passive",
        ),
        1: core.Answered(JoinReply(5, "T2", Endpoint("127.0.0.1", 4002), None), "passive"),
    }
    body = core.answer_sdp(
        o, joined, conference=CONF, bfcp_user=4, key_mgmt="mikey AQID", session_id=9
    )
    sdp = SessionDescription.parse(body)
    assert [m.port for m in sdp.media] == [4001, 4002, 0]
    assert [m.proto for m in sdp.media] == ["TCP/TLS/MSRP", "TCP/TLS/BFCP", "RTP/AVP"]
    assert sdp.media[0].attribute_values("path") == ["msrp://127.0.0.1:4001/x;tcp"]
    assert sdp.media[0].attribute_values("accept-types") == ["text/plain"]
    assert sdp.media[0].attribute_values("setup") == ["passive"]
    bfcp = sdp.media[1]
    assert bfcp.attribute_values("floorctrl") == ["s-only"]
    assert bfcp.attribute_values("confid") == ["1"]
    assert bfcp.attribute_values("userid") == ["4"]
    assert bfcp.attribute_values("floorid") == ["1 mstrm:1", "2 mstrm:1"]
    assert sdp.session.attribute_values("key-mgmt") == ["mikey AQID"]
    assert sdp.effective_connection(0) is not None


def test_dial_out_offer_and_answer() -> None:
    reply = JoinReply(1, "T1", Endpoint("127.0.0.1", 4001), "msrp://127.0.0.1:4001/x;tcp")
    body = core.dial_out_offer(reply, tls=True, key_mgmt="mikey AQID", session_id=1)
    sdp = SessionDescription.parse(body)
    assert sdp.media[0].proto == "TCP/TLS/MSRP" and sdp.media[0].port == 4001
    assert sdp.media[0].attribute_values("setup") == ["passive"]
    answer = (
        b"v=0\r\no=ue 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=message 9 TCP/TLS/MSRP *\r\na=path:msrps://127.0.0.1:9/u;tcp\r\na=setup:active\r\n"
    )
    got = core.read_dial_out_answer(answer)
    assert got.path == ("msrps://127.0.0.1:9/u;tcp",) and got.setup == "active"
    for bad in (answer.replace(b"active", b"passive"), answer.replace(b"message 9", b"message 0")):
        with pytest.raises(core.Refused):
            core.read_dial_out_answer(bad)


@given(st.binary(max_size=300))
def test_read_offer_takes_any_bytes_without_crashing(data: bytes) -> None:
    try:
        core.read_offer(data)
    except core.Refused as exc:
        assert exc.status == 488
