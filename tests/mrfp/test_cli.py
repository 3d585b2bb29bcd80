"""``e2ae mrfp`` as a real process: it registers with an MRFC (an MpController in the test) over
pinned mutual TLS, takes streams, reports their events, never logs a key, stops on SIGTERM."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol, reactor, task

import certs
from iq.config import IqTlsConfig
from mp.link import MpController
from mp.profile import Endpoint, JoinRequest, LeaveRequest, MpEvent, PskConfig
from tests.conftest import REPO, e2ae_command, run_e2ae

NOW = datetime.datetime.now(datetime.UTC)
CONF = "sip:conf7@lab.example"


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


def test_mp_without_tls_or_opt_in_is_refused() -> None:
    result = run_e2ae(["mrfp", "--mrfc", "127.0.0.1:2945", "--media-ip", "127.0.0.1"])
    assert result.returncode == 2
    assert b"--mp-tls" in result.stderr


@pytest_twisted.ensureDeferred
async def test_the_process_registers_takes_a_stream_and_stops(tmp_path: Path) -> None:
    mrfc_id = certs.generate("mrfc", now=NOW)
    mrfp_id = certs.generate("mrfp", now=NOW)
    certs.write(mrfp_id, tmp_path)
    events: list[MpEvent] = []
    ctrl = MpController(
        "127.0.0.1",
        0,
        tls=IqTlsConfig(mrfc_id, (mrfp_id.fingerprint(),)),
        reactor=reactor,
        on_event=events.append,
    )
    port = ctrl.listen()
    out = (tmp_path / "mrfp.out").open("wb")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [
            *e2ae_command(),
            "mrfp",
            "--mrfc",
            f"127.0.0.1:{port}",
            "--media-ip",
            "127.0.0.1",
            "--mp-tls",
            str(tmp_path / "mrfp"),
            "--mp-peer",
            mrfc_id.fingerprint().value,
            "--log-level",
            "debug",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    key = os.urandom(16)
    try:
        gateway = await with_timeout(ctrl.when_gateway(), 20.0)
        # the MRFP takes requests once it has the reply to its ServiceChange
        log_file = tmp_path / "mrfp.out"
        await wait_for(lambda: b"registered with" in log_file.read_bytes())
        plain = await ctrl.join(
            gateway,
            JoinRequest(
                CONF,
                None,
                "sip:carol@lab.example",
                "msrp",
                "passive",
                "plain",
                remote_path=("msrp://127.0.0.1:7000/uecarol;tcp",),
            ),
        )
        keyed = await ctrl.join(
            gateway,
            JoinRequest(
                CONF,
                plain.context,
                "sip:alice@lab.example",
                "msrp",
                "passive",
                "tls-psk",
                "server",
                PskConfig(key, b"e2ae-alice", ("PSK-AES128-GCM-SHA256",)),
                remote_path=("msrp://127.0.0.1:7001/uealice;tcp",),
            ),
        )
        assert keyed.context == plain.context
        assert plain.local == Endpoint("127.0.0.1", plain.local.port) and plain.local.port
        client = protocol.ClientCreator(reactor, protocol.Protocol)
        conn = await client.connectTCP("127.0.0.1", plain.local.port)
        await wait_for(lambda: [e.kind for e in events] == ["tcp-established"])
        assert events[0].termination == plain.termination
        reply = await ctrl.leave(gateway, LeaveRequest(plain.context, plain.termination))
        assert reply.statistics.octets_in == 0
        conn.transport.loseConnection()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await wait_exit(proc)
        await ctrl.stop()
        out.close()
    text = (tmp_path / "mrfp.out").read_bytes()
    assert code == 0, text.decode(errors="replace")
    assert b"registered with" in text
    assert key.hex().encode() not in text and key.hex().upper().encode() not in text
    assert b"<redacted>" in text or b"e2aepsk/key" not in text


async def with_timeout(d: defer.Deferred[str], seconds: float) -> str:
    d.addTimeout(seconds, reactor)
    return await d


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    waited = 0.0
    while proc.poll() is None and waited < timeout:
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    if proc.poll() is None:
        proc.kill()
    return proc.wait()
