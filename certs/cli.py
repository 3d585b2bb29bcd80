"""``e2ae certs``: make self-signed certificates and print their fingerprints."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from certs.errors import CertsError
from certs.fingerprint import HASH_FUNCS, fingerprint_of
from certs.generate import KEY_TYPES, generate, load_cert_der, write


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("certs", help="self-signed certificates and fingerprints")
    sub = parser.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")

    new = sub.add_parser("new", help="make a self-signed certificate and key (PEM)")
    new.add_argument("name", metavar="NAME", help="common name; files are NAME.crt and NAME.key")
    new.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    new.add_argument("--key", choices=KEY_TYPES, default="ec-p256", help="key type")
    new.add_argument("--days", type=int, default=365, metavar="N", help="validity in days")
    new.add_argument("--force", action="store_true", help="overwrite existing files")
    new.set_defaults(func=_new)

    fp = sub.add_parser("fingerprint", help="print a=fingerprint lines of a certificate")
    fp.add_argument("cert", metavar="CERT", type=Path, help="PEM or DER certificate")
    fp.add_argument("--hash", choices=(*HASH_FUNCS, "all"), default="sha-256", help="hash function")
    fp.set_defaults(func=_fingerprint)


def _new(args: argparse.Namespace) -> int:
    try:
        pair = generate(
            args.name,
            key_type=args.key,
            days=args.days,
            now=datetime.datetime.now(datetime.UTC),
        )
        write(pair, args.out, force=args.force)
    except CertsError as exc:
        print(f"e2ae certs new: {exc}", file=sys.stderr)
        return 2
    print(pair.fingerprint("sha-256").attribute())
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    try:
        der = load_cert_der(args.cert)
    except CertsError as exc:
        print(f"e2ae certs fingerprint: {exc}", file=sys.stderr)
        return 2
    names = HASH_FUNCS if args.hash == "all" else (args.hash,)
    for name in names:
        print(fingerprint_of(der, name).attribute())
    return 0
