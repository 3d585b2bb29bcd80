"""The KMS, sans I/O: a MIKEY-TICKET message in, the reply out (RFC 6043 §4.2, TS 33.328
Annex D). No socket, no clock: the caller passes the HTTP body, the identities the verified
TLS client certificate may speak for, and ``now``.

Two exchanges are served, each in its pre-shared-key form (the key the user shares with the
KMS protects it; :mod:`kms.client` builds the requests):

- **Ticket Request**: REQUEST_INIT_PSK {HDR, T, RANDRi, IDRi, IDRkms, TP, V} from the
  Initiator; the KMS makes an MPK and one TGK per crypto session the TP's KEMAC lists, records
  the ticket, and answers REQUEST_RESP {HDR, T, IDRkms, TICKET, KEMAC, V}.
- **Ticket Resolve**: RESOLVE_INIT_PSK {HDR, T, RANDRr, IDRr, IDRkms, TICKET, V} from a
  Responder the ticket names (an identity, a group it is a member of, or anybody when it names
  none); the KMS answers RESOLVE_RESP {HDR, T, IDRkms, KEMAC, V} with the same MPK and TGKs.

Key forking (flag I, RFC 6043 §5.1.1; immediate messaging, TR 33.829 §8.3.1.1): the KMS makes
an MPKi and an MPKr instead of the MPK (and GTGKs and/or TGKs), and returns both to the
Initiator. A resolve must then carry the Initiator Data ``Vi, Vr`` of the TRANSFER_INIT, whose
Vr the KMS verifies with MPKr (Auth failure otherwise); RESOLVE_RESP {HDR, T, IDRkms,
RANDRkms, IDRr, KEMAC, V} carries MPKi, MPKr' (MPKr forked with the Responder's identity and
a fresh RANDRkms), the GTGKs unchanged and TGK' for each TGK.

Every request is checked in this order, and the first failure is the answer (a MIKEY Error
message with its ERR number; docs/kms.md, "Failures"): it decodes, is a request the KMS serves
(Invalid DT), has its composition (RFC 6043 §4.2), names a provisioned user (Invalid ID) that
the TLS client may speak for (Auth failure) and this KMS if it names one (Invalid ID), has a
fresh timestamp (Invalid TS), a MAC that verifies (Auth failure), and was not seen before
(Invalid TS: a replay). A request then needs a Ticket Policy the KMS issues (Invalid TPpar); a
resolve a ticket the KMS issued, unaltered and still valid (Invalid TICKET), naming the
Responder (Auth failure) and, with key forking, Initiator Data (Invalid TICKET) whose Vr
verifies with MPKr (Auth failure).

Replies: the KEMAC is encrypted with AES-KW-128 and the reply MACed with HMAC-SHA-256-256, with
the response keys of RFC 6043 §5.1.2 (from the user's key, the CSB ID and the request's RANDRi
or RANDRr), over RFC 6043 Table 5.2 (the reply, then the whole request). Ticket data is the
KMS's own: a random ticket id and a MAC over it and the returned Ticket Policy under a key
only the KMS holds, so a forged or altered ticket is refused before any lookup; the keys stay
in the KMS's state.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence

import attrs

from kms.client import (
    ENCR_ALG,
    MPK_SPI,
    MPKI_SPI,
    MPKR_SPI,
    RAND_BYTES,
    gtgk_spi,
    rand_of,
    reply_keys,
    tgk_spi,
)
from kms.store import KmsStore, StoreFull, TicketRecord, User
from mikey import kemac as kemac_crypto
from mikey.constants import (
    DataType,
    ErrorNo,
    IdRole,
    IdType,
    KeyType,
    MacAlg,
    RandRole,
    TsRole,
    TsType,
)
from mikey.errors import MikeyError
from mikey.keys import fork_mpkr, fork_tgk, ticket_message_keys
from mikey.message import EmptyMap, Header, Message, check_composition, decode
from mikey.payloads import (
    Err,
    IdWithRole,
    Kemac,
    KeyData,
    KvSpi,
    Payload,
    RandWithRole,
    Ticket,
    TicketFlag,
    TicketPolicy,
    Timestamp,
    TimestampWithRole,
    Verification,
    decode_key_data,
    encode_key_data,
    ntp_from_unix,
    unix_from_ntp,
)

#: Bytes of each key the KMS makes (MPK, TGK): 128 bits, the AES-128 suites' strength.
KEY_BYTES = 16
#: Ticket types issued: 2 the 3GPP base ticket (RFC 6043 Table 6.15), 3 the other TS 33.328
#: Annex D type. Type 1 (the MIKEY base ticket of RFC 6043 Appendix A) is not issued.
TICKET_TYPES = frozenset({2, 3})
#: Flags the KMS refuses to honour: none since key forking (I) is offered. Kept for callers.
REFUSED_FLAGS = TicketFlag(0)
#: The flag dependencies of RFC 6043 §6.10 the KMS enforces on a desired policy: (flag, what it
#: requires), each refused with Invalid TPpar when broken.
REQUIRED_WITH: tuple[tuple[TicketFlag, TicketFlag], ...] = (
    (TicketFlag.I, TicketFlag.E),  # key forking needs the resolve (where the keys are forked)
    (TicketFlag.G, TicketFlag.F),  # RANDRr is sent in TRANSFER_RESP
)
#: Key types a desired KEMAC may list for the KMS to make.
WANTED_TYPES = frozenset({KeyType.TGK, KeyType.GTGK})
TICKET_ID_BYTES = 16
TICKET_TAG_BYTES = 16
#: Most crypto sessions (TGKs) one ticket carries.
MAX_KEYS = 32


class Refused(Exception):
    """A request answered with a MIKEY Error message."""

    def __init__(self, code: ErrorNo, reason: str, status: int, user: User | None = None) -> None:
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


def identity_of(payload: IdWithRole) -> str:
    try:
        return payload.data.decode("utf-8")
    except UnicodeDecodeError:
        raise MikeyError(ErrorNo.INVALID_ID, "an identity that is not UTF-8") from None


def _idrs(payloads: tuple[object, ...], role: IdRole) -> list[str]:
    return [identity_of(p) for p in payloads if isinstance(p, IdWithRole) and p.role == role]


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
            if message.data_type is DataType.REQUEST_INIT_PSK:
                return self._request(message, tls_identities, now)
            if message.data_type is DataType.RESOLVE_INIT_PSK:
                return self._resolve(message, tls_identities, now)
            raise Refused(
                ErrorNo.INVALID_DT,
                f"{message.data_type.name} is not served: the KMS takes REQUEST_INIT_PSK and"
                " RESOLVE_INIT_PSK",
                400,
            )
        except MikeyError as exc:
            return self._error(Refused(_code(exc.code), exc.reason, 400), csb_id, now)
        except StoreFull as exc:
            return self._error(Refused(ErrorNo.UNSPECIFIED, str(exc), 503), csb_id, now)
        except Refused as exc:
            return self._error(exc, csb_id, now)

    # -- the two exchanges

    def _request(self, message: Message, tls: tuple[str, ...], now: float) -> KmsReply:
        auth = self._authenticate(message, IdRole.IDRI, RandRole.RANDRI, tls, now)
        (asked,) = (p for p in message.payloads if isinstance(p, TicketPolicy))
        responders, wanted = self._policy_contents(asked, auth.user)
        flags = asked.flags | TicketFlag.D
        if not asked.has(TicketFlag.D):
            flags |= TicketFlag.K  # the KMS changed the desired policy: it generates the keys
        tgks = tuple(KeyData(kind, self.random(KEY_BYTES), kv=KvSpi(spi)) for kind, spi in wanted)
        mpks: tuple[KeyData, ...]
        if asked.has(TicketFlag.I):
            mpks = (
                KeyData(KeyType.MPK, self.random(KEY_BYTES), kv=KvSpi(MPKI_SPI)),
                KeyData(KeyType.MPK, self.random(KEY_BYTES), kv=KvSpi(MPKR_SPI)),
            )
        else:
            mpks = (KeyData(KeyType.MPK, self.random(KEY_BYTES), kv=KvSpi(MPK_SPI)),)
        valid_until = now + self.ticket_lifetime
        policy = TicketPolicy.with_payloads(
            asked.ticket_type,
            (
                IdWithRole(IdRole.IDRKMS, IdType.URI, self.identity.encode()),
                IdWithRole(IdRole.IDRI, IdType.URI, auth.user.identity.encode()),
                TimestampWithRole(TsRole.TRS, TsType.NTP_UTC, ntp_from_unix(now)),
                TimestampWithRole(TsRole.TRE, TsType.NTP_UTC, ntp_from_unix(valid_until)),
                *(IdWithRole(IdRole.IDRR, IdType.URI, r.encode()) for r in responders),
            ),
            subtype=asked.subtype,
            version=asked.version,
            prf_func=asked.prf_func,
            flags=flags,
        )
        ticket_id = self.random(TICKET_ID_BYTES)
        ticket = Ticket(policy, ticket_id + self._tag(ticket_id, policy))
        self.store.put_ticket(
            TicketRecord(
                ticket_id=ticket_id,
                initiator=auth.user.identity,
                responders=responders,
                flags=flags,
                keys=encode_key_data((*mpks, *tgks)),
                issued_at=now,
                valid_from=now,
                valid_until=valid_until,
            ),
            now,
        )
        reply = self._reply(DataType.REQUEST_RESP, auth, now, (ticket,), (*mpks, *tgks))
        gtgks = sum(1 for k in tgks if k.key_type is KeyType.GTGK)
        made = f"{len(tgks) - gtgks} TGK(s)" + (f", {gtgks} GTGK(s)" if gtgks else "")
        forking = ", key forking" if asked.has(TicketFlag.I) else ""
        return KmsReply(
            200,
            reply,
            f"ticket {ticket_id.hex()[:16]} issued to {auth.user.identity}: {made}{forking},"
            f" resolvable by {', '.join(responders) or 'any user'}",
            auth.user.identity,
        )

    def _resolve(self, message: Message, tls: tuple[str, ...], now: float) -> KmsReply:
        auth = self._authenticate(message, IdRole.IDRR, RandRole.RANDRR, tls, now)
        (ticket,) = (p for p in message.payloads if isinstance(p, Ticket))
        record = self._ticket(ticket, now, auth.user)
        if not self._may_resolve(auth.user, record):
            raise Refused(
                ErrorNo.AUTH_FAILURE,
                f"the ticket does not name {auth.user.identity}",
                403,
                auth.user,
            )
        keys = decode_key_data(record.keys)
        before: tuple[Payload, ...] = ()
        if record.flags & TicketFlag.I:
            before, keys = self._fork(ticket, keys, auth.user)
        reply = self._reply(DataType.RESOLVE_RESP, auth, now, before, keys)
        return KmsReply(
            200,
            reply,
            f"ticket {record.ticket_id.hex()[:16]} of {record.initiator} resolved"
            f" for {auth.user.identity}" + (", keys forked" if before else ""),
            auth.user.identity,
        )

    def _fork(
        self, ticket: Ticket, keys: Sequence[KeyData], user: User
    ) -> tuple[tuple[Payload, ...], tuple[KeyData, ...]]:
        """Key forking (RFC 6043 §5.1.1) for ``user``: the Vr of the ticket's Initiator Data
        verified with MPKr, then RANDRkms and IDRr to send before the KEMAC, and the keys:
        MPKi, MPKr', the GTGKs as they are, TGK' for each TGK."""
        by_spi = {
            k.kv.spi: k.key for k in keys if k.key_type is KeyType.MPK and isinstance(k.kv, KvSpi)
        }
        mpkr = by_spi.get(MPKR_SPI)
        if mpkr is None:
            raise Refused(ErrorNo.UNSPECIFIED, "the forking ticket's record has no MPKr", 500, user)
        if not ticket.initiator_data:
            raise Refused(
                ErrorNo.INVALID_TICKET,
                "a ticket with key forking resolved without Initiator Data",
                403,
                user,
            )
        try:
            kemac_crypto.verify_initiator_data(ticket, mpkr)
        except MikeyError:
            raise Refused(
                ErrorNo.AUTH_FAILURE, "the Initiator Data does not verify", 403, user
            ) from None
        randrkms = self.random(RAND_BYTES)
        idrr = IdWithRole(IdRole.IDRR, IdType.URI, user.identity.encode())
        prf = ticket.policy.prf_func
        forked: list[KeyData] = []
        for k in keys:
            if k.key_type is KeyType.MPK and k.kv == KvSpi(MPKR_SPI):
                k = attrs.evolve(k, key=fork_mpkr(k.key, idrr.data, randrkms, prf))
            elif k.key_type is KeyType.TGK:
                k = attrs.evolve(k, key=fork_tgk(k.key, idrr.data, randrkms, prf))
            forked.append(k)  # MPKi and the GTGKs are not forked
        return (RandWithRole(RandRole.RANDRKMS, randrkms), idrr), tuple(forked)

    # -- checks

    def _authenticate(
        self,
        message: Message,
        role: IdRole,
        rand_role: RandRole,
        tls: tuple[str, ...],
        now: float,
    ) -> _Authenticated:
        check_composition(message)
        named = _idrs(message.payloads, role)
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
                ErrorNo.AUTH_FAILURE, f"the TLS client certificate is not one of {identity}", 403
            )
        kms = _idrs(message.payloads, IdRole.IDRKMS)
        if kms and kms != [self.identity]:
            raise Refused(ErrorNo.INVALID_ID, f"the request is for KMS {kms[0]}", 403, user)
        (stamp,) = (p for p in message.payloads if isinstance(p, Timestamp))
        if stamp.ts_type not in (TsType.NTP_UTC, TsType.NTP):
            raise Refused(
                ErrorNo.INVALID_TS, f"a {stamp.ts_type.name} timestamp: the KMS needs NTP", 400
            )
        skew = abs(unix_from_ntp(stamp.value) - now)
        if skew > self.replay_window:
            raise Refused(
                ErrorNo.INVALID_TS,
                f"timestamp {skew:.0f} s from the KMS clock (replay_window {self.replay_window:g})",
                403,
            )
        last = message.payloads[-1]
        if not isinstance(last, Verification) or last.auth_alg is MacAlg.NULL:
            raise Refused(ErrorNo.INVALID_MAC, "the request must end with a MACed V", 400)
        rand = rand_of(message, rand_role)
        keys = ticket_message_keys(
            user.key,
            message.header.csb_id,
            response=False,
            randri=rand if rand_role is RandRole.RANDRI else b"",
            randrr=rand if rand_role is RandRole.RANDRR else b"",
            mac_alg=last.auth_alg,
            prf_func=message.header.prf_func,
        )
        given = {"identity_i" if role is IdRole.IDRI else "identity_r": identity.encode()}
        covered = kemac_crypto.ticket_mac_input(
            message, identity_kms=self.identity.encode(), **given
        )
        try:
            kemac_crypto.verify(message, keys, mac_data=covered)
        except MikeyError:
            raise Refused(ErrorNo.AUTH_FAILURE, f"bad MAC for {identity}", 403) from None
        nonce = stamp.encode_body() + bytes([rand_role]) + rand
        if not self.store.remember_nonce(identity, nonce, now + 2 * self.replay_window, now):
            raise Refused(ErrorNo.INVALID_TS, "a replayed request (same T and RAND)", 403, user)
        return _Authenticated(user, message)

    def _policy_contents(
        self, asked: TicketPolicy, user: User
    ) -> tuple[tuple[str, ...], tuple[tuple[KeyType, bytes], ...]]:
        """The Responders the desired policy names and the keys (type, SPI) it asks for: TGKs
        and GTGKs; one TGK when it lists none."""
        if asked.ticket_type not in TICKET_TYPES:
            raise Refused(
                ErrorNo.INVALID_TPPAR,
                f"ticket type {asked.ticket_type}: the KMS issues the 3GPP ticket types 2 and 3",
                400,
                user,
            )
        if asked.flags & REFUSED_FLAGS:
            raise Refused(ErrorNo.INVALID_TPPAR, "a ticket flag the KMS does not offer", 400, user)
        for flag, needs in REQUIRED_WITH:
            if asked.has(flag) and not asked.has(needs):
                raise Refused(
                    ErrorNo.INVALID_TPPAR,
                    f"flag {flag.name} without flag {needs.name} (RFC 6043 §6.10)",
                    400,
                    user,
                )
        contents = asked.payloads()
        responders = tuple(_idrs(contents, IdRole.IDRR))
        wanted: list[tuple[KeyType, bytes]] = []
        for kemac in (p for p in contents if isinstance(p, Kemac)):
            for item in kemac.key_data():
                if item.key_type not in WANTED_TYPES or item.key:
                    raise Refused(
                        ErrorNo.INVALID_TPPAR,
                        "the desired KEMAC may only list TGKs and GTGKs for the KMS to make"
                        " (key length 0)",
                        400,
                        user,
                    )
                spi = item.kv.spi if isinstance(item.kv, KvSpi) else None
                if spi is None:
                    n = 1 + sum(1 for kind, _ in wanted if kind is item.key_type)
                    spi = tgk_spi(n) if item.key_type is KeyType.TGK else gtgk_spi(n)
                wanted.append((item.key_type, spi))
        if not wanted:
            wanted.append((KeyType.TGK, tgk_spi(1)))
        if len(wanted) > MAX_KEYS:
            raise Refused(
                ErrorNo.INVALID_TPPAR,
                f"{len(wanted)} TGKs and GTGKs asked for: at most {MAX_KEYS}",
                400,
                user,
            )
        spis = [spi for _, spi in wanted]
        if len(set(spis)) != len(spis) or {MPK_SPI, MPKI_SPI, MPKR_SPI} & set(spis):
            raise Refused(ErrorNo.INVALID_TPPAR, "the TGKs' SPIs must be distinct", 400, user)
        if (
            asked.has(TicketFlag.I)
            and not asked.has(TicketFlag.F)
            and any(kind is KeyType.TGK for kind, _ in wanted)
        ):
            raise Refused(
                ErrorNo.INVALID_TPPAR,
                "key forking of a TGK needs flag F (RFC 6043 §6.10): ask for a GTGK, or set F",
                400,
                user,
            )
        return responders, tuple(wanted)

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
            return True  # a ticket naming nobody may be resolved by any user (TR 33.829)
        return user.identity in record.responders or any(
            g in record.responders for g in user.groups
        )

    # -- replies

    def _reply(
        self,
        data_type: DataType,
        auth: _Authenticated,
        now: float,
        before_kemac: tuple[Payload, ...],
        keys: tuple[KeyData, ...],
    ) -> bytes:
        request = auth.message
        csb_id = request.header.csb_id
        out_keys = reply_keys(auth.user.key, request)
        stamp = Timestamp(TsType.NTP_UTC, ntp_from_unix(now))
        sealed = kemac_crypto.seal(keys, ENCR_ALG, MacAlg.NULL, out_keys, csb_id, stamp)
        draft = Message(
            Header(data_type, csb_id, EmptyMap(0), False, request.header.prf_func),
            (
                stamp,
                IdWithRole(IdRole.IDRKMS, IdType.URI, self.identity.encode()),
                *before_kemac,
                sealed,
                Verification.placeholder(MacAlg.HMAC_SHA_256_256),
            ),
        )
        covered = kemac_crypto.ticket_mac_input(draft, initial=request)
        return kemac_crypto.protect(draft, out_keys, mac_data=covered).encode()

    def _error(self, refusal: Refused, csb_id: int, now: float) -> KmsReply:
        stamp = Timestamp(TsType.NTP_UTC, ntp_from_unix(now))
        message = Message(Header(DataType.ERROR, csb_id), (stamp, Err(int(refusal.code))))
        return KmsReply(
            refusal.status,
            message.encode(),
            f"refused: {refusal.reason}",
            refusal.user.identity if refusal.user is not None else None,
            refusal.code,
        )


def _code(value: int) -> ErrorNo:
    try:
        return ErrorNo(value)
    except ValueError:
        return ErrorNo.UNSPECIFIED


__all__ = ["KmsCore", "KmsReply", "Refused"]
