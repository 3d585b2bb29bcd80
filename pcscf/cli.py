"""``e2ae pcscf``: run the P-CSCF (IMS-ALG) SIP proxy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from e2ae.address import AddressError
from e2ae.logsetup import add_log_options, start_logging
from pcscf.config import SCALAR_KEYS, ConfigError, PcscfConfig, build_config, load_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "pcscf",
        help="run the P-CSCF (IMS-ALG) SIP proxy",
        description="P-CSCF (IMS-ALG): SIP proxy between UEs (Gm) and the core. "
        "HOST:PORT with port 0 lets the system pick; the chosen ports are printed.",
    )
    parser.add_argument("--gm", metavar="HOST:PORT", help="SIP towards the UEs (UDP and TCP)")
    parser.add_argument("--core", metavar="HOST:PORT", help="SIP towards the core (UDP and TCP)")
    parser.add_argument("--next-hop", metavar="HOST:PORT", help="S-CSCF / next hop of the core")
    parser.add_argument(
        "--next-hop-transport", choices=("udp", "tcp"), help="transport to the next hop (udp)"
    )
    parser.add_argument("--iq", metavar="HOST:PORT", help="Iq address the AGWs connect to")
    parser.add_argument(
        "--iq-tls", metavar="PREFIX", help="Iq over TLS with PREFIX.crt and PREFIX.key"
    )
    parser.add_argument(
        "--iq-peer",
        action="append",
        metavar="'HASH HEX'",
        help="with --iq-tls: pinned fingerprint of an accepted AGW (repeatable)",
    )
    parser.add_argument(
        "--iq-keylog", metavar="FILE", type=Path, help="with --iq-tls: NSS key log of Iq TLS"
    )
    parser.add_argument(
        "--iq-insecure",
        action="store_true",
        default=None,
        help="plain TCP on Iq instead of --iq-tls: no AGW authenticated (needs --iq-allow)",
    )
    parser.add_argument(
        "--iq-allow",
        action="append",
        metavar="MID@ADDRESS",
        help="a gateway that may register, from ADDRESS[/LEN] (repeatable; needed with"
        " --iq-insecure, narrows the pinned AGWs with --iq-tls)",
    )
    parser.add_argument(
        "--iq-max-links", type=int, metavar="N", help="Iq connections open at once (64)"
    )
    parser.add_argument(
        "--iq-register-timeout",
        type=float,
        metavar="SECONDS",
        help="time an Iq link has to register (10)",
    )
    parser.add_argument(
        "--iq-max-pending", type=int, metavar="N", help="Iq requests awaiting a reply (1000)"
    )
    parser.add_argument(
        "--iq-max-gateways", type=int, metavar="N", help="gateways (mIds) remembered (64)"
    )
    for key, kind, text in (
        ("max_registrations", int, "registrations held; more: 503 (10000)"),
        ("max_registrations_per_source", int, "registrations per source address (16)"),
        ("max_calls", int, "call legs at once; more: 503 (5000)"),
        ("max_transactions", int, "SIP server transactions held; more: 503 (100000)"),
        ("retry_after", int, "Retry-After of those 503s, seconds (30)"),
        ("max_connections", int, "SIP TCP connections per side (1024)"),
        ("idle_timeout", float, "seconds a SIP TCP connection may be silent; 0: never (900)"),
        ("udp_tcp_threshold", int, "a larger request for a UDP hop goes over TCP; 0: never (1300)"),
    ):
        parser.add_argument("--" + key.replace("_", "-"), type=kind, metavar="N", help=text)
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default;"
        " docs/metrics.md)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="run N worker processes sharing the Gm address (SO_REUSEPORT, Linux); worker I"
        " uses the --core, --iq and --metrics ports + I (1; docs/pcscf.md, Workers)",
    )
    parser.add_argument("--worker-index", type=int, metavar="I", help=argparse.SUPPRESS)
    parser.add_argument("--policy", metavar="FILE", type=Path, help="e2ae policy (TOML)")
    parser.add_argument("--config", metavar="FILE", type=Path, help="config file (TOML)")
    parser.add_argument(
        "--check", action="store_true", help="validate the configuration, print it and exit"
    )
    add_log_options(parser)
    parser.set_defaults(func=_run)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 worker, not {value}")
    return value


def _config(args: argparse.Namespace) -> PcscfConfig:
    values: dict[str, Any] = {}
    inline = None
    base = Path()
    if args.config is not None:
        values, inline = load_file(args.config)
        base = args.config.parent
    for key in SCALAR_KEYS:
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.iq_peer:
        values["iq_peers"] = list(args.iq_peer)
    if args.iq_allow:
        values["iq_allow"] = list(args.iq_allow)
    if args.policy is not None:
        values["policy"] = str(args.policy.resolve())
    return build_config(values, base=base, inline_policy=inline)


def _run(args: argparse.Namespace) -> int:
    from e2ae.metrics import metrics_address

    try:
        config = _config(args)
        metrics = metrics_address(args.metrics)
    except (ConfigError, AddressError) as exc:
        print(f"e2ae pcscf: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(
            f"gm={_hp(config.gm)} core={_hp(config.core)} next-hop={_hp(config.next_hop)}"
            f"/{config.next_hop_transport} iq={_hp(config.iq)}"
            f" iq-tls={'yes' if config.iq_tls else 'no'}"
            f"{' iq-insecure' if config.iq_insecure else ''}"
            f"{''.join(' iq-allow=' + a for a in config.iq_allow)}"
            f"{'' if metrics is None else ' metrics=' + _hp(metrics)}"
        )
        return 0
    from pcscf import workers

    index: int | None = args.worker_index
    try:
        if index is not None:
            config = workers.worker_config(config, index)
            metrics = None if metrics is None else workers.offset(metrics, index, "--metrics")
        elif args.workers > 1:
            workers.check(config, metrics, args.workers)
            argv = workers.pcscf_argv(sys.argv[1:])
    except workers.WorkersError as exc:
        print(f"e2ae pcscf: {exc}", file=sys.stderr)
        return 2
    start_logging(level=args.log_level, json_path=args.log_json)
    if index is None and args.workers > 1:
        try:
            return workers.supervise(config, metrics, args.workers, argv)
        except workers.WorkersError as exc:
            print(f"e2ae pcscf: {exc}", file=sys.stderr)
            return 2
    from pcscf.service import serve

    return serve(config, metrics=metrics, worker=index)


def _hp(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
