"""The vocabulary of connection-oriented media (RFC 4145) and its TLS (RFC 8122): the
``a=setup`` values, which answers each offer allows, how one connection looks from its other
end, and which TLS role an ``a=setup`` value gives. Every element uses these definitions."""

from __future__ import annotations

from typing import Literal, get_args

Setup = Literal["active", "passive", "actpass", "holdconn"]
SETUPS: tuple[Setup, ...] = get_args(Setup)

TlsRole = Literal["server", "client"]
"""The TLS role of one end of a TCP connection."""

#: RFC 4145 section 4.1: the answers an offered ``a=setup`` value allows.
VALID_ANSWERS: dict[Setup, frozenset[Setup]] = {
    "active": frozenset({"passive", "holdconn"}),
    "passive": frozenset({"active", "holdconn"}),
    "actpass": frozenset({"active", "passive", "holdconn"}),
    "holdconn": frozenset({"holdconn"}),
}

_MIRROR: dict[Setup, Setup] = {
    "active": "passive",
    "passive": "active",
    "actpass": "actpass",
    "holdconn": "holdconn",
}


def mirror(setup: Setup) -> Setup:
    """The same connection seen from its other end: ``active`` <-> ``passive``; an end that
    leaves the choice open (``actpass``) or holds the connection (``holdconn``) is met by one
    that does the same."""
    return _MIRROR[setup]


def answer_to(offer: Setup) -> Setup:
    """The value an answerer takes facing ``offer``: its mirror, and ``passive`` where the
    offer leaves the choice (``actpass``), so that the offerer opens the connection."""
    return "passive" if offer == "actpass" else _MIRROR[offer]


def tls_role(setup: Setup) -> TlsRole | None:
    """RFC 4572 (updated by RFC 8122): the TCP client is the TLS client, so the end that
    opens the connection (``active``) is the TLS client and the one that accepts it
    (``passive``) the server; not known yet for ``actpass``, none for ``holdconn``."""
    if setup == "active":
        return "client"
    if setup == "passive":
        return "server"
    return None
