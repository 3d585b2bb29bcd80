"""TLS -> TCP relay benchmark: the AGW relay against stunnel4 and haproxy, in one run.

Every relay gets the same server certificate and requires the same client certificate (the
AGW pins its fingerprint; stunnel and haproxy trust exactly that certificate). Loopback only.
The relay runs on CPU 0, the clients and the TCP sink on CPU 1 (when there are two).

Figures, per relay:
- bulk: one session carries SIZE bytes towards the sink; MB/s (first to last byte at the sink)
  and the relay process's CPU seconds per GiB;
- handshakes: 4 client processes open mutual-auth TLS sessions one after the other; each sends
  one byte and ends with close_notify, and every byte must reach the sink (so every relay
  really connects to the core for every session); sessions per second and relay CPU ms per
  handshake;
- idle: N sessions each carry 64 KiB and then stay open; relay resident memory per session
  (RSS after 2 s of quiet minus RSS before).

Each figure is the median of interleaved rounds (every relay once per round). Prints figures
and ratios against haproxy (and stunnel); asserts nothing.

    python bench/relay.py            # 1 GiB, 2,000 handshakes, 1,000 idle sessions, 3 rounds
    python bench/relay.py --quick    # small sizes, one round: proves the bench works
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import certs  # noqa: E402

CHUNK = 256 * 1024
_MP = multiprocessing.get_context("spawn")  # no fork of a process with a sink thread
IDLE_BYTES = 64 * 1024
QUIET = 2.0  # seconds without traffic before idle memory is measured


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pin_cpu(cpu: int) -> None:
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"relay did not listen on {port}")


class Sink:
    """The core side: a selector loop that accepts, counts and discards (in a thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.total = 0
        self.first: float | None = None
        self.last = 0.0
        self.conns: set[socket.socket] = set()
        self.stopped = False
        self.buf = bytearray(1 << 20)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.total = 0
        self.first = None

    def run(self) -> None:
        pin_cpu(1)
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        view = memoryview(self.buf)
        while not self.stopped:
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.sock:
                    try:
                        conn, _ = self.sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    self.conns.add(conn)
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    n = sock.recv_into(view)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    sel.unregister(sock)
                    self.conns.discard(sock)
                    sock.close()
                    continue
                now = time.perf_counter()
                if self.first is None:
                    self.first = now
                self.last = now
                self.total += n

    def wait_total(self, target: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.total < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink got {self.total} of {target} bytes")
            time.sleep(0.01)

    def close(self) -> None:
        self.stopped = True
        self.thread.join()
        for conn in list(self.conns):
            conn.close()
        self.sock.close()


def client_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the benchmark pins nothing on the client side
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def tls_connect(ctx: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw)


def bulk_client(cert: str, key: str, port: int, size: int) -> None:
    pin_cpu(1)
    ctx = client_context(Path(cert), Path(key))
    tls = tls_connect(ctx, port)
    block = memoryview(b"\0" * CHUNK)
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        tls.sendall(block[:n])
        sent += n
    # A clean end: close_notify, then wait for the relay's (a bare close() with unread
    # tickets in the receive buffer would reset the connection and lose data in flight).
    try:
        tls.unwrap().close()
    except (OSError, ssl.SSLError):
        tls.close()


def handshake_client(cert: str, key: str, ports: list[int], out: Any, go: Any) -> None:
    pin_cpu(1)
    ctx = client_context(Path(cert), Path(key))
    out.put("ready")
    go.wait()
    done = 0
    for port in ports:
        tls = tls_connect(ctx, port)
        tls.sendall(b"x")
        # A whole session, as the bulk client ends it: close_notify, then the relay's. (A bare
        # close() with the server's session tickets unread resets the connection, and a relay
        # may then drop the session before it has connected to the core at all.)
        try:
            tls.unwrap().close()
        except (OSError, ssl.SSLError):
            tls.close()
        done += 1
    out.put(done)


# --------------------------------------------------------------------------- relays


class Relay:
    name = ""
    proc: subprocess.Popen[bytes]

    def ports(self, count: int) -> list[int]:
        """The access ports of ``count`` sessions (one shared port for the C relays)."""
        return [self.port] * count

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        return self.proc.pid


def _pinned(cmd: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", "0", *cmd] if taskset and (os.cpu_count() or 1) > 1 else cmd


class AgwRelay(Relay):
    name = "agw"

    def __init__(self, files: dict[str, Path], backend: int, count: int) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-agw",
            json.dumps(
                {
                    "cert": str(files["server_crt"]),
                    "key": str(files["server_key"]),
                    "pin": files["client_fp"].read_text(),
                    "backend": backend,
                    "count": count,
                }
            ),
        ]
        self.proc = subprocess.Popen(_pinned(cmd), stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self._ports: list[int] = json.loads(self.proc.stdout.readline())
        self.port = self._ports[0]

    def ports(self, count: int) -> list[int]:
        return self._ports[:count]


class StunnelRelay(Relay):
    name = "stunnel"

    def __init__(self, files: dict[str, Path], backend: int, count: int, tmp: Path) -> None:
        self.port = free_port()
        conf = tmp / "stunnel.conf"
        conf.write_text(
            "foreground = yes\n"
            f"pid =\noutput = {tmp}/stunnel.log\n"
            "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
            "[e2ae]\n"
            f"accept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{backend}\n"
            f"cert = {files['server_crt']}\nkey = {files['server_key']}\n"
            f"CAfile = {files['client_crt']}\nverifyPeer = yes\n"
            "sslVersionMin = TLSv1.2\n"
        )
        stunnel = shutil.which("stunnel4") or "stunnel4"
        self.proc = subprocess.Popen(
            _pinned([stunnel, str(conf)]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)


class HaproxyRelay(Relay):
    name = "haproxy"

    def __init__(self, files: dict[str, Path], backend: int, count: int, tmp: Path) -> None:
        self.port = free_port()
        pem = tmp / "haproxy.pem"
        pem.write_bytes(files["server_crt"].read_bytes() + files["server_key"].read_bytes())
        conf = tmp / "haproxy.cfg"
        conf.write_text(
            "global\n  nbthread 1\n  maxconn 8000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n"
            "  timeout server 300s\n"
            "frontend e2ae\n"
            f"  bind 127.0.0.1:{self.port} ssl crt {pem} verify required ca-file"
            f" {files['client_crt']} ssl-min-ver TLSv1.2\n"
            "  default_backend core\n"
            f"backend core\n  server s1 127.0.0.1:{backend}\n"
        )
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.proc = subprocess.Popen(
            _pinned([haproxy, "-db", "-f", str(conf)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)


def serve_agw(spec: str) -> None:
    """Child mode: an AccessGateway with ``count`` terminations pinned to the client cert."""
    params = json.loads(spec)
    from twisted.internet import reactor

    from accessgw.config import load_identity
    from accessgw.gateway import AccessGateway
    from accessgw.malloc import tune_malloc
    from accessgw.termination import Timers

    if params.get("malloc_tuning", True):
        tune_malloc()  # as the e2ae accessgw service does
    identity = load_identity(Path(params["cert"]), Path(params["key"]))
    pin = certs.Fingerprint.parse(params["pin"])
    gw = AccessGateway(
        "127.0.0.1",
        "127.0.0.1",
        identity,
        timers=Timers(establishment=3600, handshake=60),
    )
    ports = []
    for _ in range(params["count"]):
        r = gw.reserve(fingerprints=[pin], core_role="connect")
        gw.configure(r.termination, core_address=("127.0.0.1", params["backend"]))
        ports.append(r.access_port)
    print(json.dumps(ports), flush=True)
    from e2ae.logsetup import start_logging

    # As `e2ae accessgw --log-level error`, like haproxy without a log target: the handshake
    # clients close without reading, and each such reset would be a warning line.
    # (AGW_BENCH_LOG=info shows every session.)
    start_logging(level=os.environ.get("AGW_BENCH_LOG", "error"))
    reactor.run()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- measurements


def measure_bulk(make: Any, files: dict[str, Path], sink: Sink, size: int) -> dict[str, float]:
    relay = make(sink.port, 1)
    try:
        sink.reset()
        cpu0 = cpu_seconds(relay.pid)
        client = _MP.Process(
            target=bulk_client,
            args=(str(files["client_crt"]), str(files["client_key"]), relay.ports(1)[0], size),
        )
        client.start()
        sink.wait_total(size, timeout=600)
        cpu = cpu_seconds(relay.pid) - cpu0
        client.join()
        elapsed = sink.last - (sink.first or sink.last)
        return {
            "MB/s": size / elapsed / 1e6 if elapsed > 0 else float("nan"),
            "CPU s/GiB": cpu * (1 << 30) / size,
        }
    finally:
        relay.stop()


def measure_handshakes(
    make: Any, files: dict[str, Path], sink: Sink, count: int, clients: int = 4
) -> dict[str, float]:
    relay = make(sink.port, count)
    try:
        ports = relay.ports(count)
        per = count // clients
        queue: Any = _MP.Queue()
        go: Any = _MP.Event()
        procs = [
            _MP.Process(
                target=handshake_client,
                args=(
                    str(files["client_crt"]),
                    str(files["client_key"]),
                    ports[i * per : (i + 1) * per],
                    queue,
                    go,
                ),
            )
            for i in range(clients)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            queue.get(timeout=120)  # every client process is up before the clock starts
        sink.reset()
        cpu0 = cpu_seconds(relay.pid)
        start = time.perf_counter()
        go.set()
        done = sum(queue.get(timeout=600) for _ in procs)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(relay.pid) - cpu0
        for p in procs:
            p.join()
        # Every session carried its byte to the core: each relay did the same work.
        sink.wait_total(done, timeout=30)
        return {"handshakes/s": done / elapsed, "CPU ms/handshake": cpu * 1000 / done}
    finally:
        relay.stop()


def measure_idle(make: Any, files: dict[str, Path], sink: Sink, count: int) -> dict[str, float]:
    relay = make(sink.port, count)
    sessions: list[ssl.SSLSocket] = []
    try:
        ctx = client_context(files["client_crt"], files["client_key"])
        payload = b"\0" * IDLE_BYTES
        sink.reset()
        time.sleep(0.3)
        before = rss_kib(relay.pid)
        for port in relay.ports(count):
            tls = tls_connect(ctx, port)
            tls.sendall(payload)
            sessions.append(tls)
        sink.wait_total(count * IDLE_BYTES, timeout=600)
        time.sleep(QUIET)  # idle means idle: what a relay frees once quiet is not counted
        after = rss_kib(relay.pid)
        return {"RSS KiB/session": (after - before) / count}
    finally:
        for tls in sessions:
            tls.close()
        relay.stop()


def make_files(tmp: Path) -> dict[str, Path]:
    now = datetime.datetime.now(datetime.UTC)
    server = certs.generate("agw", now=now)
    client = certs.generate("ue", now=now)
    certs.write(server, tmp)
    certs.write(client, tmp)
    fp = tmp / "client.fp"
    fp.write_text(client.fingerprint("sha-256").value)
    return {
        "server_crt": tmp / "agw.crt",
        "server_key": tmp / "agw.key",
        "client_crt": tmp / "ue.crt",
        "client_key": tmp / "ue.key",
        "client_fp": fp,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--size", type=int, help="bulk bytes (default 1 GiB, quick 32 MiB)")
    parser.add_argument("--handshakes", type=int, help="default 2000, quick 200")
    parser.add_argument("--idle", type=int, help="idle sessions (default 1000, quick 100)")
    parser.add_argument(
        "--relays", default="agw,stunnel,haproxy", help="comma-separated subset to run"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="interleaved rounds; figures are medians (default 3, quick 1)",
    )
    parser.add_argument("--serve-agw", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_agw:
        serve_agw(args.serve_agw)
        return 0
    size = args.size or (32 << 20 if args.quick else 1 << 30)
    handshakes = args.handshakes or (200 if args.quick else 2000)
    idle = args.idle or (100 if args.quick else 1000)
    args.repeat = max(1, args.repeat or (1 if args.quick else 3))
    wanted = [r for r in args.relays.split(",") if r]
    with tempfile.TemporaryDirectory(prefix="e2ae-bench-") as tmpdir:
        tmp = Path(tmpdir)
        files = make_files(tmp)
        makers: dict[str, Any] = {}
        if "agw" in wanted:
            makers["agw"] = lambda backend, count: AgwRelay(files, backend, count)
        if "stunnel" in wanted and shutil.which("stunnel4"):
            makers["stunnel"] = lambda backend, count: StunnelRelay(files, backend, count, tmp)
        if "haproxy" in wanted and (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()):
            makers["haproxy"] = lambda backend, count: HaproxyRelay(files, backend, count, tmp)
        missing = sorted(set(wanted) - set(makers))
        if missing:
            print(f"not installed, skipped: {', '.join(missing)}")
        sink = Sink()
        results: dict[str, dict[str, float]] = {name: {} for name in makers}
        try:
            print(
                f"bulk {size / (1 << 20):.0f} MiB, {handshakes} handshakes (4 clients),"
                f" {idle} idle sessions x 64 KiB; loopback, TLS 1.3, client certificate required;"
                f" median of {args.repeat} interleaved round(s)"
            )
            # Interleaved rounds (every relay once per round), then the median of each figure:
            # a burst of load from elsewhere on the machine hits one round, not one relay.
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
            for _ in range(args.repeat):
                for name, make in makers.items():
                    figures = measure_bulk(make, files, sink, size)
                    figures.update(measure_handshakes(make, files, sink, handshakes))
                    figures.update(measure_idle(make, files, sink, idle))
                    rounds[name].append(figures)
            for name, runs in rounds.items():
                results[name] = {m: statistics.median(r[m] for r in runs) for m in runs[0]}
        finally:
            sink.close()
    report(results)
    return 0


def report(results: dict[str, dict[str, float]]) -> None:
    metrics = ["MB/s", "CPU s/GiB", "handshakes/s", "CPU ms/handshake", "RSS KiB/session"]
    names = list(results)
    print(f"{'':20}" + "".join(f"{n:>12}" for n in names))
    for m in metrics:
        print(f"{m:20}" + "".join(f"{results[n].get(m, float('nan')):>12.2f}" for n in names))
    if "agw" in results:
        for peer in ("haproxy", "stunnel"):
            if peer not in results:
                continue
            print(f"ratios agw / {peer}:")
            for m in metrics:
                a, b = results["agw"].get(m), results[peer].get(m)
                if a is not None and b:
                    print(f"  {m:20} {a / b:6.2f}")


if __name__ == "__main__":
    sys.exit(main())
