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

After that table, TLS-PSK against certificates (``--psk-handshakes N`` per row, 0: none): a
Twisted TLS server on CPU 0 (the ``certs.psk`` context, TLS 1.2 PSK-AES128-GCM-SHA256 with the
empty identity, or the ``certs.tls`` profile with the client certificate pinned; it checks
what a real endpoint checks once the handshake is done) and one client process on CPU 1 doing
N full handshakes one after the other (a fresh connection each, no session offered, no
tickets), each with one byte and close_notify both ways. Rows: PSK, certificate TLS 1.2
(ECDHE-ECDSA-AES128-GCM-SHA256: the same bulk cipher and PRF hash as the PSK suite) and
certificate TLS 1.3 (what the profile negotiates), and, with a stunnel4 built with PSK, stunnel
as the server of PSK and of certificate TLS 1.2 (relaying each byte to the sink). Figures:
handshakes per second (client wall clock), server and client CPU ms per handshake (process CPU:
the Twisted server's own clock, stunnel's from /proc, the client's ``time.process_time``), after
a few warm-up handshakes; ratios PSK / certificate.

    python bench/relay.py            # 1 GiB, 2,000 handshakes, 1,000 idle sessions, 3 rounds
    python bench/relay.py --quick    # small sizes, one round: proves the bench works
    python bench/relay.py --psk-handshakes 1000   # more handshakes per TLS-PSK row (default 300)
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


# --------------------------------------------------------------------------- TLS-PSK handshakes

#: The suites the PSK rows compare: one bulk cipher and PRF hash, the key exchange differs.
PSK_SUITE = "PSK-AES128-GCM-SHA256"
CERT12_SUITE = "ECDHE-ECDSA-AES128-GCM-SHA256"
PSK_WARMUP = 10  # handshakes before the clock starts (lazy initialisation on both sides)
PSK_METRICS = ("handshakes/s", "server CPU ms/handshake", "client CPU ms/handshake")


def tls_client_context(spec: dict[str, Any]) -> Any:
    """The client side of one kind: ``certs.psk`` or the ``certs.tls`` profile."""
    from OpenSSL import SSL

    from certs.psk import psk_context
    from certs.tls import make_context

    if spec["kind"] == "psk":
        return psk_context("client", bytes.fromhex(spec["psk"]), ciphers=(PSK_SUITE,))
    ctx = make_context(certs.load_pair(Path(spec["cert"]), Path(spec["key"])), "client")
    if spec["version"] == "TLSv1.2":
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(CERT12_SUITE.encode())
    return ctx


def tls_handshake(ctx: Any, port: int) -> Any:
    """One full handshake (a fresh connection, no session offered), one byte, close_notify
    both ways: the server's close_notify comes after it has read the client's Finished and
    the byte, so the server's share of the handshake is done when this returns."""
    from OpenSSL import SSL

    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = SSL.Connection(ctx, raw)
    conn.set_connect_state()
    try:
        conn.do_handshake()
        conn.sendall(b"x")
        conn.shutdown()
        try:
            while conn.recv(4096):
                pass
        except SSL.ZeroReturnError:
            pass
        return conn
    finally:
        raw.close()


def tls_handshake_client(spec: dict[str, Any], port: int, count: int, out: Any, go: Any) -> None:
    pin_cpu(1)
    ctx = tls_client_context(spec)
    for i in range(PSK_WARMUP):
        conn = tls_handshake(ctx, port)
        if i == 0:
            got = (conn.get_protocol_version_name(), conn.get_cipher_name())
            if got[0] != spec["version"] or (spec["kind"] == "psk" and got[1] != PSK_SUITE):
                raise RuntimeError(f"{spec['name']}: negotiated {got}")
            group = conn.get_group_name() if spec["kind"] == "cert" else None
            out.put(" ".join(str(x) for x in (*got, group) if x))
    out.put("ready")
    go.wait()
    cpu0 = time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        tls_handshake(ctx, port)
    out.put((time.perf_counter() - start, time.process_time() - cpu0))


class TwistedTlsServer(Relay):
    """A Twisted TLS server of one kind (child process on CPU 0): the PSK context of
    ``certs.psk`` or the certificate profile of ``certs.tls`` with the client pinned."""

    def __init__(self, files: dict[str, Path], kind: str, psk: bytes) -> None:
        self.name = f"twisted {kind}"
        spec = {
            "kind": kind,
            "cert": str(files["server_crt"]),
            "key": str(files["server_key"]),
            "pin": files["client_fp"].read_text(),
            "psk": psk.hex(),
        }
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-tls", json.dumps(spec)]
        self.proc = subprocess.Popen(_pinned(cmd), stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        """The server's own CPU clock (SIGUSR1: it prints ``time.process_time()``), finer
        than the 10 ms ticks of /proc: a PSK handshake costs well under a millisecond."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return float(self.proc.stdout.readline())


class StunnelTlsServer(Relay):
    """stunnel4 on CPU 0, TLS 1.2 with PSK (``PSKsecrets``, the empty identity) or with the
    certificates of the relay rows; it relays each session's byte to the sink."""

    def __init__(
        self, files: dict[str, Path], kind: str, psk: bytes, backend: int, tmp: Path
    ) -> None:
        self.name = f"stunnel {kind}"
        self.port = free_port()
        conf = tmp / f"stunnel-{kind}.conf"
        if kind == "psk":
            secrets_file = tmp / "psk.secrets"
            secrets_file.write_text(f":{psk.hex()}\n")  # identity:key (hex); empty identity
            secrets_file.chmod(0o600)
            auth = f"PSKsecrets = {secrets_file}\nciphers = {PSK_SUITE}\n"
        else:
            auth = (
                f"cert = {files['server_crt']}\nkey = {files['server_key']}\n"
                f"CAfile = {files['client_crt']}\nverifyPeer = yes\nciphers = {CERT12_SUITE}\n"
            )
        conf.write_text(
            "foreground = yes\n"
            f"pid =\noutput = {tmp}/stunnel-{kind}.log\n"
            "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
            "[e2ae]\n"
            f"accept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{backend}\n"
            f"{auth}sslVersionMin = TLSv1.2\nsslVersionMax = TLSv1.2\n"
        )
        stunnel = shutil.which("stunnel4") or "stunnel4"
        self.proc = subprocess.Popen(
            _pinned([stunnel, str(conf)]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def cpu_seconds(self) -> float:
        # /proc ticks: stunnel's threads (one per session) cannot be asked, and at several
        # milliseconds a handshake the ticks are fine enough.
        return cpu_seconds(self.pid)


def stunnel_has_psk() -> bool:
    stunnel = shutil.which("stunnel4")
    if stunnel is None:
        return False
    version = subprocess.run(
        [stunnel, "-version"], capture_output=True, text=True, timeout=10, check=False
    )
    features = next(
        (line for line in (version.stdout + version.stderr).splitlines() if "TLS:" in line), ""
    )
    return "PSK" in features.split("TLS:", 1)[-1].split()[0].split(",")


def serve_tls(spec: str) -> None:
    """Child mode: a Twisted TLS server of one kind; each session is read and dropped."""
    params = json.loads(spec)
    from OpenSSL import SSL
    from twisted.internet import reactor
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from zope.interface import implementer

    from certs.psk import ALLOWED_PSK_CIPHERS, psk_context
    from certs.tls import make_context, peer_certificate_der

    if params["kind"] == "psk":
        ctx = psk_context("server", bytes.fromhex(params["psk"]))
    else:
        ctx = make_context(certs.load_pair(Path(params["cert"]), Path(params["key"])), "server")
    pins = [certs.Fingerprint.parse(params["pin"])]

    @implementer(IOpenSSLServerConnectionCreator)
    class Creator:
        def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
            conn = SSL.Connection(ctx, None)
            conn.set_app_data(tls_protocol)
            conn.set_accept_state()
            return conn

    class Session(Protocol):
        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]

        def handshakeCompleted(self) -> None:
            # What a real endpoint checks once the handshake is done: the pinned client
            # certificate, or (PSK) that a PSK suite was negotiated.
            handle = self.transport.getHandle()  # type: ignore[attr-defined]
            if params["kind"] == "psk":
                ok = handle.get_cipher_name() in ALLOWED_PSK_CIPHERS
            else:
                der = peer_certificate_der(handle)
                ok = der is not None and certs.matching_fingerprint(der, pins) is not None
            if not ok:
                self.transport.abortConnection()  # type: ignore[attr-defined]

        def dataReceived(self, data: bytes) -> None:
            pass

    def print_cpu(signum: int, frame: Any) -> None:
        os.write(1, f"{time.process_time()!r}\n".encode())

    signal.signal(signal.SIGUSR1, print_cpu)
    factory = Factory.forProtocol(Session)
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, TLSMemoryBIOFactory(Creator(), False, factory), backlog=1024, interface="127.0.0.1"
    )
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


def measure_tls_handshakes(make: Any, spec: dict[str, Any], count: int) -> dict[str, Any]:
    server = make()
    try:
        queue: Any = _MP.Queue()
        go: Any = _MP.Event()
        client = _MP.Process(
            target=tls_handshake_client, args=(spec, server.port, count, queue, go)
        )
        client.start()
        suite = queue.get(timeout=120)
        if queue.get(timeout=120) != "ready":
            raise RuntimeError(f"{spec['name']}: client not ready")
        cpu0 = server.cpu_seconds()
        go.set()
        wall, client_cpu = queue.get(timeout=600)
        server_cpu = server.cpu_seconds() - cpu0
        client.join()
        return {
            "handshakes/s": count / wall,
            "server CPU ms/handshake": server_cpu * 1000 / count,
            "client CPU ms/handshake": client_cpu * 1000 / count,
            "suite": suite,
        }
    finally:
        server.stop()


def psk_kinds(
    files: dict[str, Path], psk: bytes, tmp: Path, sink: Sink | None
) -> list[tuple[dict[str, Any], Any]]:
    """(client spec, server maker) of each row: Twisted PSK, certificate TLS 1.2 and 1.3, and,
    with a ``sink`` (stunnel4 with PSK support), stunnel PSK and certificate TLS 1.2."""
    base = {"cert": str(files["client_crt"]), "key": str(files["client_key"]), "psk": psk.hex()}
    rows: list[tuple[dict[str, Any], Any]] = []
    for name, kind, version in (
        ("psk-tls12", "psk", "TLSv1.2"),
        ("cert-tls12", "cert", "TLSv1.2"),
        ("cert-tls13", "cert", "TLSv1.3"),
    ):
        spec = {**base, "name": name, "kind": kind, "version": version}
        rows.append((spec, lambda kind=kind: TwistedTlsServer(files, kind, psk)))
    if sink is not None:
        for name, kind in (("stunnel-psk-tls12", "psk"), ("stunnel-cert-tls12", "cert")):
            spec = {**base, "name": name, "kind": kind, "version": "TLSv1.2"}
            rows.append(
                (spec, lambda kind=kind: StunnelTlsServer(files, kind, psk, sink.port, tmp))
            )
    return rows


def measure_psk(
    files: dict[str, Path], tmp: Path, sink: Sink | None, count: int, repeat: int
) -> dict[str, dict[str, Any]]:
    """Every row once per round (interleaved), ``repeat`` rounds; the median of each figure."""
    from mikey.transfer import TLS_PSK_BYTES

    psk = os.urandom(TLS_PSK_BYTES)  # a TEK-sized key (TS 33.328 Annex H)
    rows = psk_kinds(files, psk, tmp, sink)
    rounds: dict[str, list[dict[str, Any]]] = {spec["name"]: [] for spec, _ in rows}
    for _ in range(repeat):
        for spec, make in rows:
            rounds[spec["name"]].append(measure_tls_handshakes(make, spec, count))
    return {
        name: {
            **{m: statistics.median(r[m] for r in runs) for m in PSK_METRICS},
            "suite": runs[0]["suite"],
        }
        for name, runs in rounds.items()
    }


def report_psk(results: dict[str, dict[str, Any]], count: int, repeat: int) -> None:
    print(
        f"TLS-PSK against certificates: {count} full handshakes per row (one client, one after"
        f" the other, no resumption), each with one byte and close_notify; server on CPU 0,"
        f" client on CPU 1; median of {repeat} interleaved round(s)"
    )
    print(f"{'':20}" + "".join(f"{m:>25}" for m in PSK_METRICS) + "  negotiated")
    for name, figures in results.items():
        print(
            f"{name:20}"
            + "".join(f"{figures[m]:>25.2f}" for m in PSK_METRICS)
            + f"  {figures['suite']}"
        )
    for psk, cert in (
        ("psk-tls12", "cert-tls12"),
        ("psk-tls12", "cert-tls13"),
        ("stunnel-psk-tls12", "stunnel-cert-tls12"),
    ):
        if psk in results and cert in results:
            print(f"ratios {psk} / {cert}:")
            for m in PSK_METRICS:
                print(f"  {m:25} {results[psk][m] / results[cert][m]:6.2f}")


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
    parser.add_argument(
        "--psk-handshakes",
        type=int,
        help="full handshakes per TLS-PSK / certificate row, after the table"
        " (default 300, quick 50; 0 leaves the rows out)",
    )
    parser.add_argument("--serve-agw", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--serve-tls", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_agw:
        serve_agw(args.serve_agw)
        return 0
    if args.serve_tls:
        serve_tls(args.serve_tls)
        return 0
    size = args.size or (32 << 20 if args.quick else 1 << 30)
    handshakes = args.handshakes or (200 if args.quick else 2000)
    idle = args.idle or (100 if args.quick else 1000)
    psk_handshakes = args.psk_handshakes
    if psk_handshakes is None:
        psk_handshakes = 50 if args.quick else 300
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
            psk_note = ""
            stunnel_psk = "stunnel" in makers and stunnel_has_psk()
            if "stunnel" in makers and not stunnel_psk:
                psk_note = "stunnel4 has no PSK support here: its TLS-PSK rows skipped"
            psk_results = (
                measure_psk(files, tmp, sink if stunnel_psk else None, psk_handshakes, args.repeat)
                if psk_handshakes > 0
                else {}
            )
        finally:
            sink.close()
    report(results)
    if psk_results:
        report_psk(psk_results, psk_handshakes, args.repeat)
        if psk_note:
            print(psk_note)
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
