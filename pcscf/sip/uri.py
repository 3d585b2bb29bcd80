"""SIP URIs (RFC 3261 section 19.1) and name-addr values (``"Name" <uri>;params``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import attrs

from pcscf.sip.errors import LocalSipError, RemoteSipError

DEFAULT_PORTS: Mapping[str, int] = {"sip": 5060, "sips": 5061}


def _split_params(text: str, sep: str, where: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for part in text.split(sep):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name:
            raise RemoteSipError(400, f"Bad parameter {part!r} in {where}", where=where)
        out.append((name, value.strip() if eq else None))
    return tuple(out)


def _params_text(params: tuple[tuple[str, str | None], ...], sep: str) -> str:
    return "".join(f"{sep}{k}" if v is None else f"{sep}{k}={v}" for k, v in params)


#: A character no host (RFC 3261 25.1: hostname, IPv4address, IPv6reference) holds.
_NOT_IN_A_HOST = re.compile(r'["\s<>,;\\]').search


def split_hostport(text: str, where: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteSipError(400, f"Bad IPv6 reference in {where}", where=where)
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RemoteSipError(400, f"Bad host:port {text!r} in {where}", where=where)
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise RemoteSipError(400, f"Missing host in {where}", where=where)
    if _NOT_IN_A_HOST(host) is not None:
        # (a quote would also make the host's text read back differently once params follow)
        raise RemoteSipError(400, f"Bad host {host!r} in {where}", where=where)
    if not port_text:
        return host, None
    digits = port_text.isdigit() and port_text.isascii() and len(port_text) <= 10
    if not digits or not 0 < int(port_text) < 65536:
        raise RemoteSipError(400, f"Bad port {port_text!r} in {where}", where=where)
    return host, int(port_text)


@attrs.frozen
class SipUri:
    """``sip:user@host:port;params?headers`` (``sips:`` and ``tel:`` are kept as opaque text)."""

    scheme: str
    host: str
    user: str | None = None
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str = ""

    @classmethod
    def parse(cls, text: str, where: str = "URI") -> SipUri:
        if cls is SipUri:
            return _parse_sip_uri(text, where)
        return cls._parse(text, where)

    @classmethod
    def _parse(cls, text: str, where: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise RemoteSipError(400, f"Unsupported URI {text!r} in {where}", where=where)
        rest, _, headers = rest.partition("?")
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
        hostport, _, params = rest.partition(";")
        host, port = split_hostport(hostport, where)
        return cls(scheme, host, user, port, _split_params(params, ";", where), headers)

    def __str__(self) -> str:
        out = f"{self.scheme}:"
        if self.user is not None:
            out += f"{self.user}@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        out += _params_text(self.params, ";")
        if self.headers:
            out += f"?{self.headers}"
        return out

    def param(self, name: str) -> str | None:
        """Value of a URI parameter ('' for a flag), None if absent."""
        wanted = name.lower()
        for key, value in self.params:
            if key == wanted or key.lower() == wanted:
                return "" if value is None else value
        return None

    @property
    def transport(self) -> str:
        """``udp`` or ``tcp`` (``transport`` parameter, UDP by default; ``sips`` means TCP)."""
        value = (self.param("transport") or "").lower()
        if value in ("tcp", "tls"):
            return "tcp"
        return "tcp" if self.scheme == "sips" else "udp"

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    def address(self) -> tuple[str, int]:
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.effective_port

    def same_target(self, other: SipUri) -> bool:
        """Same scheme, user, host (case-insensitive) and port: how contacts are compared."""
        return (
            self.scheme == other.scheme
            and self.user == other.user
            and self.host.lower() == other.host.lower()
            and self.effective_port == other.effective_port
        )

    def aor(self) -> str:
        """The address-of-record form: ``scheme:user@host`` (no port or parameters)."""
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"


@attrs.frozen
class NameAddr:
    """A ``name-addr`` or ``addr-spec`` value with header parameters (From, To, Contact, Route)."""

    uri: str
    display: str = ""
    params: tuple[tuple[str, str | None], ...] = ()
    bracketed: bool = True

    @classmethod
    def parse(cls, text: str, where: str = "header") -> NameAddr:
        if cls is NameAddr:
            return _parse_name_addr(text, where)
        return cls._parse(text, where)

    @classmethod
    def _parse(cls, text: str, where: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise RemoteSipError(400, f"Empty address in {where}", where=where)
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise RemoteSipError(400, f"Unclosed '<' in {where}", where=where)
            display = text[:lt].strip()
            uri = text[lt + 1 : gt].strip()
            params = text[gt + 1 :].strip()
            if params and not params.startswith(";"):
                raise RemoteSipError(400, f"Junk after '>' in {where}", where=where)
            return cls(uri, display, _split_params(params, ";", where), True)
        if '"' in text:
            raise RemoteSipError(400, f"Display name without <URI> in {where}", where=where)
        uri, _, params = text.partition(";")
        return cls(uri.strip(), "", _split_params(params, ";", where), False)

    def __str__(self) -> str:
        params = _params_text(self.params, ";")
        if not self.bracketed and not self.display:
            return f"{self.uri}{params}"
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{params}"

    def param(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.params:
            if key == wanted or key.lower() == wanted:
                return "" if value is None else value
        return None

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def sip_uri(self, where: str = "header") -> SipUri:
        return SipUri.parse(self.uri, where)

    def with_param(self, name: str, value: str | None) -> NameAddr:
        kept = tuple(p for p in self.params if p[0].lower() != name.lower())
        return attrs.evolve(self, params=(*kept, (name, value)), bracketed=True)


# A message's From, To, Route and Contact values are read several times while it is handled
# (validation, routing, loop detection, dialog lookup): the parses are remembered. The values
# are frozen, so sharing one between callers is safe; a parse that fails is not remembered.
_parse_sip_uri = functools.lru_cache(maxsize=4096)(SipUri._parse)
_parse_name_addr = functools.lru_cache(maxsize=4096)(NameAddr._parse)


def _find_unquoted(text: str, char: str) -> int:
    quoted = False
    escaped = False
    for index, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == char and not quoted:
            return index
    return -1


def make_uri(host: str, port: int, *, user: str | None = None, **params: str | None) -> SipUri:
    """Build a ``sip:`` URI for one of our own addresses (never from peer input)."""
    if not host or not 0 < port < 65536:
        raise LocalSipError(f"cannot build a SIP URI for {host!r}:{port}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return SipUri("sip", host, user, port, tuple(params.items()))
