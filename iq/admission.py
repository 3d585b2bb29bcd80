"""Who may register on Iq, as which gateway, and how much an Iq listener holds (pure).

The IMS-ALG end of Iq decides every ServiceChange with :meth:`IqAdmission.service_change`:

- **Authentication.** With TLS, a link is up only once the peer's certificate matched a pinned
  fingerprint (see :mod:`iq.link`); the fingerprint it matched is the link's identity. Plain
  TCP authenticates nobody: it is an explicit opt-in (``insecure``) and then needs an
  allow-list, each entry an mId and the source address (or network) it must come from.
- **One mId, one link.** A ServiceChange for an mId that is in service on another link is
  refused (402), whatever its method: the link in service keeps the gateway and its contexts.
  A link that registered as one mId cannot register as another.
- **A gateway's identity sticks while it has contexts.** When an mId's link is down, a new
  link may take it over (a restarted AGW) only with the identity it had: the same certificate
  fingerprint over TLS, the same source address over TCP. With no contexts left there is
  nothing to take over and the mId is free for any admitted peer.

:class:`IqLimits` bounds what the listener holds; :mod:`iq.link` enforces it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

import attrs

from iq.errors import LocalIqError

#: H.248.8 error code for a peer that is not allowed to do what it asked.
UNAUTHORIZED = 402
#: H.248.1 "Insufficient resources".
INSUFFICIENT_RESOURCES = 510

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class AllowEntry:
    """``MID@ADDRESS`` or ``MID@NETWORK/LEN``: a gateway that may register over Iq."""

    mid: str
    network: Network

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        mid, sep, where = str(text).strip().rpartition("@")
        if not sep or not mid or not where:
            raise LocalIqError(f"Iq allow entry {text!r}: expected MID@ADDRESS[/LEN]")
        try:
            network = ipaddress.ip_network(where.strip("[]"), strict=False)
        except ValueError as exc:
            raise LocalIqError(f"Iq allow entry {text!r}: {where!r} is not an address") from exc
        return cls(mid, network)

    def admits(self, mid: str, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return mid == self.mid and ip in self.network

    def __str__(self) -> str:
        net = self.network
        where = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        return f"{self.mid}@{where}"


@attrs.frozen
class PeerIdentity:
    """What a link proved about its peer: the source address, and over TLS the pinned
    fingerprint (``"sha-256 AB:..."``) its certificate matched."""

    address: str
    fingerprint: str | None = None

    def same_peer(self, other: PeerIdentity) -> bool:
        if self.fingerprint is not None or other.fingerprint is not None:
            return self.fingerprint == other.fingerprint
        return self.address == other.address

    def __str__(self) -> str:
        return self.fingerprint if self.fingerprint is not None else self.address


@attrs.frozen
class KnownGateway:
    """What the controller holds for an mId when a ServiceChange names it."""

    identity: PeerIdentity
    #: Its link is up (and in service or not: a Forced gateway keeps its link).
    link_up: bool
    #: That link is the one the ServiceChange arrived on.
    same_link: bool
    #: It still has contexts (calls) the controller knows of.
    has_contexts: bool


@attrs.frozen
class Refusal:
    """An H.248 error for the ServiceChange, and why (for the log)."""

    code: int
    reason: str


ChangeKind = Literal["register", "restart", "forced"]


@attrs.frozen
class IqAdmission:
    """The ServiceChange rules of one controller (see the module text)."""

    #: Links are TLS with pinned certificates.
    authenticated: bool
    allow: tuple[AllowEntry, ...] = ()

    @classmethod
    def build(cls, *, tls: bool, insecure: bool, allow: Iterable[str | AllowEntry]) -> IqAdmission:
        """Check the combination: TLS, or plain TCP asked for explicitly with an allow-list."""
        entries = tuple(a if isinstance(a, AllowEntry) else AllowEntry.parse(a) for a in allow)
        if not tls:
            if not insecure:
                raise LocalIqError(
                    "Iq over plain TCP authenticates no gateway: use TLS with pinned"
                    " certificates, or opt in to plain TCP explicitly (insecure)"
                )
            if not entries:
                raise LocalIqError(
                    "Iq over plain TCP needs an allow-list of MID@ADDRESS entries"
                    " (which gateway may register from where)"
                )
        return cls(tls, entries)

    def service_change(
        self,
        mid: str,
        kind: ChangeKind,
        identity: PeerIdentity,
        *,
        link_mid: str | None,
        known: KnownGateway | None,
    ) -> Refusal | None:
        """``None`` if the ServiceChange may be honoured, else the refusal.

        ``link_mid``: the mId the arriving link registered as before, if any."""
        if link_mid is not None and link_mid != mid:
            return Refusal(UNAUTHORIZED, f"this link is registered as {link_mid}, not {mid}")
        if kind == "forced":
            if known is None or not known.same_link:
                return Refusal(UNAUTHORIZED, f"{mid} is not registered on this link")
            return None
        if self.allow and not any(a.admits(mid, identity.address) for a in self.allow):
            return Refusal(UNAUTHORIZED, f"{mid} from {identity.address} is not in the allow-list")
        if known is None or known.same_link:
            return None
        if known.link_up:
            return Refusal(UNAUTHORIZED, f"{mid} is in service on another link")
        if known.has_contexts and not identity.same_peer(known.identity):
            return Refusal(
                UNAUTHORIZED, f"{mid} has contexts and was registered by {known.identity}"
            )
        return None


@attrs.frozen
class IqLimits:
    """What an Iq listener holds at most (each a configuration knob, see docs/security.md)."""

    #: Iq connections open at once, registered or not; more are closed on accept.
    max_links: int = 64
    #: Seconds a link has, once up (TLS verified), to register with a ServiceChange.
    register_timeout: float = 10.0
    #: Requests waiting for a reply on one link; more fail at once (the call gets 503).
    max_pending: int = 1000
    #: Gateways (mIds) remembered, with or without a link; a new one beyond is refused (510).
    max_gateways: int = 64

    def __attrs_post_init__(self) -> None:
        for name in ("max_links", "max_pending", "max_gateways"):
            if getattr(self, name) < 1:
                raise LocalIqError(f"Iq limit {name} must be at least 1")
        if not self.register_timeout > 0:
            raise LocalIqError("Iq limit register_timeout must be positive")
