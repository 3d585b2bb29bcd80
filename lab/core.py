"""The core stub's SIP side, sans I/O: a registrar and S-CSCF routing for the lab.

- ``REGISTER`` (through the P-CSCF, which adds its ``Path``): the binding is stored with its
  Path; the ``200`` echoes the Path and the Contact with its expiry (RFC 3327).
- An initial request for a registered AOR (Request-URI, or the To URI if the Request-URI is not
  an AOR we know): forwarded statelessly (RFC 3261 section 16.11) to the registered contact
  with ``Route`` = the stored Path, so that it goes through the terminating P-CSCF.
- A request for one of the ``local`` AORs (the plain core MSRP/BFCP peer): handed to the core's
  own user agent (:class:`Deliver`).
- Anything with a ``Route`` left after ours: forwarded to that Route (in-dialog requests).
- A response: our Via is popped and it goes to the next Via's address.
- Unknown target: ``404``; a bad request: the :class:`~pcscf.sip.RemoteSipError` status.

Every decision is an action: :class:`Send` (message, address) or :class:`Deliver`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import attrs

from pcscf.sip import NameAddr, RemoteSipError, Request, Response, SipUri, make_response

Address = tuple[str, int]


@attrs.frozen
class Send:
    message: Request | Response
    to: Address


@attrs.frozen
class Deliver:
    """A request for a local AOR (the core's own user agent answers it)."""

    aor: str
    request: Request


Action = Send | Deliver


@attrs.frozen
class CoreBinding:
    aor: str
    contact: str
    path: tuple[str, ...]
    expires_at: float


@attrs.define
class CoreStub:
    """Registrar + S-CSCF routing at ``address`` (host, port), reached over UDP."""

    address: Address
    local: frozenset[str] = frozenset()
    default_expires: int = 600
    bindings: dict[str, CoreBinding] = attrs.Factory(dict)
    new_id: Callable[[], str] = attrs.field(default=lambda: secrets.token_hex(4))

    @property
    def _uri(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"sip:{host}:{port};lr"

    def handle(self, message: Request | Response, source: Address, now: float) -> list[Action]:
        """What to do with a message received from ``source``."""
        if isinstance(message, Response):
            return self._response(message)
        try:
            if message.method == "REGISTER":
                return self._register(message, source, now)
            return self._route(message, source, now)
        except RemoteSipError as exc:
            if message.method == "ACK":
                return []
            return [Send(make_response(message, exc.status, exc.reason), source)]

    # -- registrar ----------------------------------------------------------------------------

    def _register(self, request: Request, source: Address, now: float) -> list[Action]:
        aor = request.to.sip_uri("To").aor()
        expires_text = (request.get("expires") or str(self.default_expires)).strip()
        expires = int(expires_text) if expires_text.isdigit() else self.default_expires
        contacts = request.addresses("contact")
        path = tuple(request.values("path"))
        extra: list[tuple[str, str]] = []
        if expires == 0 or not contacts:
            self.bindings.pop(aor, None)
        else:
            contact = contacts[0]
            self.bindings[aor] = CoreBinding(aor, contact.uri, path, now + expires)
            extra.append(("Contact", f"<{contact.uri}>;expires={expires}"))
        extra += [("Path", p) for p in path]
        response = make_response(request, 200, to_tag=self.new_id(), extra=extra)
        return [Send(response, _via_address(request, source))]

    def binding(self, aor: str, now: float) -> CoreBinding | None:
        found = self.bindings.get(aor)
        if found is not None and found.expires_at <= now:
            del self.bindings[aor]
            return None
        return found

    # -- routing ------------------------------------------------------------------------------

    def _route(self, request: Request, source: Address, now: float) -> list[Action]:
        routes = request.values("route")
        if routes and _is_us(routes[0], self.address):
            request = request.evolve(headers=request.dropping_first_value("route"))
            routes = routes[1:]
        if routes:
            target = NameAddr.parse(routes[0], "Route").sip_uri("Route")
            return self._forward(request, request.uri, target.address())
        aor = _aor_of(request.uri)
        if aor not in self.local and aor not in self.bindings:
            aor = request.to.sip_uri("To").aor()
        if aor in self.local:
            return [Deliver(aor, request)]
        binding = self.binding(aor, now)
        if binding is None:
            if request.method == "ACK":
                return []
            return [Send(make_response(request, 404, "Not Found"), _via_address(request, source))]
        if not binding.path:
            contact = SipUri.parse(binding.contact, "Contact")
            return self._forward(request, binding.contact, contact.address())
        with_route = request.evolve(headers=request.without("route"))
        with_route = with_route.evolve(
            headers=(*with_route.headers, *(("Route", p) for p in binding.path))
        )
        first = NameAddr.parse(binding.path[0], "Path").sip_uri("Path")
        return self._forward(with_route, binding.contact, first.address())

    def _forward(self, request: Request, uri: str, to: Address) -> list[Action]:
        hops = (request.get("max-forwards") or "70").strip()
        if not hops.isdigit() or int(hops) <= 0:
            raise RemoteSipError(483, "Too Many Hops", where="Max-Forwards")
        top = request.top_via
        # Stateless (RFC 3261 section 16.11): the same branch for an INVITE, its CANCEL and the
        # ACK of a non-2xx, derived from what they share.
        seed = f"{top.branch}|{uri}"
        branch = "z9hG4bK" + hashlib.sha256(seed.encode()).hexdigest()[:20]
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        headers = request.prepending("Via", f"SIP/2.0/UDP {host}:{port};branch={branch}")
        forwarded = request.evolve(headers=headers, uri=uri)
        forwarded = forwarded.evolve(
            headers=forwarded.replacing("Max-Forwards", [str(int(hops) - 1)])
        )
        return [Send(forwarded, to)]

    def _response(self, response: Response) -> list[Action]:
        vias = response.vias
        if len(vias) < 2 or vias[0].sent_by != _sent_by(self.address):
            return []  # not ours to forward
        popped = response.evolve(headers=response.dropping_first_value("via"))
        return [Send(popped, vias[1].response_address())]


def _sent_by(address: Address) -> str:
    host, port = address
    host = f"[{host}]" if ":" in host else host
    return f"{host.lower()}:{port}"


def _is_us(route: str, address: Address) -> bool:
    try:
        uri = NameAddr.parse(route, "Route").sip_uri("Route")
    except RemoteSipError:
        return False
    return uri.address() == (address[0], address[1])


def _aor_of(uri: str) -> str:
    try:
        return SipUri.parse(uri, "Request-URI").aor()
    except RemoteSipError:
        return uri


def _via_address(request: Request, source: Address) -> Address:
    via = request.top_via
    return via.with_received(source[0], source[1]).response_address()
