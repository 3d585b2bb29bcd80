"""``e2ae demo``, ``e2ae ue`` and ``e2ae run``: the lab's subcommands (no reactor import here)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run a whole e2ae lab in this process and check its scenarios",
        description="Starts a P-CSCF, an AGW registered over Iq, the core stub and two UEs on "
        "127.0.0.1 with fresh certificates; UE to UE through the same P-CSCF, UE to the plain "
        "core peer, an impostor at a live AGW port. Prints the call flow and a summary; exit "
        "status 0 only if every check passed.",
    )
    demo.add_argument("--json", action="store_true", help="print a JSON summary instead")
    demo.add_argument(
        "--timeout", type=float, default=30.0, help="give up after this many seconds (30)"
    )
    demo.add_argument(
        "--pcap",
        type=Path,
        metavar="FILE",
        help="capture the demo's loopback traffic with dumpcap into FILE (pcap), with the TLS "
        "key log beside it (FILE with the suffix .keys); prints the tshark command to read it",
    )
    demo.add_argument(
        "--keylog", type=Path, metavar="FILE", help="write the NSS key log of every TLS session"
    )
    demo.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="write the demo's JSON log (demo.json) and its sequence diagram (demo.svg) to DIR",
    )
    demo.set_defaults(func=_demo)

    trace = subparsers.add_parser(
        "trace",
        help="draw the JSON logs of a run (--log-json) as a sequence diagram (SVG)",
        description="Reads the --log-json files of a run (any of UEs, P-CSCF, AGW, core, KMS) "
        "and writes one SVG: a lane per element, an arrow per SIP message, Iq transaction and "
        "TLS event, tied to calls by call_id and iq_context (see docs/lab.md).",
    )
    trace.add_argument("logs", nargs="+", type=Path, metavar="LOG.json")
    trace.add_argument("--call-id", help="draw only this call")
    trace.add_argument("--out", type=Path, metavar="FILE.svg", help="default: standard output")
    trace.set_defaults(func=_trace)

    from lab.uecli import add_core_parser, add_ue_parser

    add_ue_parser(subparsers)
    add_core_parser(subparsers)

    run = subparsers.add_parser(
        "run",
        help="start the nodes of a lab topology file, each as its own process",
        description="Starts [core], [pcscf], [accessgw] and [[ue]] nodes of a TOML topology "
        "(see docs/lab.md) as separate processes; SIGINT/SIGTERM stops them all.",
    )
    run.add_argument("--config", type=Path, required=True, metavar="FILE.toml")
    run.add_argument("--start-timeout", type=float, default=20.0, metavar="SECONDS")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lab.run import main

    return main(args.config, start_timeout=args.start_timeout)


def _demo(args: argparse.Namespace) -> int:
    from lab.demo import main

    return main(
        args.json, timeout=args.timeout, pcap=args.pcap, keylog=args.keylog, trace=args.trace
    )


def _trace(args: argparse.Namespace) -> int:
    import sys

    from lab.trace import build, read_events, render_svg

    events = []
    for path in args.logs:
        try:
            events += read_events(path.read_text(encoding="utf-8").splitlines())
        except OSError as exc:
            print(f"e2ae trace: {path}: {exc.strerror}", file=sys.stderr)
            return 2
    diagram = build(events, call_id=args.call_id)
    if not diagram.arrows:
        print("e2ae trace: nothing to draw (no SIP, Iq or TLS event of the call)", file=sys.stderr)
        return 1
    svg = render_svg(diagram, title=f"e2ae call {args.call_id}" if args.call_id else "e2ae run")
    if args.out is None:
        sys.stdout.write(svg)
    else:
        args.out.write_text(svg, encoding="utf-8")
        print(f"trace: {args.out} ({len(diagram.arrows)} arrows, lanes {', '.join(diagram.lanes)})")
    return 0
