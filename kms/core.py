"""The KMS, sans I/O: a MIKEY-TICKET message in, the reply out (RFC 6043 §4, TS 33.328
Annex D). No socket, no clock: the caller passes the HTTP body, the identities the verified
TLS client certificate may speak for, and ``now``.

Two exchanges are served, each in its pre-shared-key form (the user's key shared with the
KMS protects it):

- **Ticket request**: REQUEST_INIT {HDR, T, RAND, IDRi, IDRr..., [TP], V} from the
  Initiator; the KMS makes one TGK per crypto session of the HDR (at least one), records
  the ticket, and answers REQUEST_RESP {HDR, T, IDRkms, TICKET, KEMAC, V}.
- **Ticket resolve**: RESOLVE_INIT {HDR, T, RAND, IDRr, TICKET, V} from a Responder the
  ticket names (an identity, a group it is a member of, or anybody when it names none); the
  KMS answers RESOLVE_RESP {HDR, T, IDRkms, KEMAC, V} with the same TGKs.

Every request is checked in this order, and the first failure is the answer (a MIKEY Error
message, data type 6, with its ERR number; docs/kms.md, "Failures"): it decodes (else the
codec's number), is a request the KMS serves (Invalid DT), has its composition (RFC 6043 §4),
names a provisioned user (Invalid ID) that the TLS client may speak for (Auth failure), has a
fresh timestamp (Invalid TS), a valid MAC (Auth failure), and was not seen before (Invalid TS:
a replay). A resolve then needs a ticket the KMS issued (Invalid TICKET), still valid (Invalid
TICKET), naming the Responder (Auth failure).

The keys in a KEMAC are encrypted (AES-KW-128) and the whole reply is MACed
(HMAC-SHA-256-256) with keys derived from the requesting user's key and the request's RAND
(RFC 3830 §4.1.4). Ticket data is the KMS's own: a random ticket id and a MAC over it and the
ticket policy under a key only the KMS holds, so a forged or altered ticket is refused before
any lookup.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

import attrs

from kms.store import KmsStore, StoreFull, TicketRecord, User
from mikey import kemac as kemac_crypto
from mikey.constants import (
    DataType,
    EncrAlg,
    ErrorNo,
    IdRole,
    IdType,
    KeyType,
    MacAlg,
    TsType,
)
from mikey.errors import MikeyError
from mikey.keys import MessageKeys, message_keys, verify_mac
from mikey.keys import mac as compute_mac
from mikey.message import Header, Message, check_composition, decode
from mikey.payloads import (
    Err,
    IdWithRole,
    Kemac,
    KeyData,
    KvSpi,
    Rand,
    Ticket,
    TicketPolicy,
    Timestamp,
    Verification,
    decode_key_data,
    encode_key_data,
    ntp_from_unix,
)

#: Bytes of each key the KMS makes (TGK): 128 bits, the AES-128 suites' strength.
KEY_BYTES = 16
#: Bytes of the TLS pre-shared key derived from a TGK (TS 33.328 Annex H.2 gives no length;
#: 256 bits, the length of the SHA-256 PRF output the TLS-PSK suites use).
TLS_PSK_BYTES = 32
#: Ticket types issued: 1 the RFC 6043 base ticket, 2 and 3 the TS 33.328 Annex D types.
TICKET_TYPES = frozenset({1, 2, 3})
DEFAULT_TICKET_TYPE = 2
#: KEMAC encryption and MAC of every reply.
REPLY_ENCR = EncrAlg.AES_KW_128
REPLY_MAC = MacAlg.HMAC_SHA_256_256
TICKET_ID_BYTES = 16
TICKET_TAG_BYTES = 16
#: Most crypto sessions (TGKs) one ticket carries.
MAX_KEYS = 32

NTP_UNIX_OFFSET = 2_208_988_800


class Refused(Exception):
    """A request answered with a MIKEY Error message."""

    def __init__(self, code: ErrorNo, reason: str, status: int, user: User | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.status = status
        self.user = user


@attrs.frozen
class KmsReply:
    """The HTTP status, the MIKEY reply, and for the log what happened (never a key)."""

    status: int
    body: bytes
    outcome: str
    identity: str | None = None
    error: ErrorNo | None = None


@attrs.frozen
class _Authenticated:
    user: User
    message: Message
    rand: bytes
    keys: MessageKeys


def unix_from_ntp(value: int) -> float:
    return (value >> 32) - NTP_UNIX_OFFSET + (value & 0xFFFFFFFF) / (1 << 32)


def identity_of(payload: IdWithRole) -> str:
    try:
        return payload.data.decode("utf-8")
    except UnicodeDecodeError:
        raise MikeyError(ErrorNo.INVALID_ID, "an identity that is not UTF-8") from None


class KmsCore:
    """The KMS's decisions; state in a :class:`kms.store.KmsStore`."""

    def __init__(
        self,
        identity: str,
        store: KmsStore,
        *,
        ticket_lifetime: float = 3600.0,
        replay_window: float = 300.0,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.identity = identity
        self.store = store
        self.ticket_lifetime = ticket_lifetime
        self.replay_window = replay_window
        self.random = random
        self._ticket_key = store.secret("ticket-mac", 32, random)

    # -- entry point

    def handle(self, body: bytes, tls_identities: tuple[str, ...], now: float) -> KmsReply:
        csb_id = 0
        try:
            message = decode(body)
            csb_id = message.header.csb_id
            if message.data_type is DataType.REQUEST_INIT:
                return self._request(message, tls_identities, now)
            if message.data_type is DataType.RESOLVE_INIT:
                return self._resolve(message, tls_identities, now)
            raise Refused(
                ErrorNo.INVALID_DT,
                f"{message.data_type.name} is not served: the KMS takes REQUEST_INIT and"
                " RESOLVE_INIT",
                400,
            )
        except MikeyError as exc:
            return self._error(Refused(ErrorNo(exc.code), exc.reason, 400), csb_id, now)
        except StoreFull as exc:
            return self._error(Refused(ErrorNo.UNSPECIFIED, str(exc), 503), csb_id, now)
        except Refused as exc:
            return self._error(exc, csb_id, now)

    # -- the two exchanges

    def _request(self, message: Message, tls: tuple[str, ...], now: float) -> KmsReply:
        auth = self._authenticate(message, IdRole.IDRI, tls, now)
        responders = tuple(
            identity_of(p)
            for p in message.find(IdWithRole)
            if isinstance(p, IdWithRole) and p.role == IdRole.IDRR
        )
        policy = self._policy(message)
        count = max(1, message.header.cs_count)
        if count > MAX_KEYS:
            raise Refused(ErrorNo.UNSPECIFIED, f"{count} crypto sessions: at most {MAX_KEYS}", 400)
        tgks = tuple(
            KeyData(KeyType.TGK, self.random(KEY_BYTES), kv=KvSpi(bytes([n])))
            for n in range(1, count + 1)
        )
        ticket_id = self.random(TICKET_ID_BYTES)
        ticket = Ticket(policy, ticket_id + self._tag(ticket_id, policy))
        self.store.put_ticket(
            TicketRecord(
                ticket_id=ticket_id,
                initiator=auth.user.identity,
                responders=responders,
                flags=policy.flags,
                keys=encode_key_data(tgks),
                issued_at=now,
                valid_from=now,
                valid_until=now + self.ticket_lifetime,
            ),
            now,
        )
        reply = self._reply(DataType.REQUEST_RESP, auth, now, (ticket,), tgks)
        return KmsReply(
            200,
            reply,
            f"ticket {ticket_id.hex()[:16]} issued for {len(responders) or 'any'} responder(s)",
            auth.user.identity,
        )

    def _resolve(self, message: Message, tls: tuple[str, ...], now: float) -> KmsReply:
        auth = self._authenticate(message, IdRole.IDRR, tls, now)
        (ticket,) = (p for p in message.find(Ticket) if isinstance(p, Ticket))
        record = self._ticket(ticket, now, auth.user)
        if not self._may_resolve(auth.user, record):
            raise Refused(
                ErrorNo.AUTH_FAILURE,
                f"the ticket does not name {auth.user.identity}",
                403,
                auth.user,
            )
        keys = decode_key_data(record.keys)
        reply = self._reply(DataType.RESOLVE_RESP, auth, now, (), keys)
        return KmsReply(
            200,
            reply,
            f"ticket {record.ticket_id.hex()[:16]} of {record.initiator} resolved",
            auth.user.identity,
        )

    # -- checks

    def _authenticate(
        self, message: Message, role: IdRole, tls: tuple[str, ...], now: float
    ) -> _Authenticated:
        check_composition(message)
        named = [
            identity_of(p)
            for p in message.find(IdWithRole)
            if isinstance(p, IdWithRole) and p.role == role
        ]
        if len(named) > 1:
            raise Refused(ErrorNo.INVALID_ID, f"more than one {role.name}", 400)
        if named:
            identity = named[0]
        elif len(tls) == 1:
            identity = tls[0]  # RFC 6043: the identity MAY be left out when the KMS knows it
        else:
            raise Refused(ErrorNo.INVALID_ID, f"no {role.name} and no single TLS identity", 400)
        user = self.store.get_user(identity)
        if user is None:
            raise Refused(ErrorNo.INVALID_ID, f"{identity} is not provisioned", 403)
        if identity not in tls:
            raise Refused(
                ErrorNo.AUTH_FAILURE,
                f"the TLS client certificate is not one of {identity}",
                403,
            )
        (stamp,) = (p for p in message.find(Timestamp) if isinstance(p, Timestamp))
        if stamp.ts_type is TsType.COUNTER:
            raise Refused(ErrorNo.INVALID_TS, "a COUNTER timestamp: the KMS needs NTP time", 400)
        skew = abs(unix_from_ntp(stamp.value) - now)
        if skew > self.replay_window:
            raise Refused(
                ErrorNo.INVALID_TS,
                f"timestamp {skew:.0f} s from the KMS clock (replay_window {self.replay_window:g})",
                403,
            )
        rands = [p for p in message.find(Rand) if isinstance(p, Rand)]
        rand = rands[0].rand
        last = message.payloads[-1]
        if not isinstance(last, Verification) or last.auth_alg is MacAlg.NULL:
            raise Refused(ErrorNo.INVALID_MAC, "the request must end with a MACed V", 400)
        keys = message_keys(
            user.key,
            message.header.csb_id,
            rand,
            encr_alg=REPLY_ENCR,
            mac_alg=last.auth_alg,
            prf_func=message.header.prf_func,
        )
        if not verify_mac(last.auth_alg, keys.auth_key, message.mac_input(), last.ver_data):
            raise Refused(ErrorNo.AUTH_FAILURE, f"bad MAC for {identity}", 403)
        nonce = stamp.encode_body() + rand
        if not self.store.remember_nonce(identity, nonce, now + 2 * self.replay_window, now):
            raise Refused(ErrorNo.INVALID_TS, "a replayed request (same T and RAND)", 403, user)
        reply_keys = message_keys(
            user.key,
            message.header.csb_id,
            rand,
            encr_alg=REPLY_ENCR,
            mac_alg=REPLY_MAC,
            prf_func=message.header.prf_func,
        )
        return _Authenticated(user, message, rand, reply_keys)

    def _policy(self, message: Message) -> TicketPolicy:
        asked = [p for p in message.find(TicketPolicy) if isinstance(p, TicketPolicy)]
        if len(asked) > 1:
            raise Refused(ErrorNo.INVALID_TPPAR, "more than one TP", 400)
        if not asked:
            return TicketPolicy(DEFAULT_TICKET_TYPE, prf_func=message.header.prf_func)
        if asked[0].ticket_type not in TICKET_TYPES:
            raise Refused(
                ErrorNo.INVALID_TPPAR,
                f"ticket type {asked[0].ticket_type}: the KMS issues types 1, 2 and 3",
                400,
            )
        return asked[0]

    def _tag(self, ticket_id: bytes, policy: TicketPolicy) -> bytes:
        data = ticket_id + policy.encode_body()
        return hmac.digest(self._ticket_key, data, "sha256")[:TICKET_TAG_BYTES]

    def _ticket(self, ticket: Ticket, now: float, user: User) -> TicketRecord:
        data = ticket.data
        if len(data) != TICKET_ID_BYTES + TICKET_TAG_BYTES:
            raise Refused(ErrorNo.INVALID_TICKET, "not a ticket of this KMS", 403, user)
        ticket_id, tag = data[:TICKET_ID_BYTES], data[TICKET_ID_BYTES:]
        if not hmac.compare_digest(tag, self._tag(ticket_id, ticket.policy)):
            raise Refused(ErrorNo.INVALID_TICKET, "not a ticket of this KMS", 403, user)
        record = self.store.get_ticket(ticket_id)
        if record is None or not record.valid_at(now):
            raise Refused(ErrorNo.INVALID_TICKET, "the ticket has expired", 403, user)
        return record

    @staticmethod
    def _may_resolve(user: User, record: TicketRecord) -> bool:
        if not record.responders:
            return True  # a ticket that names nobody may be resolved by any user (TR 33.829)
        return user.identity in record.responders or any(
            g in record.responders for g in user.groups
        )

    # -- replies

    def _reply(
        self,
        data_type: DataType,
        auth: _Authenticated,
        now: float,
        before_kemac: tuple[Ticket, ...],
        keys: tuple[KeyData, ...],
    ) -> bytes:
        request = auth.message.header
        stamp = Timestamp(TsType.NTP_UTC, ntp_from_unix(now))
        sealed = kemac_crypto.seal(
            keys,
            REPLY_ENCR,
            MacAlg.NULL,
            auth.keys,
            request.csb_id,
            stamp,
        )
        header = Header(data_type, request.csb_id, request.cs_map, False, request.prf_func)
        kms = IdWithRole(IdRole.IDRKMS, IdType.URI, self.identity.encode())
        draft = Message(
            header,
            (stamp, kms, *before_kemac, sealed, Verification.placeholder(REPLY_MAC)),
        )
        return draft.with_trailer(
            compute_mac(REPLY_MAC, auth.keys.auth_key, draft.mac_input())
        ).encode()

    def _error(self, refusal: Refused, csb_id: int, now: float) -> KmsReply:
        stamp = Timestamp(TsType.NTP_UTC, ntp_from_unix(now))
        header = Header(DataType.ERROR, csb_id)
        message = Message(header, (stamp, Err(int(refusal.code))))
        return KmsReply(
            refusal.status,
            message.encode(),
            f"refused: {refusal.reason}",
            refusal.user.identity if refusal.user is not None else None,
            refusal.code,
        )


def open_reply(
    body: bytes, user_key: bytes, request: Message
) -> tuple[Message, tuple[KeyData, ...]]:
    """For a client: check the MAC of a REQUEST_RESP / RESOLVE_RESP to ``request`` and return
    it with the keys of its KEMAC. Raises MikeyError (Auth failure for a bad MAC; the error
    number of a MIKEY Error reply)."""
    message = decode(body)
    if message.data_type is DataType.ERROR:
        errs = [p for p in message.find(Err) if isinstance(p, Err)]
        code = errs[0].error_no if errs else int(ErrorNo.UNSPECIFIED)
        raise MikeyError(code, f"the KMS refused: {ErrorNo(code).name}")
    rand = next(p.rand for p in request.find(Rand) if isinstance(p, Rand))
    keys = message_keys(
        user_key,
        request.header.csb_id,
        rand,
        encr_alg=REPLY_ENCR,
        mac_alg=REPLY_MAC,
        prf_func=request.header.prf_func,
    )
    last = message.payloads[-1]
    if not isinstance(last, Verification) or not verify_mac(
        last.auth_alg, keys.auth_key, message.mac_input(), last.ver_data
    ):
        raise MikeyError(ErrorNo.AUTH_FAILURE, "the reply's MAC is not the KMS's")
    (stamp,) = (p for p in message.find(Timestamp) if isinstance(p, Timestamp))
    (sealed,) = (p for p in message.find(Kemac) if isinstance(p, Kemac))
    return message, kemac_crypto.open_kemac(sealed, keys, request.header.csb_id, stamp)


__all__ = ["TLS_PSK_BYTES", "KmsCore", "KmsReply", "Refused", "open_reply", "unix_from_ntp"]
