"""The MRFP's conference core, sans I/O: MSRP fan-out, chunking, reports; the floor server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2ae import bfcp, msrp
from e2ae.bfcp import ErrorCodeValue, Primitive, RequestStatusValue
from mrfp.conference import (
    SERVER_TRANSACTION,
    Conference,
    ConferenceError,
    Limits,
    Output,
    StreamFailed,
)

NAMES = ("alice", "bob", "carol")
CONF = "sip:conf1@lab.example"


def mrfp_uri(name: str) -> str:
    return f"msrp://192.0.2.1:9/mrfp{name};tcp"


def ue_uri(name: str) -> str:
    return f"msrp://192.0.2.10:7000/ue{name};tcp"


def chat(
    n: int = 3, limits: Limits | None = None
) -> tuple[Conference, dict[str, msrp.MsrpSession]]:
    conf = Conference(CONF, limits=limits or Limits())
    ues = {}
    for name in NAMES[:n]:
        conf.add_msrp(name, f"sip:{name}@lab.example", mrfp_uri(name), (ue_uri(name),))
        conf.up(name)
        ues[name] = msrp.MsrpSession(ue_uri(name), (mrfp_uri(name),))
    return conf, ues


def sends_to(out: Output, termination: str) -> bytes:
    return b"".join(s.data for s in out.sends if s.termination == termination)


def deliver(conf: Conference, ues: dict[str, msrp.MsrpSession], out: Output) -> list[object]:
    """Feed the MRFP's output to the participants; answers go back to the MRFP."""
    events: list[object] = []
    for name, ue in ues.items():
        data = sends_to(out, name)
        if data:
            events.extend((name, e) for e in ue.receive_data(data))
            back = ue.data_to_send()
            if back:
                conf.receive(name, back, 0.0)
    return events


def test_a_message_reaches_every_other_participant_with_their_own_paths() -> None:
    conf, ues = chat()
    ues["alice"].send_message(b"hello all", "text/plain")
    out = conf.receive("alice", ues["alice"].data_to_send(), 0.0)
    assert sends_to(out, "alice").startswith(b"MSRP ")  # the 200 to alice
    assert b" 200 " in sends_to(out, "alice")
    frames = {n: msrp.parse_frames(sends_to(out, n)) for n in ("bob", "carol")}
    tids = set()
    mids = set()
    for name, (frame,) in frames.items():
        assert isinstance(frame, msrp.Request) and frame.method == "SEND"
        assert frame.to_path == (ue_uri(name),)
        assert frame.from_path == (mrfp_uri(name),)
        assert frame.body == b"hello all" and frame.content_type == "text/plain"
        tids.add(frame.transaction_id)
        mids.add(frame.message_id)
    assert len(tids) == 2 and len(mids) == 2
    events = deliver(conf, ues, out)
    received = [(n, e.body) for n, e in events if isinstance(e, msrp.MessageReceived)]
    assert sorted(received) == [("bob", b"hello all"), ("carol", b"hello all")]
    assert conf.statistics("alice") == (1, 0)
    assert conf.statistics("bob") == (0, 1)


def test_no_transaction_response_when_the_sender_asks_for_none() -> None:
    conf, ues = chat(2)
    ues["alice"].send_message(b"quiet", failure_report="no")
    out = conf.receive("alice", ues["alice"].data_to_send(), 0.0)
    assert sends_to(out, "alice") == b""
    assert b"quiet" in sends_to(out, "bob")


def test_cpim_is_forwarded_as_it_came() -> None:
    conf, ues = chat(2)
    body = b"From: <sip:alice@lab.example>\r\n\r\nContent-Type: text/plain\r\n\r\nhi"
    ues["alice"].send_message(body, "message/cpim")
    out = conf.receive("alice", ues["alice"].data_to_send(), 0.0)
    (frame,) = msrp.parse_frames(sends_to(out, "bob"))
    assert isinstance(frame, msrp.Request)
    assert frame.content_type == "message/cpim" and frame.body == body


def test_a_chunked_message_is_reassembled_then_sent_in_chunks() -> None:
    conf, ues = chat(2, Limits(chunk_size=1000))
    body = bytes(range(256)) * 20  # 5120 bytes
    ues["alice"].send_message(body, "application/octet-stream", chunk_size=700)
    data = ues["alice"].data_to_send()
    out = Output()
    for i in range(0, len(data), 333):  # any split of the byte stream
        step = conf.receive("alice", data[i : i + 333], 0.0)
        out = Output(out.sends + step.sends, out.notes + step.notes)
    assert sends_to(out, "alice").count(b" 200 ") == 8  # one 200 per chunk of 700
    frames = msrp.parse_frames(sends_to(out, "bob"))
    assert len(frames) == 6  # chunks of 1000 towards bob
    events = deliver(conf, ues, out)
    (got,) = [e for _, e in events if isinstance(e, msrp.MessageReceived)]
    assert got.body == body


def test_success_report_is_answered_by_the_mrfp_for_its_hop() -> None:
    conf, ues = chat(2)
    mid = ues["alice"].send_message(b"report me", success_report=True)
    out = conf.receive("alice", ues["alice"].data_to_send(), 0.0)
    frames = msrp.parse_frames(sends_to(out, "alice"))
    reports = [f for f in frames if isinstance(f, msrp.Request) and f.method == "REPORT"]
    assert len(reports) == 1 and reports[0].message_id == mid
    assert reports[0].status is not None and reports[0].status.code == 200
    events = ues["alice"].receive_data(sends_to(out, "alice"))
    assert any(isinstance(e, msrp.MessageDelivered) for e in events)
    (to_bob,) = msrp.parse_frames(sends_to(out, "bob"))
    assert isinstance(to_bob, msrp.Request) and not to_bob.success_report


def test_a_recipients_error_is_noted_and_goes_no_further() -> None:
    conf, ues = chat(2)
    ues["alice"].send_message(b"x")
    out = conf.receive("alice", ues["alice"].data_to_send(), 0.0)
    (frame,) = msrp.parse_frames(sends_to(out, "bob"))
    assert isinstance(frame, msrp.Request)
    error = msrp.Response(frame.transaction_id, 415, (mrfp_uri("bob"),), (ue_uri("bob"),))
    back = conf.receive("bob", error.to_bytes(), 0.0)
    assert back.sends == ()
    assert [n.kind for n in back.notes] == ["delivery-failed"]


def test_a_message_too_large_is_refused_413_and_not_forwarded() -> None:
    conf, ues = chat(2, Limits(max_message_bytes=100))
    ues["alice"].send_message(b"y" * 101)
    out = conf.receive("alice", ues["alice"].data_to_send(), 0.0)
    assert b" 413 " in sends_to(out, "alice")
    assert sends_to(out, "bob") == b""


def test_too_many_partial_messages_fail_the_stream() -> None:
    conf, _ = chat(2, Limits(max_partial_messages=2))
    data = b""
    for n in range(3):
        req = msrp.Request(
            f"tid{n}abcd",
            "SEND",
            (mrfp_uri("alice"),),
            (ue_uri("alice"),),
            (("Message-ID", f"mid{n}abcd"), ("Byte-Range", "1-3/10")),
            "text/plain",
            b"abc",
            "+",
        )
        data += req.to_bytes()
    with pytest.raises(StreamFailed):
        conf.receive("alice", data, 0.0)


def test_stale_reassembly_expires() -> None:
    conf, _ = chat(2, Limits(reassembly_timeout=5.0))
    req = msrp.Request(
        "tidzabcd",
        "SEND",
        (mrfp_uri("alice"),),
        (ue_uri("alice"),),
        (("Message-ID", "midzabcd"), ("Byte-Range", "1-3/10")),
        "text/plain",
        b"abc",
        "+",
    )
    conf.receive("alice", req.to_bytes(), 0.0)
    assert conf.expire(4.0).notes == ()
    assert [n.kind for n in conf.expire(6.0).notes] == ["aborted"]


def test_a_stream_that_is_not_msrp_fails_alone() -> None:
    conf, ues = chat(2)
    with pytest.raises(StreamFailed) as info:
        conf.receive("alice", b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert info.value.termination == "alice"
    ues["bob"].send_message(b"still here")
    out = conf.receive("bob", ues["bob"].data_to_send(), 0.0)
    assert b"still here" in sends_to(out, "alice")


def test_a_stream_not_up_gets_nothing() -> None:
    conf = Conference(CONF)
    conf.add_msrp("a", "a", mrfp_uri("a"), (ue_uri("a"),))
    conf.add_msrp("b", "b", mrfp_uri("b"), (ue_uri("b"),))
    conf.up("a")
    ue = msrp.MsrpSession(ue_uri("a"), (mrfp_uri("a"),))
    ue.send_message(b"early")
    out = conf.receive("a", ue.data_to_send(), 0.0)
    assert sends_to(out, "b") == b""


def test_active_end_binds_the_connection_with_an_empty_send() -> None:
    conf = Conference(CONF)
    conf.add_msrp("a", "a", mrfp_uri("a"), (ue_uri("a"),), active=True)
    out = conf.up("a")
    (frame,) = msrp.parse_frames(sends_to(out, "a"))
    assert isinstance(frame, msrp.Request) and frame.method == "SEND" and frame.body == b""


def test_bounded_participants() -> None:
    conf = Conference(CONF, limits=Limits(max_participants=1))
    conf.add_msrp("a", "a", mrfp_uri("a"), ())
    with pytest.raises(ConferenceError):
        conf.add_msrp("b", "b", mrfp_uri("b"), ())


@given(st.binary(min_size=1, max_size=3000), st.integers(1, 700), st.integers(1, 500))
def test_any_body_any_chunking_any_split_arrives_whole(body: bytes, chunk: int, split: int) -> None:
    conf, ues = chat(2, Limits(chunk_size=512))
    ues["alice"].send_message(body, "application/octet-stream", chunk_size=chunk)
    data = ues["alice"].data_to_send()
    to_bob = b""
    for i in range(0, len(data), split):
        to_bob += sends_to(conf.receive("alice", data[i : i + split], 0.0), "bob")
    got = [e for e in ues["bob"].receive_data(to_bob) if isinstance(e, msrp.MessageReceived)]
    assert [e.body for e in got] == [body]


# -- BFCP ----------------------------------------------------------------------------------


def floor_room(users: int = 3) -> tuple[Conference, dict[int, bfcp.FloorControlClient]]:
    conf = Conference(CONF, frozenset({1, 2}), bfcp_conference_id=77)
    clients = {}
    for uid in range(1, users + 1):
        conf.add_bfcp(f"t{uid}", f"user{uid}", uid)
        conf.up(f"t{uid}")
        clients[uid] = bfcp.FloorControlClient(77, uid)
    return conf, clients


def messages(out: Output, termination: str) -> list[bfcp.Message]:
    framer = bfcp.BfcpFramer()
    framer.feed(sends_to(out, termination))
    found = []
    while (m := framer.next_message()) is not None:
        found.append(m)
    return found


def status_of(out: Output, termination: str) -> list[tuple[int, int, int]]:
    found = []
    for m in messages(out, termination):
        rs = bfcp.request_status_of(m)
        assert rs is not None
        frq, overall, _ = rs
        info = m.first(bfcp.AttrType.FLOOR_REQUEST_INFORMATION)
        assert isinstance(info, bfcp.Grouped)
        overall_attr = info.find(bfcp.AttrType.OVERALL_REQUEST_STATUS)[0]
        assert isinstance(overall_attr, bfcp.Grouped)
        rs_attr = overall_attr.find(bfcp.AttrType.REQUEST_STATUS)[0]
        assert isinstance(rs_attr, bfcp.RequestStatus)
        found.append((frq, overall, rs_attr.queue_position))
    return found


def test_hello_gets_hello_ack() -> None:
    conf, clients = floor_room(1)
    out = conf.receive("t1", clients[1].hello().to_bytes(), 0.0)
    (ack,) = messages(out, "t1")
    assert ack.primitive == Primitive.HELLO_ACK


def test_floor_granted_then_queued_then_passed_on_release() -> None:
    conf, clients = floor_room()
    out = conf.receive("t1", clients[1].floor_request([1]).to_bytes(), 0.0)
    ((frq1, st1, _),) = status_of(out, "t1")
    assert st1 == RequestStatusValue.GRANTED
    out = conf.receive("t2", clients[2].floor_request([1]).to_bytes(), 0.0)
    ((frq2, st2, pos2),) = status_of(out, "t2")
    assert (st2, pos2) == (RequestStatusValue.PENDING, 1)
    out = conf.receive("t3", clients[3].floor_request([1]).to_bytes(), 0.0)
    ((_, st3, pos3),) = status_of(out, "t3")
    assert (st3, pos3) == (RequestStatusValue.PENDING, 2)
    # another floor is free for anyone
    out = conf.receive("t3", clients[3].floor_request([2]).to_bytes(), 0.0)
    assert status_of(out, "t3")[0][1] == RequestStatusValue.GRANTED
    # user 1 releases: released to 1, granted to 2 (server-initiated, transaction id 0)
    out = conf.receive("t1", clients[1].floor_release(frq1).to_bytes(), 0.0)
    assert status_of(out, "t1") == [(frq1, RequestStatusValue.RELEASED, 0)]
    assert status_of(out, "t2") == [(frq2, RequestStatusValue.GRANTED, 0)]
    assert messages(out, "t2")[0].transaction_id == SERVER_TRANSACTION
    assert sends_to(out, "t3") == b""


def test_one_holder_at_a_time() -> None:
    conf, clients = floor_room(2)
    conf.receive("t1", clients[1].floor_request([1]).to_bytes(), 0.0)
    conf.receive("t2", clients[2].floor_request([1, 2]).to_bytes(), 0.0)
    holders = [r for r in conf.requests.values() if r.granted and 1 in r.floor_ids]
    assert len(holders) == 1


def test_releasing_a_queued_request_cancels_it() -> None:
    conf, clients = floor_room(2)
    conf.receive("t1", clients[1].floor_request([1]).to_bytes(), 0.0)
    out = conf.receive("t2", clients[2].floor_request([1]).to_bytes(), 0.0)
    frq2 = status_of(out, "t2")[0][0]
    out = conf.receive("t2", clients[2].floor_release(frq2).to_bytes(), 0.0)
    assert status_of(out, "t2") == [(frq2, RequestStatusValue.CANCELLED, 0)]


def test_the_holder_leaving_passes_the_floor() -> None:
    conf, clients = floor_room(2)
    conf.receive("t1", clients[1].floor_request([1]).to_bytes(), 0.0)
    conf.receive("t2", clients[2].floor_request([1]).to_bytes(), 0.0)
    out = conf.remove("t1")
    assert status_of(out, "t2")[0][1] == RequestStatusValue.GRANTED


def test_goodbye_releases_and_acks() -> None:
    conf, clients = floor_room(2)
    conf.receive("t1", clients[1].floor_request([1]).to_bytes(), 0.0)
    conf.receive("t2", clients[2].floor_request([1]).to_bytes(), 0.0)
    out = conf.receive("t1", clients[1].goodbye().to_bytes(), 0.0)
    assert messages(out, "t1")[0].primitive == Primitive.GOODBYE_ACK
    assert status_of(out, "t2")[0][1] == RequestStatusValue.GRANTED


def error_code(out: Output, termination: str) -> int:
    (m,) = messages(out, termination)
    assert m.primitive == Primitive.ERROR
    attr = m.first(bfcp.AttrType.ERROR_CODE)
    assert isinstance(attr, bfcp.ErrorCode)
    return attr.code


def test_a_user_that_is_not_a_participant_gets_error_2_and_a_note() -> None:
    conf, _ = floor_room(2)
    stranger = bfcp.FloorControlClient(77, 999)
    out = conf.receive("t1", stranger.floor_request([1]).to_bytes(), 0.0)
    assert error_code(out, "t1") == ErrorCodeValue.USER_DOES_NOT_EXIST == 2
    assert [n.kind for n in out.notes] == ["bfcp-error"]
    assert conf.requests == {}


def test_another_participants_id_is_unauthorized() -> None:
    conf, clients = floor_room(2)
    out = conf.receive("t1", clients[2].floor_request([1]).to_bytes(), 0.0)
    assert error_code(out, "t1") == ErrorCodeValue.UNAUTHORIZED_OPERATION


def test_unknown_floor_conference_and_request() -> None:
    conf, clients = floor_room(1)
    out = conf.receive("t1", clients[1].floor_request([9]).to_bytes(), 0.0)
    assert error_code(out, "t1") == ErrorCodeValue.INVALID_FLOOR_ID
    out = conf.receive("t1", clients[1].floor_release(42).to_bytes(), 0.0)
    assert error_code(out, "t1") == ErrorCodeValue.FLOOR_REQUEST_ID_DOES_NOT_EXIST
    other = bfcp.FloorControlClient(78, 1)
    out = conf.receive("t1", other.hello().to_bytes(), 0.0)
    assert error_code(out, "t1") == ErrorCodeValue.CONFERENCE_DOES_NOT_EXIST


def test_queue_is_bounded() -> None:
    conf = Conference(CONF, frozenset({1}), limits=Limits(max_queue=1))
    for uid in (1, 2, 3):
        conf.add_bfcp(f"t{uid}", f"u{uid}", uid)
    for uid in (1, 2):
        conf.receive(f"t{uid}", bfcp.FloorControlClient(5, uid).floor_request([1]).to_bytes(), 0)
    out = conf.receive("t3", bfcp.FloorControlClient(5, 3).floor_request([1]).to_bytes(), 0.0)
    assert error_code(out, "t3") == ErrorCodeValue.MAX_FLOOR_REQUESTS_REACHED


def test_the_first_message_sets_the_conference_id() -> None:
    conf = Conference(CONF, frozenset({1}))
    conf.add_bfcp("t1", "u1", 1)
    conf.receive("t1", bfcp.FloorControlClient(1234, 1).hello().to_bytes(), 0.0)
    assert conf.bfcp_conference_id == 1234


def test_a_bfcp_message_too_large_fails_the_stream() -> None:
    conf = Conference(CONF, frozenset({1}), limits=Limits(max_bfcp_bytes=100))
    conf.add_bfcp("t1", "u1", 1)
    header = bytes([0x20, 1]) + (1000).to_bytes(2, "big") + bytes(8)
    with pytest.raises(StreamFailed):
        conf.receive("t1", header + bytes(200), 0.0)


@given(st.lists(st.tuples(st.integers(1, 3), st.booleans()), max_size=40))
def test_never_two_holders(script: list[tuple[int, bool]]) -> None:
    conf, clients = floor_room(3)
    for uid, request in script:
        mine = [r for r in conf.requests.values() if r.user_id == uid]
        if request or not mine:
            msg = clients[uid].floor_request([1])
        else:
            msg = clients[uid].floor_release(mine[0].request_id)
        conf.receive(f"t{uid}", msg.to_bytes(), 0.0)
        holders = [r for r in conf.requests.values() if r.granted]
        assert len(holders) <= 1
        if conf.requests:
            assert holders, "a floor is free while a request waits"
