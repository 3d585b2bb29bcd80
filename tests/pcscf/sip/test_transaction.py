"""The RFC 3261 transaction state machines without a reactor or a proxy: time is a float, and
each timer is checked at exactly its deadline (and just before it)."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcscf.sip import transaction
from pcscf.sip.message import Response
from pcscf.sip.transaction import (
    ClientDue,
    ClientState,
    ClientTransaction,
    Fired,
    Reception,
    Schedule,
    ServerDue,
    ServerState,
    ServerTransaction,
    Timer,
    TimerValues,
    TransactionError,
    Transport,
)

TIMERS = TimerValues(t1=0.5, t2=4.0, t4=5.0, c=180.0)
EARLY = 1e-6


def client(
    method: str = "INVITE", transport: Transport = "udp", *, passes_2xx_on: bool = True
) -> ClientTransaction:
    return ClientTransaction.for_method(method, transport, TIMERS, passes_2xx_on=passes_2xx_on)


def server(method: str = "INVITE", transport: Transport = "udp") -> ServerTransaction:
    return ServerTransaction.for_method(method, transport, TIMERS)


def response(status: int) -> Response:
    return Response((), b"", status, "Reason")


# -- timers as data --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("timer", "udp", "tcp"),
    [
        (Timer.A, 0.5, 0.5),
        (Timer.B, 32.0, 32.0),
        (Timer.C, 180.0, 180.0),
        (Timer.D, 32.0, 0.0),
        (Timer.E, 0.5, 0.5),
        (Timer.F, 32.0, 32.0),
        (Timer.G, 0.5, 0.5),
        (Timer.H, 32.0, 32.0),
        (Timer.I, 5.0, 0.0),
        (Timer.J, 32.0, 32.0),
        (Timer.K, 5.0, 0.0),
        (Timer.L, 32.0, 32.0),
        (Timer.M, 32.0, 32.0),
    ],
)
def test_each_timer_runs_for_its_rule(timer: Timer, udp: float, tcp: float) -> None:
    assert TIMERS.duration(timer, "udp") == udp
    assert TIMERS.duration(timer, "tcp") == tcp


def test_durations_follow_t1_t4_and_c() -> None:
    other = TimerValues(t1=2.0, t2=16.0, t4=7.0, c=200.0)
    assert other.duration(Timer.B, "udp") == 128.0
    assert other.duration(Timer.A, "udp") == 2.0
    assert other.duration(Timer.K, "udp") == 7.0
    assert other.duration(Timer.C, "tcp") == 200.0
    assert other.duration(Timer.D, "udp") == 32.0  # a fixed 32 s, not a function of T1


def test_retransmission_intervals() -> None:
    assert TIMERS.next_interval(Timer.A, 4.0) == 8.0  # INVITE: no T2 cap
    assert TIMERS.next_interval(Timer.E, 1.0) == 2.0
    assert TIMERS.next_interval(Timer.E, 4.0) == 4.0  # capped at T2
    assert TIMERS.next_interval(Timer.G, 2.0) == 4.0
    assert TIMERS.next_interval(Timer.G, 4.0) == 4.0
    with pytest.raises(TransactionError):
        TIMERS.next_interval(Timer.B, 1.0)


def test_every_timer_says_what_it_is() -> None:
    assert [t.name for t in Timer] == list("ABCDEFGHIJKLM")
    clients = {t.name for t in Timer if t.rule.side == "client"}
    assert clients == set("ABCDEFKM")
    invites = {t.name for t in Timer if t.rule.invite}
    assert invites == set("ABCDGHILM")
    for timer in Timer:
        assert timer.rule.defined.startswith(("RFC 3261", "RFC 6026"))
        assert timer.rule.purpose and timer.rule.duration


# -- client INVITE (RFC 3261 17.1.1, RFC 6026) -----------------------------------------------
def test_invite_starts_calling_with_timers_a_and_b() -> None:
    txn = client()
    assert txn.state is ClientState.CALLING and txn.unanswered and txn.pending
    assert txn.start(10.0) == [10.5, 42.0]
    with pytest.raises(TransactionError):
        txn.start(11.0)


def test_timer_a_doubles_without_a_cap() -> None:
    txn = client()
    txn.start(0.0)
    assert txn.fire(0.5 - EARLY) == Fired()
    deadlines = []
    at = 0.5
    for _ in range(5):
        fired = txn.fire(at)
        assert fired.timer is Timer.A
        assert fired.wake is not None
        deadlines.append(fired.wake)
        at = fired.wake
    assert deadlines == [1.5, 3.5, 7.5, 15.5, 31.5]
    assert txn.state is ClientState.CALLING


def test_timer_b_gives_up_at_64_t1() -> None:
    txn = client()
    txn.start(0.0)
    txn.retransmit_at = None  # look at Timer B alone
    assert txn.fire(32.0 - EARLY) == Fired()
    assert txn.fire(32.0) == Fired(Timer.B)
    assert txn.state is ClientState.TERMINATED


def test_invite_over_tcp_is_not_retransmitted() -> None:
    txn = client(transport="tcp")
    assert txn.start(0.0) == [32.0]
    assert txn.fire(0.5) == Fired()
    assert txn.fire(32.0) == Fired(Timer.B)


def test_provisional_stops_a_and_b_and_starts_timer_c() -> None:
    txn = client()
    txn.start(0.0)
    assert txn.receive(180, 1.0) == Reception(wake=181.0)
    assert txn.state is ClientState.PROCEEDING and not txn.unanswered and txn.pending
    assert txn.fire(1.5) == Fired()  # Timer A stopped
    assert txn.fire(32.0) == Fired()  # Timer B stopped
    assert txn.receive(183, 50.0) == Reception(wake=230.0)  # restarted
    assert txn.fire(181.0) == Fired()
    assert txn.fire(230.0 - EARLY) == Fired()
    assert txn.fire(230.0) == Fired(Timer.C, 262.0)
    assert txn.timer_c_fired and txn.state is ClientState.PROCEEDING


def test_after_timer_c_timer_b_ends_it_and_provisionals_do_not_restart_c() -> None:
    txn = client()
    txn.start(0.0)
    txn.receive(180, 0.0)
    assert txn.fire(180.0) == Fired(Timer.C, 212.0)
    assert txn.receive(180, 200.0) == Reception()
    assert txn.fire(212.0 - EARLY) == Fired()
    assert txn.fire(212.0) == Fired(Timer.B)
    assert txn.state is ClientState.TERMINATED


def test_non_2xx_final_is_acked_and_timer_d_absorbs_its_retransmissions() -> None:
    txn = client()
    txn.start(0.0)
    assert txn.receive(486, 2.0) == Reception(ack=True, pass_up=True, wake=34.0)
    assert txn.state is ClientState.COMPLETED and not txn.pending
    assert txn.receive(486, 3.0) == Reception(ack=True, pass_up=False)  # ACKed again
    assert txn.receive(180, 3.0) == Reception()  # a late provisional changes nothing
    assert txn.state is ClientState.COMPLETED
    assert txn.fire(32.0) == Fired()  # Timer B was stopped by the final
    assert txn.fire(34.0 - EARLY) == Fired()
    assert txn.fire(34.0) == Fired(Timer.D)
    assert txn.state is ClientState.TERMINATED


def test_timer_d_is_zero_over_tcp() -> None:
    txn = client(transport="tcp")
    txn.start(0.0)
    assert txn.receive(503, 2.0) == Reception(ack=True, wake=2.0)
    assert txn.fire(2.0) == Fired(Timer.D)


def test_2xx_accepts_and_each_2xx_again_is_passed_on_and_restarts_timer_m() -> None:
    txn = client()
    txn.start(0.0)
    assert txn.receive(200, 1.0) == Reception(wake=33.0)
    assert txn.state is ClientState.ACCEPTED and not txn.pending
    assert txn.receive(200, 5.0) == Reception(wake=37.0)
    assert txn.fire(33.0) == Fired()
    assert txn.fire(37.0) == Fired(Timer.M)
    assert txn.state is ClientState.TERMINATED


def test_own_invite_takes_the_first_2xx_only() -> None:
    txn = client(passes_2xx_on=False)
    txn.start(0.0)
    assert txn.receive(200, 1.0) == Reception(wake=33.0)
    assert txn.receive(200, 5.0) == Reception(pass_up=False)
    assert txn.fire(33.0) == Fired(Timer.M)  # not restarted


def test_non_2xx_after_2xx_is_acked_not_passed_on() -> None:
    txn = client()
    txn.start(0.0)
    txn.receive(200, 1.0)
    assert txn.receive(487, 2.0) == Reception(ack=True, pass_up=False)
    assert txn.state is ClientState.ACCEPTED


def test_2xx_after_non_2xx_moves_to_accepted() -> None:
    txn = client()
    txn.start(0.0)
    txn.receive(487, 1.0)
    assert txn.receive(200, 2.0) == Reception(wake=34.0)
    assert txn.state is ClientState.ACCEPTED


def test_transport_failure_terminates_and_leaves_nothing_due() -> None:
    txn = client()
    txn.start(0.0)
    txn.transport_failed()
    assert txn.state is ClientState.TERMINATED
    assert txn.fire(100.0) == Fired()
    assert txn.receive(200, 1.0) == Reception(pass_up=False)


# -- client non-INVITE (RFC 3261 17.1.2) -----------------------------------------------------
def test_non_invite_starts_trying_with_timers_e_and_f() -> None:
    txn = client("REGISTER")
    assert txn.state is ClientState.TRYING and txn.unanswered
    assert txn.start(0.0) == [0.5, 32.0]


def test_timer_e_doubles_up_to_t2() -> None:
    txn = client("OPTIONS")
    txn.start(0.0)
    assert txn.fire(0.5 - EARLY) == Fired()
    wakes = []
    at = 0.5
    for _ in range(6):
        fired = txn.fire(at)
        assert fired.timer is Timer.E and fired.wake is not None
        wakes.append(fired.wake)
        at = fired.wake
    assert wakes == [1.5, 3.5, 7.5, 11.5, 15.5, 19.5]


def test_timer_e_is_t2_in_proceeding_and_timer_f_still_runs() -> None:
    txn = client("BYE")
    txn.start(0.0)
    assert txn.receive(100, 0.2) == Reception()  # non-INVITE: no Timer C
    assert txn.state is ClientState.PROCEEDING
    assert txn.fire(0.5) == Fired(Timer.E, 4.5)  # the pending one fires, then T2 apart
    assert txn.fire(4.5) == Fired(Timer.E, 8.5)
    txn.retransmit_at = None  # look at Timer F alone
    assert txn.fire(32.0 - EARLY) == Fired()
    assert txn.fire(32.0) == Fired(Timer.F)
    assert txn.state is ClientState.TERMINATED


def test_timer_f_gives_up_from_trying() -> None:
    txn = client("MESSAGE", transport="tcp")
    assert txn.start(0.0) == [32.0]
    assert txn.fire(32.0 - EARLY) == Fired()
    assert txn.fire(32.0) == Fired(Timer.F)


def test_non_invite_final_is_not_acked_and_timer_k_absorbs_retransmissions() -> None:
    txn = client("REGISTER")
    txn.start(0.0)
    assert txn.receive(401, 1.0) == Reception(wake=6.0)  # K = T4 over UDP
    assert txn.state is ClientState.COMPLETED
    assert txn.receive(401, 2.0) == Reception(pass_up=False)
    assert txn.receive(200, 2.0) == Reception(pass_up=False)
    assert txn.fire(1.5) == Fired()  # Timer E stopped
    assert txn.fire(6.0 - EARLY) == Fired()
    assert txn.fire(6.0) == Fired(Timer.K)
    assert txn.state is ClientState.TERMINATED


def test_timer_k_is_zero_over_tcp() -> None:
    txn = client("REGISTER", transport="tcp")
    txn.start(0.0)
    assert txn.receive(200, 3.0) == Reception(wake=3.0)
    assert txn.fire(3.0) == Fired(Timer.K)


# -- server INVITE (RFC 3261 17.2.1, RFC 6026) -----------------------------------------------
def test_invite_server_starts_proceeding_and_answers_retransmissions_with_the_last() -> None:
    txn = server()
    assert txn.state is ServerState.PROCEEDING and not txn.final
    assert txn.request_again() is None
    trying = response(100)
    assert txn.respond(trying, 0.0) == []
    assert txn.request_again() is trying
    ringing = response(180)
    txn.respond(ringing, 1.0)
    assert txn.request_again() is ringing and txn.state is ServerState.PROCEEDING


def test_non_2xx_final_starts_g_and_h_and_g_doubles_up_to_t2() -> None:
    txn = server()
    busy = response(486)
    assert txn.respond(busy, 10.0) == [42.0, 10.5]
    assert txn.state is ServerState.COMPLETED and txn.final
    assert txn.request_again() is busy
    assert txn.fire(10.5 - EARLY) == Fired()
    wakes = []
    at = 10.5
    for _ in range(5):
        fired = txn.fire(at)
        assert fired.timer is Timer.G and fired.wake is not None
        wakes.append(fired.wake)
        at = fired.wake
    assert wakes == [11.5, 13.5, 17.5, 21.5, 25.5]
    assert txn.fire(42.0 - EARLY).timer is not Timer.H
    assert txn.fire(42.0) == Fired(Timer.H)
    assert txn.state is ServerState.TERMINATED


def test_ack_confirms_stops_g_and_h_still_ends_it() -> None:
    txn = server()
    txn.respond(response(404), 0.0)
    assert txn.receive_ack()
    assert txn.state is ServerState.CONFIRMED
    assert txn.receive_ack()  # a retransmitted ACK is absorbed too
    assert txn.fire(0.5) == Fired()
    assert txn.fire(32.0) == Fired(Timer.H)


def test_non_2xx_final_over_tcp_has_no_timer_g() -> None:
    txn = server(transport="tcp")
    assert txn.respond(response(480), 0.0) == [32.0]
    assert txn.fire(0.5) == Fired()


def test_ack_is_not_absorbed_before_a_final_or_after_a_2xx() -> None:
    txn = server()
    txn.respond(response(100), 0.0)
    assert not txn.receive_ack()
    txn.respond(response(200), 1.0)
    assert not txn.receive_ack()  # the ACK of a 2xx goes end to end
    assert txn.state is ServerState.ACCEPTED


def test_2xx_accepts_and_a_2xx_again_restarts_timer_l() -> None:
    txn = server()
    assert txn.respond(response(200), 1.0) == [33.0]
    assert txn.state is ServerState.ACCEPTED and txn.final
    again = response(200)
    assert txn.respond(again, 3.0) == [35.0]
    assert txn.request_again() is again
    assert txn.fire(33.0) == Fired()
    assert txn.fire(35.0) == Fired(Timer.L)
    assert txn.state is ServerState.TERMINATED
    assert txn.respond(response(200), 40.0) == []  # a late 2xx still goes on, no timer


def test_nothing_but_a_2xx_after_a_2xx() -> None:
    txn = server()
    txn.respond(response(200), 0.0)
    with pytest.raises(TransactionError):
        txn.respond(response(487), 1.0)
    with pytest.raises(TransactionError):
        txn.respond(response(180), 1.0)


def test_nothing_after_a_non_2xx_final() -> None:
    txn = server()
    txn.respond(response(486), 0.0)
    for status in (180, 200, 486):
        with pytest.raises(TransactionError):
            txn.respond(response(status), 1.0)
    txn.fire(32.0)
    with pytest.raises(TransactionError):
        txn.respond(response(200), 33.0)


# -- server non-INVITE (RFC 3261 17.2.2) -----------------------------------------------------
def test_non_invite_server_trying_proceeding_completed() -> None:
    txn = server("REGISTER")
    assert txn.state is ServerState.TRYING and txn.request_again() is None
    txn.respond(response(100), 0.0)
    assert txn.state is ServerState.PROCEEDING
    ok = response(200)
    assert txn.respond(ok, 1.0) == [33.0]  # Timer J; no Timer G for non-INVITE
    assert txn.state is ServerState.COMPLETED
    assert txn.request_again() is ok
    assert not txn.receive_ack()
    with pytest.raises(TransactionError):
        txn.respond(response(200), 2.0)
    assert txn.fire(33.0 - EARLY) == Fired()
    assert txn.fire(33.0) == Fired(Timer.J)
    assert txn.state is ServerState.TERMINATED


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_timer_j_keeps_64_t1_on_both_transports(transport: Transport) -> None:
    txn = server("OPTIONS", transport)
    assert txn.respond(response(404), 0.0) == [32.0]
    assert txn.fire(32.0) == Fired(Timer.J)


# -- the schedule ----------------------------------------------------------------------------
def test_schedule_in_time_order_ties_in_order_set() -> None:
    schedule: Schedule[ClientDue | ServerDue] = Schedule()
    assert schedule.next_deadline() is None and schedule.pop_due(100.0) is None
    first = ServerDue(("b", "h:1", "INVITE"))
    second = ClientDue(("b", "INVITE"))
    early = ClientDue(("c", "BYE"))
    schedule.add(5.0, first)
    schedule.add(5.0, second)
    schedule.add(2.0, early)
    schedule.add(None, ClientDue(("never", "BYE")))
    assert len(schedule) == 3
    assert schedule.next_deadline() == 2.0
    assert schedule.pop_due(2.0 - EARLY) is None
    assert schedule.pop_due(2.0) is early
    assert schedule.pop_due(4.9) is None
    assert schedule.pop_due(5.0) is first
    assert schedule.pop_due(5.0) is second
    assert schedule.pop_due(1e9) is None and schedule.next_deadline() is None


def test_schedule_pops_in_time_order_ties_in_the_order_set() -> None:
    schedule: Schedule[str] = Schedule()
    for when, entry in ((2.0, "late"), (1.0, "first"), (1.0, "second"), (None, "never")):
        schedule.add(when, entry)
    assert len(schedule) == 3
    assert schedule.next_deadline() == 1.0
    assert schedule.pop_due(0.5) is None
    assert [schedule.pop_due(1.0), schedule.pop_due(1.0), schedule.pop_due(1.0)] == [
        "first",
        "second",
        None,
    ]
    assert schedule.pop_due(5.0) == "late"
    assert schedule.next_deadline() is None


class _OneHeap:
    """The schedule's order, kept the plain way: one heap of (when, order set, entry)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int]] = []
        self.seq = 0

    def add(self, when: float | None, entry: int) -> None:
        if when is not None:
            heapq.heappush(self.heap, (when, self.seq, entry))
            self.seq += 1

    def pop_due(self, now: float) -> int | None:
        if not self.heap or self.heap[0][0] > now:
            return None
        return heapq.heappop(self.heap)[2]


#: Delays as a SIP element sets them (T1 doublings, T2, T4, 64*T1), a few odd ones, and None.
_DELAYS = st.sampled_from([0.5, 1.0, 2.0, 4.0, 5.0, 32.0, 0.0, 0.1, 90.0, None])
_STEP = st.one_of(
    st.tuples(st.just("add"), _DELAYS, st.booleans(), st.floats(0.0, 3.0)),
    st.tuples(st.just("pop"), st.just(None), st.booleans(), st.floats(-1.0, 6.0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=300), st.integers(1, 70))
def test_schedule_order_is_that_of_one_heap(steps: list[tuple], max_lanes: int) -> None:
    """Whatever the delays, with or without ``now``, the clock going back or not, and however
    few lanes may be made: what comes out, and when, is what one heap gives."""
    schedule: Schedule[int] = Schedule()
    reference = _OneHeap()
    now = 100.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transaction, "MAX_LANES", max_lanes)
        for n, (kind, delay, with_now, x) in enumerate(steps):
            if kind == "add":
                when = None if delay is None else now + x * delay if x > 2.5 else now + delay
                schedule.add(when, n, now if with_now else None)
                reference.add(when, n)
            else:
                now += x  # below zero: the clock went back
                while (got := schedule.pop_due(now)) is not None:
                    assert got == reference.pop_due(now)
                assert reference.pop_due(now) is None
            assert len(schedule) == len(reference.heap)
            expected = reference.heap[0][0] if reference.heap else None
            assert schedule.next_deadline() == expected


def test_schedule_keeps_a_lane_per_delay() -> None:
    """Deadlines set with ``now`` from a few delays go to a lane each, not to the heap (whose
    pops, with tens of thousands pending, are what the lanes spare)."""
    schedule: Schedule[int] = Schedule()
    for n in range(1000):
        now = n * 0.003
        schedule.add(now + 0.5, n, now)
        schedule.add(now + 32.0, n, now)
    assert len(schedule) == 2000
    assert schedule._heap == [] and len(schedule._lanes) == 2 and len(schedule._heads) == 2
    schedule.add(1.5, -1, 1.0)  # 0.5 s, before its lane's last (the clock went back): heap
    schedule.add(0.25, -2)  # no now: the heap
    assert len(schedule._heap) == 2
    popped = [schedule.pop_due(40.0) for _ in range(2002)]
    assert popped[:3] == [-2, 0, 1] and popped.count(-1) == 1 and None not in popped
    assert schedule.pop_due(1e9) is None and schedule._lanes == {} and schedule._heads == []
