"""The MSRP AS's rules, sans I/O: what it reads from a leg, what it writes to the other.

TR 33.829 §8.3.1.2 (and its clarification): an application server in the MSRP path
terminates the TCP connection, so it terminates TLS too and the protection is hop-by-hop. It
"shall resolve the ticket and insert a new TRANSFER_INIT message into the outgoing SIP INVITE",
"parse the TRANSFER_RESP message and insert a new TRANSFER_RESP message into the outgoing
200 OK", and it has a KMS user identity of its own. Here:

- **SDP** (:func:`keyed_streams`, :func:`rewrite_sdp`): the AS answers the caller's
  ``TCP/TLS/MSRP`` and ``TCP/TLS/BFCP`` m-lines with its own address, ports, ``a=setup``,
  ``a=path`` and ``a=key-mgmt``, and offers the same m-lines to the callee the same way. Any
  other m-line is rejected (port 0) on both legs: the AS relays MSRP and BFCP only.
- **MIKEY** (:func:`read_inbound`, :func:`check_inbound`): the caller's TRANSFER_INIT is read
  for whichever Responder it names (the KMS decides whether the AS may resolve it), verified
  with the MPK once resolved, and its Initiator checked against the ticket.
- **MSRP** (:class:`MsrpRelay`): each request and response is re-addressed from one leg's
  session to the other's (To-Path, From-Path); transaction ids, Message-IDs, Byte-Ranges,
  bodies and reports pass unchanged, so chunking and reports work end to end. A frame for
  another session is refused.
- **SIP** (:class:`Leg` and the builders): the AS is a back-to-back user agent; each leg is a
  dialog of its own (Call-ID, tags, route set, CSeq).

The ends learn that TLS is terminated in the AS from MIKEY itself: the callee's ticket is
issued to the AS (its IDRi, which the KMS vouches for), and the caller's TRANSFER_RESP comes
from the AS (its IDRr, under the caller's MPK). Each end's policy then accepts or closes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from e2ae import msrp
from e2ae.tcpmedia import SETUPS, Setup
from mikey.constants import ErrorNo
from mikey.errors import MikeyError
from mikey.message import Message
from mikey.transfer import (
    TransferInit,
    named_responder,
    read_transfer_init,
    verify_transfer_init,
)
from pcscf.errors import SdpError
from pcscf.sdp import Connection, SessionDescription
from pcscf.sip import Request, Response, make_response
from pcscf.sip.errors import RemoteSipError
from pcscf.sip.uadialog import UaDialog, confirm, new_tag
from pcscf.sip.uadialog import in_dialog as in_dialog
from pcscf.sip.uadialog import new_branch as new_branch
from pcscf.sip.uadialog import next_hop as next_hop

#: One leg's dialog as the AS holds it.
Leg = UaDialog

Kind = Literal["msrp", "bfcp"]
Side = Literal["caller", "callee"]


class AsError(Exception):
    """Root of the MSRP AS's errors."""


class RemoteAsError(AsError):
    """A leg sent something the AS cannot relay (SIP 488 with a Warning, or the leg closed)."""

    def __init__(self, reason: str, *, where: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.where = where


# ---------------------------------------------------------------------------------------------
# SDP


@attrs.frozen
class Stream:
    """One keyed TLS stream of an SDP, as a leg of the AS needs it."""

    index: int
    kind: Kind
    host: str | None
    port: int
    setup: Setup
    path: tuple[str, ...]


def keyed_streams(sdp: bytes, *, offer: bool) -> list[Stream]:
    """The ``TCP/TLS/MSRP`` and ``TCP/TLS/BFCP`` m-lines of ``sdp`` in order (crypto session
    *n* is the *n*-th). A missing ``a=setup`` is RFC 4145's default: active in an offer,
    passive in an answer."""
    try:
        parsed = SessionDescription.parse(sdp)
    except SdpError as exc:
        raise RemoteAsError(str(exc), where="SDP") from None
    out: list[Stream] = []
    for index in parsed.tls_streams():
        media = parsed.media[index]
        kind: Kind = "msrp" if media.proto.upper().endswith("/MSRP") else "bfcp"
        values = media.attribute_values("setup")
        setup_text = values[0].strip().lower() if values else ("active" if offer else "passive")
        if setup_text not in SETUPS or setup_text == "holdconn":
            raise RemoteAsError(f"a=setup:{setup_text[:20]}", where=f"m-line {index + 1}")
        conn = parsed.effective_connection(index)
        paths = media.attribute_values("path")
        path = tuple(paths[0].split()) if paths else ()
        if kind == "msrp" and media.port and not path:
            raise RemoteAsError("an MSRP stream without a=path", where=f"m-line {index + 1}")
        out.append(
            Stream(
                index,
                kind,
                None if conn is None else conn.host,
                media.port,
                setup_text,  # checked against SETUPS above
                path,
            )
        )
    return out


def offered_setup(_: Stream) -> Setup:
    """The AS's ``a=setup`` toward the callee: passive (it listens, the callee connects)."""
    return "passive"


def answering_setup(offer: Stream) -> Setup:
    """The AS's ``a=setup`` answering the caller (RFC 4145): the mirror of the caller's, and
    active where the caller leaves the choice (``actpass``)."""
    return "active" if offer.setup in ("passive", "actpass") else "passive"


@attrs.frozen
class LegPlan:
    """What the AS writes into the SDP of one leg: its address, its port and ``a=setup`` per
    keyed m-line (index -> value; every other m-line is rejected), its MSRP URI and the
    ``a=key-mgmt`` value (``mikey <base64>``)."""

    ip: str
    ports: Mapping[int, int]
    setups: Mapping[int, Setup]
    msrp_uri: str
    key_mgmt: str


def rewrite_sdp(sdp: bytes, plan: LegPlan, *, session_id: int, version: int = 1) -> bytes:
    """``sdp`` (the other leg's) as the AS sends it on this leg."""
    parsed = SessionDescription.parse(sdp).copy()
    family = "IP6" if ":" in plan.ip else "IP4"
    session = parsed.session
    session.lines[:] = [
        f"o=msrp-as {session_id} {version} IN {family} {plan.ip}"
        if line.startswith("o=")
        else Connection.for_ip(plan.ip).line
        if line.startswith("c=")
        else line
        for line in session.lines
        if not line.lower().startswith("a=key-mgmt")
    ]
    if not any(line.startswith("c=") for line in session.lines):
        at = next((i for i, line in enumerate(session.lines) if line.startswith("t=")), 1)
        session.lines.insert(at, Connection.for_ip(plan.ip).line)
    session.lines_changed()
    session.add_attribute("key-mgmt", plan.key_mgmt)
    for index, media in enumerate(parsed.media):
        media.lines[:] = [
            line
            for line in media.lines
            if not line.startswith("c=") and not line.lower().startswith("a=key-mgmt")
        ]
        media.lines_changed()
        if index not in plan.ports:
            media.set_port(0)
            continue
        media.set_port(plan.ports[index])
        media.set_attribute("setup", plan.setups[index])
        if media.proto.upper().endswith("/MSRP"):
            media.set_attribute("path", plan.msrp_uri)
    return parsed.serialise()


def msrp_uri(ip: str, port: int, session: str | None = None) -> str:
    """The AS's ``msrps`` URI on one leg (RFC 4975 §6, with the ``tcp`` transport)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"msrps://{host}:{port}/{session or secrets.token_hex(8)};tcp"


# ---------------------------------------------------------------------------------------------
# MIKEY


def read_inbound(init: Message, *, me: str, streams: int, now: float) -> TransferInit:
    """The caller's TRANSFER_INIT, checked as a Responder checks it before resolving: for the
    Responder it names, whoever that is (the AS is in the path for any callee; whether the
    ticket lets the AS resolve is the KMS's decision). MikeyError with its ERR number."""
    named = named_responder(init)
    if named is None:
        raise MikeyError(ErrorNo.INVALID_ID, "the TRANSFER_INIT names no Responder (IDRr)")
    return read_transfer_init(init, responder=me, streams=streams, now=now, answers_for=(named,))


def check_inbound(info: TransferInit, mpk: bytes) -> str:
    """Verify the caller's TRANSFER_INIT with the MPK the KMS gave the AS; the callee it
    names (the Responder of the ticket the AS requests next)."""
    named = named_responder(info.message)
    assert named is not None  # read_inbound checked it
    verify_transfer_init(info, mpk, named)
    return named


# ---------------------------------------------------------------------------------------------
# MSRP


@attrs.frozen
class MsrpLeg:
    """One MSRP leg of the AS: its own URI there and the peer's path (its ``a=path``)."""

    local: str
    remote: tuple[str, ...]


class MsrpRelay:
    """Re-addresses MSRP frames between the caller's leg and the callee's."""

    def __init__(self, caller: MsrpLeg, callee: MsrpLeg, *, max_body_bytes: int = 1 << 20) -> None:
        self.legs = {"caller": caller, "callee": callee}
        self._parsers = {
            side: msrp.MsrpParser(max_body_bytes=max_body_bytes) for side in ("caller", "callee")
        }
        self.frames = {"caller": 0, "callee": 0}

    def receive(self, side: Side, data: bytes) -> bytes:
        """Bytes ``side`` sent -> bytes for the other leg. RemoteMsrpError for bytes that are
        not MSRP, and RemoteAsError for a frame of another session: close that leg."""
        parser = self._parsers[side]
        parser.feed(data)
        here = self.legs[side]
        other = self.legs["callee" if side == "caller" else "caller"]
        out: list[bytes] = []
        while (frame := parser.next_frame()) is not None:
            if not frame.to_path or msrp.session_id_of(frame.to_path[0]) != msrp.session_id_of(
                here.local
            ):
                raise RemoteAsError(
                    f"To-Path {' '.join(frame.to_path)[:80]} is not this session",
                    where="MSRP",
                )
            moved = attrs.evolve(frame, to_path=other.remote, from_path=(other.local,))
            out.append(moved.to_bytes())
            self.frames[side] += 1
        return b"".join(out)


# ---------------------------------------------------------------------------------------------
# SIP: one dialog per leg


def caller_leg(invite: Request) -> Leg:
    """The AS as the caller's UAS (RFC 3261 §12.1.1): the route set is the Record-Route."""
    contacts = invite.addresses("Contact")
    return Leg(
        call_id=invite.call_id,
        local_tag=new_tag(),
        local_uri=invite.to.uri,
        remote_uri=invite.from_.uri,
        remote_target=str(contacts[0].uri) if contacts else invite.from_.uri,
        remote_tag=invite.from_.tag,
        route_set=tuple(str(r) for r in invite.addresses("Record-Route")),
    )


def answer(
    invite: Request,
    leg: Leg,
    status: int,
    *,
    contact: str,
    body: bytes = b"",
    warning: str | None = None,
) -> Response:
    """A response of the AS to the caller's INVITE (a 2xx copies the Record-Route, as
    :func:`~pcscf.sip.make_response` does)."""
    extra: list[tuple[str, str]] = []
    if 200 <= status < 300:
        extra.append(("Contact", contact))
        if body:
            extra.append(("Content-Type", "application/sdp"))
    if warning is not None:
        text = warning.replace("\\", "\\\\").replace('"', '\\"')
        extra.append(("Warning", f'399 msrp-as "{text}"'))
    return make_response(invite, status, to_tag=leg.local_tag, extra=extra, body=body)


def callee_invite(
    invite: Request, *, via: str, contact: str, routes: Sequence[str], body: bytes
) -> tuple[Request, Leg]:
    """The AS's INVITE toward the callee: a new dialog, the caller's From (new tag), To and
    Request-URI, ``routes`` as the Route set (back to the S-CSCF)."""
    leg = Leg(
        call_id=secrets.token_hex(10) + "@msrp-as",
        local_tag=new_tag(),
        local_uri=invite.from_.uri,
        remote_uri=invite.to.uri,
        remote_target=invite.uri,
    )
    hops = (invite.get("Max-Forwards") or "70").strip()
    forwards = max(0, int(hops) - 1) if hops.isdigit() else 69
    headers: list[tuple[str, str]] = [
        ("Via", via),
        ("Max-Forwards", str(forwards)),
        ("From", f"<{leg.local_uri}>;tag={leg.local_tag}"),
        ("To", f"<{leg.remote_uri}>"),
        ("Call-ID", leg.call_id),
        ("CSeq", f"{leg.cseq} INVITE"),
        ("Contact", contact),
        *(("Route", r) for r in routes),
        ("Content-Type", "application/sdp"),
    ]
    return Request(tuple(headers), body, "INVITE", invite.uri), leg


def callee_answered(leg: Leg, response: Response) -> None:
    """A 2xx to the AS's INVITE confirms the callee's dialog (RFC 3261 §12.1.2)."""
    try:
        confirm(leg, response)
    except RemoteSipError as exc:
        raise RemoteAsError(exc.reason, where="To") from None


def cancel_of(request: Request) -> Request:
    """The CANCEL of an INVITE the AS sent (RFC 3261 §9.1: same Via, Route, Call-ID, From,
    To, CSeq number)."""
    keep = ("via", "route", "from", "to", "call-id", "max-forwards")
    headers = [(n, v) for n, v in request.headers if n.lower() in keep]
    headers.append(("CSeq", f"{request.cseq[0]} CANCEL"))
    return Request(tuple(headers), b"", "CANCEL", request.uri)
