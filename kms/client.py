"""The user's side of the UE-KMS exchanges, sans I/O: build REQUEST_INIT and RESOLVE_INIT
(pre-shared-key form, RFC 6043 §4), and read the KMS's replies (:func:`kms.core.open_reply`).

Both requests are MACed (HMAC-SHA-256-256) with the auth key derived from the user's key
shared with the KMS, the HDR's CSB ID and the request's RAND (RFC 3830 §4.1.4)."""

from __future__ import annotations

import os

from mikey.constants import DataType, IdRole, IdType, MacAlg, TsType
from mikey.keys import mac, message_keys
from mikey.message import CsIdMap, EmptyMap, Header, Message
from mikey.payloads import (
    IdWithRole,
    Payload,
    Rand,
    Ticket,
    TicketPolicy,
    Timestamp,
    Verification,
    ntp_from_unix,
)

#: RAND length in bytes (RFC 3830 §6.11 asks for at least 128 bits).
RAND_BYTES = 16
REQUEST_MAC = MacAlg.HMAC_SHA_256_256


def _idr(role: IdRole, identity: str) -> IdWithRole:
    return IdWithRole(role, IdType.URI, identity.encode("utf-8"))


def _signed(header: Header, payloads: tuple[Payload, ...], key: bytes, rand: bytes) -> Message:
    draft = Message(header, (*payloads, Verification.placeholder(REQUEST_MAC)))
    keys = message_keys(key, header.csb_id, rand, mac_alg=REQUEST_MAC, prf_func=header.prf_func)
    return draft.with_trailer(mac(REQUEST_MAC, keys.auth_key, draft.mac_input()))


def request_init(
    identity: str,
    key: bytes,
    responders: tuple[str, ...],
    now: float,
    *,
    csb_id: int | None = None,
    cs_map: CsIdMap | None = None,
    policy: TicketPolicy | None = None,
    rand: bytes | None = None,
) -> Message:
    """A ticket request from ``identity`` for a ticket ``responders`` may resolve (none:
    anybody); one TGK per crypto session of ``cs_map`` (default: one)."""
    rand = rand if rand is not None else os.urandom(RAND_BYTES)
    csb = csb_id if csb_id is not None else int.from_bytes(os.urandom(4), "big")
    header = Header(DataType.REQUEST_INIT, csb, cs_map if cs_map is not None else EmptyMap(1))
    payloads: list[Payload] = [
        Timestamp(TsType.NTP_UTC, ntp_from_unix(now)),
        Rand(rand),
        _idr(IdRole.IDRI, identity),
        *(_idr(IdRole.IDRR, r) for r in responders),
    ]
    if policy is not None:
        payloads.append(policy)
    return _signed(header, tuple(payloads), key, rand)


def resolve_init(
    identity: str,
    key: bytes,
    ticket: Ticket,
    now: float,
    *,
    csb_id: int,
    cs_map: CsIdMap | None = None,
    rand: bytes | None = None,
) -> Message:
    """A resolve of ``ticket`` by the Responder ``identity`` (``csb_id`` and ``cs_map``: the
    session's, as the Initiator's TRANSFER_INIT gave them)."""
    rand = rand if rand is not None else os.urandom(RAND_BYTES)
    header = Header(DataType.RESOLVE_INIT, csb_id, cs_map if cs_map is not None else EmptyMap(1))
    payloads: tuple[Payload, ...] = (
        Timestamp(TsType.NTP_UTC, ntp_from_unix(now)),
        Rand(rand),
        _idr(IdRole.IDRR, identity),
        ticket,
    )
    return _signed(header, payloads, key, rand)


__all__ = ["RAND_BYTES", "request_init", "resolve_init"]
