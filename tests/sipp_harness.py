"""Run the P-CSCF and SIPp as real processes on 127.0.0.1 (ephemeral ports only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from tests.conftest import REPO, require_tool

SCENARIOS = REPO / "tests" / "sipp"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, found by binding port 0."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


@attrs.frozen
class Pcscf:
    process: subprocess.Popen[bytes]
    gm: int
    core: int
    log: Path
    iq: int = 0


#: Iq over plain TCP on loopback, open to the gateways :func:`agw` starts (``<agw1>``,
#: ``<agw2>``) unless the test passes ``--iq-tls``.
PLAIN_IQ = ["--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1", "--iq-allow", "<agw2>@127.0.0.1"]


@contextmanager
def pcscf(tmp: Path, next_hop: int, *extra: str) -> Iterator[Pcscf]:
    """``e2ae pcscf`` on port 0 for both sides; yields the ports it printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log = tmp / "pcscf.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.cli",
                "pcscf",
                "--gm",
                "127.0.0.1:0",
                "--core",
                "127.0.0.1:0",
                "--next-hop",
                f"127.0.0.1:{next_hop}",
                "--iq",
                "127.0.0.1:0",
                *([] if "--iq-tls" in extra else PLAIN_IQ),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("pcscf "):
            raise AssertionError(f"pcscf did not start: {line!r}\n{log.read_text()}")
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        yield Pcscf(
            proc,
            int(fields["gm"].rsplit(":", 1)[1]),
            int(fields["core"].rsplit(":", 1)[1]),
            log,
            int(fields["iq"].rsplit(":", 1)[1]),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@attrs.define
class Agw:
    """An access gateway process (tests/agw_iq.py) registered with the P-CSCF over Iq."""

    process: subprocess.Popen[bytes]
    log: Path
    held: int | None = None
    cert_dir: Path | None = None


@contextmanager
def agw(tmp: Path, iq_port: int, name: str = "agw1") -> Iterator[Agw]:
    """Start an AGW registered with the P-CSCF at ``iq_port``; on exit, ``held`` is the number
    of terminations it still had reserved when it was stopped."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log = tmp / f"{name}.log"
    cert_dir = tmp / f"{name}-cert"
    cert_dir.mkdir(exist_ok=True)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.agw_iq",
                "--iq",
                str(iq_port),
                "--mid",
                f"<{name}>",
                "--cert-dir",
                str(cert_dir),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    handle = Agw(proc, log, cert_dir=cert_dir)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if line.strip() != "agw ready":
            raise AssertionError(f"agw did not register: {line!r}\n{log.read_text()}")
        yield handle
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for text in out.decode().split():
            if text.startswith("held="):
                handle.held = int(text[5:])


def sipp(
    tmp: Path,
    scenario: str,
    port: int,
    *,
    remote: int | None = None,
    transport: str = "u1",
    calls: int = 1,
    keys: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start SIPp with a scenario of tests/sipp/ (background; see :func:`finish`)."""
    binary = require_tool("sipp")
    args = [
        binary,
        "-sf",
        str(SCENARIOS / scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        transport,
        "-m",
        str(calls),
        "-timeout",
        "20",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-trace_msg",
    ]
    for name, value in (keys or {}).items():
        args += ["-key", name, value]
    if remote is not None:
        args.append(f"127.0.0.1:{remote}")
    out = (tmp / f"{scenario}.out").open("wb")
    return subprocess.Popen(args, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)


def finish(tmp: Path, proc: subprocess.Popen[bytes], pc: Pcscf | None = None) -> str:
    """Wait for a SIPp process; returns its error report ('' when it passed)."""
    try:
        code = proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code == 0:
        return ""
    report = [f"sipp exit code {code}"]
    for path in sorted(tmp.glob("*errors.log")) + sorted(tmp.glob("*.out")):
        report.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
    if pc is not None:
        report.append(f"--- pcscf\n{pc.log.read_text(errors='replace')[-3000:]}")
    return "\n".join(report)


def iq_tls(tmp: Path) -> tuple[list[str], list[str]]:
    """Iq over mutual TLS: fresh certificates for both ends, each pinned in the other; returns
    the ``e2ae pcscf`` and the ``e2ae accessgw`` arguments."""
    import datetime

    import certs

    now = datetime.datetime.now(datetime.UTC)
    alg, gw = certs.generate("pcscf-iq", now=now), certs.generate("agw-iq", now=now)
    alg_cert, _ = certs.write(alg, tmp, force=True)
    gw_cert, _ = certs.write(gw, tmp, force=True)
    return (
        ["--iq-tls", str(alg_cert.with_suffix("")), "--iq-peer", gw.fingerprint().value],
        ["--iq-tls", str(gw_cert.with_suffix("")), "--iq-peer", alg.fingerprint().value],
    )


@contextmanager
def accessgw(tmp: Path, iq_port: int, pc: Pcscf, *extra: str) -> Iterator[Path]:
    """The real ``e2ae accessgw`` process registered with the P-CSCF at ``iq_port`` (``extra``:
    its Iq security, e.g. from :func:`iq_tls`); yields its log file (it logs every reserved
    and released termination)."""
    import datetime

    import certs

    pair = certs.generate("agw", now=datetime.datetime.now(datetime.UTC))
    cert, key = certs.write(pair, tmp, force=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log = tmp / "accessgw.log"
    args = [sys.executable, "-m", "lab.cli", "accessgw", "--alg", f"127.0.0.1:{iq_port}"]
    args += ["--access-ip", "127.0.0.1", "--core-ip", "127.0.0.1", "--cert", str(cert)]
    args += ["--key", str(key), "--mid", "<agw.real>", *extra]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("e2ae accessgw:"):
            raise AssertionError(f"accessgw did not start: {line!r}\n{log.read_text()}")
        for _ in range(400):
            if "<agw.real> in service" in pc.log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"accessgw did not register\n{log.read_text()}")
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
