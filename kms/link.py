"""How a network element (the MSRP AS, the list server, the MRFC) reaches its KMS, and the
``[kms]`` table of its configuration file that says so (docs/list-server.md, docs/mrfc.md;
the MSRP AS takes the same from its command line, docs/msrp-as.md).

The element speaks HTTPS with its own certificate and pins the KMS's; the key it shares with
the KMS protects the MIKEY messages (TS 33.328 Annex D). :func:`exchange` in
:mod:`kms.exchange` sends one request over such a link.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from certs.errors import CertsError
from certs.fingerprint import Fingerprint
from e2ae.address import AddressError, parse_host_port
from kms.client import read_shared_key

#: The keys of a ``[kms]`` table.
KMS_KEYS = ("address", "pin", "key_file", "cert", "identity", "timeout")
#: The KMS's identity in MIKEY (IDRkms) unless configured.
DEFAULT_KMS_IDENTITY = "kms.e2ae.lab"


@attrs.frozen
class KmsLink:
    """How an element reaches the KMS: address, the pinned fingerprint of its certificate, the
    key the element shares with it (left out of ``repr``), the element's client certificate
    and key files, the KMS's identity in MIKEY, and the seconds one exchange may take."""

    address: tuple[str, int]
    pin: Fingerprint
    key: bytes = attrs.field(repr=False)
    cert: Path = Path()
    key_file: Path = Path()
    identity: str = DEFAULT_KMS_IDENTITY
    timeout: float = 10.0


def link_from_values(values: Any, base: Path, error: Callable[[str], Exception]) -> KmsLink:
    """The ``[kms]`` table ``values`` of a configuration file in ``base`` (its relative paths
    are from there); anything wrong raises ``error(text)`` naming the key."""
    if not isinstance(values, dict):
        raise error("[kms] must be a table")
    unknown = sorted(set(values) - set(KMS_KEYS))
    if unknown:
        raise error(f"[kms]: unknown key(s) {', '.join(unknown)}")
    missing = [k for k in ("address", "pin", "key_file", "cert") if not values.get(k)]
    if missing:
        raise error(f"[kms]: missing {', '.join(missing)}")
    address = values["address"]
    if not isinstance(address, str):
        raise error(f"[kms] address must be a HOST:PORT string, not {address!r}")
    try:
        host_port = parse_host_port(address, "[kms] address", allow_zero=False)
    except AddressError as exc:
        raise error(str(exc)) from None
    try:
        pin = Fingerprint.parse(str(values["pin"]))
    except CertsError as exc:
        raise error(f"[kms] pin: {exc}") from None
    try:
        key = read_shared_key(base / str(values["key_file"]))
    except ValueError as exc:
        raise error(f"[kms] key_file: {exc}") from None
    prefix = base / str(values["cert"])
    cert, key_file = Path(f"{prefix}.crt"), Path(f"{prefix}.key")
    for path in (cert, key_file):
        if not path.is_file():
            raise error(f"[kms] cert: no {path}")
    identity = values.get("identity", DEFAULT_KMS_IDENTITY)
    if not isinstance(identity, str) or not identity:
        raise error("[kms] identity must be a non-empty string")
    timeout = values.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise error(f"[kms] timeout must be a positive number, not {timeout!r}")
    return KmsLink(host_port, pin, key, cert, key_file, identity, float(timeout))


__all__ = ["DEFAULT_KMS_IDENTITY", "KMS_KEYS", "KmsLink", "link_from_values"]
