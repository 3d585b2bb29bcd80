"""The KMS's decisions without a socket: tickets issued, resolved by whom the ticket names,
and every bad request refused with its MIKEY error number."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from pathlib import Path

import attrs
import pytest

from kms.client import (
    MPKI_SPI,
    MPKR_SPI,
    PRF,
    forked_keys,
    gtgk_spi,
    message_request_init,
    open_reply,
    request_init,
    request_keys,
    resolve_init,
    tgk_spi,
)
from kms.core import KmsCore
from kms.store import KmsStore, StoreLimits, User
from mikey import kemac as kemac_crypto
from mikey.constants import DataType, ErrorNo, IdRole, KeyType, MacAlg, RandRole, TsType
from mikey.errors import MikeyError
from mikey.keys import fork_mpkr, fork_tgk, ticket_tls_psk
from mikey.message import EmptyMap, Header, Message, decode
from mikey.payloads import (
    Err,
    IdWithRole,
    Kemac,
    KeyData,
    KvSpi,
    RandWithRole,
    Ticket,
    TicketFlag,
    TicketPolicy,
    Timestamp,
    Verification,
    encode_payload_chain,
    ntp_from_unix,
    unix_from_ntp,
)
from mikey.transfer import MESSAGE_FLAGS, message_transfer_init

KMS_ID = "kms.e2ae.lab"

NOW = 1_800_000_000.0
ALICE = User("sip:alice@e2ae.lab", hashlib.sha256(b"alice").digest()[:16])
BOB = User("sip:bob@e2ae.lab", hashlib.sha256(b"bob").digest()[:16], ("sip:conf@e2ae.lab",))
CAROL = User("sip:carol@e2ae.lab", hashlib.sha256(b"carol").digest()[:16])


def _counter() -> itertools.count[int]:
    return itertools.count(1)


def _random() -> object:
    counter = _counter()

    def random(n: int) -> bytes:
        # Deterministic, distinct bytes: the tests compare keys, never guess them.
        return hashlib.sha256(next(counter).to_bytes(8, "big")).digest()[:n].ljust(n, b"\0")

    return random


def _kms(store: KmsStore | None = None, **kw: object) -> KmsCore:
    store = store or KmsStore(":memory:")
    for user in (ALICE, BOB, CAROL):
        store.put_user(user)
    return KmsCore("kms.e2ae.lab", store, random=_random(), **kw)  # type: ignore[arg-type]


def _ticket_of(body: bytes) -> tuple[Message, Ticket]:
    reply = decode(body)
    (ticket,) = (p for p in reply.payloads if isinstance(p, Ticket))
    return reply, ticket


def _request(kms: KmsCore, responders: tuple[str, ...] = (BOB.identity,), sessions: int = 1):
    request = request_init(
        ALICE.identity,
        ALICE.key,
        responders,
        NOW,
        kms=KMS_ID,
        csb_id=0x1234,
        sessions=sessions,
        randri=b"R" * 16,
    )
    reply = kms.handle(request.encode(), (ALICE.identity,), NOW)
    return request, reply


def _resolve(kms: KmsCore, user: User, ticket: Ticket, at: float = NOW + 1, rand: bytes = b"r"):
    request = resolve_init(
        user.identity, user.key, ticket, at, kms=KMS_ID, csb_id=0x1234, randrr=rand * 16
    )
    return request, kms.handle(request.encode(), (user.identity,), at)


def _request_wanting(*wanted: KeyData, flags: int = MESSAGE_FLAGS) -> bytes:
    """A REQUEST_INIT_PSK from Alice whose desired KEMAC lists ``wanted``."""
    policy = TicketPolicy.with_payloads(2, (Kemac.plain(wanted),), prf_func=PRF, flags=flags)
    draft = Message(
        Header(DataType.REQUEST_INIT_PSK, 7, EmptyMap(0), True, PRF),
        (
            Timestamp(TsType.NTP_UTC, ntp_from_unix(NOW)),
            RandWithRole(RandRole.RANDRI, b"W" * 16),
            IdWithRole.uri(IdRole.IDRI, ALICE.identity),
            IdWithRole.uri(IdRole.IDRKMS, KMS_ID),
            policy,
            Verification.placeholder(MacAlg.HMAC_SHA_256_256),
        ),
    )
    keys = request_keys(ALICE.key, 7, b"W" * 16, response=False)
    return kemac_crypto.protect(draft, keys, mac_data=kemac_crypto.ticket_mac_input(draft)).encode()


def _error(body: bytes) -> ErrorNo:
    message = decode(body)
    assert message.data_type is DataType.ERROR
    (err,) = (p for p in message.payloads if isinstance(p, Err))
    return ErrorNo(err.error_no)


def test_a_ticket_is_issued_and_resolved_by_its_responder_to_the_same_keys() -> None:
    kms = _kms()
    request, reply = _request(kms, sessions=2)
    assert reply.status == 200 and reply.identity == ALICE.identity
    message, alice_keys = open_reply(reply.body, ALICE.key, request)
    assert message.data_type is DataType.REQUEST_RESP
    assert [k.key_type for k in alice_keys] == [KeyType.MPK, KeyType.TGK, KeyType.TGK]
    assert len({k.key for k in alice_keys}) == 3 and len(alice_keys[1].key) == 16
    kms_id = [p for p in message.payloads if isinstance(p, IdWithRole)]
    assert kms_id[0].data == b"kms.e2ae.lab"

    _, ticket = _ticket_of(reply.body)
    resolve, answer = _resolve(kms, BOB, ticket)
    assert answer.status == 200, answer.outcome
    resolved, bob_keys = open_reply(answer.body, BOB.key, resolve)
    assert resolved.data_type is DataType.RESOLVE_RESP
    assert [k.key for k in bob_keys] == [k.key for k in alice_keys]
    # Both ends derive the same TLS-PSK of crypto session 1 from its TGK (RFC 6043 §5.1.3).
    randri = b"T" * 16  # as the TRANSFER_INIT carries it
    assert ticket_tls_psk(bob_keys[1].key, 1, 32, randri=randri) == ticket_tls_psk(
        alice_keys[1].key, 1, 32, randri=randri
    )
    # The ticket says what the KMS did: it made the keys (D), changing the asked policy (K).
    _, ticket = _ticket_of(reply.body)
    assert ticket.policy.has(TicketFlag.D) and ticket.policy.has(TicketFlag.K)
    assert [p.data for p in ticket.policy.payloads() if isinstance(p, IdWithRole)] == [
        b"kms.e2ae.lab",
        ALICE.identity.encode(),
        BOB.identity.encode(),
    ]


def test_a_third_user_is_refused_and_learns_no_key() -> None:
    kms = _kms()
    _, reply = _request(kms)
    _, ticket = _ticket_of(reply.body)
    resolve, answer = _resolve(kms, CAROL, ticket)
    assert answer.status == 403 and _error(answer.body) is ErrorNo.AUTH_FAILURE
    assert "does not name sip:carol@e2ae.lab" in answer.outcome
    with pytest.raises(MikeyError):
        open_reply(answer.body, CAROL.key, resolve)


def test_a_group_member_resolves_a_ticket_naming_the_group() -> None:
    kms = _kms()
    _, reply = _request(kms, responders=("sip:conf@e2ae.lab",))
    _, ticket = _ticket_of(reply.body)
    assert _resolve(kms, BOB, ticket)[1].status == 200
    assert _resolve(kms, CAROL, ticket, rand=b"c")[1].status == 403


def test_a_ticket_naming_nobody_is_resolved_by_any_provisioned_user() -> None:
    kms = _kms()
    _, reply = _request(kms, responders=())
    _, ticket = _ticket_of(reply.body)
    assert _resolve(kms, CAROL, ticket)[1].status == 200


def test_the_reply_is_macd_for_the_requester_only() -> None:
    kms = _kms()
    request, reply = _request(kms)
    with pytest.raises(MikeyError) as caught:
        open_reply(reply.body, BOB.key, request)
    assert caught.value.code == ErrorNo.AUTH_FAILURE


def _tamper_mac(message: Message) -> bytes:
    data = bytearray(message.encode())
    data[-1] ^= 1
    return bytes(data)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("bad mac", 403, ErrorNo.AUTH_FAILURE),
        ("other tls identity", 403, ErrorNo.AUTH_FAILURE),
        ("unknown user", 403, ErrorNo.INVALID_ID),
        ("stale", 403, ErrorNo.INVALID_TS),
        ("not mikey", 400, None),
        ("transfer init", 400, ErrorNo.INVALID_DT),
        ("ticket type 9", 400, ErrorNo.INVALID_TPPAR),
        ("too many sessions", 400, ErrorNo.INVALID_TPPAR),
        ("I without E", 400, ErrorNo.INVALID_TPPAR),
        ("G without F", 400, ErrorNo.INVALID_TPPAR),
        ("forked TGK without F", 400, ErrorNo.INVALID_TPPAR),
        ("an MPK wanted", 400, ErrorNo.INVALID_TPPAR),
        ("another kms", 403, ErrorNo.INVALID_ID),
    ],
)
def test_bad_requests_are_refused_with_their_error(
    change: str, status: int, code: ErrorNo | None
) -> None:
    kms = _kms()
    tls = (ALICE.identity,)
    at = NOW
    request = request_init(ALICE.identity, ALICE.key, (BOB.identity,), NOW, kms=KMS_ID, csb_id=1)
    body = request.encode()
    if change == "bad mac":
        body = _tamper_mac(request)
    elif change == "other tls identity":
        tls = (BOB.identity,)
    elif change == "unknown user":
        body = request_init(
            "sip:mallory@e2ae.lab", ALICE.key, (), NOW, kms=KMS_ID, csb_id=1
        ).encode()
        tls = ("sip:mallory@e2ae.lab",)
    elif change == "stale":
        at = NOW + 301
    elif change == "not mikey":
        body = b"\x01\x63garbage"
    elif change == "transfer init":
        header = attrs.evolve(request.header, data_type=DataType.TRANSFER_INIT)
        body = attrs.evolve(request, header=header).encode()
    elif change == "ticket type 9":
        body = request_init(
            ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=1, ticket_type=9
        ).encode()
    elif change == "too many sessions":
        body = request_init(
            ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=1, sessions=33
        ).encode()
    elif change == "I without E":
        body = request_init(
            ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=1, flags=TicketFlag.I
        ).encode()
    elif change == "G without F":
        flags = TicketFlag.E | TicketFlag.G | TicketFlag.H
        body = request_init(
            ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=1, flags=flags
        ).encode()
    elif change == "forked TGK without F":
        body = request_init(
            ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=1, flags=MESSAGE_FLAGS
        ).encode()
    elif change == "an MPK wanted":
        body = _request_wanting(KeyData(KeyType.MPK, b"", kv=KvSpi(b"\x00\x00\x00\x09")))
    elif change == "another kms":
        body = request_init(
            ALICE.identity, ALICE.key, (), NOW, kms="kms.elsewhere", csb_id=1
        ).encode()
    reply = kms.handle(body, tls, at)
    assert reply.status == status, reply.outcome
    error = _error(reply.body)
    if code is not None:
        assert error is code
    assert kms.store.count("tickets") == 0


def test_a_replayed_request_is_refused() -> None:
    kms = _kms()
    request, first = _request(kms)
    assert first.status == 200
    again = kms.handle(request.encode(), (ALICE.identity,), NOW + 2)
    assert again.status == 403 and _error(again.body) is ErrorNo.INVALID_TS
    assert "replayed" in again.outcome and kms.store.count("tickets") == 1


def test_an_expired_forged_or_altered_ticket_is_refused() -> None:
    kms = _kms(ticket_lifetime=60.0)
    _, reply = _request(kms)
    _, ticket = _ticket_of(reply.body)
    late = _resolve(kms, BOB, ticket, at=NOW + 61)[1]
    assert _error(late.body) is ErrorNo.INVALID_TICKET and "expired" in late.outcome
    forged = attrs.evolve(ticket, data=bytes(32))
    altered = attrs.evolve(
        ticket, policy=attrs.evolve(ticket.policy, flags=ticket.policy.flags ^ TicketFlag.J)
    )
    for bad, rand in ((forged, b"f"), (altered, b"a")):
        answer = _resolve(kms, BOB, bad, rand=rand)[1]
        assert answer.status == 403 and _error(answer.body) is ErrorNo.INVALID_TICKET


def test_tickets_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "kms.sqlite"
    kms = _kms(KmsStore(path))
    request, reply = _request(kms)
    _, alice_keys = open_reply(reply.body, ALICE.key, request)
    _, ticket = _ticket_of(reply.body)
    kms.store.close()

    again = KmsCore("kms.e2ae.lab", KmsStore(path), random=_random())  # type: ignore[arg-type]
    resolve, answer = _resolve(again, BOB, ticket)
    assert answer.status == 200, answer.outcome
    assert [k.key for k in open_reply(answer.body, BOB.key, resolve)[1]] == [
        k.key for k in alice_keys
    ]
    again.store.close()


def test_no_key_appears_in_what_the_kms_says_about_a_request() -> None:
    kms = _kms()
    request, reply = _request(kms)
    _, keys = open_reply(reply.body, ALICE.key, request)
    for text in (reply.outcome, repr(reply)):
        for key in (*(k.key for k in keys), ALICE.key):
            assert key.hex() not in text
    # The ticket data is the id and a MAC under the KMS's own key: no key material in it.
    _, ticket = _ticket_of(reply.body)
    for key in keys:
        assert key.key not in ticket.data and key.key not in reply.body


def test_the_ticket_tag_is_a_mac_under_the_kms_key() -> None:
    store = KmsStore(":memory:")
    kms = _kms(store)
    _, reply = _request(kms)
    _, ticket = _ticket_of(reply.body)
    secret = store.secret("ticket-mac", 32, lambda n: b"unused")
    ticket_id, tag = ticket.data[:16], ticket.data[16:]
    expected = hmac.new(secret, ticket_id + ticket.policy.encode_body(), "sha256").digest()[:16]
    assert tag == expected


def test_timestamps_are_ntp_utc_of_now() -> None:
    kms = _kms()
    _, reply = _request(kms)
    (stamp,) = (p for p in decode(reply.body).payloads if isinstance(p, Timestamp))
    assert stamp.ts_type is TsType.NTP_UTC and abs(unix_from_ntp(stamp.value) - NOW) < 1e-6


def test_the_ticket_table_bound_refuses_with_an_error_not_a_crash() -> None:
    kms = _kms(KmsStore(":memory:", StoreLimits(max_tickets=1)))
    assert _request(kms)[1].status == 200
    second = request_init(ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=2)
    reply = kms.handle(second.encode(), (ALICE.identity,), NOW)
    assert reply.status == 503 and _error(reply.body) is ErrorNo.UNSPECIFIED


def test_requests_use_a_macd_v_payload() -> None:
    request = request_init(ALICE.identity, ALICE.key, (), NOW, kms=KMS_ID, csb_id=1)
    assert request.payloads[-1].auth_alg is MacAlg.HMAC_SHA_256_256  # type: ignore[union-attr]
    assert request.header.v and request.header.cs_count == 0


# --- key forking (flag I): immediate messaging, TR 33.829 §8.3.1.1 -------------------------


def _message_ticket(
    kms: KmsCore, responders: tuple[str, ...] = (BOB.identity, CAROL.identity)
) -> tuple[Message, tuple[KeyData, ...], Ticket]:
    request = message_request_init(
        ALICE.identity, ALICE.key, responders, NOW, kms=KMS_ID, csb_id=0x4242, randri=b"M" * 16
    )
    reply = kms.handle(request.encode(), (ALICE.identity,), NOW)
    assert reply.status == 200, reply.outcome
    message, keys = open_reply(reply.body, ALICE.key, request)
    _, ticket = _ticket_of(reply.body)
    return message, keys, ticket


def _sent(ticket: Ticket, keys: tuple[KeyData, ...], body: bytes = b"hello") -> Ticket:
    """The TICKET of the TRANSFER_INIT Alice sends: with its Initiator Data ``Vi, Vr``."""
    alice = forked_keys(keys)
    init = message_transfer_init(
        ALICE.identity,
        BOB.identity,
        ticket,
        alice.mpki,
        alice.mpkr,
        gtgk_spi(1),
        hashlib.sha256(body).digest(),
        NOW,
        csb_id=0x4242,
    )
    (sent,) = (p for p in init.payloads if isinstance(p, Ticket))
    return sent


def _resolve_forked(kms: KmsCore, user: User, ticket: Ticket, rand: bytes = b"r"):
    request, answer = _resolve(kms, user, ticket, rand=rand)
    assert answer.status == 200, answer.outcome
    return open_reply(answer.body, user.key, request)


def test_a_forking_ticket_request_gives_mpki_mpkr_and_the_gtgk_and_no_tgk() -> None:
    kms = _kms()
    _, keys, ticket = _message_ticket(kms)
    assert [(k.key_type, k.kv) for k in keys] == [
        (KeyType.MPK, KvSpi(MPKI_SPI)),
        (KeyType.MPK, KvSpi(MPKR_SPI)),
        (KeyType.GTGK, KvSpi(gtgk_spi(1))),
    ]
    assert len({k.key for k in keys}) == 3 and all(len(k.key) == 16 for k in keys)
    alice = forked_keys(keys)
    assert alice.gtgks == {gtgk_spi(1): keys[2].key} and alice.tgks == {}
    assert ticket.policy.flags & MESSAGE_FLAGS == MESSAGE_FLAGS
    assert not ticket.policy.has(TicketFlag.F) and not ticket.policy.has(TicketFlag.G)
    assert not ticket.initiator_data


def test_each_responder_gets_mpki_its_own_mpkr_prime_and_the_same_gtgk() -> None:
    kms = _kms()
    _, keys, ticket = _message_ticket(kms)
    alice = forked_keys(keys)
    sent = _sent(ticket, keys)
    seen = {}
    for user, rand in ((BOB, b"b"), (CAROL, b"c")):
        resolved, got = _resolve_forked(kms, user, sent, rand)
        assert resolved.data_type is DataType.RESOLVE_RESP
        # RESOLVE_RESP = HDR, T, IDRkms, RANDRkms, IDRr, KEMAC, V
        kinds = [type(p).__name__ for p in resolved.payloads]
        assert kinds == [
            "Timestamp",
            "IdWithRole",
            "RandWithRole",
            "IdWithRole",
            "Kemac",
            "Verification",
        ]
        (randrkms,) = (p for p in resolved.payloads if isinstance(p, RandWithRole))
        assert randrkms.role == RandRole.RANDRKMS and len(randrkms.rand) == 16
        idrr = [p for p in resolved.payloads if isinstance(p, IdWithRole) and p.role == IdRole.IDRR]
        assert [p.data for p in idrr] == [user.identity.encode()]
        mine = forked_keys(got)
        assert mine.mpki == alice.mpki
        assert mine.gtgks == alice.gtgks  # GTGKs are not forked (RFC 6043 §5.1.1)
        expected = fork_mpkr(alice.mpkr, user.identity.encode(), randrkms.rand, PRF)
        assert mine.mpkr == expected and mine.mpkr != alice.mpkr
        seen[user.identity] = mine.mpkr
    assert seen[BOB.identity] != seen[CAROL.identity]


def test_a_forking_resolve_whose_vr_does_not_verify_is_an_auth_failure() -> None:
    kms = _kms()
    _, keys, ticket = _message_ticket(kms)
    sent = _sent(ticket, keys)
    vi, vr = sent.initiator_payloads()
    assert isinstance(vr, Verification)
    bad_vr = attrs.evolve(vr, ver_data=bytes(b ^ 1 for b in vr.ver_data))
    forged = attrs.evolve(sent, initiator_data=encode_payload_chain((vi, bad_vr)))
    _, answer = _resolve(kms, BOB, forged)
    assert answer.status == 403 and _error(answer.body) is ErrorNo.AUTH_FAILURE
    assert "the Initiator Data does not verify" in answer.outcome
    # Vr under another key (Bob's, say) fails just the same.
    other = _sent(ticket, (*keys[:1], KeyData(KeyType.MPK, BOB.key, kv=KvSpi(MPKR_SPI))))
    answer = _resolve(kms, BOB, other, rand=b"o")[1]
    assert answer.status == 403 and _error(answer.body) is ErrorNo.AUTH_FAILURE


def test_a_forking_ticket_without_initiator_data_is_not_resolved() -> None:
    kms = _kms()
    _, _, ticket = _message_ticket(kms)
    _, answer = _resolve(kms, BOB, ticket)
    assert answer.status == 403 and _error(answer.body) is ErrorNo.INVALID_TICKET
    assert "Initiator Data" in answer.outcome


def test_the_ticket_tag_leaves_the_initiator_data_out_so_a_ticket_serves_many_messages() -> None:
    kms = _kms()
    _, keys, ticket = _message_ticket(kms)
    first, second = _sent(ticket, keys, b"one"), _sent(ticket, keys, b"two")
    assert first.initiator_data != second.initiator_data
    assert _resolve(kms, BOB, first, rand=b"1")[1].status == 200
    assert _resolve(kms, BOB, second, rand=b"2")[1].status == 200


def test_a_group_member_resolves_a_forking_ticket_naming_the_group() -> None:
    kms = _kms()
    _, keys, ticket = _message_ticket(kms, responders=("sip:conf@e2ae.lab",))
    sent = _sent(ticket, keys)
    resolved, got = _resolve_forked(kms, BOB, sent)
    (randrkms,) = (p for p in resolved.payloads if isinstance(p, RandWithRole))
    # MPKr is forked with the member's own identity, the IDRr of the RESOLVE_RESP.
    expected = fork_mpkr(forked_keys(keys).mpkr, BOB.identity.encode(), randrkms.rand, PRF)
    assert forked_keys(got).mpkr == expected
    assert _resolve(kms, CAROL, sent, rand=b"c")[1].status == 403


def test_forked_tgks_are_tgk_prime_when_f_is_set() -> None:
    kms = _kms()
    request = request_init(
        ALICE.identity,
        ALICE.key,
        (BOB.identity,),
        NOW,
        kms=KMS_ID,
        csb_id=0x4242,
        flags=MESSAGE_FLAGS | TicketFlag.F,
        sessions=1,
        gtgks=1,
    )
    reply = kms.handle(request.encode(), (ALICE.identity,), NOW)
    assert reply.status == 200, reply.outcome
    _, keys = open_reply(reply.body, ALICE.key, request)
    _, ticket = _ticket_of(reply.body)
    alice = forked_keys(keys)
    assert set(alice.tgks) == {tgk_spi(1)} and set(alice.gtgks) == {gtgk_spi(1)}
    resolved, got = _resolve_forked(kms, BOB, _sent(ticket, keys))
    (randrkms,) = (p for p in resolved.payloads if isinstance(p, RandWithRole))
    bob = forked_keys(got)
    tgk = alice.tgks[tgk_spi(1)]
    assert bob.tgks == {tgk_spi(1): fork_tgk(tgk, BOB.identity.encode(), randrkms.rand, PRF)}
    assert bob.gtgks == alice.gtgks


def test_a_ticket_without_forking_resolves_as_before() -> None:
    kms = _kms()
    _, reply = _request(kms)
    _, ticket = _ticket_of(reply.body)
    resolve, answer = _resolve(kms, BOB, ticket)
    resolved = decode(answer.body)
    assert [type(p).__name__ for p in resolved.payloads] == [
        "Timestamp",
        "IdWithRole",
        "Kemac",
        "Verification",
    ]
    with pytest.raises(MikeyError):
        forked_keys(open_reply(answer.body, BOB.key, resolve)[1])
