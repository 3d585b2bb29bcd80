"""``e2ae accessgw`` as a real process: registers with a test ALG over Iq, reserve -> TLS ->
relay -> release, with Notify events and statistics."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from iq import profile
from iq.errors import RequestFailed
from iq.link import GatewayStatus, IqController, IqNotification
from tests.agw_helpers import Proc, SinkFactory, identity, s_client, wait_for
from tests.conftest import REPO, plain_iq, run_e2ae

MID = "<agw-test.e2ae.lab>"


def _spawn_agw(args: list[str]) -> Proc:
    proc = Proc()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    reactor.spawnProcess(  # type: ignore[attr-defined]
        proc, sys.executable, [sys.executable, "-m", "lab.cli", "accessgw", *args], env=env
    )
    return proc


def _one_msrp_stream(call_id: str, ue: Any) -> profile.ReserveRequest:
    """A Reserve of one MSRP stream, the UE's certificate the one to pin."""
    return profile.ReserveRequest(
        call_id=call_id,
        streams=(
            profile.StreamReservation(
                stream=1,
                media="message",
                access_setup="passive",
                core_setup="active",
                ue_fingerprints=(ue.fingerprint("sha-384"),),
            ),
        ),
    )


@pytest.mark.peer
@pytest_twisted.ensureDeferred
async def test_service_registers_reserves_relays_and_releases(tmp_path: Path) -> None:
    agw, _ = identity("agw", tmp_path)
    ue, ue_path = identity("ue", tmp_path)
    _, bad_path = identity("impostor", tmp_path)
    events: list[Any] = []
    ctrl = IqController(**plain_iq(MID))
    ctrl.subscribe(events.append)
    iq_port = ctrl.listen(0, "127.0.0.1")
    sink = SinkFactory(echo=True, close_after=5)
    sink_port = reactor.listenTCP(0, sink, interface="127.0.0.1")  # type: ignore[attr-defined]
    config = tmp_path / "agw.toml"
    config.write_text(
        "[accessgw]\n"
        f'alg = "127.0.0.1:{iq_port.getHost().port}"\n'
        'access_ip = "127.0.0.1"\ncore_ip = "127.0.0.1"\n'
        'cert = "agw.crt"\nkey = "agw.key"\n'
        'keylog = "keys.log"\ntls_establishment_timeout = 20\n'
    )
    proc = _spawn_agw(["--config", str(config), "--mid", MID, "--iq-insecure"])
    try:
        await wait_for(
            lambda: (
                any(isinstance(e, GatewayStatus) and e.in_service for e in events)
                or proc.rc is not None
            )
        )
        assert proc.rc is None, bytes(proc.err)
        reply = await ctrl.reserve(MID, _one_msrp_stream("call-1@test", ue))
        [stream] = reply.streams
        assert stream.agw_fingerprint == agw.fingerprint()
        assert stream.access_setup == "passive" and stream.core_setup == "active"
        await ctrl.configure(
            MID,
            profile.ConfigureRequest(
                reply.context,
                (
                    profile.StreamConfiguration(
                        stream=1,
                        media="message",
                        access_termination="",
                        core_termination=stream.core_termination,
                        core_address=profile.Endpoint("127.0.0.1", sink_port.getHost().port),
                    ),
                ),
            ),
        )
        # An impostor first: refused and reported, the stream stays usable.
        bad = s_client(stream.access.port, bad_path)
        bad.send(b"nope", close=True)
        await bad.ended
        ue_client = s_client(stream.access.port, ue_path)
        ue_client.send(b"hello", close=True)
        await ue_client.ended
        assert bytes(ue_client.out) == b"hello" and sink.received == b"hello"
        await wait_for(
            lambda: any(
                isinstance(e, IqNotification) and e.event.kind == "connection-closed"
                for e in events
            )
        )
        notes = [e.event for e in events if isinstance(e, IqNotification)]
        kinds = [n.kind for n in notes]
        assert kinds[:2] == ["tls-failure", "tls-established"], kinds
        assert notes[0].cause == "fingerprint-mismatch"
        assert all(e.call_id == "call-1@test" for e in events if isinstance(e, IqNotification))
        released = await ctrl.release(MID, profile.ReleaseRequest(reply.context))
        stats = {s.termination: s for s in released.statistics}
        acc = stats[stream.access_termination]
        core = stats[stream.core_termination]
        assert acc.tls == "established"
        assert acc.octets_received == 5 == acc.octets_sent
        assert core.octets_sent == 5 == core.octets_received
        assert b"CLIENT_TRAFFIC_SECRET_0" in (tmp_path / "keys.log").read_bytes()
        # Released: the context is gone.
        with pytest.raises(RequestFailed):
            await ctrl.release(MID, profile.ReleaseRequest(reply.context))
        # One left reserved: the process says so when told to stop.
        await ctrl.reserve(MID, _one_msrp_stream("call-2@test", ue))
        assert proc.transport is not None
        proc.transport.signalProcess("TERM")
        await proc.ended
        # The gateway counts a reserved stream (its access and core pair) once.
        assert "e2ae accessgw: stopping; terminations held=1\n" in proc.out.decode()
    finally:
        if proc.rc is None and proc.transport is not None:
            proc.transport.signalProcess("TERM")
        await proc.ended
        await defer.maybeDeferred(iq_port.stopListening)
        await defer.maybeDeferred(sink_port.stopListening)
        ctrl.stop()


def test_cli_reports_missing_settings() -> None:
    result = run_e2ae(["accessgw", "--access-ip", "127.0.0.1"])
    assert result.returncode == 2
    assert b"--alg" in result.stderr and b"--cert" in result.stderr


def test_cli_rejects_a_bad_port_range(tmp_path: Path) -> None:
    identity("agw", tmp_path)
    result = run_e2ae(
        [
            "accessgw",
            "--alg", "127.0.0.1:2944",
            "--access-ip", "127.0.0.1",
            "--core-ip", "127.0.0.1",
            "--cert", str(tmp_path / "agw.crt"),
            "--key", str(tmp_path / "agw.key"),
            "--ports", "5000-4000",
        ]
    )  # fmt: skip
    assert result.returncode == 2
    assert b"port range" in result.stderr
