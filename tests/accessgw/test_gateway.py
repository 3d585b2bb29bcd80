"""The Access Gateway on real loopback sockets, with openssl s_client / s_server as the UE."""

from __future__ import annotations

import functools
import os
import re
import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet import reactor, threads

import certs
from accessgw.errors import InvalidRequest, PortsExhausted, UnknownTermination
from accessgw.gateway import IP_BIND_ADDRESS_NO_PORT, AccessGateway, Reservation
from accessgw.iqhandler import to_iq_error
from accessgw.ports import PortRange
from accessgw.termination import (
    Closed,
    Event,
    State,
    StreamFailed,
    TcpFailure,
    Timers,
    TlsEstablished,
    TlsFailure,
)
from certs.tls import make_context
from tests.agw_helpers import SinkFactory, identity, s_client, spawn, wait_for
from tests.conftest import require_tool

pytestmark = pytest.mark.peer


class Lab:
    """An AGW on 127.0.0.1 with a UE identity, an impostor, and an event list."""

    def __init__(self, tmp: Path, **kw: Any) -> None:
        self.agw, self.agw_path = identity("agw", tmp)
        self.ue, self.ue_path = identity("ue", tmp)
        self.bad, self.bad_path = identity("impostor", tmp)
        self.events: list[Event] = []
        kw.setdefault("timers", Timers(establishment=20, handshake=5, hold=5))
        self.gw = AccessGateway(
            "127.0.0.1", "127.0.0.1", self.agw, observer=self.events.append, **kw
        )
        self.listeners: list[Any] = []

    def sink(self, **kw: Any) -> tuple[SinkFactory, int]:
        factory = SinkFactory(**kw)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.listeners.append(port)
        return factory, port.getHost().port

    def pinned_relay(self, sink_port: int) -> Reservation:
        """A termination pinned to the UE's certificate (AGW TLS server) that connects to
        the core peer on ``sink_port`` once the session is verified."""
        r = self.gw.reserve(fingerprints=[self.ue.fingerprint()], core_role="connect")
        self.gw.configure(r.termination, core_address=("127.0.0.1", sink_port))
        assert r.access_port is not None
        return r

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def close(self) -> None:
        self.gw.close()
        for port in self.listeners:
            port.stopListening()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_tool("openssl")
    lab = Lab(tmp_path)
    yield lab
    lab.close()


async def _relay_once(lab: Lab, payload: bytes, fp: certs.Fingerprint) -> tuple[bytes, int]:
    """Reserve (TLS server, core connect), echo sink, s_client sends ``payload``."""
    sink, sink_port = lab.sink(echo=True, close_after=len(payload))
    r = lab.gw.reserve(fingerprints=[fp], core_role="connect", stream="1")
    assert r.access_port is not None and r.core_port is None
    assert r.fingerprint == lab.agw.fingerprint()
    lab.gw.configure(r.termination, core_address=("127.0.0.1", sink_port))
    ue = s_client(r.access_port, lab.ue_path)
    ue.send(payload, close=True)
    await ue.ended
    await wait_for(lambda: bool(lab.of(Closed)))
    assert sink.received == payload
    stats = lab.gw.release(r.termination)
    assert stats.bytes_to_core == len(payload) == stats.bytes_to_ue
    assert stats.tls_result == "verified" and stats.fingerprint == fp.value
    assert stats.packets_to_core >= 1
    return bytes(ue.out), ue.rc or 0


@pytest.mark.parametrize("hash_func", ["sha-1", "sha-256", "sha-384", "sha-512"])
@pytest_twisted.ensureDeferred
async def test_matching_certificate_relayed_byte_exact(lab: Lab, hash_func: str) -> None:
    payload = os.urandom(300_000)
    out, rc = await _relay_once(lab, payload, lab.ue.fingerprint(hash_func))
    assert out == payload and rc == 0
    [established] = lab.of(TlsEstablished)
    assert established.fingerprint == lab.ue.fingerprint(hash_func)
    assert not lab.of(TlsFailure) and not lab.of(TcpFailure)


REFUSALS = {
    "wrong-certificate": ("impostor", [], "fingerprint-mismatch"),
    "no-certificate": (None, [], "no-certificate"),
    "tls-1.1": ("ue", ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], "protocol-version"),
    "null-cipher": (
        "ue",
        ["-tls1_2", "-cipher", "NULL-SHA256@SECLEVEL=0"],
        "handshake-failure",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
@pytest_twisted.ensureDeferred
async def test_refused_then_the_real_ue_still_gets_through(lab: Lab, case: str) -> None:
    who, extra, cause = REFUSALS[case]
    sink, sink_port = lab.sink(echo=True, close_after=5)
    r = lab.pinned_relay(sink_port)
    path = {"impostor": lab.bad_path, "ue": lab.ue_path, None: None}[who]
    bad = s_client(r.access_port, path, *extra)
    bad.send(b"EARLY-BYTES-NEVER-RELAYED" * 100, close=True)
    await bad.ended
    await wait_for(lambda: bool(lab.of(TlsFailure)))
    [failure] = lab.of(TlsFailure)
    assert failure.cause == cause, bytes(bad.err)
    assert sink.conns == [] and sink.received == b""
    assert lab.gw.state(r.termination) is State.LISTENING
    # The termination is not consumed: the legitimate UE connects afterwards.
    ue = s_client(r.access_port, lab.ue_path)
    ue.send(b"hello", close=True)
    await ue.ended
    assert bytes(ue.out) == b"hello"
    assert sink.received == b"hello"
    stats = lab.gw.release(r.termination)
    assert stats.failed_attempts == 1 and dict(stats.failures) == {cause: 1}
    assert stats.tls_result == "verified"


@pytest_twisted.ensureDeferred
async def test_second_connection_after_a_verified_one_is_refused(lab: Lab) -> None:
    sink, sink_port = lab.sink()
    r = lab.pinned_relay(sink_port)
    first = s_client(r.access_port, lab.ue_path)
    first.send(b"one")
    await wait_for(lambda: sink.received == b"one")
    second = s_client(r.access_port, lab.ue_path)
    second.send(b"two", close=True)
    await second.ended
    assert second.rc != 0
    assert sink.received == b"one" and len(sink.conns) == 1
    first.send(b"+more", close=True)
    await wait_for(lambda: sink.received == b"one+more")
    first.kill()
    await first.ended


@pytest_twisted.ensureDeferred
async def test_core_leg_connects_from_the_core_address(tmp_path: Path) -> None:
    """The core leg leaves from the configured core address (127.0.0.2 here), its local port
    chosen at connect time (Linux: IP_BIND_ADDRESS_NO_PORT), not by a search at bind()."""
    require_tool("openssl")
    lab = Lab(tmp_path)
    lab.gw.core_ip = "127.0.0.2"
    try:
        sink, sink_port = lab.sink(close_after=2)
        r = lab.pinned_relay(sink_port)
        ue = s_client(r.access_port, lab.ue_path)
        ue.send(b"x")
        await wait_for(lambda: sink.received == b"x")
        peer = sink.conns[0].transport.getPeer()
        assert peer.host == "127.0.0.2" and peer.port > 0
        if sys.platform.startswith("linux"):
            core_socket = lab.gw._sessions[r.termination].core.transport.socket
            assert core_socket.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT) == 1
        ue.send(b"y", close=True)
        await ue.ended
        assert sink.received == b"xy"
    finally:
        lab.close()


@pytest_twisted.ensureDeferred
async def test_core_listen_role_and_early_bytes_held(lab: Lab) -> None:
    """UE bytes sent before the core leg exists are held (not dropped) and relayed in order."""
    r = lab.gw.reserve(fingerprints=[lab.ue.fingerprint()], core_role="listen")
    assert r.access_port is not None and r.core_port is not None
    ue = s_client(r.access_port, lab.ue_path)
    early = os.urandom(50_000)
    ue.send(early)
    await wait_for(lambda: bool(lab.of(TlsEstablished)))
    assert lab.gw.state(r.termination) is State.VERIFIED
    core = SinkFactory(echo=True)
    reactor.connectTCP("127.0.0.1", r.core_port, core)  # type: ignore[attr-defined]
    await wait_for(lambda: core.received == early)
    ue.send(b"late", close=True)
    await wait_for(lambda: core.received == early + b"late")
    await wait_for(lambda: bytes(ue.out) == early + b"late")
    # A second core connection is refused: one per termination.
    assert await threads.deferToThread(_refused_or_closed, r.core_port)
    assert len(core.conns) == 1
    core.conns[0].transport.loseConnection()
    await ue.ended
    stats = lab.gw.release(r.termination)
    assert stats.bytes_to_core == len(early) + 4


@pytest_twisted.ensureDeferred
async def test_agw_as_tls_client_towards_s_server(lab: Lab) -> None:
    openssl = require_tool("openssl")
    ue = spawn(
        [
            openssl,
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            f"{lab.ue_path}.crt",
            "-key",
            f"{lab.ue_path}.key",
            "-naccept",
            "1",
            "-Verify",
            "1",
        ]
    )
    await wait_for(lambda: b"ACCEPT" in ue.out)
    match = re.search(rb"ACCEPT 127\.0\.0\.1:(\d+)", bytes(ue.out))
    assert match is not None
    ue_port = int(match.group(1))
    sink, sink_port = lab.sink()
    r = lab.gw.reserve(
        fingerprints=[lab.ue.fingerprint("sha-384")], tls_role="client", core_role="connect"
    )
    assert r.access_port is None
    lab.gw.configure(
        r.termination,
        ue_address=("127.0.0.1", ue_port),
        core_address=("127.0.0.1", sink_port),
        establish_tls=True,
    )
    await wait_for(lambda: bool(lab.of(TlsEstablished)))
    ue.send(b"from-ue-over-tls\n")
    await wait_for(lambda: sink.received == b"from-ue-over-tls\n")
    sink.conns[0].transport.write(b"from-core-in-clear\n")
    await wait_for(lambda: b"from-core-in-clear\n" in ue.out)
    stats = lab.gw.release(r.termination)
    assert stats.bytes_to_ue == len(b"from-core-in-clear\n")
    ue.kill()
    await ue.ended


@pytest_twisted.ensureDeferred
async def test_agw_as_tls_client_refuses_a_wrong_server(lab: Lab) -> None:
    openssl = require_tool("openssl")
    ue = spawn(
        [openssl, "s_server", "-accept", "127.0.0.1:0", "-cert", f"{lab.bad_path}.crt",
         "-key", f"{lab.bad_path}.key", "-naccept", "1"]
    )  # fmt: skip
    await wait_for(lambda: b"ACCEPT" in ue.out)
    match = re.search(rb"ACCEPT 127\.0\.0\.1:(\d+)", bytes(ue.out))
    assert match is not None
    sink, sink_port = lab.sink()
    r = lab.gw.reserve(fingerprints=[lab.ue.fingerprint()], tls_role="client")
    lab.gw.configure(
        r.termination,
        ue_address=("127.0.0.1", int(match.group(1))),
        core_address=("127.0.0.1", sink_port),
        establish_tls=True,
    )
    await wait_for(lambda: bool(lab.of(TlsFailure)))
    assert lab.of(TlsFailure)[0].cause == "fingerprint-mismatch"
    assert sink.conns == []
    await ue.ended


@pytest_twisted.ensureDeferred
async def test_hold_policy_waits_for_the_fingerprint(lab: Lab) -> None:
    sink, sink_port = lab.sink(echo=True, close_after=4)
    r = lab.gw.reserve(core_role="connect")  # no fingerprint yet: the terminating race
    assert r.access_port is not None
    ue = s_client(r.access_port, lab.ue_path)
    ue.send(b"ping", close=True)
    await wait_for(lambda: _held(lab))
    assert sink.conns == []
    lab.gw.configure(
        r.termination, fingerprints=[lab.ue.fingerprint()], core_address=("127.0.0.1", sink_port)
    )
    await ue.ended
    assert bytes(ue.out) == b"ping" and sink.received == b"ping"


def _refused_or_closed(port: int) -> bool:
    """Nothing serves ``port`` any more: the connection is refused, or (if it landed in the
    accept queue just before the port closed) reset or closed without a byte."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return True
    with sock:
        sock.settimeout(5)
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _held(lab: Lab) -> bool:
    from accessgw.termination import HoldAttempt

    return bool(lab.of(HoldAttempt))


@pytest_twisted.ensureDeferred
async def test_reject_policy_refuses_an_early_handshake(tmp_path: Path) -> None:
    lab = Lab(tmp_path, early_policy="reject")
    try:
        r = lab.gw.reserve(core_role="listen")
        assert r.access_port is not None
        ue = s_client(r.access_port, lab.ue_path)
        ue.send(b"ping", close=True)
        await ue.ended
        await wait_for(lambda: bool(lab.of(TlsFailure)))
        assert lab.of(TlsFailure)[0].cause == "fingerprint-unknown"
    finally:
        lab.close()


@pytest_twisted.ensureDeferred
async def test_establishment_timer_reports_stream_failed(tmp_path: Path) -> None:
    lab = Lab(tmp_path, timers=Timers(establishment=0.5, handshake=0.3))
    try:
        r = lab.gw.reserve(fingerprints=[lab.ue.fingerprint()], core_role="listen")
        assert r.access_port is not None
        assert lab.gw._sessions[r.termination].term.establishment_deadline is None
        lab.gw.configure(r.termination)  # the Modify after the answer starts the timer
        # A silent TCP connection never finishes its handshake.
        silent = socket.create_connection(("127.0.0.1", r.access_port))
        await wait_for(lambda: bool(lab.of(StreamFailed)))
        assert lab.of(TlsFailure)[0].cause == "handshake-timeout"
        assert lab.gw.state(r.termination) is State.FAILED
        silent.settimeout(5)
        assert await threads.deferToThread(silent.recv, 100) == b""  # closed by the AGW
        silent.close()
        assert await threads.deferToThread(_refused_or_closed, r.access_port)
        stats = lab.gw.release(r.termination)
        assert stats.tls_result == "handshake-timeout"
    finally:
        lab.close()


def _pyopenssl_client(
    port: int,
    ident: certs.CertAndKey,
    payload: bytes,
    result: dict[str, Any],
    *,
    lag: float = 0.0,
) -> None:
    """The UE: sends ``payload`` and close_notify, waits ``lag`` s, then reads to the end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(True)
    tls = SSL.Connection(make_context(ident, "client"), sock)
    tls.set_connect_state()
    tls.do_handshake()
    tls.sendall(payload)
    tls.shutdown()  # close_notify: the UE is done sending, still reading
    time.sleep(lag)
    got = bytearray()
    while True:
        if not select.select([sock], [], [], 10)[0]:
            result["timeout"] = True
            break
        try:
            chunk = tls.recv(65536)
        except SSL.WantReadError:
            continue
        except SSL.ZeroReturnError:
            result["clean"] = True
            break
        except SSL.SysCallError:
            result["clean"] = False
            break
        if not chunk:
            break
        got += chunk
    result["got"] = bytes(got)
    sock.close()


@pytest_twisted.ensureDeferred
async def test_half_close_is_propagated_both_ways(lab: Lab) -> None:
    sink, sink_port = lab.sink(stay_open=True)
    r = lab.pinned_relay(sink_port)
    result: dict[str, Any] = {}
    thread = threads.deferToThread(_pyopenssl_client, r.access_port, lab.ue, b"request", result)
    await wait_for(lambda: bool(sink.conns) and sink.conns[0].data == b"request")
    # The UE's close_notify became a TCP half-close towards the core...
    await wait_for(lambda: sink.conns[0].eof)
    # ...and the core can still answer before closing.
    sink.conns[0].transport.write(b"response")
    sink.conns[0].transport.loseConnection()
    await thread
    assert result == {"got": b"response", "clean": True}
    await wait_for(lambda: bool(lab.of(Closed)))
    assert lab.of(Closed)[0].clean


@pytest_twisted.ensureDeferred
async def test_half_close_is_propagated_under_backpressure(tmp_path: Path) -> None:
    """End of data from either side reaches the other while the relay is pushed back: the
    UE's close_notify comes in the same read as data that fills the core leg's buffer (small
    reads make every record do that), and the UE reads late when the core's FIN comes. Each
    half-close waits for the bytes before it, and is not lost."""
    require_tool("openssl")
    lab = Lab(tmp_path, read_size=4096)
    size = 1024 * 1024
    try:
        sink, sink_port = lab.sink(stay_open=True, keep=False, slow=0.002)
        r = lab.pinned_relay(sink_port)
        result: dict[str, Any] = {}
        thread = threads.deferToThread(
            functools.partial(_pyopenssl_client, lag=1.0),
            r.access_port,
            lab.ue,
            b"u" * size,
            result,
        )
        await wait_for(lambda: bool(sink.conns))
        await wait_for(lambda: sink.conns[0].eof, timeout=20)
        assert sink.conns[0].count == size
        sink.slow = None
        sink.conns[0].transport.write(b"c" * size)
        sink.conns[0].transport.loseWriteConnection()
        await thread
        assert result == {"got": b"c" * size, "clean": True}
        await wait_for(lambda: bool(lab.of(Closed)))
        [closed] = lab.of(Closed)
        assert closed.clean
        assert closed.stats.bytes_to_core == size == closed.stats.bytes_to_ue
    finally:
        lab.close()


@pytest_twisted.ensureDeferred
async def test_core_reset_closes_the_access_leg_and_is_reported(lab: Lab) -> None:
    sink, sink_port = lab.sink()
    r = lab.pinned_relay(sink_port)
    ue = s_client(r.access_port, lab.ue_path)
    ue.send(b"x")
    await wait_for(lambda: sink.received == b"x")
    sink.conns[0].transport.abortConnection()
    await ue.ended
    await wait_for(lambda: bool(lab.of(Closed)))
    [failure] = lab.of(TcpFailure)
    assert failure.side == "core"
    assert not lab.of(Closed)[0].clean


@pytest_twisted.ensureDeferred
async def test_idle_timeout_closes_both_legs(tmp_path: Path) -> None:
    lab = Lab(tmp_path, timers=Timers(idle=0.3))
    try:
        sink, sink_port = lab.sink()
        r = lab.pinned_relay(sink_port)
        ue = s_client(r.access_port, lab.ue_path)
        ue.send(b"x")
        await ue.ended
        [closed] = lab.of(Closed)
        assert closed.reason == "idle-timeout"
        await wait_for(lambda: sink.conns[0].lost is not None)
    finally:
        lab.close()


@pytest_twisted.ensureDeferred
async def test_port_range_exhaustion_and_release(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # an ephemeral port the kernel just gave us
    port = probe.getsockname()[1]
    probe.close()
    lab = Lab(tmp_path, ports=PortRange(port, port))
    try:
        first = lab.gw.reserve(tls_role="server", core_role="connect")
        assert first.access_port == port
        with pytest.raises(PortsExhausted) as info:
            lab.gw.reserve(tls_role="server", core_role="connect")
        assert to_iq_error(info.value).code == 510  # type: ignore[attr-defined]
        lab.gw.release(first.termination)
        await wait_for(lambda: _can_bind(port))  # the listening socket closes on the next turn
        again = lab.gw.reserve(tls_role="server", core_role="connect")
        assert again.access_port == port
        with pytest.raises(UnknownTermination):
            lab.gw.release(first.termination)
        with pytest.raises(InvalidRequest):
            lab.gw.configure(again.termination, establish_tls=True)
    finally:
        lab.close()


@pytest_twisted.ensureDeferred
async def test_keylog_written(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    lab = Lab(tmp_path, keylog=keylog)
    try:
        await _relay_once(lab, b"secret", lab.ue.fingerprint())
        assert b"CLIENT_TRAFFIC_SECRET_0" in keylog.read_bytes()
    finally:
        lab.close()


def _buffered(lab: Lab) -> int:
    total = 0
    for session in lab.gw._sessions.values():
        for leg in (session.access, session.core):
            if leg is not None and leg.transport is not None:
                t = leg.transport
                total += len(t.dataBuffer) - t.offset + t._tempDataLen
        if session.access is not None:
            total += sum(len(c) for c in session.access._held)
    return total


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_100_mb_through_a_slow_consumer_with_bounded_memory(lab: Lab) -> None:
    size = 100 * 1024 * 1024
    sink, sink_port = lab.sink(slow=0.001, keep=False)  # counts, does not keep the bytes
    r = lab.pinned_relay(sink_port)
    rss_before = _rss_kib()
    peak = {"buffered": 0}

    def sample() -> None:
        peak["buffered"] = max(peak["buffered"], _buffered(lab))

    from twisted.internet.task import LoopingCall

    sampler = LoopingCall(sample)
    sampler.start(0.005)
    openssl = require_tool("openssl")
    feeder = spawn(
        [
            "/bin/sh",
            "-c",
            f"head -c {size} /dev/zero | {openssl} s_client -connect 127.0.0.1:{r.access_port}"
            f" -cert {lab.ue_path}.crt -key {lab.ue_path}.key -quiet",
        ]
    )
    await wait_for(lambda: bool(sink.conns))
    await wait_for(lambda: sink.conns[0].count >= size, timeout=300)
    sampler.stop()
    rss_after = _rss_kib()
    stats = lab.gw.release(r.termination)
    assert sink.conns[0].count == size == stats.bytes_to_core
    # Bounded: a few read sizes in flight, nowhere near the 100 MB carried.
    assert peak["buffered"] < 4 * 1024 * 1024, peak
    assert rss_after - rss_before < 40 * 1024, (rss_before, rss_after)
    feeder.kill()
    await feeder.ended
