"""``e2ae pcscf --workers N`` as real processes on 127.0.0.1 (docs/pcscf.md, "Workers").

Two workers share the Gm port (SO_REUSEPORT): REGISTERs sent from many source ports are served
by both (the Path each worker writes names its own core port), a UE always reaches the same
worker from the same port, calls placed and received through each worker complete end to end
(SIPp as UE and as core, one AGW per worker), and SIGTERM to the parent stops every worker.
``--workers 1`` is the single process of before; ``--workers 0`` is a usage error.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs
import pytest

from tests.conftest import REPO, run_e2ae
from tests.sipp_harness import PLAIN_IQ, agw, finish, free_port, sipp


@attrs.frozen
class Worker:
    index: int
    pid: int
    gm: int
    core: int
    iq: int
    metrics: int | None = None


@attrs.frozen
class Workers:
    process: subprocess.Popen[bytes]
    workers: list[Worker]
    log: Path


def _fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split()[1:])


def _port(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


@contextmanager
def workers(tmp: Path, next_hop: int, count: int, *extra: str) -> Iterator[Workers]:
    """``e2ae pcscf --workers COUNT`` on port 0 everywhere; yields what it printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log = tmp / "pcscf.log"
    args = [sys.executable, "-m", "lab.cli", "pcscf", "--workers", str(count)]
    args += ["--gm", "127.0.0.1:0", "--core", "127.0.0.1:0", "--iq", "127.0.0.1:0"]
    args += ["--next-hop", f"127.0.0.1:{next_hop}", *PLAIN_IQ, *extra]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        found = []
        for _ in range(count):
            line = proc.stdout.readline().decode()
            if not line.startswith("pcscf worker="):
                raise AssertionError(f"pcscf did not start: {line!r}\n{log.read_text()}")
            f = _fields(line)
            found.append(
                Worker(
                    int(f["worker"]),
                    int(f["pid"]),
                    _port(f["gm"]),
                    _port(f["core"]),
                    _port(f["iq"]),
                    _port(f["metrics"]) if "metrics" in f else None,
                )
            )
        yield Workers(proc, found, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Registrar:
    """A registrar on the core side (UDP): answers every REGISTER 200 with its Path."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            head = data.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")
            if not head[0].startswith("REGISTER "):
                continue
            keep = ("via:", "from:", "call-id:", "cseq:", "contact:", "path:")
            lines = ["SIP/2.0 200 OK"]
            for header in head[1:]:
                name = header.split(":", 1)[0].strip().lower() + ":"
                if name in keep:
                    lines.append(header)
                elif name == "to:":
                    lines.append(header + ";tag=reg")
            lines += ["Content-Length: 0", "", ""]
            self.sock.sendto("\r\n".join(lines).encode(), addr)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def _register_request(port: int, transport: str) -> bytes:
    # The branch and tag name the transport as well as the port: a TCP REGISTER from a port
    # an earlier UDP one used is a new transaction, not a retransmission of that one (RFC 3261
    # 17.2.3 matches on branch, sent-by and method, and free_port() may give the port again).
    return (
        "REGISTER sip:ims.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{port}"
        f";branch=z9hG4bK-w{transport}{port};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@ims.test>;tag=r{transport}{port}\r\n"
        "To: <sip:alice@ims.test>\r\n"
        f"Call-ID: reg-{transport}-{port}@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:alice@127.0.0.1:{port};transport={transport}>\r\n"
        "Expires: 600\r\n"
        "Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec\r\n"
        "Require: mediasec\r\nProxy-Require: mediasec\r\nSupported: path\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register(gm: int, port: int, transport: str = "udp") -> int:
    """REGISTER (e2ae mechanisms offered) from source ``port`` over UDP or TCP; the core port
    named by the Path of the 200, i.e. the worker that served it."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as ue:
        ue.bind(("127.0.0.1", port))
        ue.settimeout(5)
        if transport == "udp":
            ue.sendto(_register_request(port, transport), ("127.0.0.1", gm))
        else:
            ue.connect(("127.0.0.1", gm))
            ue.sendall(_register_request(port, transport))
        data = ""
        while not re.search(r"SIP/2\.0 200 [^\r]*\r\n(.*\r\n)*\r\n", data):
            chunk = ue.recv(65535).decode(errors="replace")
            assert chunk, data
            data = data + chunk if transport == "tcp" else chunk
    match = re.search(r"^Path:\s*<sip:[^@>]*@?127\.0\.0\.1:(\d+)", data, re.M | re.I)
    assert match, data
    return int(match.group(1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.peer
def test_two_workers_share_gm_each_carries_calls_and_sigterm_stops_all(tmp_path: Path) -> None:
    core_port = free_port()
    with workers(tmp_path, core_port, 2, "--max-registrations-per-source", "100") as pc:
        one, two = pc.workers
        assert [one.index, two.index] == [0, 1]
        assert one.gm == two.gm
        assert len({one.core, two.core, one.iq, two.iq}) == 4
        assert _alive(one.pid) and _alive(two.pid)
        # REGISTERs from many source ports: the kernel spreads them over both workers, and
        # sends a port's second REGISTER to the worker that served its first.
        registrar = Registrar(core_port)
        try:
            served: dict[int, int] = {}
            for _ in range(24):
                port = free_port()
                served[port] = register(one.gm, port)
            assert set(served.values()) == {one.core, two.core}, served
            for port in list(served)[:8]:
                assert register(one.gm, port) == served[port]
            # TCP too: each connection is a flow of its own, and lands on one worker
            over_tcp = {register(one.gm, free_port(), "tcp") for _ in range(24)}
            assert over_tcp == {one.core, two.core}, over_tcp
        finally:
            registrar.close()
        # One AGW per worker; calls through each worker, placed (orig) and received (term:
        # the core sends it to the Path, i.e. to that worker's own core port). The UE checks
        # the AGW's fingerprint and a=3ge2ae:applied in the SDP: the worker's Iq link worked.
        with ExitStack() as stack:
            gws = [
                stack.enter_context(agw(tmp_path, w.iq, f"agw{w.index + 1}")) for w in pc.workers
            ]
            for worker in pc.workers:
                ue_port = next(p for p, core in served.items() if core == worker.core)
                for case in ("orig", "term"):
                    core = sipp(tmp_path, f"core_{case}.xml", core_port)
                    ue = sipp(tmp_path, f"ue_{case}.xml", ue_port, remote=worker.gm)
                    ue_errors = finish(tmp_path, ue)
                    core_errors = finish(tmp_path, core)
                    assert ue_errors == "", (worker, case, ue_errors, pc.log.read_text()[-3000:])
                    assert core_errors == "", (worker, case, core_errors)
        for gw in gws:
            assert gw.held == 0, gw.log.read_text()[-3000:]
        pc.process.send_signal(signal.SIGTERM)
        assert pc.process.wait(timeout=15) == 0, pc.log.read_text()[-3000:]
        assert _gone([one.pid, two.pid])
    assert "worker 0" in pc.log.read_text() and "worker 1" in pc.log.read_text()


def test_a_dead_worker_is_logged_not_restarted(tmp_path: Path) -> None:
    import urllib.request

    with workers(tmp_path, free_port(), 2, "--metrics", "127.0.0.1:0") as pc:
        one, two = pc.workers
        assert one.metrics and two.metrics and one.metrics != two.metrics
        for worker in pc.workers:  # each worker serves its own metrics
            url = f"http://127.0.0.1:{worker.metrics}/metrics"
            with urllib.request.urlopen(url, timeout=5) as page:
                assert page.status == 200
        os.kill(one.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while "not restarted" not in pc.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = pc.log.read_text()
        assert f"worker 0 (pid {one.pid}) died" in text, text[-3000:]
        assert "not restarted" in text
        assert _alive(two.pid) and pc.process.poll() is None
        pc.process.send_signal(signal.SIGTERM)
        assert pc.process.wait(timeout=15) == 1  # one worker failed
        assert _gone([two.pid])


def test_one_worker_is_the_single_process_of_before(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "lab.cli", "pcscf", "--workers", "1", "--gm", "127.0.0.1:0"]
    args += ["--core", "127.0.0.1:0", "--iq", "127.0.0.1:0", "--next-hop", "127.0.0.1:5060"]
    args += PLAIN_IQ
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert re.fullmatch(
            r"pcscf gm=127\.0\.0\.1:\d+ core=127\.0\.0\.1:\d+ iq=127\.0\.0\.1:\d+\n", line
        ), line
        children = [
            p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == proc.pid
        ]
        assert children == []
        # the Gm port is its own: no SO_REUSEPORT, another socket cannot share it
        gm = _port(_fields(line)["gm"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", gm))
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def _ppid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_workers_is_a_usage_error(value: str) -> None:
    result = run_e2ae(["pcscf", "--workers", value, "--check"])
    assert result.returncode == 2
    assert b"usage:" in result.stderr and b"--workers" in result.stderr


def test_worker_ports_and_command_line() -> None:
    from pcscf.config import build_config
    from pcscf.workers import WorkersError, offset, strip_workers, worker_config

    config = build_config(
        {
            "gm": "127.0.0.1:5060",
            "core": "127.0.0.1:5070",
            "next_hop": "127.0.0.1:5080",
            "iq": "127.0.0.1:2944",
            "iq_insecure": True,
            "iq_allow": ["<agw1>@127.0.0.1"],
        }
    )
    third = worker_config(config, 2)
    assert (third.gm, third.core, third.iq) == (
        ("127.0.0.1", 5060),
        ("127.0.0.1", 5072),
        ("127.0.0.1", 2946),
    )
    assert offset(("127.0.0.1", 0), 3, "--core") == ("127.0.0.1", 0)
    with pytest.raises(WorkersError, match="beyond 65535"):
        offset(("127.0.0.1", 65535), 1, "--iq")
    assert strip_workers(["--gm", "h:1", "--workers", "4", "--workers=2", "--core", "h:2"]) == [
        "--gm",
        "h:1",
        "--core",
        "h:2",
    ]
