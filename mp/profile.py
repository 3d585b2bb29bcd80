"""The e2ae Mp profile: typed MRFC/MRFP operations mapped to and from H.248 actions.

Pure (no I/O, no clock). Requests are encoded by :func:`encode_request` and recovered by
:func:`decode_request`; replies by :func:`encode_reply` / :func:`decode_reply`; the MRFP's
events by :func:`encode_event` / :func:`decode_event`. The wire layout is described in
docs/mp-profile.md. The PSK of a stream travels in the Add as the ``e2aepsk/key`` property;
it is never part of a ``repr`` and :func:`redact` removes it from any text about to be logged.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

from e2ae.tcpmedia import TlsRole

Media = Literal["msrp", "bfcp"]
Security = Literal["tls-psk", "plain"]
TcpRole = Literal["active", "passive"]
EventKind = Literal["tcp-established", "tls-established", "tls-failed", "renegotiation-refused", "closed"]

MEDIA: tuple[Media, ...] = ("msrp", "bfcp")
SECURITIES: tuple[Security, ...] = ("tls-psk", "plain")
TCP_ROLES: tuple[TcpRole, ...] = ("active", "passive")
TLS_ROLES: tuple[TlsRole, ...] = ("client", "server")
EVENT_KINDS: tuple[EventKind, ...] = (
    "tcp-established",
    "tls-established",
    "tls-failed",
    "renegotiation-refused",
    "closed",
)


@attrs.frozen
class Endpoint:
    """An IP address (literal) and TCP port."""

    ip: str
    port: int


@attrs.frozen
class PskConfig:
    """The TLS-PSK of one stream. ``key`` is never shown (not in ``repr``, never logged)."""

    key: bytes = attrs.field(repr=False)
    identity: bytes
    ciphersuites: tuple[str, ...]


@attrs.frozen
class JoinRequest:
    """Add one termination (one participant stream) into the conference's context."""

    conference: str
    context: int | None
    participant: str
    media: Media
    tcp_role: TcpRole
    security: Security
    tls_role: TlsRole | None = None
    psk: PskConfig | None = None
    remote: Endpoint | None = None
    remote_path: tuple[str, ...] = ()
    bfcp_user: int | None = None
    floors: tuple[int, ...] = ()
    call_id: str | None = None


@attrs.frozen
class JoinReply:
    context: int
    termination: str
    local: Endpoint
    local_path: str | None


@attrs.frozen
class ConnectRequest:
    """Active role: open the TCP connection to ``remote`` now."""

    context: int
    termination: str
    remote: Endpoint


@attrs.frozen
class StartTlsRequest:
    """TLS client role: start the handshake (TCP is up)."""

    context: int
    termination: str


@attrs.frozen
class LeaveRequest:
    context: int
    termination: str


@attrs.frozen
class StreamStatistics:
    octets_in: int
    octets_out: int
    messages_in: int
    messages_out: int


@attrs.frozen
class LeaveReply:
    statistics: StreamStatistics


@attrs.frozen
class AckReply:
    """The reply to Connect and StartTls."""


@attrs.frozen
class MpEvent:
    """An MRFP -> MRFC Notify."""

    context: int
    termination: str
    kind: EventKind
    reason: str = ""


MpRequest: TypeAlias = JoinRequest | ConnectRequest | StartTlsRequest | LeaveRequest
MpReply: TypeAlias = JoinReply | AckReply | LeaveReply
