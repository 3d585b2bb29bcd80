"""The network's e2ae policy: what the P-CSCF supports and how it reacts when things fail.

A frozen value object, loaded from a TOML file (see docs/policy.md). Pure: no I/O but reading
the file given to :func:`load_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from certs.fingerprint import HASH_FUNCS, normalise_hash_func
from e2ae.tomlfile import TomlFileError, read_toml, table

#: Media-plane security mechanisms of TS 24.229 section 7.2A.7 that this project implements.
MEDIA_MECHANISMS: tuple[str, ...] = ("msrp-tls", "bfcp-tls")
#: All mechanism names a UE may list with ``;mediasec`` (others are recorded, never applied).
KNOWN_MEDIA_MECHANISMS: tuple[str, ...] = ("sdes-srtp", "msrp-tls", "bfcp-tls", "udptl-dtls")

OnAgwFailure = Literal["reject", "bypass"]
OnTlsFailure = Literal["bye", "remove-stream"]
NonE2aeTls = Literal["pass", "reject"]


class PolicyError(ValueError):
    """A policy file or value that cannot be used; says which key and why."""


def _mechanisms(value: Any) -> frozenset[str]:
    items = [value] if isinstance(value, str) else list(value)
    out = set()
    for item in items:
        if not isinstance(item, str):
            raise PolicyError(f"mechanism names must be strings, got {item!r}")
        name = item.strip().lower()
        if name and name not in MEDIA_MECHANISMS:
            raise PolicyError(
                f"unsupported media mechanism {item!r}; choose from {', '.join(MEDIA_MECHANISMS)}"
            )
        if name:
            out.add(name)
    return frozenset(out)


def _hashes(value: Any) -> tuple[str, ...]:
    try:
        return tuple(normalise_hash_func(str(v)) for v in value)
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc


def _hash(value: Any) -> str:
    try:
        return normalise_hash_func(str(value))
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc


@attrs.frozen
class Policy:
    """e2ae policy knobs of the P-CSCF (IMS-ALG). Defaults are the 3GPP behaviour."""

    #: Mechanisms the network supports, advertised in ``Security-Server`` (docs/protocol.md §2).
    network_mechanisms: frozenset[str] = attrs.field(
        default=frozenset(MEDIA_MECHANISMS), converter=_mechanisms
    )
    #: e2ae only for UEs that registered the mechanism (TS 33.328 section 7.1.2, NOTE 2).
    require_registration_indication: bool = True
    #: Reserving or configuring the AGW failed: reject the call, or forward it without e2ae.
    on_agw_failure: OnAgwFailure = "reject"
    #: A stream's TLS failed for good: end the call (BYE) or remove the stream (re-offer port 0).
    on_tls_failure: OnTlsFailure = "bye"
    #: A TLS MSRP/BFCP stream from a UE that asks neither e2ae nor KMS: pass it, or reject (488).
    non_e2ae_tls: NonE2aeTls = "pass"
    #: Hash functions accepted in a UE's ``a=fingerprint`` (others are ignored).
    accepted_hash_funcs: tuple[str, ...] = attrs.field(
        default=("sha-256", "sha-384", "sha-512", "sha-1"), converter=_hashes
    )
    #: Hash function of the AGW fingerprint put into SDP towards the UE.
    agw_fingerprint_hash: str = attrs.field(default="sha-256", converter=_hash)
    #: Seconds to wait for an Iq reply before treating the AGW as failed.
    iq_timeout: float = 2.0
    #: Seconds a stream may go without a verified TLS session before the ALG releases it.
    tls_establishment_timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        if self.on_agw_failure not in ("reject", "bypass"):
            raise PolicyError(
                f"on_agw_failure must be reject or bypass, not {self.on_agw_failure!r}"
            )
        if self.on_tls_failure not in ("bye", "remove-stream"):
            raise PolicyError(
                f"on_tls_failure must be bye or remove-stream, not {self.on_tls_failure!r}"
            )
        if self.non_e2ae_tls not in ("pass", "reject"):
            raise PolicyError(f"non_e2ae_tls must be pass or reject, not {self.non_e2ae_tls!r}")
        if not self.accepted_hash_funcs:
            raise PolicyError("accepted_hash_funcs must name at least one hash function")
        for name, value in (
            ("iq_timeout", self.iq_timeout),
            ("tls_establishment_timeout", self.tls_establishment_timeout),
        ):
            if not value > 0:
                raise PolicyError(f"{name} must be a positive number of seconds, not {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build from the ``[e2ae]`` table of a policy file (or any mapping); unknown keys fail."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"unknown policy key(s): {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise PolicyError(str(exc)) from exc


def load_policy(path: Path) -> Policy:
    """Read a TOML policy file; its knobs sit in an ``[e2ae]`` table."""
    try:
        knobs = table(read_toml(path, "policy"), "e2ae", path)
    except TomlFileError as exc:
        raise PolicyError(str(exc)) from exc
    return Policy.from_mapping(knobs or {})


__all__ = ["HASH_FUNCS", "MEDIA_MECHANISMS", "Policy", "PolicyError", "load_policy"]
