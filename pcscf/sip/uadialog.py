"""A user agent's dialog (RFC 3261 §12) for the elements that are user agents (the MSRP AS,
the MRFC), sans I/O: the dialog state, its tags and branches, the in-dialog requests it sends,
the confirmation of a dialog it initiated, and where its in-dialog requests go."""

from __future__ import annotations

import secrets

import attrs

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import Request, Response
from pcscf.sip.uri import NameAddr, SipUri


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


@attrs.define
class UaDialog:
    """One dialog as a user agent holds it: ``cseq`` is the last local CSeq number used."""

    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    remote_tag: str | None = None
    route_set: tuple[str, ...] = ()
    cseq: int = 1
    invite_cseq: int = 1


def confirm(dialog: UaDialog, response: Response) -> None:
    """A 2xx to our INVITE confirms the dialog (RFC 3261 §12.1.2): the remote tag, the route
    set (the Record-Route reversed), the remote target (the Contact). A 2xx without a To tag
    is a :class:`RemoteSipError`."""
    tag = response.to.tag
    if tag is None:
        raise RemoteSipError(400, "2xx without a To tag", where="To")
    dialog.remote_tag = tag
    dialog.route_set = tuple(reversed([str(r) for r in response.addresses("Record-Route")]))
    contacts = response.addresses("Contact")
    if contacts:
        dialog.remote_target = str(contacts[0].uri)


def in_dialog(dialog: UaDialog, method: str, *, via: str, cseq: int | None = None) -> Request:
    """An in-dialog request: ACK (``cseq``: the INVITE's), BYE, ... (a new CSeq when none)."""
    if cseq is None:
        dialog.cseq += 1
        cseq = dialog.cseq
    to = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
    headers: list[tuple[str, str]] = [
        ("Via", via),
        ("Max-Forwards", "70"),
        ("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}"),
        ("To", to),
        ("Call-ID", dialog.call_id),
        ("CSeq", f"{cseq} {method}"),
        *(("Route", r) for r in dialog.route_set),
    ]
    return Request(tuple(headers), b"", method, dialog.remote_target)


def next_hop(dialog: UaDialog, default: tuple[str, int] | None = None) -> tuple[str, int]:
    """Where an in-dialog request goes: the first route, else ``default`` when given, else the
    remote target."""
    if dialog.route_set:
        target = NameAddr.parse(dialog.route_set[0], "Route").uri
        return SipUri.parse(target, "Route").address()
    if default is not None:
        return default
    return SipUri.parse(dialog.remote_target, "Contact").address()


__all__ = ["UaDialog", "confirm", "in_dialog", "new_branch", "new_tag", "next_hop"]
