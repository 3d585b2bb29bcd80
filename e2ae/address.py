"""The one HOST:PORT parser of the project (``HOST:PORT`` or ``[V6]:PORT``)."""

from __future__ import annotations

import ipaddress


class AddressError(ValueError):
    """A HOST:PORT that cannot be used; the message names the setting (``what``) and why."""


def parse_host_port(
    text: str,
    what: str,
    *,
    literal_ip: bool = True,
    allow_zero: bool = True,
    allow_wildcard: bool = False,
) -> tuple[str, int]:
    """``(host, port)`` from ``text``.

    ``literal_ip``: the host must be an IP address (an element puts its own address into Via,
    Record-Route, Path and SDP, so it must know it); ``allow_zero``: port 0 (the system picks)
    is allowed, as for a listening address; ``allow_wildcard``: 0.0.0.0 / :: may be given.
    """
    text = str(text).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AddressError(f"{what}: expected HOST:PORT, got {text!r}")
    if literal_ip:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError as exc:
            raise AddressError(f"{what}: {host!r} is not an IP address") from exc
        if ip.is_unspecified and not allow_wildcard:
            raise AddressError(f"{what}: {host} is a wildcard; give the address peers should use")
    number = int(port)
    if number > 65535 or (number == 0 and not allow_zero):
        raise AddressError(f"{what}: bad port {port}")
    return host, number
