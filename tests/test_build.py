"""The P-CSCF and the AGW as Twisted services made by ``pcscf.service.build`` and
``accessgw.service.build``, on 127.0.0.1 port 0: once started they listen on the ports they
report, once stopped every listener and Iq link is closed. And the commands (``e2ae pcscf``,
``e2ae accessgw``, ``e2ae run``, ``e2ae demo``) put the elements together with those two
functions and no other way."""

from __future__ import annotations

import ast
import datetime
import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor, task
from twisted.internet.protocol import ClientCreator, Protocol

import certs
from accessgw.config import AgwConfig
from accessgw.service import AgwService
from accessgw.service import build as build_agw
from iq import profile
from iq.config import IqTlsConfig
from iq.link import GatewayStatus, IqAgent, IqController
from pcscf.config import PcscfConfig
from pcscf.service import PcscfService
from pcscf.service import build as build_pcscf
from tests.agw_helpers import Proc, wait_for
from tests.conftest import REPO, plain_iq

MID = "<agw-build.e2ae.lab>"
ANY_PORT = ("127.0.0.1", 0)


def _pcscf_config(**kw: Any) -> PcscfConfig:
    values: dict[str, Any] = {
        "gm": ANY_PORT,
        "core": ANY_PORT,
        "next_hop": ("127.0.0.1", 9),
        "iq": ANY_PORT,
        "iq_insecure": True,
        "iq_allow": (f"{MID}@127.0.0.1",),
    }
    values.update(kw)
    return PcscfConfig(**values)


def _agw_config(tmp_path: Path, iq_port: int) -> AgwConfig:
    pair = certs.generate("agw", now=datetime.datetime.now(datetime.UTC))
    cert, key = certs.write(pair, tmp_path, force=True)
    return AgwConfig(
        alg=("127.0.0.1", iq_port),
        access_ip="127.0.0.1",
        core_ip="127.0.0.1",
        cert=cert,
        key=key,
        mid=MID,
        malloc_tuning=False,
    )


async def _connects(port: int) -> bool:
    """A TCP connection to 127.0.0.1:port is accepted (True) or refused (False)."""
    try:
        proto = await ClientCreator(reactor, Protocol).connectTCP("127.0.0.1", port, timeout=5)
    except error.ConnectionRefusedError:
        return False
    assert proto.transport is not None
    proto.transport.loseConnection()
    return True


def _udp_bound(port: int) -> bool:
    """Someone holds UDP 127.0.0.1:port (binding it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


async def _turn() -> None:
    """One more reactor turn: a port closes its socket in the turn after stopListening."""
    await task.deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the P-CSCF


@pytest_twisted.ensureDeferred
async def test_pcscf_service_listens_on_port_0_and_stop_closes_listeners_and_links() -> None:
    pcscf = build_pcscf(_pcscf_config())
    assert isinstance(pcscf, PcscfService) and not pcscf.running
    assert (pcscf.gm[1], pcscf.core[1], pcscf.iq[1]) == (0, 0, 0)  # nothing bound yet
    pcscf.startService()
    agent = IqAgent(None, "127.0.0.1", pcscf.iq[1], mid=MID, backoff_initial=30.0)
    try:
        ports = [pcscf.gm[1], pcscf.core[1], pcscf.iq[1]]
        assert pcscf.running and 0 not in ports and len(set(ports)) == 3
        for port in ports:
            assert await _connects(port), port
        assert _udp_bound(pcscf.gm[1]) and _udp_bound(pcscf.core[1])
        agent.start()
        await agent.when_registered().addTimeout(10, reactor)
        assert pcscf.controller.gateways_in_service() == [MID]

        await pcscf.stopService()
        assert not pcscf.running
        await wait_for(lambda: not agent.registered)  # the Iq link is closed
        await _turn()
        for port in ports:
            assert not await _connects(port), port
        assert not _udp_bound(pcscf.gm[1]) and not _udp_bound(pcscf.core[1])
        assert [pcscf.gm[1], pcscf.core[1], pcscf.iq[1]] == ports  # still readable
    finally:
        await agent.stop()
        if pcscf.running:
            await pcscf.stopService()


@pytest_twisted.ensureDeferred
async def test_pcscf_service_that_cannot_listen_leaves_nothing_open() -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        pcscf = build_pcscf(_pcscf_config(iq=("127.0.0.1", busy.getsockname()[1])))
        with pytest.raises(error.CannotListenError):
            pcscf.startService()
        assert not pcscf.running
        await _turn()
        for port in (pcscf.gm[1], pcscf.core[1]):
            assert port != 0
            assert not await _connects(port) and not _udp_bound(port)
    finally:
        busy.close()


# ---------------------------------------------------------------------- the AGW


@pytest_twisted.ensureDeferred
async def test_agw_service_registers_and_stop_closes_its_link_and_terminations(
    tmp_path: Path,
) -> None:
    """The AGW listens on no port of its own: a reservation binds an access and a core port.
    Stopping releases them and deregisters (ServiceChange Forced) before closing the link."""
    events: list[Any] = []
    ctrl = IqController(**plain_iq(MID))
    ctrl.subscribe(events.append)
    iq_port = ctrl.listen(0, "127.0.0.1")
    agw = build_agw(_agw_config(tmp_path, iq_port.getHost().port), iq_tls=None)
    assert isinstance(agw, AgwService) and not agw.running
    agw.startService()
    try:
        assert agw.running
        await agw.when_registered().addTimeout(10, reactor)
        assert ctrl.gateways_in_service() == [MID]
        reply = await ctrl.reserve(
            MID,
            profile.ReserveRequest(
                call_id="build@test",
                streams=(
                    profile.StreamReservation(
                        stream=1, media="message", access_setup="passive", core_setup="passive"
                    ),
                ),
            ),
        )
        [stream] = reply.streams
        ports = [stream.access.port, stream.core.port]
        for port in ports:
            assert await _connects(port), port

        await agw.stopService()
        assert not agw.running
        await wait_for(
            lambda: any(isinstance(e, GatewayStatus) and not e.in_service for e in events)
        )
        assert ctrl.gateways_in_service() == [] and not agw.agent.registered
        assert agw.gateway.terminations == []
        await _turn()
        for port in ports:
            assert not await _connects(port), port
        await task.deferLater(reactor, 0.3, lambda: None)  # type: ignore[arg-type]
        assert ctrl.gateways_in_service() == []  # and it does not come back
    finally:
        if agw.running:
            await agw.stopService()
        await defer.maybeDeferred(iq_port.stopListening)
        ctrl.stop()


@pytest_twisted.ensureDeferred
async def test_built_agw_registers_with_built_pcscf_over_mutual_tls(tmp_path: Path) -> None:
    """The pair as the demo and ``e2ae run`` wire it: each pins the other's Iq certificate."""
    now = datetime.datetime.now(datetime.UTC)
    alg, gw = certs.generate("pcscf-iq", now=now), certs.generate("agw-iq", now=now)
    alg_files = certs.write(alg, tmp_path)
    pcscf = build_pcscf(
        _pcscf_config(
            iq_insecure=False,
            iq_allow=(),
            iq_tls=alg_files,
            iq_peers=(gw.fingerprint("sha-256").value,),
        )
    )
    pcscf.startService()
    agw = build_agw(
        _agw_config(tmp_path, pcscf.iq[1]),
        iq_tls=IqTlsConfig(gw, (alg.fingerprint("sha-256"),)),
    )
    agw.startService()
    try:
        await agw.when_registered().addTimeout(10, reactor)
        assert pcscf.controller.gateways_in_service() == [MID]
        await agw.stopService()
        await wait_for(lambda: pcscf.controller.gateways_in_service() == [])
        iq = pcscf.iq[1]
        await pcscf.stopService()
        await _turn()
        assert not await _connects(iq)
    finally:
        if agw.running:
            await agw.stopService()
        if pcscf.running:
            await pcscf.stopService()


# ---------------------------------------------------------------------- the commands

#: Put first on PYTHONPATH: records every call of the two build functions in the file
#: $E2AE_BUILD_LOG ("module pid" per line), then builds as usual.
SPY = textwrap.dedent(
    """
    import os

    if os.environ.get("E2AE_BUILD_LOG"):
        import accessgw.service
        import pcscf.service

        def _record(module):
            real = module.build

            def build(*args, **kwargs):
                with open(os.environ["E2AE_BUILD_LOG"], "a") as fh:
                    fh.write(f"{module.__name__} {os.getpid()}\\n")
                return real(*args, **kwargs)

            module.build = build

        _record(accessgw.service)
        _record(pcscf.service)
    """
)


def _spied_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SPY)
    record = tmp_path / "builds.log"
    env = dict(os.environ, E2AE_BUILD_LOG=str(record))
    paths = [str(spy), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env, record


def _builds(record: Path) -> list[tuple[str, int]]:
    if not record.exists():
        return []
    return [(m, int(p)) for m, p in (line.split() for line in record.read_text().splitlines())]


def _e2ae(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lab.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_pcscf_command_runs_the_built_service_until_sigterm(tmp_path: Path) -> None:
    """The ports ``e2ae pcscf`` prints are the ones the built service bound; SIGTERM stops the
    service (the ports close) and the command exits 0."""
    env, record = _spied_env(tmp_path)
    args = ["pcscf", "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0", "--next-hop", "127.0.0.1:9"]
    args += ["--iq", "127.0.0.1:0", "--iq-insecure", "--iq-allow", f"{MID}@127.0.0.1"]
    proc = _e2ae(args, env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("pcscf gm=127.0.0.1:"), line + (proc.stderr.read() or "")
        ports = [int(field.rsplit(":", 1)[1]) for field in line.split()[1:]]
        for port in ports:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert _builds(record) == [("pcscf.service", proc.pid)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        for port in ports:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest_twisted.ensureDeferred
async def test_accessgw_command_runs_the_built_service_until_sigterm(tmp_path: Path) -> None:
    """``e2ae accessgw`` registers (the built service started); on SIGTERM it deregisters
    (the service's stop: ServiceChange Forced) and exits 0."""
    env, record = _spied_env(tmp_path)
    events: list[Any] = []
    ctrl = IqController(**plain_iq(MID))
    ctrl.subscribe(events.append)
    iq_port = ctrl.listen(0, "127.0.0.1")
    config = _agw_config(tmp_path, iq_port.getHost().port)
    args = ["accessgw", "--alg", f"127.0.0.1:{iq_port.getHost().port}", "--mid", MID]
    args += ["--access-ip", "127.0.0.1", "--core-ip", "127.0.0.1", "--iq-insecure"]
    args += ["--cert", str(config.cert), "--key", str(config.key), "--no-malloc-tuning"]
    proc = Proc()
    reactor.spawnProcess(  # type: ignore[attr-defined]
        proc, sys.executable, [sys.executable, "-m", "lab.cli", *args], env=env, path=str(REPO)
    )
    try:
        await wait_for(lambda: ctrl.gateways_in_service() == [MID] or proc.rc is not None)
        assert proc.rc is None, bytes(proc.err)
        assert b"registering with 127.0.0.1:" in bytes(proc.out)
        assert proc.transport is not None
        assert _builds(record) == [("accessgw.service", proc.transport.pid)]
        proc.transport.signalProcess("TERM")
        assert await proc.ended == 0, bytes(proc.err)
        statuses = [e for e in events if isinstance(e, GatewayStatus)]
        assert [s.in_service for s in statuses] == [True, False], statuses
        assert "forced" in statuses[-1].reason.lower(), statuses[-1]
    finally:
        proc.kill()
        await defer.maybeDeferred(iq_port.stopListening)
        ctrl.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_starts_each_element_through_build(tmp_path: Path) -> None:
    """``e2ae run`` starts each element as its command, so each process builds its element."""
    env, record = _spied_env(tmp_path)
    topology = tmp_path / "lab.toml"
    topology.write_text(
        "[pcscf]\n"
        'gm = "127.0.0.1:0"\ncore = "127.0.0.1:0"\nnext_hop = "127.0.0.1:9"\n'
        f'iq = "127.0.0.1:{_free_port()}"\n'
        "[accessgw]\n"
        'access_ip = "127.0.0.1"\ncore_ip = "127.0.0.1"\n'
        f'mid = "{MID}"\nno_malloc_tuning = true\n'
    )
    run = _e2ae(["run", "--config", str(topology)], env)
    try:
        assert run.stdout is not None
        lines = []
        for line in run.stdout:
            lines.append(line)
            if line.startswith("run: all nodes up") or "did not start" in line:
                break
        assert lines and lines[-1].startswith("run: all nodes up (2)"), lines
        builds = _builds(record)
        assert sorted(m for m, _ in builds) == ["accessgw.service", "pcscf.service"], builds
        assert len({pid for _, pid in builds} | {run.pid}) == 3  # one process each
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_demo_builds_both_elements(tmp_path: Path) -> None:
    env, record = _spied_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli", "demo", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert sorted(m for m, _ in _builds(record)) == ["accessgw.service", "pcscf.service"]


#: What only the build functions may construct (the parts of an element).
PARTS = ("AccessGateway", "GatewayIqHandler", "SipService", "E2aeMediaHandler", "iq_controller")
BUILDERS = {"accessgw/service.py", "pcscf/service.py"}


def test_only_the_build_functions_put_the_elements_together() -> None:
    """No other module of the elements or of the harness constructs an element's parts."""
    found = []
    for package in ("pcscf", "accessgw", "iq", "lab"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = str(path.relative_to(REPO))
            if name in BUILDERS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), name)):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                    if called in PARTS:
                        found.append(f"{name}:{node.lineno} {called}")
    assert found == []
