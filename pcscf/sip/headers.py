"""Header fields: compact forms, comma lists, Via and security-mechanism values."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.uri import split_hostport

#: RFC 3261 section 7.3.3 and later RFCs: compact form -> full name (lower case).
COMPACT_FORMS: Mapping[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}


@functools.lru_cache(maxsize=1024)
def canonical(name: str) -> str:
    """Lower-case full header name (compact forms expanded)."""
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


def split_list(value: str, where: str = "header") -> list[str]:
    """Split a comma list, respecting ``"quoted strings"`` and ``<angle brackets>``."""
    if '"' not in value:
        return _split_unquoted(value)
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = 0
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">":
            angle = max(0, angle - 1)
        elif ch == "," and not quoted and angle == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if quoted:
        raise RemoteSipError(400, f"Unterminated quoted string in {where}", where=where)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _split_unquoted(value: str) -> list[str]:
    """:func:`split_list` for values without quotes: split on commas outside ``<...>``."""
    if "<" not in value:
        if "," not in value:
            item = value.strip()
            return [item] if item else []
        return [item for item in (p.strip() for p in value.split(",")) if item]
    items: list[str] = []
    pending: list[str] = []
    depth = 0
    for piece in value.split(","):
        pending.append(piece)
        depth = max(0, depth + piece.count("<") - piece.count(">"))
        if depth == 0:
            item = ",".join(pending).strip()
            if item:
                items.append(item)
            pending = []
    if pending:
        item = ",".join(pending).strip()
        if item:
            items.append(item)
    return items


def parse_params(text: str, where: str) -> tuple[tuple[str, str | None], ...]:
    """``;a=1;b;c="x;y"`` -> (("a", "1"), ("b", None), ("c", '"x;y"'))."""
    out: list[tuple[str, str | None]] = []
    if '"' not in text:
        parts = text.split(";")  # nothing quoted: every ";" separates
    else:
        parts = _split_params_quoted(text)
    for part in parts:
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        if not name.strip():
            raise RemoteSipError(400, f"Bad parameter {part!r} in {where}", where=where)
        out.append((name.strip(), value.strip() if eq else None))
    return tuple(out)


def _split_params_quoted(text: str) -> list[str]:
    """``text`` cut at every ``;`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def params_text(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def get_param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    wanted = name.lower()
    for key, value in params:
        if key == wanted or key.lower() == wanted:
            return "" if value is None else value
    return None


@attrs.frozen
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        if cls is Via:
            return _parse_via(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Via:
        text = text.strip()
        proto, _, rest = text.partition(" ")
        pieces = [p.strip() for p in proto.split("/")]
        if len(pieces) != 3 or pieces[0].upper() != "SIP" or pieces[1] != "2.0" or not pieces[2]:
            raise RemoteSipError(400, f"Bad Via sent-protocol {proto!r}", where="Via")
        hostport, _, params = rest.strip().partition(";")
        host, port = split_hostport(hostport, "Via")
        return cls(pieces[2].upper(), host, port, parse_params(params, "Via"))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{params_text(self.params)}"

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def branch(self) -> str:
        return self.param("branch") or ""

    @property
    def sent_by(self) -> str:
        return f"{self.host.lower()}:{self.port if self.port is not None else 5060}"

    def response_address(self) -> tuple[str, int]:
        """Where responses go (RFC 3261 18.2.2 with RFC 3581 rport)."""
        host = self.param("received") or self.host
        rport = self.param("rport")
        valid = rport is not None and rport.isascii() and rport.isdigit() and len(rport) <= 10
        port = int(rport) if rport and valid and 0 < int(rport) < 65536 else (self.port or 5060)
        return host.strip("[]"), port

    def with_received(self, host: str, port: int) -> Via:
        """Add ``received`` (and fill ``rport`` if the sender asked for it)."""
        params: list[tuple[str, str | None]] = []
        for key, value in self.params:
            if key.lower() == "received":
                continue
            if key.lower() == "rport":
                value = str(port)
            params.append((key, value))
        if host != self.host:
            params.append(("received", host))
        return Via(self.transport, self.host, self.port, tuple(params))


#: The top Via of a message is read several times while it is handled (validation, the
#: transaction key, the response address): the parses are remembered (frozen values; a parse
#: that fails is not remembered).
_parse_via = functools.lru_cache(maxsize=4096)(Via._parse)


@attrs.frozen
class SecurityMechanism:
    """One RFC 3329 mechanism: ``msrp-tls;mediasec`` or ``ipsec-3gpp;alg=...;spi-c=...``."""

    name: str
    params: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SecurityMechanism:
        name, _, params = text.strip().partition(";")
        name = name.strip().lower()
        if not name:
            raise RemoteSipError(400, "Empty security mechanism", where="Security-Client")
        return cls(name, parse_params(params, "Security-Client"))

    @property
    def mediasec(self) -> bool:
        return get_param(self.params, "mediasec") is not None

    def __str__(self) -> str:
        return f"{self.name}{params_text(self.params)}"


def parse_mechanisms(values: list[str]) -> list[SecurityMechanism]:
    """Parse every comma-list item of Security-Client/Server/Verify header values."""
    out: list[SecurityMechanism] = []
    for value in values:
        out.extend(SecurityMechanism.parse(item) for item in split_list(value, "Security-Client"))
    return out


def media_mechanisms(values: list[str]) -> frozenset[str]:
    """Names of the mechanisms marked ``;mediasec`` (signalling ones such as ipsec-3gpp dropped)."""
    return frozenset(m.name for m in parse_mechanisms(values) if m.mediasec)


def option_tags(values: list[str]) -> frozenset[str]:
    """Require / Proxy-Require / Supported values as a set of lower-case option tags."""
    return frozenset(tag.lower() for value in values for tag in split_list(value))
