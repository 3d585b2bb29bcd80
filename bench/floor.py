"""The floor of a call in a Twisted process: the P-CSCF's datagrams and Iq round trips, nothing
else. ``bench/cps.py --floor`` runs it as a third path beside SIPp direct and the P-CSCF.

Two roles, one per process (both on the default reactor, epoll on Linux):

- ``relay``: a UDP port that passes every response (the SIPp UAS's) to the last address that
  sent it a request (the SIPp UAC) and every request to the UAS, unread (both SIPp run with
  ``-rsa`` toward it, so that ACK and BYE, and the UAS's responses, come here too). It does
  not parse SIP: it looks at the first bytes only. Like the P-CSCF with the AGW, it
  holds an INVITE, the 200 to an INVITE and a BYE until a round trip to the ``echo`` process
  over one TCP connection is over: a frame of the size of the Iq Reserve, Configure or Release
  of the e2ae profile, answered by one of the size of its reply (the sizes are given on the
  command line; cps.py takes them from ``iq.samples``). For each INVITE it also sends the UAC
  a ``100 Trying`` made of the INVITE's Via, From, To, Call-ID and CSeq lines, as the P-CSCF
  sends its 100, so that both write as many datagrams per call.
- ``echo``: a TCP port that answers every frame (``!H`` length, then the payload) with the
  frame of the reply size asked for in the first two payload bytes.

What the P-CSCF does beyond this (SIP parse and serialise, transactions, dialogs, the SDP
rewrite, the Iq codec and profile, its logs and metrics) is the difference between its CPU
per call and this one's. It prints ``floor relay=HOST:PORT`` / ``floor echo=HOST:PORT`` once
it listens, then runs until SIGTERM.

Usage: ``python bench/floor.py echo`` / ``python bench/floor.py relay --uas PORT --echo PORT
--sizes REQ:REP,REQ:REP,REQ:REP``
"""

from __future__ import annotations

import argparse
import collections
import struct
import sys
from typing import Any

from twisted.internet import protocol, reactor

HEAD = struct.Struct("!HH")  # frame length, then the reply size asked for
KEPT = (b"via:", b"from", b"to: ", b"call", b"cseq")


def trying(invite: bytes) -> bytes:
    """The ``100 Trying`` of ``invite``: its Via, From, To, Call-ID and CSeq lines as they are
    (the least a response needs for SIPp to match it to its call)."""
    lines = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    kept = [line for line in lines if line[:4].lower() in KEPT]
    return b"SIP/2.0 100 Trying\r\n" + b"\r\n".join(kept) + b"\r\nContent-Length: 0\r\n\r\n"


class Echo(protocol.Protocol):
    """Answers each frame with a frame of the size its first payload bytes ask for."""

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while len(self.buffer) >= HEAD.size:
            length, reply = HEAD.unpack_from(self.buffer)
            if len(self.buffer) < 2 + length:
                break
            self.buffer = self.buffer[2 + length :]
            out.append(HEAD.pack(reply, 0) + b"r" * max(reply - 2, 0))
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))


class Link(protocol.Protocol):
    """The relay's side of the echo connection: replies come back in order (FIFO)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buffer = b""
        self.waiting: collections.deque[tuple[bytes, Any]] = collections.deque()

    def connectionMade(self) -> None:
        self.relay.link = self
        print(f"floor relay=127.0.0.1:{self.relay.port}", flush=True)

    def ask(self, size: tuple[int, int], datagram: bytes, dest: Any) -> None:
        request, reply = size
        self.waiting.append((datagram, dest))
        assert self.transport is not None
        self.transport.write(HEAD.pack(request, reply) + b"q" * max(request - 2, 0))

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) < 2 + length:
                break
            self.buffer = self.buffer[2 + length :]
            datagram, dest = self.waiting.popleft()
            self.relay.send(datagram, dest)


class Relay(protocol.DatagramProtocol):
    def __init__(self, uas: int, sizes: list[tuple[int, int]]) -> None:
        self.uas = ("127.0.0.1", uas)
        self.reserve, self.configure, self.release = sizes
        self.uac: Any = None
        self.link: Link | None = None
        self.port = 0

    def send(self, datagram: bytes, dest: Any) -> None:
        assert self.transport is not None
        self.transport.write(datagram, dest)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        link = self.link
        assert link is not None
        if datagram.startswith(
            b"SIP/2.0 "
        ):  # from the UAS (SIPp -rsa sends from a port of its own)
            if self.uac is None:
                return
            if datagram.startswith(b"SIP/2.0 200") and b" INVITE\r\n" in datagram:
                link.ask(self.configure, datagram, self.uac)
            else:
                self.send(datagram, self.uac)
            return
        self.uac = addr
        if datagram.startswith(b"INVITE "):
            self.send(trying(datagram), addr)
            link.ask(self.reserve, datagram, self.uas)
        elif datagram.startswith(b"BYE "):
            link.ask(self.release, datagram, self.uas)
        else:
            self.send(datagram, self.uas)


def _sizes(text: str) -> list[tuple[int, int]]:
    pairs = [tuple(int(n) for n in item.split(":")) for item in text.split(",")]
    if len(pairs) != 3 or any(len(p) != 2 or min(p) < 2 for p in pairs):
        raise argparse.ArgumentTypeError("three REQUEST:REPLY byte counts, each at least 2")
    return [(p[0], p[1]) for p in pairs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("relay", "echo"))
    parser.add_argument("--uas", type=int, help="the SIPp UAS's UDP port (relay)")
    parser.add_argument("--echo", type=int, help="the echo process's TCP port (relay)")
    parser.add_argument("--sizes", type=_sizes, help="REQ:REP,REQ:REP,REQ:REP (relay)")
    args = parser.parse_args()
    if args.role == "echo":
        factory = protocol.Factory.forProtocol(Echo)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        print(f"floor echo=127.0.0.1:{port.getHost().port}", flush=True)
    else:
        if args.uas is None or args.echo is None or args.sizes is None:
            parser.error("relay needs --uas, --echo and --sizes")
        relay = Relay(args.uas, args.sizes)
        udp = reactor.listenUDP(0, relay, interface="127.0.0.1", maxPacketSize=65_535)  # type: ignore[attr-defined]
        relay.port = udp.getHost().port
        factory = protocol.ClientFactory()
        factory.buildProtocol = lambda addr: Link(relay)  # type: ignore[method-assign]
        reactor.connectTCP("127.0.0.1", args.echo, factory)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
