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
terminations the AGW still held at the end (0 unless something leaked). It asserts nothing.
The machine may be shared: figures from one run are comparable with each other only.

The AGW process is ``--agw-cmd`` (default: the in-process AccessGateway behind an Iq agent of
tests/agw_iq.py, which reports the terminations it still holds); ``{iq}`` in it is replaced by
the P-CSCF's Iq port. ``--accessgw`` uses the ``e2ae accessgw`` service instead.
``--pcscf-arg`` passes more arguments to ``e2ae pcscf`` (e.g. ``--policy FILE``). ``--quick``
runs two short low-rate steps (a smoke test). ``--profile DIR`` runs the P-CSCF and the AGW
under cProfile and writes ``DIR/pcscf.prof`` and ``DIR/agw.prof`` when they stop (read them
with ``python -m pstats``; the profiler slows both, so the rates of such a run are not the
service's).

Usage: ``python bench/cps.py [--quick] [--start 100] [--step 100] [--max 1500] [--seconds 5]
[--transport udp|tcp] [--agw-cmd CMD | --accessgw] [--pcscf-arg ARG ...] [--profile DIR]``
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
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
            args += ["-r", str(rate), "-l", str(max(rate * 4, 100))]
        if remote is not None:
            args.append(f"127.0.0.1:{remote}")
        return subprocess.Popen(
            args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def run_calls(
    sipp: Sipp, uas_port: int, uac_port: int, target: int, rate: int, calls: int
) -> tuple[bool, float]:
    """One step: ``calls`` calls offered at ``rate``; (all succeeded, completed calls/s)."""
    uas = sipp.start("uas_call.xml", uas_port, calls=calls)
    time.sleep(0.3)
    began = time.perf_counter()
    uac = sipp.start("uac_call.xml", uac_port, remote=target, calls=calls, rate=rate)
    uac_code = uac.wait()
    elapsed = time.perf_counter() - began
    try:
        uas_code = uas.wait(timeout=30)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas_code = uas.wait()
    return uac_code == 0 and uas_code == 0, calls / elapsed


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


def stop_agw(proc: subprocess.Popen[bytes]) -> str:
    """Stop the AGW; its last words say how many terminations it still held."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    held = [w for w in out.decode().split() if w.startswith("held=")]
    return held[-1][5:] if held else "?"


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
        help="use the `e2ae accessgw` process as the AGW (no leak count: it prints none)",
    )
    parser.add_argument("--quick", action="store_true", help="two short low-rate steps")
    parser.add_argument(
        "--log-dir", type=Path, help="keep the P-CSCF, AGW and SIPp error logs here"
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
    binary = shutil.which("sipp")
    if binary is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")

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
            paths = {
                "direct": (direct_uas, direct_uac, direct_uas),
                "e2ae": (core_port, ue_port, gm),
            }
            print(f"{'rate':>6} {'direct':>16} {'e2ae':>16}")
            rate = args.start
            while rate <= args.max and any(alive.values()):
                calls = max(int(rate * args.seconds), 1)
                cells = []
                for name, (uas_port, uac_port, target) in paths.items():
                    if not alive[name]:
                        cells.append(f"{'-':>16}")
                        continue
                    ok, cps = run_calls(sipp, uas_port, uac_port, target, rate, calls)
                    if ok:
                        best[name] = rate
                    alive[name] = ok
                    cells.append(f"{'ok' if ok else 'FAIL':>4} {cps:8.1f} c/s")
                print(f"{rate:>6} " + " ".join(cells), flush=True)
                rate += args.step
        finally:
            if agw is not None:
                time.sleep(0.5)  # the last BYEs' Releases
                held = stop_agw(agw)
            pcscf.terminate()
            pcscf.wait(timeout=10)
    ratio = best["e2ae"] / best["direct"] if best["direct"] else 0.0
    print(
        f"highest rate without a failed call ({args.transport}, {args.seconds:g} s steps): "
        f"direct {best['direct']} calls/s, e2ae {best['e2ae']} calls/s, ratio {ratio:.2f}"
    )
    print(f"AGW terminations still held at the end: {held}")
    if best["direct"] >= args.max:
        print(f"(direct reached --max {args.max}: the ratio is a lower bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
