"""``e2ae ue``: run one UE simulator from the command line against any P-CSCF (or core stub).

Registers (``Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec`` unless ``--no-mediasec``),
optionally calls a URI with MSRP and BFCP over TLS, sends messages, requests the floor, hangs up,
and prints what happened (``--json`` for a machine-readable summary). Exit status 0 only if
every step succeeded. The Twisted reactor is imported inside the handler.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("ue", help="run a UE simulator (SIP + MSRP/BFCP over TLS)")
    parser.add_argument("--aor", required=True, metavar="URI", help="e.g. sip:alice@ims.test")
    parser.add_argument(
        "--proxy", required=True, metavar="HOST:PORT", help="the P-CSCF's Gm address (UDP)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="local address (SIP and media)")
    parser.add_argument("--call", metavar="URI", help="call this URI after registering")
    parser.add_argument(
        "--message", action="append", default=[], metavar="TEXT", help="MSRP message to send"
    )
    parser.add_argument("--no-bfcp", action="store_true", help="offer MSRP only")
    parser.add_argument("--floor", type=int, metavar="ID", help="request this BFCP floor")
    parser.add_argument(
        "--no-mediasec",
        action="store_true",
        help="misbehave: register without the media-security indication",
    )
    parser.add_argument(
        "--present",
        choices=("own", "other", "none"),
        default="own",
        help="misbehave: TLS certificate to present (default: own, the one in the SDP)",
    )
    parser.add_argument("--timeout", type=float, default=20.0, metavar="S", help="overall limit")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=_run)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _run(args: argparse.Namespace) -> int:
    from twisted.internet import defer, reactor, task

    try:
        proxy = _address(args.proxy)
    except ValueError as exc:
        print(f"e2ae ue: {exc}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {"ok": False, "aor": args.aor}

    async def scenario() -> None:
        import certs
        from lab.sipnode import UeSimulator

        identity = certs.generate(
            args.aor.split(":", 1)[-1], now=datetime.datetime.now(datetime.UTC)
        )
        ue = UeSimulator(
            reactor,
            aor=args.aor,
            identity=identity,
            proxy=proxy,
            host=args.host,
            mechanisms=() if args.no_mediasec else ("msrp-tls", "bfcp-tls"),
            present=args.present,
        )
        summary["fingerprint"] = identity.fingerprint().value
        try:
            response = await ue.register()
            summary["register"] = response.status
            summary["network_mechanisms"] = sorted(ue.ua.network_mechanisms)
            if response.status >= 300:
                return
            if args.call:
                call = await ue.call(args.call, bfcp=not args.no_bfcp)
                stream: dict[str, Any] = {"to": args.call}
                if call.msrp is not None:
                    fp = call.msrp.peer_fingerprint
                    stream["msrp_peer_fingerprint"] = None if fp is None else fp.value
                    for text in args.message:
                        await call.msrp.send_message(text.encode("utf-8"))
                    stream["messages_sent"] = len(args.message)
                    stream["bytes_sent"] = call.msrp.bytes_sent
                    stream["bytes_received"] = call.msrp.bytes_received
                if args.floor is not None and call.bfcp_client is not None:
                    await call.bfcp_client.hello()
                    grant = await call.bfcp_client.request_floor(args.floor)
                    stream["floor_granted"] = list(grant.floor_ids)
                bye = await ue.hangup(call)
                stream["bye"] = bye.status
                summary["call"] = stream
            summary["ok"] = True
        finally:
            await ue.stop()

    async def bounded() -> None:
        d = defer.ensureDeferred(scenario())
        d.addTimeout(args.timeout, reactor)
        try:
            await d
        except Exception as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
        code = _print(summary, args.json)
        if code:
            raise SystemExit(code)

    # task.react stops the reactor and exits the process with the scenario's status.
    task.react(lambda _reactor: defer.ensureDeferred(bounded()), [])  # type: ignore[no-untyped-call]
    return 0


def _print(summary: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0 if summary["ok"] else 1
