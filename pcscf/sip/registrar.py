"""Registration state of the P-CSCF: who registered which media-security mechanisms, from where.

REGISTER passes through to the core; the P-CSCF only watches. When the REGISTER goes out it
remembers the contacts, the transport address (the *flow*) the UE sent it from and the
``;mediasec`` mechanisms of its ``Security-Client``. When the 2xx comes back, each contact of the
request gets the expiry the registrar granted (the contact's ``expires`` parameter in the 2xx, or
its ``Expires`` header); a contact missing from the 2xx or granted 0 is removed (de-registration).
Time is a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.headers import media_mechanisms
from pcscf.sip.message import Request, Response
from pcscf.sip.uri import NameAddr, SipUri

DEFAULT_EXPIRES = 3600


@attrs.frozen
class Flow:
    """The transport address a UE's messages come from (and terminating requests go to)."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


@attrs.frozen
class Binding:
    """One registered contact: AOR + contact + flow, its mechanisms and expiry."""

    aor: str
    contact: SipUri
    flow: Flow
    mechanisms: frozenset[str]
    expires_at: float
    flow_token: str


@attrs.frozen
class PendingRegister:
    """What a forwarded REGISTER asked for, kept until its final response."""

    aor: str
    contacts: tuple[tuple[SipUri, int | None], ...]
    wildcard: bool
    expires: int | None
    flow: Flow
    mechanisms: frozenset[str]
    flow_token: str


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) < 11 else None


def read_register(request: Request, flow: Flow, flow_token: str) -> PendingRegister:
    """The registration a REGISTER asks for (RemoteSipError if it is malformed)."""
    aor = request.to.sip_uri("To").aor()
    wildcard = False
    contacts: list[tuple[SipUri, int | None]] = []
    for item in request.values("contact"):
        if item.strip() == "*":
            wildcard = True
            continue
        addr = NameAddr.parse(item, "Contact")
        contacts.append((addr.sip_uri("Contact"), _int(addr.param("expires"))))
    expires = _int(request.get("expires"))
    if wildcard and (contacts or expires != 0):
        raise RemoteSipError(400, "Contact * needs Expires: 0 and no other contact")
    mechanisms = media_mechanisms(request.get_all("security-client"))
    return PendingRegister(aor, tuple(contacts), wildcard, expires, flow, mechanisms, flow_token)


@attrs.define
class Registrar:
    """Registered contacts keyed by (AOR, contact); looked up by flow, contact URI or AOR."""

    _bindings: dict[tuple[str, str], Binding] = attrs.field(factory=dict)
    #: flow -> keys of its bindings (a UE's requests are looked up by flow, in O(1)).
    _flows: dict[Flow, set[tuple[str, str]]] = attrs.field(factory=dict)
    _tokens: dict[str, Flow] = attrs.field(factory=dict)
    #: source host -> number of bindings registered from it.
    _hosts: dict[str, int] = attrs.field(factory=dict)

    def _put(self, key: tuple[str, str], binding: Binding) -> None:
        self._drop(key)
        self._bindings[key] = binding
        self._flows.setdefault(binding.flow, set()).add(key)
        self._tokens[binding.flow_token] = binding.flow
        self._hosts[binding.flow.host] = self._hosts.get(binding.flow.host, 0) + 1

    def from_host(self, host: str) -> int:
        """How many bindings were registered from the source address ``host``."""
        return self._hosts.get(host, 0)

    def knows_flow(self, flow: Flow) -> bool:
        """Whether ``flow`` holds a binding (a refresh from it adds no state)."""
        return flow in self._flows

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._bindings.pop(key, None)
        if old is None:
            return
        left = self._hosts.get(old.flow.host, 0) - 1
        if left > 0:
            self._hosts[old.flow.host] = left
        else:
            self._hosts.pop(old.flow.host, None)
        keys = self._flows.get(old.flow)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._flows[old.flow]
                self._tokens.pop(old.flow_token, None)

    def __len__(self) -> int:
        return len(self._bindings)

    def __iter__(self) -> Iterator[Binding]:
        return iter(list(self._bindings.values()))

    def apply(self, pending: PendingRegister, response: Response, now: float) -> list[Binding]:
        """Update the state from the final 2xx to a REGISTER; returns the bindings now held."""
        if not 200 <= response.status < 300:
            return []
        granted: list[tuple[SipUri, int | None]] = []
        for item in response.values("contact"):
            try:
                addr = NameAddr.parse(item, "Contact")
                granted.append((addr.sip_uri("Contact"), _int(addr.param("expires"))))
            except RemoteSipError:
                continue
        header_expires = _int(response.get("expires"))
        if pending.wildcard:
            for key in [k for k in self._bindings if k[0] == pending.aor]:
                self._drop(key)
            return []
        kept: list[Binding] = []
        for contact, asked in pending.contacts:
            key = (pending.aor, _contact_key(contact))
            expiry: int | None = None
            for uri, expires in granted:
                if uri.same_target(contact):
                    expiry = expires if expires is not None else header_expires
                    if expiry is None:
                        expiry = asked if asked is not None else pending.expires
                    if expiry is None:
                        expiry = DEFAULT_EXPIRES
                    break
            if not expiry:
                self._drop(key)
                continue
            binding = Binding(
                pending.aor,
                contact,
                pending.flow,
                pending.mechanisms,
                now + expiry,
                pending.flow_token,
            )
            self._put(key, binding)
            kept.append(binding)
        return kept

    def expire(self, now: float) -> list[Binding]:
        """Drop the bindings whose expiry has passed; returns them."""
        gone = [b for b in self._bindings.values() if b.expires_at <= now]
        for binding in gone:
            self._drop((binding.aor, _contact_key(binding.contact)))
        return gone

    def by_flow(self, flow: Flow, now: float) -> Binding | None:
        """A live binding registered from ``flow`` (the newest if several)."""
        best: Binding | None = None
        for key in self._flows.get(flow, ()):
            binding = self._bindings[key]
            if binding.expires_at > now and (best is None or binding.expires_at > best.expires_at):
                best = binding
        return best

    def by_token(self, token: str, now: float) -> Binding | None:
        """A live binding of the flow named by ``token`` (the user part of our Path)."""
        flow = self._tokens.get(token)
        return self.by_flow(flow, now) if flow is not None else None

    def by_uri(self, uri: SipUri, now: float) -> Binding | None:
        """The binding whose contact is ``uri``, else the newest binding of the AOR ``uri``."""
        best: Binding | None = None
        for binding in self._bindings.values():
            if binding.expires_at <= now:
                continue
            if binding.contact.same_target(uri):
                return binding
            if binding.aor == uri.aor() and (best is None or binding.expires_at > best.expires_at):
                best = binding
        return best


def _contact_key(uri: SipUri) -> str:
    return f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{uri.effective_port}"
