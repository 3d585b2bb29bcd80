"""The ``e2ae`` console entry point. It only dispatches: each package owns its subcommands.

A package takes part by having a module listed in :data:`SUBCOMMAND_MODULES` with a function
``register(subparsers)`` that adds its parser(s) and sets ``func`` (``args -> exit code``).
Modules listed here must not import the Twisted reactor at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "certs.cli",
    "pcscf.sdp_cli",
    "iq.cli",
    "mp.cli",
    "mikey.cli",
    "pcscf.cli",
    "accessgw.cli",
    "kms.cli",
    "msrpas.cli",
    "listserver.cli",
    "mrfc.cli",
    "mrfp.cli",
    "lab.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ae",
        description="e2ae lab: 3GPP end-to-access-edge media security for MSRP and BFCP",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
