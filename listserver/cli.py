"""``e2ae list-server``: the list server of KMS-protected immediate messaging
(docs/list-server.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from e2ae.logsetup import add_log_options


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "list-server",
        help="a list server: fans KMS-protected MESSAGEs to a group PSI out to its members",
        description="The list server of KMS-protected immediate messaging (TR 33.829 8.3.1.1): "
        "resolves the sender's ticket at the KMS, passes the protected parts on to the members "
        "that may resolve it, re-protects the message with a ticket of its own for the others, "
        "and stores it for members that are not registered until they register. See "
        "docs/list-server.md.",
    )
    p.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the TOML configuration"
    )
    add_log_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from listserver.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"e2ae list-server: {exc}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    from e2ae.logsetup import start_logging
    from listserver.service import build
    from listserver.store import StoreError

    start_logging(level=args.log_level, json_path=args.log_json)
    service = build(config, reactor=reactor)
    try:
        service.startService()
    except StoreError as exc:
        print(f"e2ae list-server: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a port in use: say so, as the other services do
        host, port = config.sip
        print(f"e2ae list-server: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    host, port = service.address

    def up() -> None:  # said once the reactor runs, so that SIGTERM is handled
        print(f"e2ae list-server: {config.identity} on {host}:{port}", flush=True)

    reactor.callWhenRunning(up)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0
