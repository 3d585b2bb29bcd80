"""Benchmark: SIP calls per second through the P-CSCF, beside SIPp talking to itself directly.

Scenario (bench/sipp/): the UE registers once (``Security-Client: msrp-tls;mediasec, ...``),
then places INVITE (one MSRP stream with ``a=3ge2ae:requested``) / 200 / ACK / BYE calls. For
each offered rate (raised step by step until the first failed call) it runs, in the same run:

- **direct**: SIPp UAC -> SIPp UAS, no proxy (the ceiling of the SIPp pair on this machine);
- **e2ae**: SIPp UAC -> ``e2ae pcscf`` (Gm) -> ``e2ae pcscf`` (core) -> SIPp UAS, with an
  access gateway process registered with the P-CSCF over Iq: every call makes an Iq Reserve
  (INVITE), a Configure (200) and a Release (BYE) round trip to it.

It prints per rate whether every call succeeded and the completed calls per second, then the
highest rate each path sustained without a failed call, the ratio e2ae/direct, and how many
terminations the AGW still held at the end (0 unless something leaked; ``--settle S`` waits S
seconds after the last step before asking, default 0.5: after a failed step, calls SIPp gave
up on may still be waiting for the P-CSCF's transaction timers, so 35 s tells those from a
leak). It asserts nothing.
The machine may be shared: figures from one run are comparable with each other only.

The AGW process is ``--agw-cmd`` (default: the in-process AccessGateway behind an Iq agent of
tests/agw_iq.py, which reports the terminations it still holds); ``{iq}`` in it is replaced by
the P-CSCF's Iq port. ``--accessgw`` uses the ``e2ae accessgw`` service instead.
``--pcscf-arg`` passes more arguments to ``e2ae pcscf`` (e.g. ``--policy FILE``). ``--quick``
runs two short low-rate steps (a smoke test). ``--profile DIR`` runs the P-CSCF and the AGW
under cProfile and writes ``DIR/pcscf.prof`` and ``DIR/agw.prof`` when they stop (read them
with ``python -m pstats``; the profiler slows both, so the rates of such a run are not the
service's).

``--workers 1,2,4`` then runs, in the same run, the same ramp through ``e2ae pcscf --workers N``
for each N (docs/pcscf.md, "Workers"), with one AGW per worker (each registered with its own
worker's Iq port; ``--agw-cmd`` or ``--accessgw`` as above), and prints a table: workers,
calls/s without a failed call, ratio to the SIPp direct figure of this run, with the machine
(nproc, CPU model). ``--profile`` applies to the single-process run only.

How the load reaches every worker: the workers share the Gm port with ``SO_REUSEPORT``, and
the kernel picks the worker of a datagram by its source address and port. One SIPp UAC sends
everything from one port, so all its calls would land on one worker. SIPp ``-t un`` (a socket,
so a source port, per call) does spread them, but the P-CSCF keeps registrations per flow: a
call from a port that did not register is refused (403), and registering each call's port
would add a REGISTER to every call. So the bench runs several SIPp UACs (as many for every N:
the least common multiple of the counts, e.g. 4 for 1,2,4), each from its own UDP port that
registered first, and each offering its share of the rate (``-r RATE -rp UACS*1000``). The
ports are chosen so that each worker holds the same number of them: the bench registers from
fresh ports (with a registrar of its own on the core side while it does) and reads which
worker served each from the Path of the 200 (a worker writes its own core port there); a port
whose worker already has its share is de-registered. The calls of a UAC then come from that
port, so they reach the worker that holds its registration. UDP only (``--transport udp``).
The single SIPp UAS on the core side answers every worker.

``--floor`` adds a third path to each step: SIPp UAC -> bench/floor.py's relay -> SIPp UAS
(both SIPp with ``-rsa`` toward the relay), the relay making a TCP round trip of the Iq
Reserve's, Configure's and Release's sizes (from ``iq.samples``) to bench/floor.py's echo
process for each INVITE, 200 to an INVITE and BYE, and sending a 100 for each INVITE: the
datagrams and round trips of the P-CSCF's call on the same reactor, without any SIP logic.
Its CPU per call (``--cpu``: ``relay``, ``echo``) is what a Twisted process cannot go below
for this call; the P-CSCF's above it is its own work.

``--cpu`` also prints, under each step, the CPU milliseconds per offered call that the P-CSCF
(its workers included), the AGW(s) and the SIPp processes used during the step (utime + stime
from ``/proc/PID/stat``; SIPp's from the rusage of the children the benchmark waited for): where
a call's CPU goes, and whether the P-CSCF's core is the one that runs out first. A line after
the e2ae one gives the P-CSCF's peak resident memory so far (``VmHWM``): it keeps every finished
transaction for 32 s (Timer J/K/D/L over UDP), so a step shorter than that shows less than a
sustained load holds. For an e2ae step longer than ``--cpu-split`` seconds (32 by default) one
more line splits the P-CSCF's CPU there: ms per offered call and share of a core over the first
32 s, when no transaction has ended yet, and over the rest, when ending them is part of the load.

Usage: ``python bench/cps.py [--quick] [--start 100] [--step 100] [--max 1500] [--seconds 5]
[--transport udp|tcp] [--agw-cmd CMD | --accessgw] [--pcscf-arg ARG ...] [--profile DIR]
[--workers 1,2,4] [--cpu [--cpu-split S]] [--floor]``
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENARIOS = HERE / "sipp"


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (bind port 0 first)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


class Sipp:
    def __init__(self, binary: str, workdir: Path, transport: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.transport = "t1" if transport == "tcp" else "u1"
        self.trace = False

    def start(
        self,
        scenario: str,
        port: int,
        *,
        remote: int | None = None,
        calls: int = 1,
        rate: int | None = None,
        period_ms: int | None = None,
        limit: int | None = None,
        rsa: int | None = None,
    ) -> subprocess.Popen[bytes]:
        args = [
            self.binary,
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            self.transport,
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            "120",
            "-timeout_error",
            "-buff_size",
            str(4 * 1024 * 1024),
            "-max_socket",
            "1000",
        ]
        if self.trace:
            args.append("-trace_err")
        if rate is not None:
            args += ["-r", str(rate), "-l", str(limit or max(rate * 4, 100))]
        if period_ms is not None:
            args += ["-rp", str(period_ms)]
        if rsa is not None:
            args += ["-rsa", f"127.0.0.1:{rsa}"]
        if remote is not None:
            args.append(f"127.0.0.1:{remote}")
        return subprocess.Popen(
            args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def run_calls(
    sipp: Sipp,
    uas_port: int,
    uac_port: int,
    target: int,
    rate: int,
    calls: int,
    rsa: int | None = None,
) -> tuple[bool, float]:
    """One step: ``calls`` calls offered at ``rate``; (all succeeded, completed calls/s).
    ``rsa``: both SIPp send everything to that port (the floor relay)."""
    uas = sipp.start("uas_call.xml", uas_port, calls=calls, rsa=rsa)
    time.sleep(0.3)
    began = time.perf_counter()
    uac = sipp.start("uac_call.xml", uac_port, remote=target, calls=calls, rate=rate, rsa=rsa)
    uac_code = uac.wait()
    elapsed = time.perf_counter() - began
    try:
        uas_code = uas.wait(timeout=30)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas_code = uas.wait()
    return uac_code == 0 and uas_code == 0, calls / elapsed


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes and their live descendants
    (``/proc/PID/stat``; 0 where /proc is not there)."""
    wanted = set(pids)
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    total = 0.0
    for pid, seconds in used.items():
        walk, depth = pid, 0
        while walk not in wanted and walk > 1 and depth < 8:
            walk, depth = parents.get(walk, 0), depth + 1
        if walk in wanted:
            total += seconds
    return total


def children_cpu() -> float:
    """CPU seconds of the children this process has waited for (the SIPp runs of a step)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU milliseconds per completed call of the P-CSCF, the AGW(s) and SIPp over one step
    (``--cpu``); ``others``: more named processes (the floor's relay and echo)."""

    ALL = ("pcscf", "agw", "sipp")

    def __init__(self, pcscf: list[int], agw: list[int], **others: list[int]) -> None:
        self.pids = {"pcscf": pcscf, "agw": agw, **others}
        self.before: dict[str, float] = {}
        #: (monotonic time, P-CSCF CPU seconds) at the start, at the split, at the end.
        self.marks: list[tuple[float, float]] = []
        self._timer: threading.Timer | None = None

    def start(self, split: float | None = None) -> None:
        """Take the step's first reading; ``split``: also read the P-CSCF's CPU that many
        seconds in (for :meth:`split_cell`)."""
        self.before = {name: cpu_seconds(pids) for name, pids in self.pids.items()}
        self.before["sipp"] = children_cpu()
        self.marks = [(time.monotonic(), self.before["pcscf"])]
        if split is not None:
            self._timer = threading.Timer(split, self._mark)
            self._timer.daemon = True
            self._timer.start()

    def _mark(self) -> None:
        self.marks.append((time.monotonic(), cpu_seconds(self.pids["pcscf"])))

    def split_cell(self, rate: float) -> str | None:
        """The P-CSCF's CPU before and after the split: ms per offered call (at ``rate``)
        and share of one core, or None if the step ended before the split."""
        if self._timer is not None:
            self._timer.cancel()
        if len(self.marks) != 2:
            return None
        self._mark()
        (t0, c0), (t1, c1), (t2, c2) = self.marks
        parts = []
        for cpu, seconds in ((c1 - c0, t1 - t0), (c2 - c1, t2 - t1)):
            seconds = max(seconds, 1e-9)
            parts.append(f"{1000 * cpu / (rate * seconds):.2f} ms/call {100 * cpu / seconds:.0f} %")
        return f"first {t1 - t0:.1f} s {parts[0]}, after {parts[1]} (of a core)"

    def per_call(self, calls: float) -> dict[str, float]:
        after = {name: cpu_seconds(pids) for name, pids in self.pids.items()}
        after["sipp"] = children_cpu()
        return {k: 1000 * (after[k] - self.before[k]) / max(calls, 1) for k in after}

    def cell(self, calls: float, names: tuple[str, ...] = ALL) -> str:
        per = self.per_call(calls)
        return "cpu ms/call " + " ".join(f"{name} {per[name]:.2f}" for name in names)


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident memory of a process so far (``VmHWM`` in ``/proc/PID/status``), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _log(log_dir: Path | None, name: str) -> Any:
    return subprocess.DEVNULL if log_dir is None else (log_dir / f"{name}.log").open("wb")


#: Iq over plain TCP on loopback (the call rate is measured without Iq TLS), limited to the
#: two gateways the benchmark starts: tests/agw_iq.py and ``e2ae accessgw``.
PLAIN_IQ = [
    "--iq-insecure",
    "--iq-allow",
    "<agw1>@127.0.0.1",
    "--iq-allow",
    "<agw.e2ae.lab>@127.0.0.1",
]


def profiled(profile: Path | None, name: str) -> list[str]:
    """The interpreter arguments that run a module under cProfile into ``profile/name.prof``
    (none without ``profile``)."""
    if profile is None:
        return []
    return ["-m", "cProfile", "-o", str(profile.resolve() / f"{name}.prof")]


def start_pcscf(
    next_hop: int,
    transport: str,
    extra: list[str],
    log_dir: Path | None = None,
    profile: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    args = [
        sys.executable, *profiled(profile, "pcscf"), "-m", "lab.cli", "pcscf",
        "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0",
        "--next-hop", f"127.0.0.1:{next_hop}", "--next-hop-transport", transport,
        "--iq", "127.0.0.1:0", "--log-level", "warn", *PLAIN_IQ, *extra,
    ]  # fmt: skip
    for _ in range(3):  # port 0 for UDP, then the same number for TCP: that may be taken
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=_log(log_dir, "pcscf")
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if line.startswith("pcscf "):
            break
        proc.kill()
        proc.wait()
    else:
        raise SystemExit(f"pcscf did not start: {line!r}")
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    return proc, int(fields["gm"].rsplit(":", 1)[1]), int(fields["iq"].rsplit(":", 1)[1])


#: ``{python}``: this interpreter (under cProfile with ``--profile``).
DEFAULT_AGW = "{python} -m tests.agw_iq --iq {iq}"


def start_agw(command: str, iq: int, log_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the AGW process and wait until it says it registered (``agw ready``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        shlex.split(command.format(iq=iq)),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=_log(log_dir, "agw"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if line.startswith("e2ae accessgw:"):
        time.sleep(1.0)  # it registers right after printing its line
    elif line.strip() != "agw ready":
        proc.kill()
        raise SystemExit(f"the AGW did not register: {line!r}")
    return proc


def iq_sizes() -> str:
    """``REQ:REP,REQ:REP,REQ:REP``: the framed sizes of the e2ae profile's Reserve, Configure
    and Release and of their replies (``iq.samples``, the originating call)."""
    sys.path.insert(0, str(REPO))
    from iq import codec, samples, tpkt

    steps = [s for s in samples.originating() if s.request is not None or s.reply is not None]
    sizes = {s.title: len(tpkt.frame(codec.encode(s.message))) for s in steps}
    names = [
        ("Reserve AGW connection point", "reserved"),
        ("Configure from the core's answer", "configured"),
        ("Release", "released, with statistics"),
    ]
    return ",".join(f"{sizes[a]}:{sizes[b]}" for a, b in names)


def start_floor(uas: int, log_dir: Path | None = None) -> list[subprocess.Popen[bytes]]:
    """Start bench/floor.py's echo, then its relay toward the SIPp UAS on ``uas``; both have
    printed their address when this returns ([echo, relay])."""
    script = str(Path(__file__).with_name("floor.py"))
    echo = subprocess.Popen(
        [sys.executable, script, "echo"], stdout=subprocess.PIPE, stderr=_log(log_dir, "echo")
    )
    port = floor_address(echo)
    relay = subprocess.Popen(
        [sys.executable, script, "relay", "--uas", str(uas), "--echo", port, "--sizes", iq_sizes()],
        stdout=subprocess.PIPE,
        stderr=_log(log_dir, "relay"),
    )
    floor_address(relay)
    return [echo, relay]


def floor_address(proc: subprocess.Popen[bytes]) -> str:
    """The port a floor process printed (``floor relay=HOST:PORT``), read once and kept."""
    known = getattr(proc, "floor_port", None)
    if known is not None:
        return str(known)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("floor "):
        proc.kill()
        raise SystemExit(f"bench/floor.py did not start: {line!r}")
    port = line.strip().rsplit(":", 1)[1]
    proc.floor_port = port  # type: ignore[attr-defined]
    return port


def stop_agw(proc: subprocess.Popen[bytes]) -> str:
    """Stop the AGW; its last words say how many terminations it still held."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return "unknown (the AGW did not stop within 10 s of SIGTERM and was killed)"
    held = [w for w in out.decode().split() if w.startswith("held=")]
    if held:
        return held[-1][5:]
    return f"unknown (the AGW exited with {proc.returncode} without its held= line)"


def start_workers(
    count: int,
    next_hop: int,
    extra: list[str],
    log_dir: Path | None = None,
) -> tuple[subprocess.Popen[bytes], list[dict[str, int]]]:
    """``e2ae pcscf --workers COUNT`` (ports 0: the parent picks the shared Gm port, each
    worker its own core and Iq ports); returns the parent and, per worker, its ports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    args = [
        sys.executable, "-m", "lab.cli", "pcscf", "--workers", str(count),
        "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0",
        "--next-hop", f"127.0.0.1:{next_hop}", "--next-hop-transport", "udp",
        "--iq", "127.0.0.1:0", "--log-level", "warn", *PLAIN_IQ, *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=_log(log_dir, f"pcscf-w{count}")
    )
    assert proc.stdout is not None
    workers = []
    for _ in range(count):
        line = proc.stdout.readline().decode()
        if not line.startswith("pcscf "):  # one worker: the single process, its line
            proc.kill()
            proc.wait()
            raise SystemExit(f"pcscf --workers {count} did not start: {line!r}")
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        workers.append(
            {k: int(fields[k].rsplit(":", 1)[1]) for k in ("gm", "core", "iq")}
            | {"pid": int(fields.get("pid", proc.pid))}
        )
    return proc, workers


class Registrar:
    """The registrar on the core side while the UEs register (a thread): answers every
    REGISTER 200 OK with its Path, so that the REGISTER's sender learns which worker served
    it (the Path names that worker's own core port)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
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
            lines = ["SIP/2.0 200 OK"]
            for header in head[1:]:
                name = header.split(":", 1)[0].strip().lower()
                if name in ("via", "from", "call-id", "cseq", "path"):
                    lines.append(header)
                elif name == "to":
                    lines.append(header + ";tag=reg")
                elif name == "contact":
                    lines.append(header + ";expires=" + _expires(head))
            lines += ["Content-Length: 0", "", ""]
            self.sock.sendto("\r\n".join(lines).encode(), addr)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def _expires(head: list[str]) -> str:
    for header in head:
        name, _, value = header.partition(":")
        if name.strip().lower() == "expires":
            return value.strip()
    return "3600"


def register_ue(gm: int, port: int, expires: int = 3600) -> int | None:
    """REGISTER from UDP ``port`` as bench/sipp/uac_register.xml does (``expires`` 0:
    de-register); the core port in the Path of the 200, i.e. the worker that holds it now
    (``None``: no 200)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ue:
        ue.bind(("127.0.0.1", port))
        ue.settimeout(5)
        ue.sendto(
            (
                "REGISTER sip:ims.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{port}-{expires};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:ue@ims.test>;tag=reg{port}\r\n"
                "To: <sip:ue@ims.test>\r\n"
                f"Call-ID: bench-reg-{port}-{expires}@127.0.0.1\r\n"
                "CSeq: 1 REGISTER\r\n"
                f"Contact: <sip:ue@127.0.0.1:{port};transport=udp>\r\n"
                f"Expires: {expires}\r\n"
                "Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec\r\n"
                "Supported: path\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", gm),
        )
        try:
            while True:
                data = ue.recv(65535).decode(errors="replace")
                if data.startswith("SIP/2.0 ") and not data.startswith("SIP/2.0 1"):
                    break
        except TimeoutError:
            return None
    match = re.search(r"^Path:\s*<sip:[^>]*?127\.0\.0\.1:(\d+)", data, re.M | re.I)
    return int(match.group(1)) if data.startswith("SIP/2.0 200") and match else None


def balanced_ues(gm: int, registrar_port: int, cores: list[int], per_worker: int) -> list[int]:
    """Register UEs from fresh UDP source ports until every worker (named by its core port)
    holds ``per_worker`` of them; a UE that landed on a worker with enough is de-registered.
    Returns the source ports, each registered with one worker: SIPp sends each one's calls
    from the same port, so they reach the same worker (SO_REUSEPORT hashes the flow)."""
    held: dict[int, list[int]] = {core: [] for core in cores}
    registrar = Registrar(registrar_port)
    try:
        for _ in range(200 * len(cores)):
            if all(len(ports) >= per_worker for ports in held.values()):
                break
            port = free_port()
            core = register_ue(gm, port)
            if core not in held:
                raise SystemExit(f"a UE could not register through the workers (Path {core})")
            if len(held[core]) < per_worker:
                held[core].append(port)
            else:
                register_ue(gm, port, expires=0)
        else:
            raise SystemExit(f"could not place {per_worker} UE(s) on each worker: {held}")
    finally:
        registrar.close()
    return [port for ports in held.values() for port in ports]


def run_spread(
    sipp: Sipp, uas_port: int, ue_ports: list[int], target: int, rate: int, calls: int
) -> tuple[bool, float]:
    """One step with the load spread over SIPp UACs, one per UE port: ``calls`` calls in all
    at ``rate`` in all (each UAC ``rate`` calls every ``len(ue_ports)`` seconds); (all
    succeeded, completed calls/s)."""
    share = len(ue_ports)
    each = max(calls // share, 1)
    uas = sipp.start("uas_call.xml", uas_port, calls=each * share)
    time.sleep(0.3)
    began = time.perf_counter()
    uacs = [
        sipp.start(
            "uac_call.xml",
            port,
            remote=target,
            calls=each,
            rate=rate,
            period_ms=1000 * share,
            limit=max(rate * 4 // share, 100),
        )
        for port in ue_ports
    ]
    codes = [uac.wait() for uac in uacs]
    elapsed = time.perf_counter() - began
    try:
        uas_code = uas.wait(timeout=30)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas_code = uas.wait()
    return all(code == 0 for code in codes) and uas_code == 0, each * share / elapsed


def machine() -> str:
    """nproc and the CPU model of this machine."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, {model}"


def run_workers(
    sipp: Sipp, args: argparse.Namespace, agw_command: str, counts: list[int]
) -> dict[int, tuple[int, float, str]]:
    """For each worker count: ``e2ae pcscf --workers N`` and one AGW per worker, the UEs
    spread evenly over the workers, the rate raised step by step until the first failed
    call; per count (highest rate without a failed call, the calls/s completed at that rate,
    the AGWs' held terminations)."""
    ues = math.lcm(*counts)  # the same UACs for every count, an equal share per worker
    results: dict[int, tuple[int, float, str]] = {}
    print(f"\nworkers ({ues} SIPp UACs, each from its own UDP port; see the docstring)")
    for count in counts:
        core_port = free_port()
        pcscf, workers = start_workers(count, core_port, args.pcscf_arg, args.log_dir)
        agws: list[subprocess.Popen[bytes]] = []
        best, completed = 0, 0.0
        try:
            for worker in workers:
                agws.append(start_agw(agw_command, worker["iq"], args.log_dir))
            gm = workers[0]["gm"]
            ports = balanced_ues(gm, core_port, [w["core"] for w in workers], ues // count)
            rate = args.start
            while rate <= args.max:
                calls = max(int(rate * args.seconds), ues)
                meter = CpuMeter([pcscf.pid], [agw.pid for agw in agws])
                meter.start()
                ok, cps = run_spread(sipp, core_port, ports, gm, rate, calls)
                used = f" {meter.cell((calls // ues) * ues)}" if args.cpu else ""
                print(
                    f"{count:>3} worker(s) {rate:>6} {'ok' if ok else 'FAIL':>4} {cps:8.1f} c/s"
                    + used,
                    flush=True,
                )
                if not ok:
                    break
                best, completed = rate, cps
                rate += args.step
        finally:
            if agws:
                time.sleep(args.settle)  # the last BYEs' Releases (--settle)
            held = ",".join(stop_agw(agw) for agw in agws) or "?"
            pcscf.terminate()
            pcscf.wait(timeout=20)
        results[count] = (best, completed, held)
    return results


def worker_counts(text: str) -> list[int]:
    """``--workers 1,2,4``: the worker counts, each at least 1."""
    try:
        counts = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts of at least 1: {text!r}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, default=100, help="first offered rate (calls/s)")
    parser.add_argument("--step", type=int, default=100, help="rate increment")
    parser.add_argument("--max", type=int, default=1500, help="highest rate tried")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--pcscf-arg", action="append", default=[], metavar="ARG")
    parser.add_argument(
        "--agw-cmd", default=DEFAULT_AGW, help="AGW process ({iq}: Iq port, {python}: this Python)"
    )
    parser.add_argument(
        "--accessgw",
        action="store_true",
        help="use the `e2ae accessgw` process as the AGW",
    )
    parser.add_argument(
        "--workers",
        type=worker_counts,
        metavar="N,N,...",
        help="also run `e2ae pcscf --workers N` for each N (one AGW per worker; UDP only)"
        " and print the calls/s per worker count",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run each step through bench/floor.py (UDP relay + Iq-sized TCP round trips,"
        " no SIP logic): the Twisted floor of a call, with its CPU per call under --cpu",
    )
    parser.add_argument("--quick", action="store_true", help="two short low-rate steps")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also print, per step, the CPU milliseconds per offered call of the P-CSCF"
        " (with its workers), the AGW(s) and SIPp (from /proc and the children's rusage),"
        " and the P-CSCF's peak resident memory so far (VmHWM)",
    )
    parser.add_argument(
        "--cpu-split",
        type=float,
        default=32.0,
        metavar="S",
        help="with --cpu, for e2ae steps longer than S seconds, also print the P-CSCF's CPU"
        " (ms per offered call, share of a core) over the first S seconds and over the rest"
        " (default 32: when the first transactions end, Timer J/K/D/L over UDP)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep the P-CSCF, AGW and SIPp error logs here (made if missing)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds to wait after the last step before stopping the AGW and reading the"
        " terminations it still holds (default 0.5; the P-CSCF's Timer B/F is 32 s, so 35"
        " tells a leak from calls whose transactions are still timing out)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the P-CSCF and the AGW under cProfile: DIR/pcscf.prof, DIR/agw.prof",
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    python = shlex.join([sys.executable, *profiled(args.profile, "agw")])
    if args.quick:
        args.start, args.step, args.max, args.seconds = 10, 10, 20, 1.0
    if args.floor and args.transport != "udp":
        parser.error("--floor needs --transport udp")
    if args.workers and args.transport != "udp":
        parser.error("--workers needs --transport udp (the UEs' flows are UDP source ports)")
    binary = shutil.which("sipp")
    if binary is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="e2ae-cps-") as tmp:
        sipp = Sipp(binary, args.log_dir or Path(tmp), args.transport)
        sipp.trace = args.log_dir is not None
        direct_uas, direct_uac = free_port(), free_port()
        core_port, ue_port = free_port(), free_port()
        pcscf, gm, iq = start_pcscf(
            core_port, args.transport, args.pcscf_arg, args.log_dir, args.profile
        )
        agw = None
        held = "?"
        floor: list[subprocess.Popen[bytes]] = []
        try:
            command = args.agw_cmd.replace("{python}", python)
            if args.accessgw:
                made = subprocess.run(
                    [sys.executable, "-m", "lab.cli", "certs", "new", "agw", "--out", tmp],
                    cwd=REPO,
                    env=dict(os.environ, PYTHONPATH=str(REPO)),
                    capture_output=True,
                    check=True,
                )
                del made
                command = (
                    f"{python} -m lab.cli accessgw --alg 127.0.0.1:{{iq}}"
                    f" --access-ip 127.0.0.1 --core-ip 127.0.0.1 --cert {tmp}/agw.crt"
                    f" --key {tmp}/agw.key --iq-insecure --log-level warn"
                )
            agw = start_agw(command, iq, args.log_dir)
            registrar = sipp.start("uas_register.xml", core_port)
            ue = sipp.start("uac_register.xml", ue_port, remote=gm)
            if ue.wait() != 0 or registrar.wait(timeout=30) != 0:
                raise SystemExit("the UE could not register through the P-CSCF")
            best = {"direct": 0, "e2ae": 0}
            alive = {"direct": True, "e2ae": True}
            paths: dict[str, tuple[int, int, int, int | None]] = {
                "direct": (direct_uas, direct_uac, direct_uas, None),
                "e2ae": (core_port, ue_port, gm, None),
            }
            if args.floor:
                floor_uas, floor_uac = free_port(), free_port()
                floor = start_floor(floor_uas, args.log_dir)
                relay_port = int(floor_address(floor[1]))
                paths["floor"] = (floor_uas, floor_uac, relay_port, relay_port)
                best["floor"], alive["floor"] = 0, True
            print(f"{'rate':>6} " + " ".join(f"{name:>16}" for name in paths))
            rate = args.start
            while rate <= args.max and any(alive.values()):
                calls = max(int(rate * args.seconds), 1)
                cells = []
                cpu_lines: list[str] = []
                for name, (uas_port, uac_port, target, rsa) in paths.items():
                    if not alive[name]:
                        cells.append(f"{'-':>16}")
                        continue
                    relay = {"relay": [floor[1].pid], "echo": [floor[0].pid]} if floor else {}
                    meter = CpuMeter([pcscf.pid], [agw.pid], **relay)
                    split = args.cpu and name == "e2ae" and args.seconds > args.cpu_split
                    meter.start(args.cpu_split if split else None)
                    ok, cps = run_calls(sipp, uas_port, uac_port, target, rate, calls, rsa)
                    if args.cpu:
                        shown = {"direct": ("sipp",), "floor": ("relay", "echo", "sipp")}
                        used = meter.cell(calls, shown.get(name, CpuMeter.ALL))
                        cpu_lines.append(f"{'':>6} {name:>6} {used}")
                        halves = meter.split_cell(rate) if split else None
                        if halves is not None:
                            cpu_lines.append(f"{'':>6} {name:>6} pcscf cpu {halves}")
                        peak = peak_rss_mb(pcscf.pid) if name == "e2ae" else None
                        if peak is not None:
                            cpu_lines.append(f"{'':>6} {name:>6} pcscf peak rss {peak:.0f} MB")
                    if ok:
                        best[name] = rate
                    alive[name] = ok
                    cells.append(f"{'ok' if ok else 'FAIL':>4} {cps:8.1f} c/s")
                print(f"{rate:>6} " + " ".join(cells), flush=True)
                for line in cpu_lines:
                    print(line, flush=True)
                rate += args.step
        finally:
            if agw is not None:
                time.sleep(args.settle)  # the last BYEs' Releases (--settle)
                held = stop_agw(agw)
            pcscf.terminate()
            pcscf.wait(timeout=10)
            for proc in floor:
                proc.terminate()
                proc.wait(timeout=10)
        spread = run_workers(sipp, args, command, args.workers) if args.workers else {}
    ratio = best["e2ae"] / best["direct"] if best["direct"] else 0.0
    print(
        f"highest rate without a failed call ({args.transport}, {args.seconds:g} s steps): "
        f"direct {best['direct']} calls/s, e2ae {best['e2ae']} calls/s, ratio {ratio:.2f}"
    )
    print(f"AGW terminations still held at the end: {held}")
    if best["direct"] >= args.max:
        print(f"(direct reached --max {args.max}: the ratio is a lower bound)")
    if "floor" in best:
        share = best["floor"] / best["direct"] if best["direct"] else 0.0
        print(
            f"floor (bench/floor.py: the datagrams and Iq-sized round trips of a call, no SIP"
            f" logic): {best['floor']} calls/s without a failed call, ratio {share:.2f}"
        )
    if spread:
        print(f"\nmachine: {machine()}")
        print(
            "workers | calls/s without failure | ratio to SIPp direct"
            " | completed calls/s at that rate"
        )
        for count, (rate, completed, _) in spread.items():
            share = rate / best["direct"] if best["direct"] else 0.0
            print(f"{count:>7} | {rate:>23} | {share:>20.2f} | {completed:.1f}")
        print(
            "AGW terminations still held at the end (after the last step), per worker count: "
            + "; ".join(f"{count}: {held}" for count, (_, _, held) in spread.items())
        )
        if any(rate >= args.max for rate, _, _ in spread.values()):
            print(f"(a worker count reached --max {args.max}: its figure is a lower bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
