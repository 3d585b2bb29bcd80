"""The MRFC's configuration from one TOML file (no Twisted import).

::

    sip = "127.0.0.1:5080"               # SIP over UDP: the conference URIs route here
    next_hop = "127.0.0.1:5060"          # where dial-out INVITEs go (the core)
    identity = "sip:mrfc@lab.example"    # the MRFC's KMS identity
    psk_suites = ["PSK-AES128-GCM-SHA256"]   # the MRFP's preconfigured TLS-PSK suites
    ticket_source = "kms"                # dial-out tickets: "kms" or "self"
    max_participants = 32                # of one conference at once (486 beyond)
    max_setups = 64                      # dial-in set-ups at once, in all (503 beyond)

    [mp]
    listen = "127.0.0.1:2950"            # where the MRFP registers
    tls = "mrfc-mp"                      # mrfc-mp.crt / mrfc-mp.key
    peer = "sha-256 AB:CD:..."           # the MRFP's pinned certificate fingerprint
    # insecure = true                    # plain TCP Mp instead (logged as insecure)

    [kms]
    address = "127.0.0.1:8443"
    pin = "sha-256 AB:CD:..."
    key_file = "mrfc.psk"                # the key shared with the KMS, hex
    cert = "mrfc"                        # mrfc.crt / mrfc.key
    identity = "kms.e2ae.lab"

    [self_kms]                           # only with ticket_source = "self"
    config = "mrfc-kms.toml"             # an `e2ae kms` configuration run inside the MRFC

    [conferences."sip:conf1@lab.example"]
    participants = ["sip:alice@lab.example", "sip:bob@lab.example"]
    floors = [1]
    allow_plain = true

Paths are relative to the file (docs/mrfc.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs

from certs.errors import CertsError
from certs.fingerprint import Fingerprint
from certs.psk import ALLOWED_PSK_CIPHERS, DEFAULT_PSK_CIPHERS
from e2ae.address import AddressError, parse_host_port
from e2ae.tomlfile import TomlFileError, read_toml
from kms.link import KmsLink, link_from_values
from mrfc.core import Conference

TicketSource = Literal["kms", "self"]

KEYS = (
    "sip",
    "next_hop",
    "identity",
    "psk_suites",
    "ticket_source",
    "setup_timeout",
    "max_participants",
    "max_setups",
    "mp",
    "kms",
    "self_kms",
    "conferences",
)
MP_KEYS = ("listen", "tls", "peer", "insecure", "mid")
CONFERENCE_KEYS = ("participants", "floors", "allow_plain")


class ConfigError(ValueError):
    """A configuration that cannot be used; says which key and why."""


@attrs.frozen
class MpLink:
    """Where the MRFC listens for the MRFP: TLS with our certificate files and the MRFP's
    pinned fingerprint, or ``insecure`` plain TCP from ``allow`` (``MID@ADDRESS``) only."""

    listen: tuple[str, int]
    cert: Path | None = None
    key_file: Path | None = None
    peer: Fingerprint | None = None
    insecure: bool = False
    allow: tuple[str, ...] = ()


@attrs.frozen
class MrfcConfig:
    sip: tuple[str, int]
    identity: str
    kms: KmsLink
    mp: MpLink
    conferences: tuple[Conference, ...] = ()
    next_hop: tuple[str, int] | None = None
    psk_suites: tuple[str, ...] = DEFAULT_PSK_CIPHERS
    ticket_source: TicketSource = "kms"
    self_kms: Path | None = None
    setup_timeout: float = 10.0
    #: Participants of one conference at once (dial-in being set up or joined, dial-out):
    #: beyond, an INVITE is answered 486 and a dial-out fails.
    max_participants: int = 32
    #: Dial-in INVITEs being set up at once (ticket resolve and Join in progress), all
    #: conferences together: beyond, 503 with Retry-After.
    max_setups: int = 64

    def conference(self, uri: str) -> Conference | None:
        for c in self.conferences:
            if c.uri == uri:
                return c
        return None


def _address(value: Any, name: str, *, listen: bool) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a HOST:PORT string, not {value!r}")
    try:
        return parse_host_port(value, name, allow_zero=listen)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None


def _uri(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(("sip:", "sips:", "tel:")):
        raise ConfigError(f"{what} must be a SIP URI (sip:user@domain), not {value!r}")
    return value


def _unknown(values: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _table(values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table")
    return values


def _pair(prefix: Path, where: str) -> tuple[Path, Path]:
    cert, key = Path(f"{prefix}.crt"), Path(f"{prefix}.key")
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"{where}: no {path}")
    return cert, key


def _fingerprint(value: Any, where: str) -> Fingerprint:
    try:
        return Fingerprint.parse(str(value))
    except CertsError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _mp(raw: Any, base: Path) -> MpLink:
    values = _table(raw, "[mp]")
    _unknown(values, MP_KEYS, "[mp]")
    if "listen" not in values:
        raise ConfigError("[mp]: missing listen")
    listen = _address(values["listen"], "[mp] listen", listen=True)
    insecure = values.get("insecure", False)
    if not isinstance(insecure, bool):
        raise ConfigError("[mp] insecure must be true or false")
    if insecure:
        if "tls" in values or "peer" in values:
            raise ConfigError("[mp]: insecure = true takes no tls or peer")
        mid = values.get("mid", "<mrfp>")
        if not isinstance(mid, str) or not mid:
            raise ConfigError("[mp] mid must be the MRFP's mId, e.g. <mrfp>")
        return MpLink(listen, insecure=True, allow=(f"{mid}@127.0.0.1",))
    if "mid" in values:
        raise ConfigError("[mp] mid is for insecure = true only")
    missing = [k for k in ("tls", "peer") if not values.get(k)]
    if missing:
        raise ConfigError(f"[mp]: missing {', '.join(missing)} (or insecure = true)")
    cert, key_file = _pair(base / str(values["tls"]), "[mp] tls")
    return MpLink(listen, cert, key_file, _fingerprint(values["peer"], "[mp] peer"))


def _conferences(raw: Any) -> tuple[Conference, ...]:
    values = _table(raw, 'conferences ([conferences."sip:conf@domain"])')
    out = []
    for number, (uri, entry) in enumerate(values.items(), start=1):
        where = f"[conferences.{uri!r}]"
        _uri(uri, f"{where}: the conference URI")
        entry = _table(entry, where)
        _unknown(entry, CONFERENCE_KEYS, where)
        participants = entry.get("participants")
        if not isinstance(participants, list) or not participants:
            raise ConfigError(f"{where}: participants must be a non-empty list of SIP URIs")
        uris = tuple(_uri(p, f"{where}: a participant") for p in participants)
        if len(set(uris)) != len(uris):
            raise ConfigError(f"{where}: a participant is listed twice")
        floors = entry.get("floors", [1])
        if (
            not isinstance(floors, list)
            or not floors
            or any(
                isinstance(f, bool) or not isinstance(f, int) or not 0 < f < 65536 for f in floors
            )
            or len(set(floors)) != len(floors)
        ):
            raise ConfigError(
                f"{where}: floors must be distinct floor ids 1..65535, not {floors!r}"
            )
        allow_plain = entry.get("allow_plain", True)
        if not isinstance(allow_plain, bool):
            raise ConfigError(f"{where}: allow_plain must be true or false")
        out.append(Conference(uri, uris, tuple(floors), allow_plain, number))
    return tuple(out)


def from_values(values: dict[str, Any], base: Path = Path()) -> MrfcConfig:
    """A configuration from the top-level table of the file (paths relative to ``base``)."""
    _unknown(values, KEYS, "the MRFC configuration")
    missing = [k for k in ("sip", "identity", "mp", "kms", "conferences") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}")
    sip = _address(values["sip"], "sip", listen=True)
    next_hop = (
        _address(values["next_hop"], "next_hop", listen=False) if "next_hop" in values else None
    )
    identity = _uri(values["identity"], "identity")
    suites = values.get("psk_suites", list(DEFAULT_PSK_CIPHERS))
    if not isinstance(suites, list) or not suites or not all(isinstance(s, str) for s in suites):
        raise ConfigError("psk_suites must be a non-empty list of OpenSSL PSK suite names")
    bad = [s for s in suites if s not in ALLOWED_PSK_CIPHERS]
    if bad:
        raise ConfigError(
            f"psk_suites: {', '.join(bad)} not allowed (allowed: {', '.join(ALLOWED_PSK_CIPHERS)})"
        )
    source = values.get("ticket_source", "kms")
    if source not in ("kms", "self"):
        raise ConfigError(f'ticket_source must be "kms" or "self", not {source!r}')
    self_kms: Path | None = None
    if "self_kms" in values:
        table = _table(values["self_kms"], "[self_kms]")
        _unknown(table, ("config",), "[self_kms]")
        if not isinstance(table.get("config"), str):
            raise ConfigError("[self_kms]: config must name an e2ae kms configuration file")
        self_kms = base / table["config"]
        if not self_kms.is_file():
            raise ConfigError(f"[self_kms] config: no {self_kms}")
    if source == "self" and self_kms is None:
        raise ConfigError('ticket_source = "self" needs [self_kms] config = FILE')
    timeout = values.get("setup_timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"setup_timeout must be a positive number, not {timeout!r}")
    counts = {}
    for name, default in (("max_participants", 32), ("max_setups", 64)):
        value = values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        counts[name] = value
    return MrfcConfig(
        sip=sip,
        identity=identity,
        kms=link_from_values(values["kms"], base, ConfigError),
        mp=_mp(values["mp"], base),
        conferences=_conferences(values["conferences"]),
        next_hop=next_hop,
        psk_suites=tuple(suites),
        ticket_source=source,
        self_kms=self_kms,
        setup_timeout=float(timeout),
        max_participants=counts["max_participants"],
        max_setups=counts["max_setups"],
    )


def load(path: Path) -> MrfcConfig:
    """The configuration in ``path``; ConfigError naming the key that is wrong."""
    try:
        values = read_toml(path, "MRFC configuration")
    except TomlFileError as exc:
        raise ConfigError(str(exc)) from None
    return from_values(values, path.parent)
