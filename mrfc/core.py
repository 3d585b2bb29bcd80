"""The MRFC's decisions, sans I/O: who may join a conference, how each offered stream is
joined at the MRFP, and the SDP the MRFC answers or offers.

- **Who joins** (:func:`authorize`): TS 33.328 Annex G.3.2, "the conference focus shall
  verify that the UE identity (KMS UID) specified in the MIKEY-TICKET exchange is authorized
  to join". For a KMS-keyed offer that identity is the TRANSFER_INIT's IDRi, authenticated
  once the ticket resolved; for an e2ae participant (Annex G.2: its TLS ends in the AGW, so
  the offer that arrives is plain ``TCP/MSRP`` / ``TCP/BFCP`` without ``a=key-mgmt``) it is
  the identity the network asserted (``P-Asserted-Identity``, else ``From``).
- **Roles** (:func:`answer_role`): RFC 4145 answer rules (the mirror of the offer, passive
  for ``actpass``); the TCP active end is the TLS client, for MSRP (RFC 4975/6135) and for
  BFCP (RFC 8856).
- **Joins** (:func:`join_request`): one :class:`mp.profile.JoinRequest` per stream, with
  the stream's TLS-PSK (crypto session *n* keys the *n*-th TLS m-line) or ``plain``.
- **SDP** (:func:`answer_sdp`, :func:`dial_out_offer`): the MRFP's address, ports and MSRP
  path from its :class:`~mp.profile.JoinReply`, ``a=setup``, and for BFCP the floor control
  server's attributes (``a=floorctrl:s-only``, ``a=confid``, ``a=userid``, ``a=floorid``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from e2ae.tcpmedia import SETUPS, Setup, TlsRole, answer_to
from mp.profile import Endpoint, JoinReply, JoinRequest, Media, PskConfig, TcpRole
from pcscf.errors import SdpError
from pcscf.sdp import SessionDescription
from pcscf.sip import NameAddr, Request, Response, make_response
from pcscf.sip.errors import RemoteSipError
from pcscf.sip.uadialog import UaDialog, confirm, new_tag
from pcscf.sip.uadialog import in_dialog as in_dialog
from pcscf.sip.uadialog import new_branch as new_branch
from pcscf.sip.uadialog import next_hop as next_hop

#: One participant's dialog as the MRFC holds it.
Dialog = UaDialog

#: The PSK identity the TLS client sends (TS 33.328 Annex H.2: the empty string).
PSK_IDENTITY = b""

Security = Literal["tls-psk", "plain"]


class MrfcError(Exception):
    """Root of the MRFC's errors."""


class Refused(MrfcError):
    """A join the MRFC refuses: the SIP status and the Warning text to answer with."""

    def __init__(self, status: int, warning: str) -> None:
        super().__init__(f"{status}: {warning}")
        self.status = status
        self.warning = warning


# ---------------------------------------------------------------------------------------------
# conferences and who may join


@attrs.frozen
class Conference:
    """A conference the MRFC hosts: its URI, the identities allowed to join, its BFCP floors,
    and whether a participant whose TLS ends in its AGW (plain offer) may join."""

    uri: str
    participants: tuple[str, ...]
    floors: tuple[int, ...] = (1,)
    allow_plain: bool = True
    conference_id: int = 1


def authorize(conference: Conference, participant: str) -> None:
    """Refused(403) unless ``participant`` is on the conference's list (Annex G.3.2)."""
    if participant not in conference.participants:
        raise Refused(403, f"{participant} is not authorized to join {conference.uri}")


#: Seconds a caller refused for too many set-ups at once is told to wait (Retry-After).
RETRY_AFTER = 5


def check_room(
    conference: Conference,
    participants: int,
    setups: int,
    *,
    max_participants: int,
    max_setups: int,
) -> None:
    """Refused(486) if ``conference`` already holds ``max_participants`` (``participants``:
    its dialogs, dial-outs in progress included); Refused(503) if ``setups`` dial-in
    set-ups are in progress and that is ``max_setups`` (the caller adds Retry-After:
    :data:`RETRY_AFTER`). ``setups`` is ignored for a dial-out (pass 0)."""
    if participants >= max_participants:
        raise Refused(486, f"{conference.uri} is full: {max_participants} participants")
    if setups >= max_setups:
        raise Refused(503, f"{setups} set-ups in progress")


# ---------------------------------------------------------------------------------------------
# the offer


@attrs.frozen
class Offered:
    """One m-line of an offer as the MRFC needs it."""

    index: int
    media: Media | None  # None: not MSRP nor BFCP (rejected with port 0)
    proto: str
    host: str | None
    port: int
    setup: Setup
    path: tuple[str, ...] = ()
    accept_types: str = "*"

    @property
    def tls(self) -> bool:
        return self.proto.upper().startswith("TCP/TLS/")


@attrs.frozen
class Offer:
    """An offer: its m-lines, and whether it carries a MIKEY ``a=key-mgmt``."""

    streams: tuple[Offered, ...]
    keyed: bool

    @property
    def security(self) -> Security:
        return "tls-psk" if self.keyed else "plain"

    @property
    def media_streams(self) -> tuple[Offered, ...]:
        return tuple(s for s in self.streams if s.media is not None and s.port)


def _media_of(proto: str) -> Media | None:
    upper = proto.upper()
    if upper in ("TCP/TLS/MSRP", "TCP/MSRP"):
        return "msrp"
    if upper in ("TCP/TLS/BFCP", "TCP/BFCP"):
        return "bfcp"
    return None


def read_offer(sdp: bytes) -> Offer:
    """The streams of an offer. Refused(488) for an SDP that cannot be read, an MSRP stream
    without ``a=path``, a TLS stream without ``a=key-mgmt`` (the MRFC has no certificate for
    media: TLS-PSK or plain), or a mix of keyed and plain streams."""
    try:
        parsed = SessionDescription.parse(sdp)
    except SdpError as exc:
        raise Refused(488, f"SDP: {exc}") from None
    keyed = bool(parsed.key_mgmt())
    out: list[Offered] = []
    for index, media in enumerate(parsed.media):
        kind = _media_of(media.proto)
        values = media.attribute_values("setup")
        setup_text = values[0].strip().lower() if values else "active"
        if kind is not None and (setup_text not in SETUPS or setup_text == "holdconn"):
            raise Refused(488, f"m-line {index + 1}: a=setup:{setup_text[:20]}")
        setup: Setup = next((v for v in SETUPS if v == setup_text), "active")
        conn = parsed.effective_connection(index)
        paths = media.attribute_values("path")
        accept = media.attribute_values("accept-types")
        stream = Offered(
            index,
            kind,
            media.proto,
            None if conn is None else conn.host,
            media.port,
            setup,
            tuple(paths[0].split()) if paths else (),
            accept[0] if accept else "*",
        )
        if kind == "msrp" and stream.port and not stream.path:
            raise Refused(488, f"m-line {index + 1}: an MSRP stream without a=path")
        if kind is not None and stream.port and stream.tls != keyed:
            raise Refused(
                488,
                f"m-line {index + 1}: {media.proto} "
                + ("in a keyed offer" if keyed else "without a=key-mgmt (TLS-PSK needs MIKEY)"),
            )
        out.append(stream)
    offer = Offer(tuple(out), keyed)
    if not offer.media_streams:
        raise Refused(488, "no MSRP or BFCP stream")
    return offer


def answer_role(offered: Setup) -> tuple[TcpRole, TlsRole]:
    """The MRFP's TCP role answering ``offered`` (RFC 4145: the mirror, passive for
    ``actpass``) and its TLS role (the TCP active end is the TLS client)."""
    mine = answer_to(offered)
    if mine == "active":
        return "active", "client"
    return "passive", "server"


def join_request(
    conference: Conference,
    participant: str,
    stream: Offered,
    *,
    context: int | None,
    psk: bytes | None,
    ciphersuites: tuple[str, ...],
    bfcp_user: int | None,
    call_id: str | None = None,
) -> JoinRequest:
    """The Join of one answered stream: ``psk`` for a keyed one (its crypto session's key),
    ``None`` for plain."""
    assert stream.media is not None
    tcp_role, tls_role = answer_role(stream.setup)
    remote = Endpoint(stream.host, stream.port) if tcp_role == "active" and stream.host else None
    return JoinRequest(
        conference=conference.uri,
        context=context,
        participant=participant,
        media=stream.media,
        tcp_role=tcp_role,
        security="tls-psk" if psk is not None else "plain",
        tls_role=tls_role if psk is not None else None,
        psk=None if psk is None else PskConfig(psk, PSK_IDENTITY, ciphersuites),
        remote=remote,
        remote_path=stream.path,
        bfcp_user=bfcp_user if stream.media == "bfcp" else None,
        floors=conference.floors if stream.media == "bfcp" else (),
        call_id=call_id,
    )


def crypto_sessions(offer: Offer) -> dict[int, int]:
    """m-line index -> CS ID: crypto session *n* keys the *n*-th TLS m-line (Annex H.1)."""
    tls = [s for s in offer.streams if s.tls]
    return {s.index: n for n, s in enumerate(tls, start=1)}


# ---------------------------------------------------------------------------------------------
# SDP the MRFC writes


@attrs.frozen
class Answered:
    """One joined stream: the MRFP's reply and the MRFC's ``a=setup`` for it."""

    reply: JoinReply
    setup: Setup


def _origin(ip: str, session_id: int) -> list[str]:
    family = "IP6" if ":" in ip else "IP4"
    return [
        "v=0",
        f"o=mrfc {session_id} 1 IN {family} {ip}",
        "s=conference",
        f"c=IN {family} {ip}",
        "t=0 0",
    ]


def _bfcp_lines(conference: Conference, user_id: int) -> list[str]:
    return [
        "a=floorctrl:s-only",
        f"a=confid:{conference.conference_id}",
        f"a=userid:{user_id}",
        *(f"a=floorid:{f} mstrm:1" for f in conference.floors),
        "a=connection:new",
    ]


def answer_sdp(
    offer: Offer,
    joined: Mapping[int, Answered],
    *,
    conference: Conference,
    bfcp_user: int,
    key_mgmt: str | None,
    session_id: int,
) -> bytes:
    """The MRFC's answer: each joined m-line at the MRFP's address (one per stream), every
    other m-line rejected (port 0); ``key_mgmt`` (``mikey <base64>``: the TRANSFER_RESP) at
    session level."""
    ips = {a.reply.local.ip for a in joined.values()}
    ip = sorted(ips)[0] if ips else "0.0.0.0"  # noqa: S104 (c= of an answer rejecting all)
    lines = _origin(ip, session_id)
    if key_mgmt is not None:
        lines.append(f"a=key-mgmt:{key_mgmt}")
    for s in offer.streams:
        answered = joined.get(s.index)
        if answered is None or s.media is None:
            kind = "message" if s.media == "msrp" else "application"
            lines.append(f"m={kind} 0 {s.proto} *")
            continue
        reply = answered.reply
        family = "IP6" if ":" in reply.local.ip else "IP4"
        if s.media == "msrp":
            lines += [
                f"m=message {reply.local.port} {s.proto} *",
                f"c=IN {family} {reply.local.ip}",
                f"a=accept-types:{s.accept_types}",
                f"a=path:{reply.local_path or ''}",
                f"a=setup:{answered.setup}",
            ]
        else:
            lines += [
                f"m=application {reply.local.port} {s.proto} *",
                f"c=IN {family} {reply.local.ip}",
                *_bfcp_lines(conference, bfcp_user),
                f"a=setup:{answered.setup}",
            ]
    return ("\r\n".join(lines) + "\r\n").encode()


def dial_out_offer(reply: JoinReply, *, tls: bool, key_mgmt: str | None, session_id: int) -> bytes:
    """The MRFC's offer to a participant it calls: one MSRP m-line at the MRFP, passive
    (the MRFP listens and is the TLS server), keyed by ``key_mgmt`` (the TRANSFER_INIT)."""
    lines = _origin(reply.local.ip, session_id)
    if key_mgmt is not None:
        lines.append(f"a=key-mgmt:{key_mgmt}")
    lines += [
        f"m=message {reply.local.port} {'TCP/TLS/MSRP' if tls else 'TCP/MSRP'} *",
        "a=accept-types:*",
        f"a=path:{reply.local_path or ''}",
        "a=setup:passive",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def read_dial_out_answer(sdp: bytes) -> Offered:
    """The participant's answer to :func:`dial_out_offer`: its MSRP m-line, which must be
    accepted and active (the MRFP is passive). Refused(488) otherwise."""
    try:
        parsed = SessionDescription.parse(sdp)
    except SdpError as exc:
        raise Refused(488, f"SDP: {exc}") from None
    if not parsed.media:
        raise Refused(488, "the answer has no m-line")
    media = parsed.media[0]
    values = media.attribute_values("setup")
    setup = values[0].strip().lower() if values else "passive"
    paths = media.attribute_values("path")
    conn = parsed.effective_connection(0)
    if _media_of(media.proto) != "msrp" or not media.port or setup != "active" or not paths:
        raise Refused(
            488, f"the answer's MSRP stream: {media.proto} port {media.port} a=setup:{setup}"
        )
    return Offered(
        0,
        "msrp",
        media.proto,
        None if conn is None else conn.host,
        media.port,
        "active",
        tuple(paths[0].split()),
    )


def transfer_message(sdp: bytes) -> bytes:
    """The MIKEY message of an SDP's ``a=key-mgmt:mikey`` (Refused(488) without one)."""
    try:
        return SessionDescription.parse(sdp).tls_key_mgmt("mikey")
    except (SdpError, ValueError) as exc:
        raise Refused(488, f"a=key-mgmt: {exc}") from None


# ---------------------------------------------------------------------------------------------
# SIP: the MRFC as a user agent, one dialog per participant


def participant_of(invite: Request) -> str:
    """Who the network says sent ``invite``: its P-Asserted-Identity, else its From (AOR)."""
    asserted = invite.get("P-Asserted-Identity")
    if asserted:
        try:
            return (
                NameAddr.parse(asserted.split(",")[0], "P-Asserted-Identity")
                .sip_uri("P-Asserted-Identity")
                .aor()
            )
        except RemoteSipError:  # an unreadable header: the From says who
            return invite.from_.sip_uri("From").aor()
    return invite.from_.sip_uri("From").aor()


def dial_in_dialog(invite: Request) -> Dialog:
    """The MRFC as the participant's UAS (RFC 3261 §12.1.1)."""
    contacts = invite.addresses("Contact")
    return Dialog(
        call_id=invite.call_id,
        local_tag=new_tag(),
        local_uri=invite.to.uri,
        remote_uri=invite.from_.uri,
        remote_target=str(contacts[0].uri) if contacts else invite.from_.uri,
        remote_tag=invite.from_.tag,
        route_set=tuple(str(r) for r in invite.addresses("Record-Route")),
        cseq=0,
    )


def answer(
    invite: Request,
    dialog: Dialog,
    status: int,
    *,
    contact: str,
    body: bytes = b"",
    warning: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> Response:
    """The MRFC's response to an INVITE (a Warning 399 with the reason of a refusal; ``extra``:
    headers to add, e.g. Retry-After)."""
    headers: list[tuple[str, str]] = list(extra)
    if 200 <= status < 300:
        headers.append(("Contact", contact))
        if body:
            headers.append(("Content-Type", "application/sdp"))
    if warning is not None:
        text = warning.replace("\\", "\\\\").replace('"', '\\"')
        headers.append(("Warning", f'399 mrfc "{text}"'))
    return make_response(invite, status, to_tag=dialog.local_tag, extra=headers, body=body)


def dial_out_invite(
    conference: str, target: str, *, via: str, contact: str, routes: Sequence[str], body: bytes
) -> tuple[Request, Dialog]:
    """The MRFC's INVITE to ``target`` on behalf of ``conference`` (From: the conference)."""
    dialog = Dialog(
        call_id=secrets.token_hex(10) + "@mrfc",
        local_tag=new_tag(),
        local_uri=conference,
        remote_uri=target,
        remote_target=target,
    )
    headers: list[tuple[str, str]] = [
        ("Via", via),
        ("Max-Forwards", "70"),
        ("From", f"<{conference}>;tag={dialog.local_tag}"),
        ("To", f"<{target}>"),
        ("Call-ID", dialog.call_id),
        ("CSeq", "1 INVITE"),
        ("Contact", contact),
        *(("Route", r) for r in routes),
        ("Content-Type", "application/sdp"),
    ]
    return Request(tuple(headers), body, "INVITE", target), dialog


def answered(dialog: Dialog, response: Response) -> None:
    """A 2xx to the MRFC's INVITE confirms the dialog (RFC 3261 §12.1.2)."""
    try:
        confirm(dialog, response)
    except RemoteSipError as exc:
        raise Refused(488, exc.reason) from None
