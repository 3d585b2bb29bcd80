"""The list server's configuration from one TOML file (no Twisted import).

::

    sip = "127.0.0.1:5070"             # SIP over UDP, where the core sends group PSIs
    core = "127.0.0.1:5060"            # the next hop of every MESSAGE fanned out
    identity = "sip:lists@lab.example" # the list server's identity at the KMS
    store = "lists.sqlite"             # stored messages and registrations (created 0600)
    max_stored_per_member = 100        # messages stored for one member
    max_stored = 10000                 # messages stored in all
    max_pending = 256                  # SIP client transactions (and resolves) at once
    max_members = 100                  # members of one group
    registrars = ["127.0.0.1:5060"]    # who may send third-party REGISTERs (default: [core])

    [kms]
    address = "127.0.0.1:8443"
    pin = "sha-256 AB:CD:..."          # the fingerprint of the KMS's certificate
    key_file = "lists.psk"             # the key shared with the KMS, hex
    cert = "lists"                     # lists.crt / lists.key: the client certificate
    identity = "kms.e2ae.lab"          # IDRkms

    [groups."sip:friends@lab.example"]
    members = ["sip:alice@lab.example", "sip:bob@lab.example"]
    kms_group = true                   # the KMS knows the PSI as a group of these members

Paths are relative to the file (docs/list-server.md).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import attrs

from e2ae.address import AddressError, parse_host_port
from e2ae.tomlfile import TomlFileError, read_toml
from kms.link import KmsLink, link_from_values

KEYS = (
    "sip",
    "core",
    "identity",
    "store",
    "max_stored_per_member",
    "max_stored",
    "max_pending",
    "max_members",
    "registrars",
    "kms",
    "groups",
)
GROUP_KEYS = ("members", "kms_group")
DEFAULTS = {
    "max_stored_per_member": 100,
    "max_stored": 10_000,
    "max_pending": 256,
    "max_members": 100,
}


class ConfigError(ValueError):
    """A configuration that cannot be used; says which key and why."""


@attrs.frozen
class Group:
    """A group PSI and its members; ``kms_group``: the KMS knows the PSI as a group of
    these members, so a ticket naming the PSI is resolvable by each of them."""

    psi: str
    members: tuple[str, ...]
    kms_group: bool = False


@attrs.frozen
class ListServerConfig:
    sip: tuple[str, int]
    core: tuple[str, int]
    identity: str
    kms: KmsLink
    store: Path
    groups: tuple[Group, ...] = ()
    max_stored_per_member: int = 100
    max_stored: int = 10_000
    max_pending: int = 256
    max_members: int = 100
    #: The addresses whose third-party REGISTERs are taken (the core's, unless configured):
    #: a REGISTER from anywhere else is refused 403, so that no other process can say a member
    #: is (not) registered and so start (or hold back) the delivery of what is stored for it.
    registrars: tuple[tuple[str, int], ...] = ()

    def group(self, psi: str) -> Group | None:
        for g in self.groups:
            if g.psi == psi:
                return g
        return None


def _address(value: Any, name: str, *, listen: bool) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a HOST:PORT string, not {value!r}")
    try:
        return parse_host_port(value, name, allow_zero=listen)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None


def _count(values: dict[str, Any], name: str) -> int:
    value = values.get(name, DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
    return value


def _uri(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(("sip:", "sips:", "tel:")):
        raise ConfigError(f"{what} must be a SIP URI (sip:user@domain), not {value!r}")
    return value


def _unknown(values: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _registrars(value: Any, core: tuple[str, int]) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ((str(ipaddress.ip_address(core[0])), core[1]),)
    if not isinstance(value, list) or not value:
        raise ConfigError("registrars must be a non-empty list of HOST:PORT strings")
    out = []
    for v in value:
        host, port = _address(v, "a registrars entry", listen=False)
        out.append((str(ipaddress.ip_address(host)), port))  # as a datagram's source reads
    return tuple(out)


def _groups(values: Any, max_members: int) -> tuple[Group, ...]:
    if not isinstance(values, dict):
        raise ConfigError('groups must be tables: [groups."sip:name@domain"]')
    out = []
    for psi, entry in values.items():
        where = f"[groups.{psi!r}]"
        _uri(psi, f"{where}: the group PSI")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        _unknown(entry, GROUP_KEYS, where)
        members = entry.get("members")
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: members must be a non-empty list of SIP URIs")
        uris = tuple(_uri(m, f"{where}: a member") for m in members)
        if len(set(uris)) != len(uris):
            raise ConfigError(f"{where}: a member is listed twice")
        if len(uris) > max_members:
            raise ConfigError(f"{where}: {len(uris)} members, at most {max_members}")
        if psi in uris:
            raise ConfigError(f"{where}: the group cannot be its own member")
        kms_group = entry.get("kms_group", False)
        if not isinstance(kms_group, bool):
            raise ConfigError(f"{where}: kms_group must be true or false")
        out.append(Group(psi, uris, kms_group))
    return tuple(out)


def from_values(values: dict[str, Any], base: Path = Path()) -> ListServerConfig:
    """A configuration from the top-level table of the file (paths relative to ``base``)."""
    _unknown(values, KEYS, "the list server configuration")
    missing = [k for k in ("sip", "core", "identity", "store", "kms") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}")
    max_members = _count(values, "max_members")
    store = values["store"]
    if not isinstance(store, str) or not store:
        raise ConfigError("store must be a file name")
    core = _address(values["core"], "core", listen=False)
    return ListServerConfig(
        sip=_address(values["sip"], "sip", listen=True),
        core=core,
        identity=_uri(values["identity"], "identity"),
        kms=link_from_values(values["kms"], base, ConfigError),
        store=base / store,
        groups=_groups(values.get("groups", {}), max_members),
        max_stored_per_member=_count(values, "max_stored_per_member"),
        max_stored=_count(values, "max_stored"),
        max_pending=_count(values, "max_pending"),
        max_members=max_members,
        registrars=_registrars(values.get("registrars"), core),
    )


def load(path: Path) -> ListServerConfig:
    """The configuration in ``path``; every error names the file."""
    try:
        values = read_toml(path, "list server configuration")
    except TomlFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return from_values(values, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


__all__ = ["ConfigError", "Group", "KmsLink", "ListServerConfig", "from_values", "load"]
