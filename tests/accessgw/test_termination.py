"""The pure Access Gateway core: pinning decision, attempts, timers, ports, statistics."""

from __future__ import annotations

import datetime

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import certs
from accessgw.errors import LocalAccessGwError, PortsExhausted
from accessgw.iqhandler import to_iq_error
from accessgw.ports import PortAllocator, PortRange
from accessgw.termination import (
    Closed,
    ConnectCore,
    HoldAttempt,
    StartRelay,
    State,
    StreamFailed,
    TcpFailure,
    Termination,
    TerminationStats,
    Timers,
    TlsEstablished,
    TlsFailure,
    check_certificate,
    classify_handshake_error,
)

NOW = datetime.datetime.now(datetime.UTC)
UE = certs.generate("ue", now=NOW)
OTHER = certs.generate("impostor", now=NOW)


def _term(**kw: object) -> Termination:
    args: dict[str, object] = {
        "id": "t1",
        "stream": "1",
        "tls_role": "server",
        "core_role": "listen",
    }
    args.update(kw)
    term = Termination(**args)  # type: ignore[arg-type]
    term.listen()
    return term


@pytest.mark.parametrize("hash_func", certs.HASH_FUNCS)
def test_check_certificate_every_hash(hash_func: str) -> None:
    verdict = check_certificate(UE.cert_der, [UE.fingerprint(hash_func)])
    assert verdict.accepted and verdict.fingerprint == UE.fingerprint(hash_func)
    assert check_certificate(OTHER.cert_der, [UE.fingerprint(hash_func)]).cause == (
        "fingerprint-mismatch"
    )


def test_check_certificate_causes_and_accepted_hashes() -> None:
    assert check_certificate(None, [UE.fingerprint()]).cause == "no-certificate"
    # A fingerprint of a hash the policy does not accept never matches.
    verdict = check_certificate(UE.cert_der, [UE.fingerprint("sha-1")], accepted_hashes=["sha-256"])
    assert not verdict.accepted
    # Any one of several fingerprints is enough.
    fps = [OTHER.fingerprint(), UE.fingerprint("sha-512")]
    assert check_certificate(UE.cert_der, fps).fingerprint == UE.fingerprint("sha-512")


def test_classify_handshake_errors() -> None:
    assert classify_handshake_error(["unsupported protocol"]) == "protocol-version"
    assert classify_handshake_error(["peer did not return a certificate"]) == "no-certificate"
    assert classify_handshake_error(["no shared cipher"]) == "handshake-failure"
    assert classify_handshake_error(["certificate verify failed"]) == "fingerprint-mismatch"


def test_failed_attempt_does_not_consume_the_termination() -> None:
    term = _term()
    term.configure([UE.fingerprint()], now=0.0)
    bad = term.attempt_started("10.0.0.9:1", 1.0)
    assert bad is not None
    assert term.certificate_presented(bad, OTHER.cert_der, 1.0) is False
    [failure] = term.handshake_failed(bad, "handshake-failure", 1.1)
    assert isinstance(failure, TlsFailure) and failure.cause == "fingerprint-mismatch"
    good = term.attempt_started("10.0.0.1:2", 2.0)
    assert good is not None
    assert term.certificate_presented(good, UE.cert_der, 2.0)
    events = term.handshake_done(good, UE.cert_der, 2.1)
    assert isinstance(events[0], TlsEstablished)
    assert term.state is State.VERIFIED
    # One verified session per termination.
    assert term.attempt_started("10.0.0.9:3", 3.0) is None
    stats = term.stats()
    assert stats.tls_result == "verified"
    assert stats.failed_attempts == 1
    assert dict(stats.failures) == {"fingerprint-mismatch": 1}


def test_core_leg_and_relay_order() -> None:
    term = _term(core_role="connect")
    term.configure([UE.fingerprint()], now=0.0)
    attempt = term.attempt_started("ue", 0.5)
    assert attempt is not None
    events = term.handshake_done(attempt, UE.cert_der, 1.0)
    assert [type(e) for e in events] == [TlsEstablished, ConnectCore]
    assert term.core_connected(1.5) == [StartRelay("t1")]
    assert term.state is State.RELAYING
    term.relayed("to_core", 100, 2.0)
    term.relayed("to_ue", 7, 2.0)
    [closed] = term.leg_closed("access", clean=True, reason="done", now=3.0)
    assert isinstance(closed, Closed) and closed.stats.bytes_to_core == 100
    assert closed.stats.packets_to_ue == 1


def test_core_up_first_then_verified() -> None:
    term = _term()
    assert term.core_connected(0.1) == []
    term.configure([UE.fingerprint()], now=0.0)
    attempt = term.attempt_started("ue", 0.5)
    assert attempt is not None
    events = term.handshake_done(attempt, UE.cert_der, 1.0)
    assert [type(e) for e in events] == [TlsEstablished, StartRelay]


def test_establishment_timer_fails_the_stream() -> None:
    term = _term(timers=Timers(establishment=30, handshake=10))
    term.configure([UE.fingerprint()], now=100.0)
    attempt = term.attempt_started("x", 101.0)
    assert attempt is not None
    assert term.next_deadline() == 111.0
    [timeout] = term.poll(111.0)
    assert isinstance(timeout, TlsFailure) and timeout.cause == "handshake-timeout"
    assert term.next_deadline() == 130.0
    assert term.poll(129.9) == []
    [failed] = term.poll(130.0)
    assert failed == StreamFailed("t1", "handshake-timeout")
    assert term.state is State.FAILED
    assert term.attempt_started("ue", 131.0) is None


def test_reservation_does_not_start_the_establishment_timer() -> None:
    term = _term()
    term.configure([UE.fingerprint()], now=0.0, start_timer=False)
    assert term.next_deadline() is None
    term.configure(None, now=50.0)
    assert term.next_deadline() == 80.0


def test_hold_policy_decides_when_fingerprint_arrives() -> None:
    term = _term(timers=Timers(hold=5))
    attempt = term.attempt_started("ue", 0.0)
    assert attempt is not None
    assert term.certificate_presented(attempt, UE.cert_der, 0.1)
    [hold] = term.handshake_done(attempt, UE.cert_der, 0.2)
    assert isinstance(hold, HoldAttempt) and hold.until == pytest.approx(5.2)
    events = term.configure([UE.fingerprint()], now=1.0)
    assert isinstance(events[0], TlsEstablished)


def test_hold_runs_out_and_reject_policy() -> None:
    term = _term(timers=Timers(hold=5))
    attempt = term.attempt_started("ue", 0.0)
    assert attempt is not None
    term.handshake_done(attempt, UE.cert_der, 0.0)
    [refused] = term.poll(5.0)
    assert isinstance(refused, TlsFailure) and refused.cause == "fingerprint-unknown"

    strict = _term(early_policy="reject")
    attempt = strict.attempt_started("ue", 0.0)
    assert attempt is not None
    assert strict.certificate_presented(attempt, UE.cert_der, 0.0) is False
    [refused] = strict.handshake_failed(attempt, "handshake-failure", 0.1)
    assert isinstance(refused, TlsFailure) and refused.cause == "fingerprint-unknown"


def test_idle_timeout_and_reset() -> None:
    term = _term(timers=Timers(idle=60))
    term.configure([UE.fingerprint()], now=0.0)
    attempt = term.attempt_started("ue", 0.0)
    assert attempt is not None
    term.handshake_done(attempt, UE.cert_der, 0.0)
    term.core_connected(0.0)
    term.relayed("to_core", 1, 50.0)
    assert term.next_deadline() == 110.0
    [closed] = term.poll(110.0)
    assert isinstance(closed, Closed) and closed.reason == "idle-timeout"

    other = _term()
    other.core_connected(0.0)
    events = other.leg_closed("core", clean=False, reason="reset", now=1.0)
    assert isinstance(events[0], TcpFailure) and events[0].side == "core"
    assert isinstance(events[1], Closed) and not events[1].clean


def test_release_returns_stats() -> None:
    term = _term()
    stats = term.release(5.0)
    assert stats.state == "closed" and stats.close_reason == "released"
    assert stats.tls_result == "pending"
    assert stats.as_dict()["failures"] == {}


def test_port_allocator_round_robin_and_exhaustion() -> None:
    alloc = PortAllocator("127.0.0.1", PortRange(40000, 40002))
    taken = [alloc.allocate() for _ in range(3)]
    assert sorted(taken) == [40000, 40001, 40002]
    with pytest.raises(PortsExhausted) as info:
        alloc.allocate()
    assert to_iq_error(info.value).code == 510  # type: ignore[attr-defined]
    alloc.free(40001)
    assert alloc.allocate() == 40001
    alloc.free(40000)
    with pytest.raises(PortsExhausted):
        alloc.allocate(skip=frozenset({40000}))


@given(st.integers(1, 65535), st.integers(0, 100))
def test_port_range_parse_round_trip(low: int, extra: int) -> None:
    high = min(65535, low + extra)
    parsed = PortRange.parse(f"{low}-{high}")
    assert (parsed.low, parsed.high) == (low, high)
    assert PortRange.parse(str(parsed)) == parsed
    assert len(parsed) == high - low + 1


@given(st.text(max_size=12))
def test_port_range_parse_never_crashes(text: str) -> None:
    try:
        PortRange.parse(text)
    except LocalAccessGwError:
        pass


@given(st.integers(1, 30), st.lists(st.booleans(), max_size=80))
def test_allocator_never_hands_out_a_port_twice(size: int, ops: list[bool]) -> None:
    alloc = PortAllocator("a", PortRange(1000, 1000 + size - 1))
    held: list[int] = []
    for take in ops:
        if take:
            try:
                port = alloc.allocate()
            except PortsExhausted:
                assert len(held) == size
                continue
            assert port not in held
            held.append(port)
        elif held:
            alloc.free(held.pop(0))


def test_stats_as_dict_has_every_field_and_failures_as_a_mapping() -> None:
    stats = TerminationStats(
        "agw/1",
        "2",
        10,
        20,
        1,
        2,
        "verified",
        "sha-256 AB",
        2,
        (("hsfail", 1), ("fpmismatch", 1)),
        "closed",
        "core-closed",
    )
    expected = attrs.asdict(stats)
    expected["failures"] = {"hsfail": 1, "fpmismatch": 1}
    assert stats.as_dict() == expected
    assert list(stats.as_dict()) == [f.name for f in attrs.fields(TerminationStats)]
