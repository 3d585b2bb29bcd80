"""``e2ae kms`` (the KMS service) and ``e2ae kms-client`` (a scripted user of it).

::

    e2ae kms --config kms.toml [--listen HOST:PORT] [--metrics HOST:PORT] [--log-level L]
             [--log-json FILE]

    e2ae kms-client request --kms HOST:PORT --kms-pin 'HASH HEX' --cert C --key K
                            --identity URI --psk-file F [--responder URI ...] [--sessions N]
                            --ticket-out FILE [--show-keys]
    e2ae kms-client resolve --kms HOST:PORT --kms-pin 'HASH HEX' --cert C --key K
                            --identity URI --psk-file F --ticket FILE [--show-keys]

The client prints one JSON object: the outcome, the ticket id, and per crypto session the
SHA-256 of its TGK and of the TLS-PSK derived from it (the keys themselves only with
``--show-keys``). A refusal prints the MIKEY error and exits 1. docs/kms.md has the flows.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from e2ae.logsetup import add_log_options

EXIT_REFUSED = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    server = subparsers.add_parser(
        "kms",
        help="run the KMS (MIKEY-TICKET over HTTPS with mutual certificates)",
        description="The KMS of TS 33.328 Annex D: ticket request and resolve over HTTPS.",
    )
    server.add_argument("--config", type=Path, required=True, help="the KMS's TOML file")
    server.add_argument("--listen", metavar="HOST:PORT", help="override [kms] listen")
    server.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default;"
        " docs/metrics.md)",
    )
    add_log_options(server)
    server.set_defaults(func=_serve)

    client = subparsers.add_parser(
        "kms-client",
        help="ask the KMS for a ticket or resolve one (a scripted user)",
        description="A user of the KMS: REQUEST_INIT and RESOLVE_INIT over HTTPS.",
    )
    actions = client.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("request", "ask for a ticket"), ("resolve", "resolve a ticket")):
        p = actions.add_parser(name, help=text)
        p.add_argument("--kms", required=True, metavar="HOST:PORT", help="the KMS")
        p.add_argument(
            "--kms-pin", required=True, metavar="'HASH HEX'", help="the KMS's fingerprint"
        )
        p.add_argument("--cert", type=Path, required=True, help="this user's certificate (PEM)")
        p.add_argument("--key", type=Path, required=True, help="this user's private key (PEM)")
        p.add_argument("--identity", required=True, metavar="URI", help="this user's identity")
        p.add_argument(
            "--kms-identity",
            default="kms.e2ae.lab",
            metavar="URI",
            help="the KMS's identity (IDRkms; default kms.e2ae.lab)",
        )
        p.add_argument(
            "--psk-file",
            type=Path,
            required=True,
            metavar="FILE",
            help="the key shared with the KMS, as hex (kept out of the command line)",
        )
        p.add_argument("--show-keys", action="store_true", help="print the keys themselves")
        p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
        if name == "request":
            p.add_argument(
                "--responder",
                action="append",
                default=[],
                metavar="URI",
                help="who may resolve the ticket (repeatable; none: anybody)",
            )
            p.add_argument("--sessions", type=int, default=1, metavar="N", help="TGKs (1..32)")
            p.add_argument("--ticket-out", type=Path, required=True, metavar="FILE")
        else:
            p.add_argument("--ticket", type=Path, required=True, metavar="FILE")
        p.set_defaults(func=_client)


# -- the service


def _serve(args: argparse.Namespace) -> int:
    from e2ae.address import AddressError, parse_host_port
    from e2ae.logsetup import start_logging
    from e2ae.metrics import metrics_address
    from kms.config import KmsConfigError, load
    from kms.service import build

    try:
        config = load(args.config)
        if args.listen:
            import attrs

            config = attrs.evolve(config, listen=parse_host_port(args.listen, "--listen"))
        service = build(config, metrics=metrics_address(args.metrics))
    except (KmsConfigError, AddressError) as exc:
        print(f"e2ae kms: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from twisted.internet import reactor

    start_logging(level=args.log_level, json_path=args.log_json)
    try:
        service.startService()
    except Exception as exc:  # a port in use: say so, as the other services do
        print(
            f"e2ae kms: cannot listen on {config.listen[0]}:{config.listen[1]}: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    host, port = service.address

    # Said once the reactor runs, so its signal handlers are in place: a SIGTERM sent as
    # soon as this line is read stops the service cleanly.
    def _ready() -> None:
        print(
            f"e2ae kms: {config.identity} listening on {host}:{port}"
            f" fingerprint {service.identity.fingerprint().value}"
            f" users {service.store.count('users')}",
            flush=True,
        )

    reactor.callWhenRunning(_ready)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


# -- the client


class _Usage(Exception):
    pass


def _digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def post(
    address: tuple[str, int],
    pin: Any,
    cert: Path,
    key: Path,
    body: bytes,
    timeout: float,
) -> tuple[int, bytes]:
    """One HTTPS POST of a MIKEY message to the KMS; the status and the body."""
    from certs.fingerprint import matches_any

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # trust is the pinned fingerprint, checked below
    ctx.load_cert_chain(str(cert), str(key))
    host, port = address
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            if der is None or not matches_any(der, [pin]):
                raise _Usage(f"the KMS at {host}:{port} is not the pinned {pin.value}")
            head = (
                f"POST /mikey HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/mikey\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            tls.sendall(head.encode() + body)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
                if len(data) > 1 << 20:
                    raise _Usage("the KMS's reply is larger than 1 MiB")
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise _Usage(f"not an HTTP reply from the KMS: {status_line[:60]!r}")
    return int(parts[1]), rest


def _client(args: argparse.Namespace) -> int:
    try:
        return _client_action(args)
    except _Usage as exc:
        print(f"e2ae kms-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ssl.SSLError) as exc:
        print(f"e2ae kms-client: {args.kms}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _client_action(args: argparse.Namespace) -> int:
    from certs.errors import CertsError
    from certs.fingerprint import Fingerprint
    from e2ae.address import AddressError, parse_host_port
    from kms.client import RAND_BYTES, open_reply, read_shared_key, request_init, resolve_init
    from mikey.constants import KeyType
    from mikey.errors import MikeyError
    from mikey.keys import ticket_tls_psk
    from mikey.message import decode
    from mikey.payloads import Ticket
    from mikey.transfer import TLS_PSK_BYTES

    try:
        address = parse_host_port(args.kms, "--kms", literal_ip=False, allow_zero=False)
        pin = Fingerprint.parse(args.kms_pin)
        psk = read_shared_key(args.psk_file)
    except (AddressError, CertsError) as exc:
        raise _Usage(str(exc)) from exc
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    now = time.time()
    if args.action == "request":
        if not 1 <= args.sessions <= 32:
            raise _Usage("--sessions must be 1..32")
        request = request_init(
            args.identity,
            psk,
            tuple(args.responder),
            now,
            kms=args.kms_identity,
            sessions=args.sessions,
        )
    else:
        try:
            saved = json.loads(args.ticket.read_text())
            reply = decode(base64.b64decode(saved["reply"]))
            (ticket,) = (p for p in reply.payloads if isinstance(p, Ticket))
            csb_id = int(saved["csb_id"])
            bytes.fromhex(saved["randri"])
        except OSError as exc:
            raise _Usage(f"cannot read {args.ticket}: {exc.strerror}") from exc
        except (ValueError, KeyError, MikeyError, TypeError) as exc:
            raise _Usage(f"{args.ticket}: not a ticket file ({exc})") from exc
        request = resolve_init(
            args.identity, psk, ticket, now, kms=args.kms_identity, csb_id=csb_id
        )
    session_rand = (
        os.urandom(RAND_BYTES) if args.action == "request" else bytes.fromhex(saved["randri"])
    )
    status, body = post(address, pin, args.cert, args.key, request.encode(), args.timeout)
    try:
        reply, keys = open_reply(body, psk, request)
    except MikeyError as exc:
        print(
            json.dumps({"outcome": "refused", "http_status": status, "mikey_error": exc.reason}),
            flush=True,
        )
        return EXIT_REFUSED
    doc: dict[str, Any] = {"outcome": "ok", "http_status": status, "csb_id": reply.header.csb_id}
    if args.action == "request":
        args.ticket_out.write_text(
            json.dumps(
                {
                    "csb_id": reply.header.csb_id,
                    # The RANDRi a TRANSFER_INIT carries from the Initiator to the Responder.
                    "randri": session_rand.hex(),
                    "reply": base64.b64encode(body).decode(),
                }
            )
            + "\n"
        )
        doc["ticket_file"] = str(args.ticket_out)
    sessions = []
    tgks = [k for k in keys if k.key_type is KeyType.TGK]
    for n, item in enumerate(tgks, start=1):
        psk_key = ticket_tls_psk(item.key, n, TLS_PSK_BYTES, randri=session_rand)
        entry: dict[str, Any] = {
            "cs_id": n,
            "tgk_sha256": _digest(item.key),
            "tls_psk_sha256": _digest(psk_key),
        }
        if args.show_keys:
            entry["tgk"] = item.key.hex()
            entry["tls_psk"] = psk_key.hex()
        sessions.append(entry)
    doc["sessions"] = sessions
    print(json.dumps(doc, indent=2), flush=True)
    return 0
