"""KMS configuration and user provisioning from one TOML file (no Twisted import).

::

    [kms]
    identity = "kms.e2ae.lab"        # the KMS's MIKEY identity (IDRkms)
    listen = "127.0.0.1:8443"        # HTTPS, mutual certificates
    cert = "kms.crt"                 # the KMS's certificate and key (PEM)
    key = "kms.key"
    state = "kms.sqlite"             # users, tickets, replay cache (created 0600)
    ticket_lifetime = 3600           # seconds a ticket may be resolved
    replay_window = 300              # seconds a request's T may differ from the KMS's clock

    [[kms.user]]
    identity = "sip:alice@e2ae.lab"  # as in IDRi / IDRr
    key = "000102...0f"              # the key shared with the KMS, hex, >= 16 bytes
    tls = ["sha-256 AB:CD:..."]      # fingerprints of the client certificates it may use
    groups = ["sip:conf@e2ae.lab"]   # groups it is a member of (a ticket may name a group)

Paths are relative to the file. Every user listed is provisioned into the state database at
start (added or updated); users only in the database stay (docs/kms.md, "Provisioning").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from certs.errors import CertsError
from certs.fingerprint import Fingerprint, matches_any
from e2ae.address import AddressError, parse_host_port
from e2ae.tomlfile import TomlFileError, read_toml, table
from kms.store import MIN_KEY_BYTES, StoreError, User

KEYS = (
    "identity",
    "listen",
    "cert",
    "key",
    "state",
    "ticket_lifetime",
    "replay_window",
    "max_connections",
    "idle_timeout",
    "max_body",
    "user",
)
USER_KEYS = ("identity", "key", "tls", "groups")
_PATHS = ("cert", "key", "state")


class KmsConfigError(ValueError):
    """A configuration that cannot be used; says which key and why."""


@attrs.frozen
class ProvisionedUser:
    """A user as the file provisions it: the store's record and the TLS client certificates
    it may connect with."""

    user: User
    tls: tuple[Fingerprint, ...]


@attrs.frozen
class KmsConfig:
    identity: str
    listen: tuple[str, int]
    cert: Path
    key: Path
    state: Path
    users: tuple[ProvisionedUser, ...] = ()
    ticket_lifetime: float = 3600.0
    replay_window: float = 300.0
    #: Connections held at once (docs/kms.md, "Bounds").
    max_connections: int = 256
    #: Seconds a connection may stay without a complete request.
    idle_timeout: float = 30.0
    #: Bytes a request body may have.
    max_body: int = 65_536

    def pinned(self) -> tuple[Fingerprint, ...]:
        """Every client certificate the KMS accepts."""
        return tuple(fp for u in self.users for fp in u.tls)

    def identities_for(self, der: bytes) -> tuple[str, ...]:
        """The users a TLS client with this certificate (DER) may speak for (constant-time
        comparison of every pinned fingerprint)."""
        return tuple(u.user.identity for u in self.users if u.tls and matches_any(der, u.tls))


def _number(values: dict[str, Any], name: str, default: float, *, integer: bool = False) -> Any:
    value = values.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise KmsConfigError(f"{name} must be a positive number, not {value!r}")
    if integer and not isinstance(value, int):
        raise KmsConfigError(f"{name} must be a whole number, not {value!r}")
    return value


def _user(entry: Any, where: str) -> ProvisionedUser:
    if not isinstance(entry, dict):
        raise KmsConfigError(f"{where}: each [[kms.user]] must be a table")
    unknown = sorted(set(entry) - set(USER_KEYS))
    if unknown:
        raise KmsConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    identity = entry.get("identity")
    if not isinstance(identity, str) or not identity:
        raise KmsConfigError(f"{where}: identity must be a non-empty string")
    where = f"user {identity}"
    text = entry.get("key")
    if not isinstance(text, str):
        raise KmsConfigError(f"{where}: key must be a hex string")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KmsConfigError(f"{where}: key is not hex") from None
    if len(key) < MIN_KEY_BYTES:
        raise KmsConfigError(f"{where}: key must be at least {MIN_KEY_BYTES} bytes (hex digits x2)")
    groups = entry.get("groups", [])
    tls = entry.get("tls", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise KmsConfigError(f"{where}: groups must be a list of strings")
    if not isinstance(tls, list) or not all(isinstance(t, str) for t in tls):
        raise KmsConfigError(f"{where}: tls must be a list of 'HASH HEX' fingerprints")
    try:
        pins = tuple(Fingerprint.parse(t) for t in tls)
        return ProvisionedUser(User(identity, key, tuple(groups)), pins)
    except (CertsError, StoreError) as exc:
        raise KmsConfigError(f"{where}: {exc}") from exc


def from_values(values: dict[str, Any], where: str = "[kms]") -> KmsConfig:
    """A configuration from the ``[kms]`` table (or the same keys from the command line)."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise KmsConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = [k for k in ("identity", "listen", "cert", "key", "state") if not values.get(k)]
    if missing:
        raise KmsConfigError(f"{where}: missing {', '.join(missing)}")
    try:
        listen = parse_host_port(str(values["listen"]), "listen")
    except AddressError as exc:
        raise KmsConfigError(str(exc)) from exc
    entries = values.get("user", [])
    if not isinstance(entries, list):
        raise KmsConfigError(f"{where}: user must be an array of tables ([[kms.user]])")
    users = tuple(_user(e, f"{where} user {n + 1}") for n, e in enumerate(entries))
    seen: set[str] = set()
    for u in users:
        if u.user.identity in seen:
            raise KmsConfigError(f"{where}: user {u.user.identity} listed twice")
        seen.add(u.user.identity)
    return KmsConfig(
        identity=str(values["identity"]),
        listen=listen,
        cert=Path(values["cert"]),
        key=Path(values["key"]),
        state=Path(values["state"]),
        users=users,
        ticket_lifetime=float(_number(values, "ticket_lifetime", 3600.0)),
        replay_window=float(_number(values, "replay_window", 300.0)),
        max_connections=int(_number(values, "max_connections", 256, integer=True)),
        idle_timeout=float(_number(values, "idle_timeout", 30.0)),
        max_body=int(_number(values, "max_body", 65_536, integer=True)),
    )


def load(path: Path) -> KmsConfig:
    """The configuration in ``path`` (its ``[kms]`` table), paths relative to the file."""
    try:
        values = table(read_toml(path, "KMS configuration"), "kms", path)
    except TomlFileError as exc:
        raise KmsConfigError(str(exc)) from exc
    if values is None:
        raise KmsConfigError(f"{path}: no [kms] table")
    values = dict(values)
    for key in _PATHS:
        if isinstance(values.get(key), str):
            values[key] = str(path.parent / values[key])
    return from_values(values, str(path))


__all__ = ["KEYS", "KmsConfig", "KmsConfigError", "ProvisionedUser", "from_values", "load"]
