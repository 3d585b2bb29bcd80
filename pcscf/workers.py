"""``e2ae pcscf --workers N``: N P-CSCF processes behind one Gm address (docs/pcscf.md,
"Workers").

The parent process only supervises: it starts N workers (its own command line without
``--workers``, plus ``--worker-index I``), prints one line per worker with its addresses,
forwards SIGTERM and SIGINT to them and exits when they all have (non-zero if one failed). A
worker that dies is logged and not restarted.

Each worker is a whole P-CSCF: it shares the Gm port with the others through ``SO_REUSEPORT``
(the kernel spreads the UEs' flows over them), and has a core port, an Iq port and a metrics
port of its own (the given port + its index; a port 0 stays ephemeral).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

import attrs
from twisted.logger import Logger

from pcscf.config import PcscfConfig

log = Logger(namespace="pcscf")

#: The last port number; a port + worker index beyond it cannot be used.
MAX_PORT = 65_535


class WorkersError(Exception):
    """A ``--workers`` setting that cannot be run here (a usage error: exit status 2)."""


def reuse_port_available() -> bool:
    """Can several sockets share one UDP and TCP port, the kernel spreading the peers over
    them? Linux ``SO_REUSEPORT`` (other systems either lack it or do not balance UDP)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        return False
    return True


def offset(addr: tuple[str, int], index: int, what: str) -> tuple[str, int]:
    """``addr`` for worker ``index``: its port + ``index`` (port 0: still 0, ephemeral)."""
    host, port = addr
    if port == 0:
        return addr
    if port + index > MAX_PORT:
        raise WorkersError(f"{what} port {port} + worker index {index} is beyond {MAX_PORT}")
    return host, port + index


def worker_config(config: PcscfConfig, index: int) -> PcscfConfig:
    """The configuration of worker ``index``: the same Gm address, its own core and Iq
    ports."""
    return attrs.evolve(
        config,
        core=offset(config.core, index, "--core"),
        iq=offset(config.iq, index, "--iq"),
    )


def check(config: PcscfConfig, metrics: tuple[str, int] | None, workers: int) -> None:
    """Raise :class:`WorkersError` if ``workers`` workers cannot run with this configuration
    on this system."""
    if not reuse_port_available():
        raise WorkersError(
            f"--workers {workers} needs SO_REUSEPORT (Linux) to share the Gm port;"
            " it is not available here (run without --workers)"
        )
    last = workers - 1
    worker_config(config, last)
    if metrics is not None:
        offset(metrics, last, "--metrics")


def shared_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host``, for the workers to share (found by
    binding port 0; closed again before they start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise WorkersError(f"no port free for both UDP and TCP on {host}")


def strip_workers(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--workers N`` / ``--workers=N`` (also abbreviated)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = token.partition("=")
        if len(name) > len("--wor") and "--workers".startswith(name):
            skip = not eq
            continue
        out.append(token)
    return out


def pcscf_argv(argv: Sequence[str]) -> list[str]:
    """The arguments after the ``pcscf`` subcommand in a full ``e2ae`` command line."""
    args = list(argv)
    if "pcscf" not in args:
        raise WorkersError("--workers: cannot find the pcscf command line to give the workers")
    return args[args.index("pcscf") + 1 :]


def _set_parent_death_signal() -> None:
    """In the child (Linux): SIGTERM when the parent dies, so no worker outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def supervise(
    config: PcscfConfig,
    metrics: tuple[str, int] | None,
    workers: int,
    argv: Sequence[str],
    *,
    command: Sequence[str] | None = None,
) -> int:
    """Run ``workers`` workers of the ``e2ae pcscf`` command line ``argv`` (the arguments after
    ``pcscf``) until they have all exited; returns the exit status of the parent."""
    check(config, metrics, workers)
    base = strip_workers(argv)
    gm_host, gm_port = config.gm
    if gm_port == 0:
        gm_port = shared_port(gm_host)
        host = f"[{gm_host}]" if ":" in gm_host else gm_host
        base += ["--gm", f"{host}:{gm_port}"]
    prefix = list(command) if command is not None else [sys.executable, "-m", "lab.cli"]
    procs: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for _, proc in procs.values():
            if proc.returncode is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(workers):
            proc = subprocess.Popen(
                [*prefix, "pcscf", *base, "--worker-index", str(index)],
                stdout=subprocess.PIPE,
                process_group=0,  # a terminal's ^C reaches the parent only; it forwards it
                preexec_fn=_set_parent_death_signal,
            )
            procs[proc.pid] = (index, proc)
        lines = []
        for index, proc in procs.values():
            assert proc.stdout is not None
            line = proc.stdout.readline().decode(errors="replace").split()
            if not line or line[0] != "pcscf":
                code = proc.wait()
                log.error(
                    "P-CSCF worker {worker} (pid {pid}) failed to start, exit status {code}",
                    worker=index,
                    pid=proc.pid,
                    code=code,
                )
                asked = bool(stopping)  # a SIGTERM before every worker was ready
                forward(signal.SIGTERM, None)
                _wait_all(procs)
                return code if code > 0 else (0 if asked and code == 0 else 1)
            lines.append(" ".join([line[0], line[1], f"pid={proc.pid}", *line[2:]]))
        for text in lines:
            print(text, flush=True)
        return _wait_all(procs)
    finally:
        for _, proc in procs.values():
            if proc.stdout is not None:
                proc.stdout.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_all(procs: dict[int, tuple[int, subprocess.Popen[bytes]]]) -> int:
    """Wait for every worker; log each exit. 0 if every one exited with 0, else 1."""
    failed = False
    running = {pid for pid, (_, proc) in procs.items() if proc.returncode is None}
    while running:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in running:
            continue
        running.discard(pid)
        index, proc = procs[pid]
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        if code == 0:
            log.info("P-CSCF worker {worker} (pid {pid}) exited", worker=index, pid=pid, code=code)
        else:
            failed = True
            log.error(
                "P-CSCF worker {worker} (pid {pid}) died, exit status {code}; not restarted"
                " ({running} still running)",
                worker=index,
                pid=pid,
                code=code,
                running=len(running),
            )
    for _, proc in procs.values():
        if proc.returncode is not None and proc.returncode != 0:
            failed = True
    return 1 if failed else 0
