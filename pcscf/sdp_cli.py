"""``e2ae sdp rewrite``: the e2ae SDP rewrite of the P-CSCF, offline, one step at a time.

::

    e2ae sdp rewrite STEP [FILE|-] [--state FILE] [--agw-access IP] [--agw-core IP]
                          [--agw-fingerprint 'HASH HEX'] [--ue-mechanisms LIST]
                          [--port-base N] [--json] [--policy FILE]

Offer steps write the plan and the AGW reservation to ``--state``; answer steps read it (the
AGW values then come from the state). The AGW is simulated: its ports are allocated from
``--port-base`` (stream at m-line index ``i``: access ``N+2i+1``, core ``N+2i+2``). See
docs/sdp-rewrite.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attrs

from certs.errors import CertsError
from certs.fingerprint import Fingerprint
from pcscf.errors import LocalPcscfError, PcscfError, RemotePcscfError
from pcscf.policy import KNOWN_MEDIA_MECHANISMS, Policy, PolicyError, load_policy
from pcscf.rewrite import (
    RewriteResult,
    RewriteState,
    deterministic_reservations,
    plan_offer,
    rewrite_answer,
    rewrite_offer,
    stream_to_json,
)
from pcscf.sdp import SessionDescription

#: Documented example values (docs/protocol.md §14; TEST-NET addresses of RFC 5737).
DEFAULT_AGW_ACCESS = "198.51.100.1"
DEFAULT_AGW_CORE = "203.0.113.1"
#: A fixed example AGW fingerprint: SHA-256 of the text "e2ae lab example AGW certificate".
DEFAULT_AGW_FINGERPRINT = (
    "sha-256 98:C0:6A:56:A7:5D:04:C0:1D:C4:C9:E1:6D:5B:E3:55:"
    "01:FE:0B:98:0F:C0:50:A8:97:1D:74:67:AD:58:E8:B7"
)
DEFAULT_UE_MECHANISMS = "msrp-tls,bfcp-tls"
DEFAULT_PORT_BASE = 40000
STEPS = ("orig-offer", "orig-answer", "term-offer", "term-answer")

#: Exit codes: the SDP was refused (malformed, or not acceptable: a proxy's 488) / bad usage.
EXIT_REFUSED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("sdp", help="the e2ae SDP rewrite, offline")
    sub = parser.add_subparsers(dest="sdp_command", required=True, metavar="COMMAND")
    rw = sub.add_parser(
        "rewrite",
        help="rewrite one offer or answer as the P-CSCF (IMS-ALG) does",
        description="Rewrite one SDP offer or answer as the P-CSCF (IMS-ALG) does for e2ae.",
    )
    rw.add_argument("step", metavar="STEP", choices=STEPS, help=" | ".join(STEPS))
    rw.add_argument("file", metavar="FILE", nargs="?", default="-", help="SDP file, - = stdin")
    rw.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="offer steps write the plan here; answer steps read it (required for them)",
    )
    rw.add_argument(
        "--agw-access",
        default=DEFAULT_AGW_ACCESS,
        metavar="IP",
        help=f"AGW access-side address, towards the UE (default {DEFAULT_AGW_ACCESS})",
    )
    rw.add_argument(
        "--agw-core",
        default=DEFAULT_AGW_CORE,
        metavar="IP",
        help=f"AGW core-side address (default {DEFAULT_AGW_CORE})",
    )
    rw.add_argument(
        "--agw-fingerprint",
        default=DEFAULT_AGW_FINGERPRINT,
        metavar="'HASH HEX'",
        help="the AGW certificate's fingerprint (default: a fixed example sha-256 value)",
    )
    rw.add_argument(
        "--ue-mechanisms",
        default=DEFAULT_UE_MECHANISMS,
        metavar="LIST",
        help="comma list the UE registered with ;mediasec (default msrp-tls,bfcp-tls; '' = none)",
    )
    rw.add_argument(
        "--port-base",
        type=int,
        default=DEFAULT_PORT_BASE,
        metavar="N",
        help="AGW ports: stream i gets access N+2i+1 and core N+2i+2 (default 40000)",
    )
    rw.add_argument("--json", action="store_true", help="print JSON: sdp and streams")
    rw.add_argument("--policy", type=Path, metavar="FILE", help="e2ae policy (TOML, [e2ae])")
    rw.set_defaults(func=_rewrite)


def _fail(message: str, code: int) -> int:
    print(f"e2ae sdp rewrite: {message}".replace("\n", " "), file=sys.stderr)
    return code


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


class _Refused(Exception):
    """Ends the command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class _Inputs:
    """What the command line asked for, read and checked."""

    source: str
    policy: Policy
    data: bytes
    state: RewriteState | None
    mechanisms: list[str]
    fingerprint: Fingerprint


def _rewrite(args: argparse.Namespace) -> int:
    """Read and check the inputs, rewrite one step, keep its state, print the result."""
    try:
        inputs = _read_inputs(args)
        result = _run_step(args, inputs)
        if inputs.state is None and args.state is not None:
            _write_state(args.state, result)
    except _Refused as exc:
        return _fail(str(exc), exc.code)
    _print_result(result, as_json=args.json)
    return 0


def _read_inputs(args: argparse.Namespace) -> _Inputs:
    return _Inputs(
        source="stdin" if args.file == "-" else args.file,
        policy=_read_policy(args.policy),
        data=_read_sdp(args.file),
        state=_read_state(args.step, args.state),
        mechanisms=_ue_mechanisms(args.ue_mechanisms),
        fingerprint=_agw_fingerprint(args.agw_fingerprint),
    )


def _read_policy(path: Path | None) -> Policy:
    try:
        return Policy() if path is None else load_policy(path)
    except PolicyError as exc:
        raise _Refused(str(exc), EXIT_USAGE) from exc


def _read_sdp(name: str) -> bytes:
    try:
        return _read_input(name)
    except OSError as exc:
        source = "stdin" if name == "-" else name
        raise _Refused(f"cannot read {source}: {exc.strerror}", EXIT_USAGE) from exc


def _read_state(step: str, path: Path | None) -> RewriteState | None:
    """The offer step's state for an answer step (None for an offer step)."""
    if not step.endswith("-answer"):
        return None
    if path is None:
        raise _Refused(f"{step} needs --state FILE written by the offer step", EXIT_USAGE)
    try:
        return RewriteState.from_json(json.loads(path.read_text()))
    except OSError as exc:
        raise _Refused(f"cannot read state {path}: {exc.strerror}", EXIT_USAGE) from exc
    except (ValueError, LocalPcscfError) as exc:
        raise _Refused(f"state {path}: {exc}", EXIT_USAGE) from exc


def _ue_mechanisms(text: str) -> list[str]:
    mechanisms = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = sorted(set(mechanisms) - set(KNOWN_MEDIA_MECHANISMS))
    if unknown:
        raise _Refused(
            f"--ue-mechanisms: unknown mechanism(s) {', '.join(unknown)}; "
            f"known: {', '.join(KNOWN_MEDIA_MECHANISMS)}",
            EXIT_USAGE,
        )
    return mechanisms


def _agw_fingerprint(text: str) -> Fingerprint:
    try:
        return Fingerprint.parse(text)
    except CertsError as exc:
        raise _Refused(f"--agw-fingerprint: {exc}", EXIT_USAGE) from exc


def _run_step(args: argparse.Namespace, inputs: _Inputs) -> RewriteResult:
    """The offer step plans and reserves (a simulated AGW); the answer step uses the state."""
    try:
        sdp = SessionDescription.parse(inputs.data)
        if inputs.state is not None:
            return rewrite_answer(args.step, sdp, inputs.state)
        plan = plan_offer(args.step, sdp, inputs.mechanisms, inputs.policy)
        reservations = deterministic_reservations(
            plan,
            access_address=args.agw_access,
            core_address=args.agw_core,
            fingerprint=inputs.fingerprint,
            port_base=args.port_base,
        )
        return rewrite_offer(sdp, plan, reservations)
    except RemotePcscfError as exc:
        raise _Refused(f"{inputs.source}: {exc}", EXIT_REFUSED) from exc
    except PcscfError as exc:
        raise _Refused(str(exc), EXIT_USAGE) from exc


def _write_state(path: Path, result: RewriteResult) -> None:
    try:
        path.write_text(json.dumps(result.state.to_json(), indent=2) + "\n")
    except OSError as exc:
        raise _Refused(f"cannot write state {path}: {exc.strerror}", EXIT_USAGE) from exc


def _print_result(result: RewriteResult, *, as_json: bool) -> None:
    if as_json:
        doc: dict[str, Any] = {
            "sdp": result.sdp.text(),
            "streams": [stream_to_json(s) for s in result.streams],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(result.sdp.serialise())
    sys.stdout.flush()
