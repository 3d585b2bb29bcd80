"""``e2ae ue`` and ``e2ae core``: a UE or the core stub as a process (Twisted edge).

``e2ae ue`` registers, then either places a call (``--call URI``: MSRP messages, a BFCP floor
request, BYE) or answers calls (``--answer N``), and prints one JSON object per call at the
end with ``--json``. The first line on standard output is always ``ue USER registered AOR``
(or the failure), so a script can wait for it before calling this UE.

With ``--kms HOST:PORT`` the calls are keyed by the KMS (TS 33.328 Annex H): the caller asks for
a ticket, the callee has it resolved, and MSRP and BFCP run over TLS-PSK (docs/lab.md, "KMS
calls").
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import certs
from certs.tls import KeyLogWriter
from e2ae.address import AddressError, parse_host_port
from e2ae.logsetup import add_log_options, start_logging


def _hostport(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text, "address", literal_ip=False)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_ue_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ue",
        help="run a UE: register, call or answer with MSRP and BFCP over TLS, hang up",
        description="A UE simulator against any P-CSCF (Gm address).",
    )
    p.add_argument("--pcscf", type=_hostport, required=True, metavar="HOST:PORT", help="Gm")
    p.add_argument("--user", required=True, help="user part of the AOR (sip:USER@DOMAIN)")
    p.add_argument("--domain", default="lab.example")
    p.add_argument("--host", default="127.0.0.1", help="our address (SIP and media)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--call", metavar="URI", help="call this URI")
    p.add_argument(
        "--answer", type=int, default=0, metavar="N", help="answer N calls (-1: for ever)"
    )
    p.add_argument("--message", action="append", default=[], help="MSRP message to send")
    p.add_argument(
        "--wait-messages",
        type=int,
        default=0,
        metavar="N",
        help="wait for N MSRP messages from the far end",
    )
    p.add_argument("--floor", action="store_true", help="request BFCP floor 1 (caller)")
    p.add_argument(
        "--hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stay in the call this long before hanging up",
    )
    p.add_argument("--plain", action="store_true", help="offer TCP/MSRP and TCP/BFCP (no TLS)")
    p.add_argument(
        "--present",
        choices=("own", "other", "none"),
        default="own",
        help="certificate to present: ours, another one, none (misbehaviour)",
    )
    p.add_argument(
        "--no-mechanisms",
        action="store_true",
        help="register without Security-Client mediasec (misbehaviour)",
    )
    p.add_argument(
        "--cert",
        metavar="PREFIX",
        type=Path,
        help="PREFIX.crt/PREFIX.key (default: a fresh certificate)",
    )
    p.add_argument("--keylog", metavar="FILE", type=Path, help="NSS key log of our TLS")
    p.add_argument(
        "--kms",
        type=_hostport,
        metavar="HOST:PORT",
        help="key the calls with MIKEY-TICKET from this KMS (TLS-PSK media; needs --cert)",
    )
    p.add_argument("--kms-pin", metavar="'HASH HEX'", help="the KMS's certificate fingerprint")
    p.add_argument(
        "--kms-psk-file",
        type=Path,
        metavar="FILE",
        help="the key shared with the KMS, as hex (kept out of the command line)",
    )
    p.add_argument("--kms-user", metavar="URI", help="our identity at the KMS (default: the AOR)")
    p.add_argument(
        "--kms-identity",
        default="kms.e2ae.lab",
        metavar="URI",
        help="the KMS's identity (IDRkms; default kms.e2ae.lab)",
    )
    p.add_argument(
        "--kms-responder",
        metavar="URI",
        help="name this Responder in the ticket and TRANSFER_INIT, not the callee (misbehaviour)",
    )
    p.add_argument(
        "--kms-as",
        action="append",
        default=[],
        metavar="URI",
        help="an application server allowed to resolve our tickets (repeatable)",
    )
    p.add_argument(
        "--kms-as-policy",
        choices=("accept", "close"),
        default="accept",
        help="when TLS-PSK is terminated in an AS: carry on (accept) or end the call (close)",
    )
    p.add_argument(
        "--message-kms",
        metavar="URI",
        help="send each --message as a SIP MESSAGE to URI, protected end to end with keys"
        " from --kms (PSK/MIME; a list server PSI works too)",
    )
    p.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="URI",
        help="with --message-kms: a URI list entry for the list server (repeatable; RFC 5365)",
    )
    p.add_argument(
        "--receive-messages",
        type=int,
        default=0,
        metavar="N",
        help="wait for N protected SIP MESSAGEs (-1: for ever) and print each",
    )
    p.add_argument(
        "--save-messages",
        type=Path,
        metavar="DIR",
        help="write each SIP MESSAGE that comes in to DIR, as it came (NNN-CALLID.sip)",
    )
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="print a JSON object per call")
    add_log_options(p, level="warn")
    p.set_defaults(func=_ue)


def add_core_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "core",
        help="run the core stub: registrar, S-CSCF routing by Path, plain MSRP/BFCP peer",
    )
    p.add_argument(
        "--sip",
        type=_hostport,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="SIP (UDP) address, the P-CSCF's next hop",
    )
    p.add_argument("--domain", default="lab.example")
    p.add_argument("--peer-user", default="peer", help="sip:USER@DOMAIN reaches the core peer")
    p.add_argument("--echo", action="store_true", help="the MSRP peer echoes every message")
    p.add_argument(
        "--list-server",
        type=_hostport,
        metavar="HOST:PORT",
        help="the list server (e2ae list-server): requests to a --list-psi go there, and it"
        " gets a third-party REGISTER for every registration",
    )
    p.add_argument(
        "--list-psi",
        action="append",
        default=[],
        metavar="URI",
        help="a group PSI the list server serves (repeatable)",
    )
    p.add_argument(
        "--known-user",
        action="append",
        default=[],
        metavar="URI",
        help="an AOR that exists while not registered: a MESSAGE to it gets 480, not 404",
    )
    add_log_options(p)
    p.set_defaults(func=_core)


def _identity(args: argparse.Namespace) -> certs.CertAndKey:
    if args.cert is not None:
        return certs.load_pair(Path(f"{args.cert}.crt"), Path(f"{args.cert}.key"))
    return certs.generate(args.user, now=datetime.datetime.now(datetime.UTC))


class _Usage(Exception):
    pass


def _kms_access(args: argparse.Namespace) -> Any:
    """The :class:`lab.ue.KmsAccess` of ``--kms ...`` (None without ``--kms``)."""
    if args.kms is None:
        return None
    from certs.errors import CertsError
    from certs.fingerprint import Fingerprint
    from kms.client import read_shared_key
    from lab.ue import KmsAccess

    if args.kms_pin is None or args.kms_psk_file is None:
        raise _Usage("--kms needs --kms-pin and --kms-psk-file")
    if args.cert is None:
        raise _Usage("--kms needs --cert (the certificate the KMS knows this UE by)")
    try:
        pin = Fingerprint.parse(args.kms_pin)
    except CertsError as exc:
        raise _Usage(f"--kms-pin: {exc}") from exc
    try:
        key = read_shared_key(args.kms_psk_file)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    return KmsAccess(
        args.kms,
        pin,
        key,
        identity=args.kms_user,
        cert_files=(Path(f"{args.cert}.crt"), Path(f"{args.cert}.key")),
        kms_identity=args.kms_identity,
        timeout=args.timeout,
        responder=args.kms_responder,
        app_servers=tuple(args.kms_as),
        as_policy=args.kms_as_policy,
    )


def _leg_json(leg: Any) -> dict[str, Any]:
    conn = leg.connection
    return {
        "media": leg.action.media,
        "proto": leg.proto,
        "e2ae_applied": leg.action.e2ae_applied,
        "fingerprint_verified": leg.verified_fingerprint is not None,
        "peer_fingerprint": leg.verified_fingerprint,
        "tls_psk": leg.tls_psk,
        "cs_id": leg.action.cs_id,
        "bytes_sent": 0 if conn is None else conn.bytes_sent,
        "bytes_received": 0 if conn is None else conn.bytes_received,
    }


async def _exchange(reactor: Any, args: argparse.Namespace, call: Any, out: dict[str, Any]) -> None:
    from twisted.internet import defer

    if "msrp" in call.streams:
        for text in args.message:
            await call.msrp.send_message(text.encode()).addTimeout(args.timeout, reactor)
        if args.wait_messages:
            got = await call.msrp.wait_messages(args.wait_messages).addTimeout(
                args.timeout, reactor
            )
            out["messages_received"] = [m.body.decode("utf-8", "replace") for m in got]
    if args.floor and "bfcp" in call.streams and call.outgoing:
        grant = await call.bfcp.request_floor(1).addTimeout(args.timeout, reactor)
        out["floor_granted"] = list(grant.floor_ids)
    if args.hold:
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(args.hold, d.callback, None)
        await d


def _emit(args: argparse.Namespace, out: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(out), flush=True)
        return
    fields = ", ".join(f"{k}={v}" for k, v in out.items() if k != "streams")
    print(f"call: {fields}", flush=True)
    for stream in out.get("streams", []):
        print(
            f"  {stream['media']} {stream['proto']} verified={stream['fingerprint_verified']} "
            f"sent={stream['bytes_sent']} received={stream['bytes_received']}",
            flush=True,
        )


def _ue(args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    from lab.uesim import UeSim

    try:
        kms = _kms_access(args)
        if (args.message_kms or args.receive_messages) and kms is None:
            raise _Usage("--message-kms and --receive-messages need --kms")
        if args.recipient and not args.message_kms:
            raise _Usage("--recipient goes with --message-kms")
    except _Usage as exc:
        print(f"e2ae ue: {exc}", file=sys.stderr)
        return 2
    start_logging(level=args.log_level, json_path=args.log_json)
    keylog = KeyLogWriter(args.keylog) if args.keylog else None
    status = {"code": 0}

    async def body(reactor: Any) -> None:
        sim = UeSim(
            reactor,
            args.user,
            _identity(args),
            args.pcscf,
            transport=args.transport,
            domain=args.domain,
            host=args.host,
            present=args.present,
            mechanisms=() if args.no_mechanisms else ("msrp-tls", "bfcp-tls"),
            e2ae=not args.plain,
            keylog=keylog,
            media_timeout=args.timeout,
            kms=kms,
        )
        await sim.start()
        if args.save_messages is not None:
            args.save_messages.mkdir(parents=True, exist_ok=True)
            sim.im.save_dir = args.save_messages
        try:
            reg = await sim.register()
            print(
                f"ue {args.user} {'registered' if sim.registered else 'not registered'} "
                f"{sim.aor} ({reg.status})",
                flush=True,
            )
            if not sim.registered:
                status["code"] = 1
                return
            if args.message_kms or args.receive_messages:
                status["code"] = await _immediate(reactor, args, sim)
            if args.call:
                out: dict[str, Any] = {"to": args.call}
                try:
                    call = await sim.call(args.call)
                    out["call_id"] = call.call_id
                    if call.tls_terminated_by is not None:
                        out["tls_terminated_by"] = call.tls_terminated_by
                    out["streams"] = [_leg_json(leg) for leg in call.streams.values()]
                    await _exchange(reactor, args, call, out)
                    out["streams"] = [_leg_json(leg) for leg in call.streams.values()]
                    bye = await sim.hangup(call)
                    out["bye"] = bye.status
                except Exception as exc:
                    while isinstance(exc, defer.FirstError):
                        exc = exc.subFailure.value
                    out["error"] = f"{type(exc).__name__}: {exc}"
                    status["code"] = 1
                _emit(args, out)
            answered = 0
            while args.answer < 0 or answered < args.answer:
                answered += 1
                call = await sim.next_call()
                out = {"from": call.dialog.remote_uri, "call_id": call.call_id}
                if call.tls_terminated_by is not None:
                    out["tls_terminated_by"] = call.tls_terminated_by
                try:
                    await _exchange(reactor, args, call, out)
                except Exception as exc:  # the caller may hang up at any time: next call
                    out["error"] = f"{type(exc).__name__}: {exc}"
                await call.when_ended()
                out["streams"] = [_leg_json(leg) for leg in call.streams.values()]
                out["ended"] = call.end_reason
                _emit(args, out)
        finally:
            await sim.stop()

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(body(r)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            status["code"] = 1
    return status["code"]


async def _immediate(reactor: Any, args: argparse.Namespace, sim: Any) -> int:
    """Send the protected MESSAGEs, then receive; one JSON object (or line) per message."""
    from twisted.internet import defer

    code = 0
    for text in args.message if args.message_kms else ():
        out: dict[str, Any] = {"message_to": args.message_kms}
        try:
            sent = await sim.im.send(args.message_kms, text, recipients=args.recipient)
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            code = 1
        else:
            out.update(
                call_id=sent.call_id,
                status=sent.status,
                ticket_reused=sent.ticket_reused,
            )
            if sent.warning:
                out["warning"] = sent.warning
            if sent.status >= 300:
                code = 1
        _emit_message(args, out)
    received = 0
    while args.receive_messages < 0 or received < args.receive_messages:
        wait = sim.im.next_message()
        try:
            got = await wait.addTimeout(args.timeout, reactor)
        except defer.TimeoutError:
            _emit_message(args, {"error": f"no MESSAGE within {args.timeout:g} s"})
            return 1
        received += 1
        _emit_message(
            args,
            {
                "message_from": got.sender,
                "call_id": got.call_id,
                "protected_by": got.protected_by,
                "text": got.text,
            },
        )
    for refused in sim.im.refused:
        _emit_message(
            args,
            {
                "message_refused": refused.call_id,
                "from": refused.sender,
                "status": refused.status,
                "reason": refused.reason,
            },
        )
    return code


def _emit_message(args: argparse.Namespace, out: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        print("message: " + ", ".join(f"{k}={v}" for k, v in out.items()), flush=True)


def _core(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from lab.core import CoreStub

    if args.list_psi and args.list_server is None:
        print("e2ae core: --list-psi needs --list-server", file=sys.stderr)
        return 2
    start_logging(level=args.log_level, json_path=args.log_json)
    core = CoreStub(
        reactor,
        host=args.sip[0],
        domain=args.domain,
        peer_user=args.peer_user,
        echo=args.echo,
        list_server=args.list_server,
        list_psis=frozenset(args.list_psi),
        known_users=frozenset(args.known_user),
    )
    try:
        port = core.listen(args.sip[1])
    except Exception as exc:
        print(f"e2ae core: cannot listen: {exc}", file=sys.stderr)
        return 1
    print(f"core sip={args.sip[0]}:{port} peer={core.peer_uri}", flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", core.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0
