"""The list server's decisions, sans I/O (TR 33.829 §8.3.1.1, RFC 5365).

A MESSAGE to a group PSI goes to each member of the group, or to the URI list of the request
when every URI in it is a member. For each of them the list server decides from the ticket of
the sender's TRANSFER_INIT:

- **pass through**: the member may resolve that ticket (the ticket names no Responder, names
  the member, or names the PSI and the KMS knows the PSI as a group of these members): the
  member gets the sender's MIKEY and S/MIME parts byte for byte, without the recipient list;
- **re-protect**: otherwise the list server, an allowed resolver, decrypts and protects the
  message again with a ticket of its own that names only that member.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from immsg import mime
from immsg.core import LIST_TYPE, ImError, Incoming
from listserver.config import Group, ListServerConfig
from mikey.constants import IdRole
from mikey.payloads import IdWithRole, Ticket

#: A ticket of the list server's own is used again until this many seconds before its TRe.
TICKET_MARGIN = 60.0
#: How long a stored message is kept when its ticket has no TRe.
DEFAULT_KEEP = 24 * 3600.0
#: Member answers after which the message is stored for the member (RFC 3261: not there now).
STORE_STATUSES = frozenset({404, 408, 480, 503})


@attrs.frozen
class Plan:
    """Who gets the sender's parts as they are, and who gets the list server's protection."""

    pass_through: tuple[str, ...]
    reprotect: tuple[str, ...]

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.pass_through, *self.reprotect)


def members_of(config: ListServerConfig, psi: str) -> Group | None:
    """The group a Request-URI names (None: not a PSI of this list server)."""
    return config.group(psi)


def responders(ticket: Ticket) -> tuple[str, ...]:
    """The Responders a ticket names: the IDRr payloads of its Ticket Policy."""
    return tuple(
        p.data.decode("utf-8", "replace")
        for p in ticket.policy.payloads()
        if isinstance(p, IdWithRole) and p.role == IdRole.IDRR
    )


def entitled(member: str, ticket: Ticket, psi: str, kms_group: bool) -> bool:
    """Whether ``member`` may resolve ``ticket`` itself: it names nobody (anybody may), it
    names the member, or it names the group PSI and the KMS knows the group (``kms_group``)."""
    named = responders(ticket)
    if not named or member in named:
        return True
    return kms_group and psi in named


def targets(members: Sequence[str], uri_list: Sequence[str]) -> tuple[str, ...]:
    """Whom one message goes to: the request's URI list (RFC 5365) when it has one and every
    URI in it is a member, else the group; 403 for a URI that is not a member."""
    if not uri_list:
        return tuple(members)
    strangers = [u for u in uri_list if u not in members]
    if strangers:
        raise ImError(403, f"the URI list names {strangers[0]}, not a member of the group")
    out: list[str] = []
    for uri in uri_list:
        if uri not in out:
            out.append(uri)
    return tuple(out)


def plan(incoming: Incoming, members: Sequence[str], *, psi: str, kms_group: bool) -> Plan:
    """Split the recipients of ``incoming`` (its URI list or ``members``, the sender left
    out: it does not get its own message back) into pass-through and re-protect."""
    chosen = [m for m in targets(members, incoming.recipients) if m != incoming.transfer.initiator]
    ticket = incoming.ticket
    through = tuple(m for m in chosen if entitled(m, ticket, psi, kms_group))
    again = tuple(m for m in chosen if m not in through)
    return Plan(through, again)


_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


def pass_through_body(content_type: str, body: bytes) -> tuple[str, bytes]:
    """The body a pass-through member gets: the sender's MIKEY and S/MIME parts byte for
    byte, the recipient list removed (RFC 5365 §5: the list server removes it). A body
    without a recipient list is returned as it came."""
    try:
        parts = mime.parse_multipart(content_type, body)
    except mime.MimeError as exc:
        raise ImError(400, f"malformed MIME: {exc.reason}") from None
    kept = [p for p in parts if p.content_type != LIST_TYPE]
    if len(kept) == len(parts):
        return content_type, body
    found = _BOUNDARY.search(content_type)
    boundary = (found.group(1) or found.group(2)) if found else None
    return mime.multipart(kept, boundary=boundary)


def ticket_reusable(expires_at: float | None, now: float) -> bool:
    """A ticket of the list server's own is used again until TICKET_MARGIN s before TRe."""
    return expires_at is not None and now < expires_at - TICKET_MARGIN


def outcome(status: int) -> str:
    """What a member's final answer means: ``delivered``, ``store`` (not reachable now:
    kept for its next registration) or ``refused`` (logged, not stored)."""
    if 200 <= status < 300:
        return "delivered"
    if status in STORE_STATUSES:
        return "store"
    return "refused"


def register_expires(expires: str | None, contact_expires: Sequence[str | None]) -> int:
    """The seconds a third-party REGISTER says the member stays registered: the Contact's
    ``expires`` parameter, else the Expires header, else 3600 (RFC 3261 §10.2.1.1); 0 when
    deregistered. 400 for a value that is not a number."""
    values = [v for v in contact_expires if v is not None]
    text = values[0] if values else expires
    if text is None:
        return 3600
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ImError(400, f"Expires {text!r} is not a number of seconds")
    return int(text)


__all__ = [
    "DEFAULT_KEEP",
    "STORE_STATUSES",
    "TICKET_MARGIN",
    "Plan",
    "entitled",
    "members_of",
    "outcome",
    "pass_through_body",
    "plan",
    "register_expires",
    "responders",
    "targets",
    "ticket_reusable",
]
