"""The P-CSCF's metrics (docs/metrics.md), as a scraper sees them: a real e2ae call from a UE
through a P-CSCF and an AGW built with ``metrics`` (each its own registry, one process), then
``/metrics`` of both scraped over HTTP; and ``e2ae pcscf --metrics`` as a real process, and
without it no port beyond SIP and Iq."""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

import certs
from accessgw.config import AgwConfig
from accessgw.service import build as build_agw
from lab.core import CoreStub
from lab.uesim import UeSim
from pcscf.config import PcscfConfig
from pcscf.service import build as build_pcscf
from tests.agw_helpers import wait_for
from tests.conftest import REPO

MID = "<agw-metrics.e2ae.lab>"
DOMAIN = "lab.example"
NOW = datetime.datetime.now(datetime.UTC)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(address: tuple[str, int]) -> str:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from the text exposition format."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def value(found: dict[str, float], name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels (0 if absent)."""
    for key, number in found.items():
        metric, _, rest = key.partition("{")
        got = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and got == labels:
            return number
    return 0.0


def total(found: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include these."""
    result = 0.0
    for key, number in found.items():
        metric, _, rest = key.partition("{")
        got = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and labels.items() <= got.items():
            result += number
    return result


@pytest_twisted.ensureDeferred
async def test_a_call_through_pcscf_and_agw_moves_their_counters(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    core = CoreStub(reactor, domain=DOMAIN, echo=True)
    core.listen()
    cleanup.append(core.stop)
    pcscf = build_pcscf(
        PcscfConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=("127.0.0.1", core.port),
            iq=("127.0.0.1", 0),
            iq_insecure=True,
            iq_allow=(f"{MID}@127.0.0.1",),
        ),
        reactor=reactor,
        metrics=("127.0.0.1", 0),
    )
    pcscf.startService()
    cleanup.append(pcscf.stopService)
    agw_cert, agw_key = certs.write(certs.generate("agw", now=NOW), tmp_path)
    agw = build_agw(
        AgwConfig(
            alg=pcscf.iq,
            access_ip="127.0.0.1",
            core_ip="127.0.0.1",
            cert=agw_cert,
            key=agw_key,
            mid=MID,
            malloc_tuning=False,
        ),
        iq_tls=None,
        reactor=reactor,
        metrics=("127.0.0.1", 0),
    )
    agw.startService()
    cleanup.append(agw.stopService)
    await agw.when_registered().addTimeout(10, reactor)
    pcscf_at, agw_at = pcscf.metrics_address, agw.metrics_address
    assert pcscf_at is not None and agw_at is not None
    assert 0 not in (pcscf_at[1], agw_at[1]) and pcscf_at != agw_at

    alice = UeSim(reactor, "alice", certs.generate("alice", now=NOW), pcscf.gm, domain=DOMAIN)
    await alice.start()
    cleanup.append(alice.stop)
    assert (await alice.register()).status == 200
    before = samples(await threads.deferToThread(scrape, pcscf_at))
    assert value(before, "e2ae_pcscf_registrations") == 1

    call = await alice.call(core.peer_uri)
    await call.msrp.send_message(b"Hello plain core.")
    await call.msrp.wait_messages(1).addTimeout(5, reactor)

    during = samples(await threads.deferToThread(scrape, pcscf_at))
    assert value(during, "e2ae_pcscf_e2ae_calls") == 1
    # the REGISTER's and the INVITE's server transactions, held until Timer J/L; the INVITE's
    # client transaction (Timer M) and the REGISTER's (Timer K)
    held = pcscf.sip.core
    assert value(during, "e2ae_pcscf_sip_transactions", kind="server") == len(held.server_txns)
    assert value(during, "e2ae_pcscf_sip_transactions", kind="client") == len(held.client_txns)
    assert value(during, "e2ae_pcscf_sip_transactions", kind="server") >= 2
    assert value(during, "e2ae_pcscf_sip_transactions", kind="client") >= 1
    assert value(during, "e2ae_pcscf_sip_responses_total", code="200", origin="relayed") >= 2
    assert value(during, "e2ae_pcscf_iq_transactions_total", command="reserve", result="ok") == 1
    assert value(during, "e2ae_pcscf_iq_transactions_total", command="configure", result="ok") >= 1
    assert value(during, "e2ae_pcscf_iq_transaction_seconds_count", command="reserve") == 1
    agw_during = samples(await threads.deferToThread(scrape, agw_at))
    streams = value(agw_during, "e2ae_agw_terminations")
    assert streams >= 1
    assert value(agw_during, "e2ae_agw_tls_handshakes_total", result="verified") == streams
    assert value(agw_during, "e2ae_agw_relayed_bytes_total", direction="to_core") > 0
    assert value(agw_during, "e2ae_agw_relayed_bytes_total", direction="to_ue") > 0
    assert value(agw_during, "e2ae_agw_iq_transactions_total", command="reserve", result="ok") == 1

    assert (await alice.hangup(call)).status == 200
    await wait_for(lambda: not agw.gateway.terminations)
    await wait_for(lambda: not pcscf.e2ae.in_flight)
    after = samples(await threads.deferToThread(scrape, pcscf_at))
    agw_after = samples(await threads.deferToThread(scrape, agw_at))
    assert value(after, "e2ae_pcscf_calls_total", outcome="answered", reason="bye") == 1
    assert value(after, "e2ae_pcscf_e2ae_calls") == 0
    assert value(after, "e2ae_pcscf_iq_transactions_total", command="release", result="ok") == 1
    assert total(after, "e2ae_pcscf_sip_responses_total", code="200") > total(
        during, "e2ae_pcscf_sip_responses_total", code="200"
    )  # the BYE's
    assert value(agw_after, "e2ae_agw_terminations") == 0
    assert value(agw_after, "e2ae_agw_iq_transactions_total", command="release", result="ok") == 1
    relayed = value(agw_after, "e2ae_agw_relayed_bytes_total", direction="to_core")
    assert relayed >= value(agw_during, "e2ae_agw_relayed_bytes_total", direction="to_core")
    # one registry per service: neither page has the other's metrics
    assert not any(k.startswith("e2ae_agw_") for k in after)
    assert not any(k.startswith("e2ae_pcscf_") for k in agw_after)

    await pcscf.stopService()
    await agw.stopService()
    with pytest.raises(urllib.error.URLError):
        await threads.deferToThread(scrape, pcscf_at)
    with pytest.raises(urllib.error.URLError):
        await threads.deferToThread(scrape, agw_at)


@pytest_twisted.ensureDeferred
async def test_built_without_metrics_the_pcscf_serves_none(monkeypatch: Any) -> None:
    from e2ae.metrics import MetricsServer

    opened: list[Any] = []
    monkeypatch.setattr(MetricsServer, "listen", lambda *a: opened.append(a))
    pcscf = build_pcscf(
        PcscfConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=("127.0.0.1", 9),
            iq=("127.0.0.1", 0),
            iq_insecure=True,
            iq_allow=(f"{MID}@127.0.0.1",),
        ),
        reactor=reactor,
    )
    pcscf.startService()
    try:
        assert pcscf.metrics_address is None and pcscf.sip.metrics is None
        assert pcscf.controller.observer is None and opened == []
    finally:
        await pcscf.stopService()


# ---------------------------------------------------------------------- the command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (Linux: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _pcscf_command(*extra: str) -> subprocess.Popen[str]:
    args = ["pcscf", "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0", "--next-hop", "127.0.0.1:9"]
    args += ["--iq", "127.0.0.1:0", "--iq-insecure", "--iq-allow", f"{MID}@127.0.0.1", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "lab.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ports_of(proc: subprocess.Popen[str]) -> list[int]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("pcscf gm=127.0.0.1:"), line + (
        proc.stderr.read() if proc.stderr else ""
    )
    return [int(field.rsplit(":", 1)[1]) for field in line.split()[1:]]


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_pcscf_command_serves_metrics_only_when_asked() -> None:
    port = _free_port()
    proc = _pcscf_command("--metrics", f"127.0.0.1:{port}")
    try:
        gm, core, iq = _ports_of(proc)
        page = scrape(("127.0.0.1", port))
        assert "# TYPE e2ae_pcscf_calls_total counter" in page
        assert "e2ae_pcscf_registrations 0.0" in page
        assert listening_tcp_ports(proc.pid) == {gm, core, iq, port}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert f"P-CSCF metrics served on http://127.0.0.1:{port}/metrics" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = _pcscf_command()
    try:
        ports = _ports_of(proc)
        assert listening_tcp_ports(proc.pid) == set(ports)  # SIP (gm, core) and Iq only
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        assert "metrics served" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pcscf_command_refuses_a_bad_metrics_address() -> None:
    args = ["pcscf", "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0", "--next-hop", "127.0.0.1:9"]
    args += ["--iq", "127.0.0.1:0", "--iq-insecure", "--iq-allow", f"{MID}@127.0.0.1"]
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli", *args, "--metrics", "localhost:9100"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--metrics: 'localhost' is not an IP address" in done.stderr
