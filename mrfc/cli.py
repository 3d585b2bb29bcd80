"""``e2ae mrfc --config FILE``: the conference focus (docs/mrfc.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from e2ae.logsetup import add_log_options


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mrfc",
        help="the conference focus (MRFC): SIP, MIKEY-TICKET, the MRFP over Mp",
        description="The MRFC of TS 33.328 Annex G: answers participants that dial in to a "
        "conference URI (KMS-keyed TLS-PSK or, for e2ae participants, plain), checks they are "
        "authorized, and has the MRFP terminate their MSRP and BFCP streams over Mp. "
        "See docs/mrfc.md.",
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="the TOML file")
    p.add_argument(
        "--dial-out",
        action="append",
        default=[],
        metavar="CONFERENCE=TARGET",
        help="once an MRFP registered, INVITE TARGET into CONFERENCE (repeatable)",
    )
    add_log_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from mrfc.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"e2ae mrfc: {args.config}: {exc}", file=sys.stderr)
        return 2
    dial_outs: list[tuple[str, str]] = []
    for item in args.dial_out:
        conference, sep, target = item.partition("=")
        if not sep or config.conference(conference) is None or not target:
            print(f"e2ae mrfc: --dial-out {item}: not CONFERENCE=TARGET", file=sys.stderr)
            return 2
        dial_outs.append((conference, target))
    from twisted.internet import defer, reactor

    from e2ae.logsetup import start_logging
    from mrfc.service import build

    start_logging(level=args.log_level, json_path=args.log_json)
    try:
        service = build(config, reactor=reactor)
        service.startService()
    except Exception as exc:  # a port in use, a certificate that cannot be read
        print(f"e2ae mrfc: cannot start: {exc}", file=sys.stderr)
        return 2
    host, port = service.address

    def up() -> None:  # said once the reactor runs, so that SIGTERM is handled
        print(f"e2ae mrfc: {config.identity} on {host}:{port}, Mp on {service.mp_port}", flush=True)
        for conference, target in dial_outs:
            d = service.mp.when_gateway()
            d.addCallback(
                lambda _, c=conference, t=target: defer.Deferred.fromCoroutine(
                    service.dial_out(c, t)
                )
            )
            d.addErrback(lambda f: print(f"e2ae mrfc: dial-out: {f.getErrorMessage()}", flush=True))

    reactor.callWhenRunning(up)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0
