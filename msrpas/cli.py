"""``e2ae msrp-as``: the MSRP application server of the hop-by-hop model (docs/msrp-as.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from e2ae.address import parse_host_port
from e2ae.logsetup import add_log_options


def _hostport(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text, "HOST:PORT")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "msrp-as",
        help="an MSRP application server: terminates and re-originates KMS-keyed TLS-PSK",
        description="A back-to-back user agent for KMS-keyed MSRP and BFCP calls (TR 33.829 "
        "8.3.1.2): resolves the caller's ticket at the KMS, re-originates the Ticket Transfer "
        "toward the callee with a ticket of its own, terminates TLS-PSK on both legs and "
        "relays the media. See docs/msrp-as.md.",
    )
    p.add_argument("--sip", type=_hostport, required=True, metavar="HOST:PORT", help="SIP (UDP)")
    p.add_argument(
        "--next-hop",
        type=_hostport,
        required=True,
        metavar="HOST:PORT",
        help="the S-CSCF that re-originated INVITEs go to",
    )
    p.add_argument("--media-ip", default="127.0.0.1", metavar="IP", help="media address")
    p.add_argument("--identity", required=True, metavar="URI", help="the AS's KMS identity")
    p.add_argument("--kms", type=_hostport, required=True, metavar="HOST:PORT")
    p.add_argument("--kms-pin", required=True, metavar="'HASH HEX'", help="the KMS's fingerprint")
    p.add_argument(
        "--kms-psk-file",
        type=Path,
        required=True,
        metavar="FILE",
        help="the key the AS shares with the KMS, as hex",
    )
    p.add_argument(
        "--kms-identity", default="kms.e2ae.lab", metavar="URI", help="IDRkms (kms.e2ae.lab)"
    )
    p.add_argument(
        "--cert",
        type=Path,
        required=True,
        metavar="PREFIX",
        help="PREFIX.crt/PREFIX.key: the certificate the KMS knows the AS by",
    )
    p.add_argument("--keylog", type=Path, metavar="FILE", help="NSS key log of the TLS-PSK legs")
    p.add_argument("--max-calls", type=int, default=100, metavar="N", help="calls held (100)")
    p.add_argument(
        "--setup-timeout", type=float, default=10.0, metavar="SECONDS", help="per handshake (10)"
    )
    add_log_options(p)
    p.set_defaults(func=_main)


def config_of(args: argparse.Namespace) -> Any:
    from certs.errors import CertsError
    from certs.fingerprint import Fingerprint
    from kms.client import read_shared_key
    from msrpas.service import AsConfig, KmsLink

    try:
        pin = Fingerprint.parse(args.kms_pin)
    except CertsError as exc:
        raise SystemExit(f"e2ae msrp-as: --kms-pin: {exc}") from None
    try:
        key = read_shared_key(args.kms_psk_file)
    except ValueError as exc:
        raise SystemExit(f"e2ae msrp-as: {exc}") from None
    cert, key_file = Path(f"{args.cert}.crt"), Path(f"{args.cert}.key")
    for path in (cert, key_file):
        if not path.is_file():
            raise SystemExit(f"e2ae msrp-as: no {path}")
    return AsConfig(
        sip=args.sip,
        next_hop=args.next_hop,
        media_ip=args.media_ip,
        identity=args.identity,
        kms=KmsLink(args.kms, pin, key, cert, key_file, args.kms_identity),
        max_calls=args.max_calls,
        setup_timeout=args.setup_timeout,
        keylog=args.keylog,
    )


def _main(args: argparse.Namespace) -> int:
    config = config_of(args)
    from twisted.internet import reactor

    from e2ae.logsetup import start_logging
    from msrpas.service import build

    start_logging(level=args.log_level, json_path=args.log_json)
    service = build(config, reactor=reactor)
    try:
        service.startService()
    except Exception as exc:  # a port in use: say so, as the other services do
        print(f"e2ae msrp-as: cannot listen on {args.sip[0]}:{args.sip[1]}: {exc}", file=sys.stderr)
        return 2
    host, port = service.address

    def up() -> None:  # said once the reactor runs, so that SIGTERM is handled
        print(f"e2ae msrp-as: {config.identity} on {host}:{port}", flush=True)

    reactor.callWhenRunning(up)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(0)
