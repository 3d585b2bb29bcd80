"""``e2ae mrfp``: run the MRFP, the media processor of conferences, registered with an MRFC
over Mp.

e2ae mrfp --mrfc HOST:PORT --media-ip IP (--mp-tls PREFIX --mp-peer 'HASH HEX' | --mp-insecure)
          [--mid MID] [--handshake-timeout S] [--max-conferences N] [--max-terminations N]
          [--keylog FILE]

Mp is mutual-certificate TLS with the MRFC's certificate pinned (``--mp-peer``); plain TCP
only with ``--mp-insecure`` (it carries the streams' PSKs in clear: an explicit, logged
opt-in for lab set-ups). docs/mrfp.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from e2ae.logsetup import add_log_options, start_logging


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mrfp", help="run the MRFP (conference media: MSRP chat room, BFCP floors, TLS-PSK)"
    )
    parser.add_argument("--mrfc", required=True, metavar="HOST:PORT", help="the MRFC's Mp address")
    parser.add_argument(
        "--media-ip", required=True, metavar="IP", help="address of the media terminations"
    )
    parser.add_argument("--mid", default="<mrfp>", metavar="MID", help="H.248 mId (<mrfp>)")
    group = parser.add_argument_group("Mp link")
    group.add_argument(
        "--mp-tls",
        nargs="?",
        const=True,
        default=None,
        metavar="PREFIX",
        help="mutual-certificate TLS on Mp; PREFIX.crt and PREFIX.key, or --mp-cert/--mp-key",
    )
    group.add_argument("--mp-cert", type=Path, metavar="FILE", help="Mp certificate (PEM)")
    group.add_argument("--mp-key", type=Path, metavar="FILE", help="Mp private key (PEM)")
    group.add_argument(
        "--mp-peer",
        action="append",
        default=[],
        metavar="'HASH HEX'",
        help="pinned fingerprint of the MRFC's certificate (repeatable)",
    )
    group.add_argument(
        "--mp-insecure",
        action="store_true",
        help="plain TCP on Mp (the MRFC not authenticated, PSKs in clear; logged opt-in)",
    )
    group.add_argument("--mp-keylog", type=Path, metavar="FILE", help="NSS key log for Mp TLS")
    group.add_argument(
        "--mp-timeout", type=float, default=5.0, metavar="SECONDS", help="Mp request timeout"
    )
    media = parser.add_argument_group("media")
    media.add_argument(
        "--handshake-timeout", type=float, default=10.0, metavar="SECONDS", help="default 10"
    )
    media.add_argument("--max-conferences", type=int, default=64, metavar="N")
    media.add_argument("--max-terminations", type=int, default=256, metavar="N")
    media.add_argument(
        "--keylog", type=Path, metavar="FILE", help="NSS key log of the media TLS-PSK sessions"
    )
    add_log_options(parser)
    parser.set_defaults(func=_run)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--mrfc must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _mp_tls(args: argparse.Namespace) -> Any:
    from iq.config import IqTlsConfig
    from iq.errors import LocalIqError

    if args.mp_tls and args.mp_insecure:
        raise LocalIqError("--mp-tls and --mp-insecure exclude each other")
    if not args.mp_tls:
        if not args.mp_insecure:
            raise LocalIqError(
                "Mp is authenticated: give --mp-tls PREFIX and --mp-peer 'HASH HEX' (the MRFC's"
                " pinned fingerprint), or --mp-insecure for plain TCP"
            )
        return None
    cert, key = args.mp_cert, args.mp_key
    if isinstance(args.mp_tls, str):
        cert = cert or Path(args.mp_tls + ".crt")
        key = key or Path(args.mp_tls + ".key")
    if cert is None or key is None or not args.mp_peer:
        raise LocalIqError(
            "--mp-tls needs PREFIX (or --mp-cert and --mp-key) and at least one --mp-peer"
        )
    return IqTlsConfig.from_files(cert, key, list(args.mp_peer), args.mp_keylog)


def _run(args: argparse.Namespace) -> int:
    from iq.errors import IqError
    from mrfp.config import MrfpConfig

    try:
        host, port = _address(args.mrfc)
        tls = _mp_tls(args)
        config = MrfpConfig(
            media_ip=args.media_ip,
            max_conferences=args.max_conferences,
            max_terminations=args.max_terminations,
            handshake_timeout=args.handshake_timeout,
            keylog=args.keylog,
        )
    except (IqError, ValueError) as exc:
        print(f"e2ae mrfp: {exc}", file=sys.stderr)
        return 2

    from twisted.internet import reactor as default_reactor

    from mp.link import MpAgent
    from mrfp.service import MrfpHandler

    reactor: Any = default_reactor
    start_logging(level=args.log_level, json_path=args.log_json)
    handler = MrfpHandler(config, reactor=reactor)
    agent = MpAgent(
        handler,
        host,
        port,
        mid=args.mid,
        tls=tls,
        insecure=args.mp_insecure,
        reactor=reactor,
        timeout=args.mp_timeout,
    )
    handler.notify = agent.notify

    def _ready() -> None:
        agent.start()
        print(
            f"e2ae mrfp: media {config.media_ip}, registering with {host}:{port} as {args.mid}"
            f" over {'TLS' if tls is not None else 'PLAIN TCP'}",
            flush=True,
        )
        agent.when_registered().addCallback(
            lambda _: print(f"e2ae mrfp: registered with {host}:{port}", flush=True)
        )

    def _stop() -> Any:
        handler.stop()
        return agent.stop()

    reactor.callWhenRunning(_ready)
    reactor.addSystemEventTrigger("before", "shutdown", _stop)
    reactor.run()
    return 0
