"""``e2ae iq``: look at the Iq profile from the command line.

- ``e2ae iq example [--call NAME] [--pcap FILE]``: print the example exchanges of the profile in
  canonical H.248 text (the ones docs/iq-profile.md shows), or write them, TPKT-framed on TCP port
  2944, into a pcap for Wireshark (needs ``text2pcap``).
- ``e2ae iq decode [FILE|-]``: decode H.248 text (one message, or TPKT-framed messages with
  ``--tpkt``) and print it canonically, or the H.248 error code and where the input is wrong.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CALLS = ("registration", "originating", "terminating", "errors", "all")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("iq", help="the Iq (H.248) profile: examples, decoding")
    sub = parser.add_subparsers(dest="iq_command", required=True, metavar="IQ_COMMAND")
    example = sub.add_parser("example", help="print the profile's example exchanges")
    example.add_argument("--call", choices=CALLS, default="all")
    example.add_argument("--pcap", type=Path, metavar="FILE", help="write a pcap instead")
    example.set_defaults(func=_example)
    decode = sub.add_parser("decode", help="decode H.248 text and print it canonically")
    decode.add_argument("file", nargs="?", default="-", help="file to read (default stdin)")
    decode.add_argument("--tpkt", action="store_true", help="input is TPKT-framed")
    decode.set_defaults(func=_decode)


def _steps(call: str) -> list[Any]:
    from iq import samples

    table = {
        "registration": samples.registration,
        "originating": samples.originating,
        "terminating": samples.terminating,
        "errors": samples.errors_and_shutdown,
        "all": samples.all_steps,
    }
    return table[call]()


def _example(args: argparse.Namespace) -> int:
    from iq import codec, tpkt

    steps = _steps(args.call)
    if args.pcap is None:
        for step in steps:
            arrow = "AGW -> ALG" if step.direction == "agw->alg" else "ALG -> AGW"
            sys.stdout.write(f"; {arrow}: {step.title}\n")
            sys.stdout.write(codec.encode(step.message).decode() + "\n")
        return 0
    text2pcap = shutil.which("text2pcap")
    if text2pcap is None:
        sys.stderr.write(
            "e2ae iq example --pcap needs text2pcap (Debian package wireshark-common)\n"
        )
        return 2
    lines: list[str] = []
    for step in steps:
        packet = tpkt.frame(codec.encode(step.message))
        lines.append("I" if step.direction == "agw->alg" else "O")
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
    sys.stdout.write(f"wrote {len(steps)} Iq messages to {args.pcap} (TCP port 2944, TPKT)\n")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from iq import codec, tpkt
    from iq.errors import CodecError

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        payloads = tpkt.TpktDecoder().feed(data) if args.tpkt else [data]
        for payload in payloads:
            sys.stdout.write(codec.encode(codec.decode(payload)).decode())
    except CodecError as exc:
        sys.stderr.write(f"e2ae iq decode: {exc}\n")
        return 1
    return 0
