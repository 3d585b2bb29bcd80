"""Benchmark: MSRP messages per second the MRFP fans out to N participants, and its CPU per
message, against a plain-TCP MSRP relay of the same fan-out, in the same run.

For each N (default 2, 10 and 50 participants) and each server it measures:

- ``mrfp tls-psk``: the MRFP (``mrfp.service.MrfpHandler``) with one passive TLS-PSK MSRP
  termination per participant, each with its own key (TLS 1.2, the first suite of
  ``certs.psk.ALLOWED_PSK_CIPHERS``): it answers each SEND, reassembles, and sends a new SEND
  of its own session to every other participant (re-addressed, fresh transaction ids and
  Message-IDs), over each participant's own TLS session;
- ``mrfp plain``: the same MRFP with plain TCP terminations (an e2ae participant's leg behind
  the AGW, TS 33.328 Annex G.2);
- ``relay``: a plain-TCP MSRP relay of the same fan-out: it parses the MSRP frames
  (``e2ae.msrp.MsrpParser``) and writes each SEND frame, unchanged, to every other
  participant's connection; no per-participant session, no answer, no TLS. It is the floor
  of what any MSRP-aware fan-out costs in this language and reactor.

Each server runs in a child process of its own (``--serve``), so that its CPU time
(``/proc/PID/stat``, user + system) is the server's alone; the participants run in this
process. Participant 1 sends messages of ``--size`` bytes, keeping at most ``--window`` of them
not yet received by every other participant; the others receive (and answer what asks for an
answer). A run counts the messages that reached all N-1 receivers in ``--seconds``; it prints
messages/s, deliveries/s (messages x (N-1)), the server's CPU milliseconds per message, and the
ratio of each MRFP mode to the relay. It asserts nothing; the figures depend on the machine
(printed with them).

Usage: ``python bench/conference.py [--participants 2,10,50] [--seconds S] [--size BYTES]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from twisted.internet import defer, protocol, reactor, task  # noqa: E402
from twisted.internet.interfaces import IHandshakeListener  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from zope.interface import implementer  # noqa: E402

from certs.psk import ALLOWED_PSK_CIPHERS, psk_context  # noqa: E402
from e2ae import msrp  # noqa: E402
from e2ae.tlsconn import ContextCreator  # noqa: E402

MODES = ("mrfp tls-psk", "mrfp plain", "relay")
CONFERENCE = "sip:bench@lab.example"
SUITE = ALLOWED_PSK_CIPHERS[0]


def psk_of(seed: int, n: int) -> bytes:
    return (seed * 1000 + n).to_bytes(8, "big") * 4


def identity_of(n: int) -> bytes:
    return f"bench-{n}".encode()


# -- the servers (child processes) ---------------------------------------------------------------


def serve_mrfp(participants: int, security: str, seed: int) -> None:
    from mp.profile import JoinRequest, PskConfig
    from mrfp.conference import Limits
    from mrfp.config import MrfpConfig
    from mrfp.service import MrfpHandler

    # the bench's conference is bigger than the default bound (mrfp.conference.Limits)
    limits = Limits(max_participants=max(participants, Limits().max_participants))
    config = MrfpConfig("127.0.0.1", max_terminations=participants + 4, limits=limits)
    handler = MrfpHandler(config, reactor=reactor)
    out = []
    context = None
    for n in range(1, participants + 1):
        path = f"msrp://127.0.0.1:9/p{n};tcp"
        psk = None
        if security == "tls-psk":
            psk = PskConfig(psk_of(seed, n), identity_of(n), (SUITE,))
        reply = handler.join(
            JoinRequest(
                CONFERENCE,
                context,
                f"sip:p{n}@lab.example",
                "msrp",
                "passive",
                security,  # type: ignore[arg-type]
                tls_role="server" if security == "tls-psk" else None,
                psk=psk,
                remote_path=(path,),
            )
        )
        context = reply.context
        out.append({"port": reply.local.port, "path": reply.local_path, "own": path})
    print(json.dumps(out), flush=True)
    reactor.run()  # type: ignore[attr-defined]


class _RelayConn(protocol.Protocol):
    def __init__(self, hub: _RelayHub) -> None:
        self.hub = hub
        self.parser = msrp.MsrpParser()

    def connectionMade(self) -> None:
        self.hub.conns.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.hub.conns:
            self.hub.conns.remove(self)

    def dataReceived(self, data: bytes) -> None:
        self.parser.feed(data)
        while True:
            frame = self.parser.next_frame()
            if frame is None:
                return
            if isinstance(frame, msrp.Request) and frame.method == "SEND" and frame.body:
                raw = frame.to_bytes()
                for other in self.hub.conns:
                    if other is not self:
                        other.transport.write(raw)  # type: ignore[union-attr]


class _RelayHub(protocol.Factory):
    def __init__(self) -> None:
        self.conns: list[_RelayConn] = []

    def buildProtocol(self, addr: Any) -> _RelayConn:
        return _RelayConn(self)


def serve_relay(participants: int) -> None:
    hub = _RelayHub()
    port = reactor.listenTCP(0, hub, interface="127.0.0.1")  # type: ignore[attr-defined]
    number = port.getHost().port
    out = [
        {
            "port": number,
            "path": f"msrp://127.0.0.1:{number}/relay;tcp",
            "own": f"msrp://127.0.0.1:9/p{n};tcp",
        }
        for n in range(1, participants + 1)
    ]
    print(json.dumps(out), flush=True)
    reactor.run()  # type: ignore[attr-defined]


# -- the participants (this process) -------------------------------------------------------------


@implementer(IHandshakeListener)
class Participant(protocol.Protocol):
    def __init__(self, load: Load, n: int, own: str, server_path: str) -> None:
        self.load = load
        self.n = n
        self.session = msrp.MsrpSession(own, (server_path,), check_to_path=False)
        self.received = 0
        self.up: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.load.tls:
            return  # up once the handshake is done
        self._up()

    def handshakeCompleted(self) -> None:
        self._up()

    def _up(self) -> None:
        if not self.up.called:
            self.up.callback(None)

    def dataReceived(self, data: bytes) -> None:
        for event in self.session.receive_data(data):
            if isinstance(event, msrp.MessageReceived):
                self.received += 1
        out = self.session.data_to_send()
        if out:
            self.transport.write(out)  # type: ignore[union-attr]
        self.load.progress()

    def send_one(self, body: bytes) -> None:
        self.session.send_message(body, "text/plain", failure_report="no")
        self.transport.write(self.session.data_to_send())  # type: ignore[union-attr]


class _Factory(protocol.ClientFactory):
    def __init__(self, make: Any) -> None:
        self.make = make

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self.make()


class Load:
    def __init__(self, tls: bool, size: int, window: int) -> None:
        self.tls = tls
        self.body = b"x" * size
        self.window = window
        self.parts: list[Participant] = []
        self.sent = 0
        self.running = False

    def delivered(self) -> int:
        receivers = self.parts[1:]
        return min(p.received for p in receivers) if receivers else 0

    def progress(self) -> None:
        while self.running and self.sent - self.delivered() < self.window:
            self.parts[0].send_one(self.body)
            self.sent += 1


async def connect_all(load: Load, servers: list[dict[str, Any]], seed: int, relay: bool) -> None:
    waits = []
    for n, server in enumerate(servers, start=1):
        part = Participant(load, n, server["own"], server["path"])
        load.parts.append(part)
        factory: protocol.ClientFactory = _Factory(lambda p=part: p)
        if load.tls:
            ctx = psk_context("client", psk_of(seed, n), identity=identity_of(n), ciphers=(SUITE,))
            factory = TLSMemoryBIOFactory(ContextCreator(ctx), True, factory)  # type: ignore[assignment]
        reactor.connectTCP("127.0.0.1", server["port"], factory)  # type: ignore[attr-defined]
        waits.append(part.up)
    await defer.gatherResults(waits)
    # each participant binds its connection (RFC 4975 5.4: an empty SEND first); the relay
    # would forward nothing for them
    for part in load.parts:
        part.session.send_message(b"", "text/plain", failure_report="no")
        part.transport.write(part.session.data_to_send())  # type: ignore[union-attr]
    await task.deferLater(reactor, 0.2, lambda: None)
    if relay:
        return


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def measure(
    mode: str, participants: int, seconds: float, size: int, window: int
) -> dict[str, Any]:
    seed = participants
    args = [
        sys.executable,
        __file__,
        "--serve",
        mode,
        "--participants",
        str(participants),
        "--seed",
        str(seed),
    ]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        servers = json.loads(child.stdout.readline())
        load = Load(mode == "mrfp tls-psk", size, window)
        await connect_all(load, servers, seed, mode == "relay")
        base = load.delivered()
        cpu0, t0 = cpu_seconds(child.pid), time.perf_counter()
        load.running = True
        load.progress()
        await task.deferLater(reactor, seconds, lambda: None)
        load.running = False
        done = load.delivered() - base
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(child.pid) - cpu0
    finally:
        child.terminate()
        child.wait(10)
    rate = done / elapsed
    return {
        "mode": mode,
        "participants": participants,
        "messages_per_s": rate,
        "deliveries_per_s": rate * (participants - 1),
        "cpu_ms_per_message": 1000 * cpu / done if done else float("nan"),
        "server_cpu_share": cpu / elapsed,
    }


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


async def run(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.participants.split(",")]
    rows = []
    for n in counts:
        for mode in MODES:
            rows.append(await measure(mode, n, args.seconds, args.size, args.window))
    print(
        f"machine: {machine()}; message {args.size} bytes, window {args.window},"
        f" {args.seconds:g} s each"
    )
    print(
        f"{'N':>3} {'server':<13} {'msgs/s':>9} {'deliveries/s':>13} {'CPU ms/msg':>11} "
        f"{'CPU share':>9} {'rate/relay':>10} {'CPU/relay':>9}"
    )
    for n in counts:
        relay = next(r for r in rows if r["participants"] == n and r["mode"] == "relay")
        for r in (r for r in rows if r["participants"] == n):
            ratio = r["messages_per_s"] / relay["messages_per_s"] if relay["messages_per_s"] else 0
            cpu = r["cpu_ms_per_message"] / relay["cpu_ms_per_message"]
            print(
                f"{n:>3} {r['mode']:<13} {r['messages_per_s']:>9,.0f} "
                f"{r['deliveries_per_s']:>13,.0f} {r['cpu_ms_per_message']:>11.3f} "
                f"{r['server_cpu_share']:>9.2f} {ratio:>9.2f}x {cpu:>8.2f}x"
            )
    print(
        "CPU share: the server's CPU seconds per second of the run; below 1 the participants"
        " (this process) set the pace, so compare CPU ms/msg"
    )
    if args.json:
        print(json.dumps(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", default="2,10,50", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--size", type=int, default=200, help="bytes per message")
    parser.add_argument("--window", type=int, default=16, help="messages in flight at most")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        n = int(args.participants)
        if args.serve == "relay":
            serve_relay(n)
        else:
            serve_mrfp(n, args.serve.split()[1], args.seed)
        return 0
    task.react(lambda r: defer.Deferred.fromCoroutine(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
