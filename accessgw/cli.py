"""``e2ae accessgw``: run the IMS Access Gateway, registered with an ALG over Iq.

e2ae accessgw --alg HOST:PORT --access-ip IP --core-ip IP --cert FILE --key FILE
              [--ports LO-HI] [--iq-tls ...] [--keylog FILE] [--config FILE]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

from e2ae.logsetup import add_log_options, start_logging


def register(subparsers: Any) -> None:
    from iq.config import add_arguments

    parser = subparsers.add_parser(
        "accessgw", help="run the IMS Access Gateway (TLS towards UEs, TCP relay to the core)"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file, [accessgw]")
    parser.add_argument("--alg", metavar="HOST:PORT", help="the ALG's Iq address")
    parser.add_argument("--access-ip", metavar="IP", help="bind address towards the UEs")
    parser.add_argument("--core-ip", metavar="IP", help="bind address towards the core")
    parser.add_argument("--cert", metavar="FILE", help="the AGW's certificate (PEM)")
    parser.add_argument("--key", metavar="FILE", help="the AGW's private key (PEM)")
    parser.add_argument("--ports", metavar="LO-HI", help="port range (default: ephemeral)")
    parser.add_argument("--keylog", metavar="FILE", help="NSS key log of the access TLS")
    parser.add_argument("--mid", metavar="MID", help="H.248 mId (default <agw.e2ae.lab>)")
    parser.add_argument(
        "--tls-establishment-timeout", type=float, metavar="SECONDS", help="default 30"
    )
    parser.add_argument("--handshake-timeout", type=float, metavar="SECONDS", help="default 10")
    parser.add_argument("--early-handshake", choices=("hold", "reject"), help="default hold")
    parser.add_argument("--hold-timeout", type=float, metavar="SECONDS", help="default 5")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="default none")
    parser.add_argument(
        "--no-malloc-tuning",
        dest="malloc_tuning",
        action="store_false",
        default=None,
        help="keep glibc's dynamic malloc thresholds (see docs/accessgw.md, The relay)",
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default;"
        " docs/metrics.md)",
    )
    add_log_options(parser)
    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from accessgw.config import KEYS, AgwConfig, load_file, load_identity
    from accessgw.errors import AccessGwError
    from accessgw.service import build
    from iq.config import faults_from_args, tls_from_args
    from iq.errors import IqError

    try:
        values: dict[str, Any] = load_file(args.config) if args.config else {}
        for key in KEYS:
            flag = getattr(args, key, None)
            if flag is not None:
                values[key] = flag
        config = AgwConfig.from_values(values)
        identity = load_identity(config.cert, config.key)
        iq_tls = tls_from_args(args)
        faults = faults_from_args(args)
        agw = build(
            config,
            iq_tls=iq_tls,
            iq_timeout=args.iq_timeout,
            faults=faults,
            identity=identity,
            metrics=config.metrics,
        )
    except (AccessGwError, IqError) as exc:
        print(f"e2ae accessgw: {exc}", file=sys.stderr)
        return 2

    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError

    start_logging(level=args.log_level, json_path=args.log_json)
    try:
        agw.startService()
    except CannotListenError as exc:
        print(f"e2ae accessgw: cannot listen: {exc}", file=sys.stderr)
        return 1
    host, port = agw.alg

    # Said once the reactor runs, so its signal handlers are in place: a SIGTERM sent as
    # soon as this line is read stops the service cleanly.
    def _ready() -> None:
        print(
            f"e2ae accessgw: access {config.access_ip} core {config.core_ip}"
            f" ports {config.ports or 'ephemeral'} fingerprint {agw.gateway.fingerprint().value}"
            f" registering with {host}:{port} as {config.mid}",
            flush=True,
        )

    # Said before the service closes them: how many terminations were still reserved when the
    # process was told to stop (0 after a run whose calls all ended; bench/cps.py reads it).
    def _stopping() -> None:
        held = len(agw.gateway.terminations)
        print(f"e2ae accessgw: stopping; terminations held={held}", flush=True)

    reactor.callWhenRunning(_ready)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", _stopping)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", agw.stopService)  # type: ignore[attr-defined]
    # What start-up made lives as long as the process: out of the collector's way, a full
    # collection no longer walks it.
    gc.freeze()
    reactor.run()  # type: ignore[attr-defined]
    return 0
