"""Configuration of the ``e2ae pcscf`` service: addresses, next hop, Iq, policy. Pure.

From command-line values and/or a TOML file (``[pcscf]`` table; its ``[e2ae]`` table, if any, is
the policy, unless a separate ``policy`` file is named)::

    [pcscf]
    gm = "192.0.2.1:5060"          # SIP towards the UEs (UDP and TCP)
    core = "203.0.113.1:5060"      # SIP towards the S-CSCF (UDP and TCP)
    next_hop = "203.0.113.5:5060"  # where originating requests and REGISTER go
    next_hop_transport = "udp"     # or "tcp"
    iq = "203.0.113.1:2944"        # AGWs connect here (H.248 over TCP/TLS)
    iq_tls = "certs/pcscf"         # certs/pcscf.crt + certs/pcscf.key (Iq over TLS)
    iq_peers = ["sha-256 AB:..."]  # with iq_tls: pinned fingerprints of the accepted AGWs
    iq_keylog = "iq-keys.log"      # with iq_tls: NSS key log of the Iq TLS sessions
    iq_insecure = false            # plain TCP on Iq instead of iq_tls (explicit, logged opt-in)
    iq_allow = ["<agw1>@192.0.2.7"]  # MID@ADDRESS[/LEN] that may register (needed with
                                   # iq_insecure; with iq_tls it narrows the pinned AGWs)
    iq_max_links = 64              # Iq connections open at once
    iq_register_timeout = 10       # seconds a link has to register (ServiceChange)
    iq_max_pending = 1000          # Iq requests awaiting a reply, per link
    iq_max_gateways = 64           # gateways (mIds) remembered
    max_registrations = 10000      # bindings held; a REGISTER from a new flow beyond: 503
    max_registrations_per_source = 16  # bindings per source address
    max_calls = 5000               # call legs (dialogs) at once; a new INVITE beyond: 503
    max_transactions = 100000      # SIP server transactions held (finished: 32 s); beyond: 503
    retry_after = 30               # Retry-After of those 503s (seconds)
    max_connections = 1024         # SIP TCP connections per side (Gm, core)
    idle_timeout = 900             # seconds a SIP TCP connection may be silent; 0: never
    udp_tcp_threshold = 1300       # bytes; a larger request for a UDP hop goes over TCP; 0: never
    policy = "policy.toml"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from e2ae.address import AddressError, parse_host_port
from e2ae.tomlfile import TomlFileError, read_toml, table
from iq.admission import AllowEntry, IqAdmission, IqLimits
from iq.errors import LocalIqError
from pcscf.policy import Policy, PolicyError, load_policy


class ConfigError(ValueError):
    """A configuration value that cannot be used; says which one and why."""


def parse_hostport(text: str, what: str, *, allow_zero: bool = True) -> tuple[str, int]:
    """A literal-IP ``HOST:PORT`` (we must know our own address to put it into Via,
    Record-Route and Path), as a :class:`ConfigError` when it cannot be used."""
    try:
        return parse_host_port(text, what, allow_zero=allow_zero)
    except AddressError as exc:
        raise ConfigError(str(exc)) from exc


@attrs.frozen
class PcscfConfig:
    gm: tuple[str, int]
    core: tuple[str, int]
    next_hop: tuple[str, int]
    iq: tuple[str, int]
    next_hop_transport: str = "udp"
    iq_tls: tuple[Path, Path] | None = None
    policy: Policy = attrs.field(factory=Policy)
    #: Pinned fingerprints (``"sha-256 AB:..."``) of the AGWs accepted on Iq over TLS.
    iq_peers: tuple[str, ...] = ()
    iq_keylog: Path | None = None
    #: Plain TCP on Iq, asked for explicitly (then ``iq_allow`` is required).
    iq_insecure: bool = False
    #: ``MID@ADDRESS[/LEN]`` entries of the gateways that may register.
    iq_allow: tuple[str, ...] = ()
    iq_limits: IqLimits = attrs.field(factory=IqLimits)
    #: The proxy's bounds (:class:`pcscf.sip.proxy.ProxyConfig` fields), as given.
    sip_limits: Mapping[str, int | float] = attrs.field(factory=dict)


def _iq_tls(prefix: str, base: Path) -> tuple[Path, Path]:
    path = Path(prefix)
    if not path.is_absolute():
        path = base / path
    cert, key = path.with_name(path.name + ".crt"), path.with_name(path.name + ".key")
    for item in (cert, key):
        if not item.is_file():
            raise ConfigError(f"iq_tls: {item} does not exist (make it with `e2ae certs new`)")
    return cert, key


def build_config(
    values: Mapping[str, Any],
    *,
    base: Path = Path(),
    inline_policy: Mapping[str, Any] | None = None,
) -> PcscfConfig:
    """Validate the merged settings (command line over file)."""
    known = {*SCALAR_KEYS, "iq_peers", "iq_allow", "policy"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown [pcscf] key(s): {', '.join(unknown)}")
    missing = [k for k in ("gm", "core", "next_hop", "iq") if not values.get(k)]
    if missing:
        raise ConfigError(f"missing setting(s): {', '.join(missing)}")
    gm = parse_hostport(values["gm"], "gm")
    core = parse_hostport(values["core"], "core")
    next_hop = parse_hostport(values["next_hop"], "next_hop", allow_zero=False)
    iq = parse_hostport(values["iq"], "iq")
    transport = str(values.get("next_hop_transport") or "udp").lower()
    if transport not in ("udp", "tcp"):
        raise ConfigError(f"next_hop_transport must be udp or tcp, not {transport!r}")
    try:
        if values.get("policy"):
            path = Path(str(values["policy"]))
            policy = load_policy(path if path.is_absolute() else base / path)
        elif inline_policy is not None:
            policy = Policy.from_mapping(inline_policy)
        else:
            policy = Policy()
    except PolicyError as exc:
        raise ConfigError(f"policy: {exc}") from exc
    peers = values.get("iq_peers") or ()
    if isinstance(peers, str):
        peers = (peers,)
    keylog = values.get("iq_keylog")
    allow = values.get("iq_allow") or ()
    if isinstance(allow, str):
        allow = (allow,)
    insecure = values.get("iq_insecure") or False
    if not isinstance(insecure, bool):
        raise ConfigError(f"iq_insecure must be true or false, not {insecure!r}")
    if values.get("iq_tls") and not peers:
        raise ConfigError("iq_tls needs iq_peers: the pinned fingerprints of the accepted AGWs")
    try:
        IqAdmission.build(tls=bool(values.get("iq_tls")), insecure=insecure, allow=allow)
        limits = IqLimits(
            **{
                key[len("iq_") :]: _number(values[key], key)
                for key in IQ_LIMIT_KEYS
                if values.get(key) is not None
            }
        )
    except LocalIqError as exc:
        raise ConfigError(str(exc)) from exc
    sip_limits = {
        key: _number(values[key], key) for key in SIP_LIMIT_KEYS if values.get(key) is not None
    }
    try:
        from pcscf.sip.proxy import Peer, ProxyConfig

        ProxyConfig(gm=gm, core=core, next_hop=Peer("core", "udp", *next_hop), **sip_limits)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return PcscfConfig(
        gm=gm,
        core=core,
        next_hop=next_hop,
        iq=iq,
        next_hop_transport=transport,
        iq_tls=_iq_tls(str(values["iq_tls"]), base) if values.get("iq_tls") else None,
        policy=policy,
        iq_peers=tuple(str(p) for p in peers),
        iq_keylog=Path(str(keylog)) if keylog else None,
        iq_insecure=insecure,
        iq_allow=tuple(str(AllowEntry.parse(str(a))) for a in allow),
        iq_limits=limits,
        sip_limits=sip_limits,
    )


#: ``[pcscf]`` keys of the SIP proxy's bounds (:class:`pcscf.sip.proxy.ProxyConfig`).
SIP_LIMIT_KEYS = (
    "max_registrations",
    "max_registrations_per_source",
    "max_calls",
    "max_transactions",
    "retry_after",
    "max_connections",
    "idle_timeout",
    "udp_tcp_threshold",
)

#: ``[pcscf]`` keys of the Iq listener's bounds (:class:`iq.admission.IqLimits`).
IQ_LIMIT_KEYS = ("iq_max_links", "iq_register_timeout", "iq_max_pending", "iq_max_gateways")

#: ``[pcscf]`` keys with one value each (a command-line flag of the same name sets them).
SCALAR_KEYS = (
    *("gm", "core", "next_hop", "next_hop_transport"),
    *("iq", "iq_tls", "iq_keylog", "iq_insecure"),
    *IQ_LIMIT_KEYS,
    *SIP_LIMIT_KEYS,
)


def _number(value: Any, key: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key} must be a number, not {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, not {value!r}") from exc
    if not math.isfinite(number):
        raise ConfigError(f"{key} must be a finite number, not {value!r}")
    if key in ("iq_register_timeout", "idle_timeout"):
        return number
    if number != int(number):
        raise ConfigError(f"{key} must be a whole number, not {value!r}")
    return int(number)


def load_file(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ``[pcscf]`` and ``[e2ae]`` tables of a config file."""
    try:
        data = read_toml(path)
        return table(data, "pcscf", path) or {}, table(data, "e2ae", path)
    except TomlFileError as exc:
        raise ConfigError(str(exc)) from exc
