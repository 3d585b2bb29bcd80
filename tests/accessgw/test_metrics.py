"""The AGW's metrics (docs/metrics.md): TLS outcomes by result, relayed bytes read from the
gateway at each scrape (released terminations included), terminations held; and
``e2ae accessgw`` with ``metrics`` in its TOML file, as a real process."""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor, threads

from accessgw.config import AgwConfig
from accessgw.errors import LocalAccessGwError
from accessgw.gateway import AccessGateway
from accessgw.metrics import AgwMetrics
from accessgw.termination import TlsEstablished, TlsFailure
from e2ae.metrics import new_registry
from iq.link import GatewayStatus, IqController
from tests.agw_helpers import Proc, identity, wait_for
from tests.conftest import REPO, plain_iq

MID = "<agw-metrics.e2ae.lab>"


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_tls_outcomes_are_counted_by_result(tmp_path: Path) -> None:
    pair, _ = identity("agw", tmp_path)
    gateway = AccessGateway("127.0.0.1", "127.0.0.1", pair, reactor=reactor)
    registry = new_registry()
    counters = AgwMetrics(registry, gateway)
    counters.event(TlsEstablished("agw/1", 1, pair.fingerprint("sha-256"), "127.0.0.1:1"))
    for cause in (
        "fingerprint-mismatch",
        "handshake-timeout",
        "no-certificate",
        "handshake-failure",
    ):
        counters.event(TlsFailure("agw/1", 2, cause, "127.0.0.1:2"))  # type: ignore[arg-type]
    counted = {
        result: _sample(registry, "e2ae_agw_tls_handshakes_total", result=result)
        for result in ("verified", "fingerprint_mismatch", "timeout", "failed")
    }
    assert counted == {"verified": 1, "fingerprint_mismatch": 1, "timeout": 1, "failed": 2}


def test_relayed_bytes_and_terminations_are_read_when_scraped(tmp_path: Path) -> None:
    pair, _ = identity("agw", tmp_path)
    gateway = AccessGateway("127.0.0.1", "127.0.0.1", pair, reactor=reactor)
    registry = new_registry()
    AgwMetrics(registry, gateway)
    assert _sample(registry, "e2ae_agw_terminations") == 0
    first = gateway.reserve(stream="1")
    second = gateway.reserve(stream="2")
    try:
        assert _sample(registry, "e2ae_agw_terminations") == 2
        sessions = gateway._sessions
        sessions[first.termination].term.relayed("to_core", 100, 0.0)
        sessions[second.termination].term.relayed("to_ue", 7, 0.0)
        assert _sample(registry, "e2ae_agw_relayed_bytes_total", direction="to_core") == 100
        gateway.release(first.termination)  # its bytes stay counted
        sessions[second.termination].term.relayed("to_core", 1, 0.0)
        assert _sample(registry, "e2ae_agw_relayed_bytes_total", direction="to_core") == 101
        assert _sample(registry, "e2ae_agw_relayed_bytes_total", direction="to_ue") == 7
        assert _sample(registry, "e2ae_agw_terminations") == 1
    finally:
        gateway.close()
    assert _sample(registry, "e2ae_agw_terminations") == 0
    assert _sample(registry, "e2ae_agw_relayed_bytes_total", direction="to_core") == 101


def test_metrics_in_the_config_file(tmp_path: Path) -> None:
    base = {"alg": "127.0.0.1:2944", "access_ip": "127.0.0.1", "core_ip": "127.0.0.1"}
    base |= {"cert": "a.crt", "key": "a.key"}
    assert AgwConfig.from_values(dict(base)).metrics is None
    config = AgwConfig.from_values({**base, "metrics": "0.0.0.0:9102"})
    assert config.metrics == ("0.0.0.0", 9102)
    with pytest.raises(LocalAccessGwError, match="metrics: expected HOST:PORT"):
        AgwConfig.from_values({**base, "metrics": "9102"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


@pytest_twisted.ensureDeferred
async def test_accessgw_command_serves_the_metrics_of_its_config_file(tmp_path: Path) -> None:
    identity("agw", tmp_path)
    events: list[Any] = []
    ctrl = IqController(**plain_iq(MID))
    ctrl.subscribe(events.append)
    iq_port = ctrl.listen(0, "127.0.0.1")
    metrics = _free_port()
    config = tmp_path / "agw.toml"
    config.write_text(
        "[accessgw]\n"
        f'alg = "127.0.0.1:{iq_port.getHost().port}"\n'
        'access_ip = "127.0.0.1"\ncore_ip = "127.0.0.1"\n'
        f'cert = "agw.crt"\nkey = "agw.key"\nmetrics = "127.0.0.1:{metrics}"\n'
    )
    proc = Proc()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    args = ["accessgw", "--config", str(config), "--mid", MID, "--iq-insecure"]
    reactor.spawnProcess(  # type: ignore[attr-defined]
        proc,
        sys.executable,
        [sys.executable, "-m", "lab.cli", *args, "--no-malloc-tuning"],
        env=env,
    )
    try:
        await wait_for(
            lambda: (
                any(isinstance(e, GatewayStatus) and e.in_service for e in events)
                or proc.rc is not None
            )
        )
        assert proc.rc is None, bytes(proc.err)
        page = await threads.deferToThread(_scrape, metrics)
        assert "e2ae_agw_terminations 0.0" in page
        assert 'e2ae_agw_relayed_bytes_total{direction="to_core"} 0.0' in page
        assert 'e2ae_agw_tls_handshakes_total{result="verified"} 0.0' in page
        assert (
            f"AGW metrics served on http://127.0.0.1:{metrics}/metrics" in bytes(proc.err).decode()
        )
        assert proc.transport is not None
        proc.transport.signalProcess("TERM")
        assert await proc.ended == 0, bytes(proc.err)
    finally:
        proc.kill()
        await defer.maybeDeferred(iq_port.stopListening)
        ctrl.stop()
