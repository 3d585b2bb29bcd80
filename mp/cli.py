"""``e2ae mp``: look at the Mp profile from the command line.

- ``e2ae mp example [--pcap FILE] [--show-keys]``: print one conference stream's exchange
  (the one docs/mp-profile.md shows) in canonical H.248 text, or write it, TPKT-framed on TCP
  port 2944, into a pcap for Wireshark (needs ``text2pcap``). Text output has the example PSK
  redacted unless ``--show-keys``; the pcap holds the messages as sent.
- ``e2ae mp decode [FILE|-] [--tpkt]``: decode H.248 text, print it canonically with every
  PSK redacted, and the Mp operation of each transaction; or the H.248 error code and why.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: The PSK of the examples (not a secret: it is printed in docs/mp-profile.md).
EXAMPLE_KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("mp", help="the Mp (MRFC-MRFP H.248) profile")
    sub = parser.add_subparsers(dest="mp_command", required=True, metavar="MP_COMMAND")
    example = sub.add_parser("example", help="print the profile's example exchange")
    example.add_argument("--pcap", type=Path, metavar="FILE", help="write a pcap instead")
    example.add_argument("--show-keys", action="store_true", help="do not redact the PSK")
    example.set_defaults(func=_example)
    decode = sub.add_parser("decode", help="decode Mp H.248 text and print it, keys redacted")
    decode.add_argument("file", nargs="?", default="-", help="file to read (default stdin)")
    decode.add_argument("--tpkt", action="store_true", help="input is TPKT-framed")
    decode.set_defaults(func=_decode)


def examples() -> list[tuple[str, str, Any]]:
    """(direction, title, message) of one conference stream, start to end."""
    from iq.codec import ErrorDescriptor, Message, TransactionReply, TransactionRequest
    from mp import profile as p

    psk = p.PskConfig(EXAMPLE_KEY, b"e2ae-cs1", ("PSK-AES128-GCM-SHA256",))
    join = p.JoinRequest(
        "sip:conf1@mrfc.example.net",
        None,
        "sip:alice@example.net",
        "msrp",
        "active",
        "tls-psk",
        "client",
        psk,
        None,
        ("msrp://192.0.2.10:5000/a1;tcp",),
        call_id="c1@example.net",
    )
    joined = p.JoinReply(
        7, "msrp/1", p.Endpoint("198.51.100.1", 40000), "msrp://198.51.100.1:40000/s1;tcp"
    )
    connect = p.ConnectRequest(7, "msrp/1", p.Endpoint("192.0.2.10", 5000))
    start = p.StartTlsRequest(7, "msrp/1")
    leave = p.LeaveRequest(7, "msrp/1")
    tcp = p.NotifyRequest(p.MpEvent(7, "msrp/1", "tcp-established"), "20261207T10000000")
    tls = p.NotifyRequest(p.MpEvent(7, "msrp/1", "tls-established"), "20261207T10000012")
    register = p.ServiceChangeRequest("register")
    steps: list[tuple[str, str, Any, Any]] = [
        ("mrfp->mrfc", "ServiceChange: the MRFP registers", register, p.ServiceChangeReply()),
        ("mrfc->mrfp", "Join: Alice's MSRP stream, TLS-PSK", join, joined),
        ("mrfc->mrfp", "Connect: the MRFP is the TCP active end", connect, p.AckReply()),
        ("mrfp->mrfc", "Notify: TCP established", tcp, p.NotifyReply()),
        ("mrfc->mrfp", "StartTls: the MRFP is the TLS client", start, p.AckReply()),
        ("mrfp->mrfc", "Notify: TLS established", tls, p.NotifyReply()),
        ("mrfc->mrfp", "Leave", leave, p.LeaveReply(p.StreamStatistics(1832, 20417, 3, 12))),
    ]
    mids = {"mrfc->mrfp": ("<mrfc>", "<mrfp>"), "mrfp->mrfc": ("<mrfp>", "<mrfc>")}
    back = {"mrfc->mrfp": "mrfp->mrfc", "mrfp->mrfc": "mrfc->mrfp"}
    out: list[tuple[str, str, Any]] = []
    for tid, (direction, title, request, reply) in enumerate(steps, start=1):
        sender, receiver = mids[direction]
        actions = p.encode_request(request)
        out.append((direction, title, Message(sender, (TransactionRequest(tid, actions),))))
        answer = TransactionReply(tid, p.encode_reply(request, reply))
        out.append((back[direction], "reply", Message(receiver, (answer,))))
    error = TransactionReply(99, error=ErrorDescriptor(411, "context 12 unknown"))
    out.append(
        ("mrfp->mrfc", "an error: a request for an unknown context", Message("<mrfp>", (error,)))
    )
    return out


def _example(args: argparse.Namespace) -> int:
    from iq import codec, tpkt
    from mp.profile import redact

    steps = examples()
    if args.pcap is None:
        for direction, title, message in steps:
            arrow = "MRFP -> MRFC" if direction == "mrfp->mrfc" else "MRFC -> MRFP"
            text = codec.encode(message).decode()
            sys.stdout.write(f"; {arrow}: {title}\n")
            sys.stdout.write((text if args.show_keys else redact(text)) + "\n")
        return 0
    text2pcap = shutil.which("text2pcap")
    if text2pcap is None:
        sys.stderr.write(
            "e2ae mp example --pcap needs text2pcap (Debian package wireshark-common)\n"
        )
        return 2
    lines: list[str] = []
    for direction, _, message in steps:
        packet = tpkt.frame(codec.encode(message))
        lines.append("I" if direction == "mrfp->mrfc" else "O")
        for offset in range(0, len(packet), 16):
            chunk = packet[offset : offset + 16]
            lines.append(f"{offset:06x} " + " ".join(f"{b:02x}" for b in chunk))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as dump:
        dump.write("\n".join(lines) + "\n")
        dump.flush()
        result = subprocess.run(
            [text2pcap, "-q", "-D", "-T", "40000,2944", dump.name, str(args.pcap)],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        return 1
    sys.stdout.write(f"wrote {len(steps)} Mp messages to {args.pcap} (TCP port 2944, TPKT)\n")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from iq import codec, tpkt
    from iq.codec import TransactionRequest
    from iq.errors import RemoteIqError
    from mp import profile

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        payloads = tpkt.TpktDecoder().feed(data) if args.tpkt else [data]
        for payload in payloads:
            message = codec.decode(payload)
            sys.stdout.write(profile.redact(codec.encode(message).decode()))
            for t in message.transactions:
                if isinstance(t, TransactionRequest):
                    op = profile.decode_request(t.actions)
                    sys.stdout.write(f"; transaction {t.transaction_id}: {op!r}\n")
    except RemoteIqError as exc:
        sys.stderr.write(f"e2ae mp decode: {profile.redact(str(exc))}\n")
        return 1
    return 0
