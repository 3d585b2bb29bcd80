"""Configuration of the ``e2ae accessgw`` service (pure: reads files, no Twisted).

The same settings come from the command line or from a TOML file (``--config FILE``, table
``[accessgw]``); a flag given on the command line wins over the file. Paths in the file are
relative to the file's directory.

.. code-block:: toml

    [accessgw]
    alg = "127.0.0.1:2944"       # the ALG's Iq address
    access_ip = "198.51.100.1"  # bind address towards the UEs (TLS)
    core_ip = "203.0.113.1"     # bind address towards the core (plain TCP)
    cert = "certs/agw.crt"
    key = "certs/agw.key"
    ports = "40000-40999"        # omit for ephemeral ports
    keylog = "agw-keys.log"      # NSS key log of the access TLS sessions
    mid = "<agw1.example.net>"
    tls_establishment_timeout = 30
    handshake_timeout = 10
    early_handshake = "hold"     # or "reject"
    hold_timeout = 5
    idle_timeout = 0             # 0: none
    malloc_tuning = true         # fixed glibc malloc thresholds (accessgw.malloc)
    metrics = "127.0.0.1:9102"   # serve Prometheus metrics here (off when absent)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import attrs

from accessgw.errors import LocalAccessGwError
from accessgw.ports import PortRange
from accessgw.termination import Timers
from certs.errors import LocalCertsError
from certs.generate import CertAndKey, load_pair
from e2ae.address import AddressError, parse_host_port
from e2ae.tomlfile import TomlFileError, read_toml
from e2ae.tomlfile import table as toml_table

KEYS = (
    "alg",
    "access_ip",
    "core_ip",
    "cert",
    "key",
    "ports",
    "keylog",
    "mid",
    "tls_establishment_timeout",
    "handshake_timeout",
    "early_handshake",
    "hold_timeout",
    "idle_timeout",
    "malloc_tuning",
    "metrics",
)
_PATHS = ("cert", "key", "keylog")
_REQUIRED = ("alg", "access_ip", "core_ip", "cert", "key")


def parse_hostport(text: str, what: str = "--alg") -> tuple[str, int]:
    """The ALG's Iq address: a host (name or address) and a port other than 0."""
    try:
        return parse_host_port(text, what, literal_ip=False, allow_zero=False)
    except AddressError as exc:
        raise LocalAccessGwError(str(exc)) from exc


def _ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise LocalAccessGwError(f"{what} must be an IP address, got {value!r}") from None


@attrs.frozen
class AgwConfig:
    alg: tuple[str, int]
    access_ip: str
    core_ip: str
    cert: Path
    key: Path
    ports: PortRange | None = None
    keylog: Path | None = None
    mid: str = "<agw.e2ae.lab>"
    timers: Timers = attrs.field(factory=Timers)
    early_handshake: str = "hold"
    malloc_tuning: bool = True
    #: Where to serve Prometheus metrics (``None``: nowhere, none kept).
    metrics: tuple[str, int] | None = None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> AgwConfig:
        missing = [k for k in _REQUIRED if values.get(k) in (None, "")]
        if missing:
            flags = ", ".join("--" + k.replace("_", "-") for k in missing)
            raise LocalAccessGwError(f"missing setting(s): {flags}")
        early = str(values.get("early_handshake") or "hold")
        if early not in ("hold", "reject"):
            raise LocalAccessGwError(f"early_handshake must be hold or reject, not {early!r}")
        try:
            idle = float(values.get("idle_timeout") or 0)
            timers = Timers(
                establishment=float(values.get("tls_establishment_timeout") or 30),
                handshake=float(values.get("handshake_timeout") or 10),
                hold=float(values.get("hold_timeout") or 5),
                idle=idle if idle > 0 else None,
            )
        except (TypeError, ValueError) as exc:
            raise LocalAccessGwError(f"bad timer setting: {exc}") from None
        ports = values.get("ports")
        tuning = values.get("malloc_tuning", True)
        if not isinstance(tuning, bool):
            raise LocalAccessGwError(f"malloc_tuning must be true or false, not {tuning!r}")
        metrics: tuple[str, int] | None = None
        if values.get("metrics"):
            try:
                metrics = parse_host_port(str(values["metrics"]), "metrics", allow_wildcard=True)
            except AddressError as exc:
                raise LocalAccessGwError(str(exc)) from exc
        return cls(
            alg=parse_hostport(str(values["alg"])),
            access_ip=_ip(str(values["access_ip"]), "access_ip"),
            core_ip=_ip(str(values["core_ip"]), "core_ip"),
            cert=Path(values["cert"]),
            key=Path(values["key"]),
            ports=PortRange.parse(str(ports)) if ports else None,
            keylog=Path(values["keylog"]) if values.get("keylog") else None,
            mid=str(values.get("mid") or "<agw.e2ae.lab>"),
            timers=timers,
            early_handshake=early,
            malloc_tuning=tuning,
            metrics=metrics,
        )


def load_file(path: Path) -> dict[str, Any]:
    """The ``[accessgw]`` table of a TOML file, paths made relative to the file."""
    try:
        table = toml_table(read_toml(path), "accessgw", path) or {}
    except TomlFileError as exc:
        raise LocalAccessGwError(str(exc)) from exc
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise LocalAccessGwError(f"{path}: unknown key(s) {', '.join(unknown)}")
    values = dict(table)
    for key in _PATHS:
        if values.get(key):
            values[key] = str(path.parent / str(values[key]))
    return values


def load_identity(cert: Path, key: Path) -> CertAndKey:
    """The AGW's certificate and private key from PEM files."""
    try:
        return load_pair(cert, key)
    except LocalCertsError as exc:
        raise LocalAccessGwError(str(exc)) from exc
