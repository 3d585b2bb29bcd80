"""The Ticket Transfer exchange between the ends for TLS crypto sessions, with a real KMS
core: Alice's TRANSFER_INIT, Bob's checks, resolve and TRANSFER_RESP, the same TLS-PSKs on
both sides; every bad TRANSFER_INIT refused with its MIKEY error number."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.client import (
    ForkedKeys,
    forked_keys,
    gtgk_spi,
    message_request_init,
    open_reply,
    request_init,
    resolve_init,
    tgk_spi,
)
from kms.core import KmsCore
from kms.store import KmsStore, User
from mikey import decode
from mikey.constants import DataType, ErrorNo, IdRole, KeyType, RandRole, TsType
from mikey.errors import MikeyError
from mikey.keys import ticket_tls_psk
from mikey.message import GenericIdEntry, GenericIdMap, Message
from mikey.payloads import (
    GeneralExtension,
    IdWithRole,
    KeyData,
    RandWithRole,
    SecurityPolicy,
    SpParam,
    Ticket,
    TicketFlag,
    Timestamp,
)
from mikey.transfer import (
    BODY_DIGEST_EXT,
    MESSAGE_FLAGS,
    PSK_MIME_PROT_TYPE,
    TLS_PROT_TYPE,
    MessageTransfer,
    message_transfer_init,
    mime_kek,
    mime_kek_id,
    read_message_transfer_init,
    read_transfer_init,
    session_psks,
    tls_map,
    transfer_init,
    transfer_resp,
    verify_message_transfer_init,
    verify_transfer_init,
    verify_transfer_resp,
)

NOW = 1_800_000_000.0
KMS_ID = "kms.e2ae.lab"
ALICE = User("sip:alice@e2ae.lab", hashlib.sha256(b"alice").digest()[:16])
BOB = User("sip:bob@e2ae.lab", hashlib.sha256(b"bob").digest()[:16])


@attrs.define
class Lab:
    kms: KmsCore
    ticket: Ticket
    alice_keys: tuple[KeyData, ...]

    @property
    def mpk(self) -> bytes:
        return next(k.key for k in self.alice_keys if k.key_type is KeyType.MPK)

    def tgks(self) -> dict[bytes, bytes]:
        return {
            k.kv.spi: k.key  # type: ignore[union-attr]
            for k in self.alice_keys
            if k.key_type is KeyType.TGK
        }


def _lab(sessions: int = 2, flags: int | None = None) -> Lab:
    store = KmsStore(":memory:")
    store.put_user(ALICE)
    store.put_user(BOB)
    kms = KmsCore(KMS_ID, store)
    kw = {} if flags is None else {"flags": flags}
    request = request_init(
        ALICE.identity, ALICE.key, (BOB.identity,), NOW, kms=KMS_ID, sessions=sessions, **kw
    )
    reply = kms.handle(request.encode(), (ALICE.identity,), NOW)
    assert reply.status == 200, reply.outcome
    message, keys = open_reply(reply.body, ALICE.key, request)
    (ticket,) = (p for p in message.payloads if isinstance(p, Ticket))
    return Lab(kms, ticket, keys)


def _init(lab: Lab, sessions: int = 2, **kw: object) -> Message:
    spis = [tgk_spi(n) for n in range(1, sessions + 1)]
    return transfer_init(
        ALICE.identity,
        BOB.identity,
        lab.ticket,
        lab.mpk,
        spis,
        NOW,
        csb_id=0xC0FFEE,
        **kw,  # type: ignore[arg-type]
    )


def _bob_resolves(lab: Lab, info_ticket: Ticket, csb_id: int) -> tuple[KeyData, ...]:
    request = resolve_init(BOB.identity, BOB.key, info_ticket, NOW + 1, kms=KMS_ID, csb_id=csb_id)
    reply = lab.kms.handle(request.encode(), (BOB.identity,), NOW + 1)
    assert reply.status == 200, reply.outcome
    return open_reply(reply.body, BOB.key, request)[1]


def test_alice_and_bob_end_with_the_same_tls_psks() -> None:
    lab = _lab()
    wire = _init(lab).encode()  # what travels in a=key-mgmt:mikey
    info = read_transfer_init(decode(wire), responder=BOB.identity, streams=2, now=NOW + 1)
    assert info.initiator == ALICE.identity and [s.cs_id for s in info.sessions] == [1, 2]
    bob_keys = _bob_resolves(lab, info.ticket, info.csb_id)
    mpk = next(k.key for k in bob_keys if k.key_type is KeyType.MPK)
    verify_transfer_init(info, mpk, BOB.identity)
    resp = transfer_resp(info, BOB.identity, mpk, NOW + 1)
    verify_transfer_resp(decode(resp.encode()), info.message, lab.mpk)

    tgks_bob = {k.kv.spi: k.key for k in bob_keys if k.key_type is KeyType.TGK}  # type: ignore[union-attr]
    flags = info.ticket.policy.flags
    bob = session_psks(info.message, tgks_bob, ticket_flags=flags)
    alice = session_psks(info.message, lab.tgks(), ticket_flags=flags)
    assert bob == alice and set(bob) == {1, 2} and bob[1] != bob[2]
    # RFC 6043 §5.1.3 TEK with RANDRi (the ticket has H), written out.
    randri = next(p.rand for p in info.message.payloads if isinstance(p, RandWithRole))
    assert bob[1] == ticket_tls_psk(lab.tgks()[tgk_spi(1)], 1, 32, randri=randri)


def test_the_map_is_annex_h() -> None:
    cs_map = _init(_lab()).header.cs_map
    assert cs_map == tls_map([tgk_spi(1), tgk_spi(2)])
    assert isinstance(cs_map, GenericIdMap)
    for n, entry in enumerate(cs_map.entries, start=1):
        assert (entry.cs_id, entry.prot_type, entry.s_flag, entry.policies) == (
            n,
            TLS_PROT_TYPE,
            False,
            (),
        )
        assert entry.session_data == b"" and entry.spi == tgk_spi(n)


def test_with_g_the_response_carries_randrr_and_both_rands_key_the_psk() -> None:
    flags = TicketFlag.E | TicketFlag.F | TicketFlag.G | TicketFlag.H | TicketFlag.N
    lab = _lab(flags=flags | TicketFlag.O)
    init = _init(lab)
    info = read_transfer_init(init, responder=BOB.identity, streams=2, now=NOW)
    resp = transfer_resp(info, BOB.identity, lab.mpk, NOW, randrr=b"\x99" * 16)
    rands = [p for p in resp.payloads if isinstance(p, RandWithRole)]
    assert [(r.role, r.rand) for r in rands] == [(RandRole.RANDRR, b"\x99" * 16)]
    verify_transfer_resp(resp, init, lab.mpk)
    with_r = session_psks(
        init, lab.tgks(), ticket_flags=info.ticket.policy.flags, randrr=b"\x99" * 16
    )
    without = session_psks(init, lab.tgks(), ticket_flags=TicketFlag.H)
    assert with_r != without


def _tampered(message: Message) -> Message:
    data = bytearray(message.encode())
    data[-1] ^= 0x01
    return decode(bytes(data))


def test_a_bad_mac_is_an_auth_failure() -> None:
    lab = _lab()
    info = read_transfer_init(_tampered(_init(lab)), responder=BOB.identity, streams=2, now=NOW)
    with pytest.raises(MikeyError) as caught:
        verify_transfer_init(info, lab.mpk, BOB.identity)
    assert caught.value.code == ErrorNo.AUTH_FAILURE
    resp = transfer_resp(
        read_transfer_init(_init(lab), responder=BOB.identity, streams=2, now=NOW),
        BOB.identity,
        lab.mpk,
        NOW,
    )
    with pytest.raises(MikeyError) as again:
        verify_transfer_resp(_tampered(resp), _init(lab), lab.mpk)
    assert again.value.code == ErrorNo.AUTH_FAILURE


def _with(message: Message, **header: object) -> Message:
    return attrs.evolve(message, header=attrs.evolve(message.header, **header))


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ("two streams in the SDP, one session", ErrorNo.UNSPECIFIED, "1 crypto session(s) for 2"),
        ("SP payload", ErrorNo.INVALID_SP, "SP payloads"),
        ("S flag", ErrorNo.INVALID_SP, "S, #P and session data"),
        ("session data", ErrorNo.INVALID_SP, "S, #P and session data"),
        ("another prot type", ErrorNo.UNSPECIFIED, "Prot Type 0"),
        ("stale", ErrorNo.INVALID_TS, "out of the window"),
        ("received by carol", ErrorNo.INVALID_ID, "is for sip:bob@e2ae.lab"),
        ("not a transfer init", ErrorNo.INVALID_DT, "not a TRANSFER_INIT"),
        ("empty map", ErrorNo.UNSPECIFIED, "GENERIC-ID"),
    ],
)
def test_bad_transfer_inits_are_refused(change: str, code: ErrorNo, words: str) -> None:
    lab = _lab()
    message = _init(lab)
    responder, streams, now = BOB.identity, 2, NOW
    entry = GenericIdEntry(1, TLS_PROT_TYPE, spi=tgk_spi(1))
    if change.startswith("two streams"):
        message = _init(lab, sessions=1)
    elif change == "SP payload":
        sp = SecurityPolicy(0, TLS_PROT_TYPE, (SpParam(0, b"\x01"),))
        message = attrs.evolve(message, payloads=(*message.payloads[:-1], sp, message.payloads[-1]))
    elif change == "S flag":
        message = _with(message, cs_map=GenericIdMap((attrs.evolve(entry, s_flag=True),)))
        streams = 1
    elif change == "session data":
        message = _with(message, cs_map=GenericIdMap((attrs.evolve(entry, session_data=b"x"),)))
        streams = 1
    elif change == "another prot type":
        message = _with(message, cs_map=GenericIdMap((attrs.evolve(entry, prot_type=0),)))
        streams = 1
    elif change == "stale":
        now = NOW + 301
    elif change == "received by carol":
        responder = "sip:carol@e2ae.lab"
    elif change == "not a transfer init":
        message = _with(message, data_type=DataType.TRANSFER_RESP)
    elif change == "empty map":
        message = _with(message, cs_map=GenericIdMap(()))
    with pytest.raises(MikeyError) as caught:
        read_transfer_init(message, responder=responder, streams=streams, now=now)
    assert caught.value.code == code and words in caught.value.reason, caught.value.reason


def test_a_session_whose_spi_names_no_tgk_has_no_psk() -> None:
    lab = _lab(sessions=1)
    init = transfer_init(
        ALICE.identity, BOB.identity, lab.ticket, lab.mpk, [b"\x00\x00\x00\x09"], NOW
    )
    with pytest.raises(MikeyError, match="no TGK with its SPI"):
        session_psks(init, lab.tgks(), ticket_flags=TicketFlag.H)


def test_a_responder_takes_a_transfer_init_for_a_group_it_answers_for() -> None:
    lab = _lab()
    init = transfer_init(
        ALICE.identity, "sip:conf@e2ae.lab", lab.ticket, lab.mpk, [tgk_spi(1), tgk_spi(2)], NOW
    )
    info = read_transfer_init(
        init, responder=BOB.identity, streams=2, now=NOW, answers_for=("sip:conf@e2ae.lab",)
    )
    assert info.initiator == ALICE.identity
    with pytest.raises(MikeyError, match=r"is for sip:conf@e2ae\.lab"):
        read_transfer_init(init, responder=BOB.identity, streams=2, now=NOW)


# --- immediate messaging: the PSK/MIME TRANSFER_INIT of a SIP MESSAGE with key forking -------

BODY = b"Content-Type: text/plain\r\n\r\nhello Bob"
MESSAGE_CSB = 0x5EED


@attrs.define
class MessageLab:
    kms: KmsCore
    ticket: Ticket
    alice: ForkedKeys
    rands: int = 0

    def init(self, body: bytes = BODY, **kw: object) -> Message:
        return message_transfer_init(
            ALICE.identity,
            BOB.identity,
            self.ticket,
            self.alice.mpki,
            self.alice.mpkr,
            gtgk_spi(1),
            hashlib.sha256(body).digest(),
            NOW,
            csb_id=MESSAGE_CSB,
            randri=b"\x5a" * 16,
            **kw,  # type: ignore[arg-type]
        )

    def resolve(self, info: MessageTransfer) -> ForkedKeys:
        """Bob has the KMS resolve the ticket of ``info`` (raises MikeyError if refused)."""
        self.rands += 1
        request = resolve_init(
            BOB.identity,
            BOB.key,
            info.ticket,
            NOW + 1,
            kms=KMS_ID,
            csb_id=info.csb_id,
            randrr=self.rands.to_bytes(16, "big"),
        )
        reply = self.kms.handle(request.encode(), (BOB.identity,), NOW + 1)
        return forked_keys(open_reply(reply.body, BOB.key, request)[1])


def _message_lab() -> MessageLab:
    store = KmsStore(":memory:")
    store.put_user(ALICE)
    store.put_user(BOB)
    kms = KmsCore(KMS_ID, store)
    request = message_request_init(ALICE.identity, ALICE.key, (BOB.identity,), NOW, kms=KMS_ID)
    reply = kms.handle(request.encode(), (ALICE.identity,), NOW)
    assert reply.status == 200, reply.outcome
    message, keys = open_reply(reply.body, ALICE.key, request)
    (ticket,) = (p for p in message.payloads if isinstance(p, Ticket))
    return MessageLab(kms, ticket, forked_keys(keys))


def test_message_flags_follow_the_profile_and_rfc_6043() -> None:
    flags = TicketFlag(MESSAGE_FLAGS)
    assert not flags & (TicketFlag.F | TicketFlag.G)
    assert flags & TicketFlag.H and flags & TicketFlag.I
    assert flags & TicketFlag.E  # I implies E
    assert PSK_MIME_PROT_TYPE not in (TLS_PROT_TYPE,) and PSK_MIME_PROT_TYPE >= 0xF0


def test_alice_and_bob_end_with_the_same_kek_and_bob_verifies_the_message() -> None:
    lab = _message_lab()
    init = lab.init()
    (cs,) = init.header.cs_map.entries  # type: ignore[union-attr]
    assert (cs.cs_id, cs.prot_type, cs.spi, cs.s_flag, cs.policies) == (
        1,
        PSK_MIME_PROT_TYPE,
        gtgk_spi(1),
        False,
        (),
    )
    assert [type(p).__name__ for p in init.payloads] == [
        "Timestamp",
        "RandWithRole",
        "IdWithRole",
        "IdWithRole",
        "Ticket",
        "GeneralExtension",
        "Verification",
    ]
    info = read_message_transfer_init(decode(init.encode()), now=NOW)
    (stamp,) = (p for p in init.payloads if isinstance(p, Timestamp))
    assert (info.csb_id, info.cs_id, info.spi, info.randri) == (
        MESSAGE_CSB,
        1,
        gtgk_spi(1),
        b"\x5a" * 16,
    )
    assert (info.initiator, info.responder) == (ALICE.identity, BOB.identity)
    assert info.body_digest == hashlib.sha256(BODY).digest()
    assert info.timestamp == pytest.approx(NOW) and info.nonce == stamp.encode_body() + info.randri
    bob = lab.resolve(info)
    assert bob.mpki == lab.alice.mpki and bob.mpkr != lab.alice.mpkr
    verify_message_transfer_init(info, bob.mpki, BODY)
    spi = info.spi
    assert mime_kek(bob.gtgks[spi], info.cs_id, info.randri) == mime_kek(
        lab.alice.gtgks[gtgk_spi(1)], 1, b"\x5a" * 16
    )
    assert len(mime_kek(bob.gtgks[spi], 1, info.randri)) == 16


def test_mime_kek_is_the_rfc_6043_tek_of_the_gtgk_with_randri() -> None:
    gtgk, randri = bytes(range(16)), bytes(range(100, 116))
    # RFC 6043 §5.1.3 label: TEK constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi ||
    # RANDRi || len RANDRr (0); PRF-HMAC-SHA-256 of a 128-bit key is one HMAC chain step:
    # P = HMAC(s, A1 || label), A1 = HMAC(s, label).
    label = bytes.fromhex("2AD01C64") + b"\x01" + b"\xff" * 4 + b"\x03" + b"\x10" + randri + b"\x00"
    a1 = hmac.digest(gtgk, label, "sha256")
    assert mime_kek(gtgk, 1, randri) == hmac.digest(gtgk, a1 + label, "sha256")[:16]
    assert mime_kek(gtgk, 2, randri) != mime_kek(gtgk, 1, randri)
    assert mime_kek(gtgk, 1, randri, length=32) == hmac.digest(gtgk, a1 + label, "sha256")


def test_mime_kek_id_is_csb_id_cs_id_and_spi() -> None:
    assert mime_kek_id(0x01020304, 1, gtgk_spi(1)).hex() == "0102030401" + "80000001"
    with pytest.raises(ValueError):
        mime_kek_id(1 << 32, 1, b"")


def _swap(message: Message, old: object, new: object) -> Message:
    return attrs.evolve(message, payloads=tuple(new if p is old else p for p in message.payloads))


def _ticket_in(message: Message) -> Ticket:
    (ticket,) = (p for p in message.payloads if isinstance(p, Ticket))
    return ticket


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ("F set", ErrorNo.INVALID_TPPAR, "F=1"),
        ("G set", ErrorNo.INVALID_TPPAR, "G=1"),
        ("H clear", ErrorNo.INVALID_TPPAR, "H=0"),
        ("I clear", ErrorNo.INVALID_TPPAR, "I=0"),
        ("two crypto sessions", ErrorNo.UNSPECIFIED, "exactly one crypto session"),
        ("TLS prot type", ErrorNo.UNSPECIFIED, f"Prot Type {TLS_PROT_TYPE}"),
        ("no SPI", ErrorNo.UNSPECIFIED, "no SPI"),
        ("S flag", ErrorNo.INVALID_SP, "S, #P and session data"),
        ("SP payload", ErrorNo.INVALID_SP, "SP payloads"),
        ("no digest", ErrorNo.UNSPECIFIED, "0 body digests"),
        ("two digests", ErrorNo.UNSPECIFIED, "2 body digests"),
        ("short digest", ErrorNo.UNSPECIFIED, "a body digest of 20 bytes"),
        ("no Initiator Data", ErrorNo.INVALID_TICKET, "no Initiator Data"),
        ("IDRi not the ticket's", ErrorNo.INVALID_ID, "the ticket was issued to"),
        ("no IDRr", ErrorNo.INVALID_ID, "no Responder"),
        ("no RANDRi", ErrorNo.UNSPECIFIED, "RandWithRole"),
        ("stale", ErrorNo.INVALID_TS, "out of the window"),
        ("a counter", ErrorNo.INVALID_TS, "COUNTER"),
        ("not a transfer init", ErrorNo.INVALID_DT, "not a TRANSFER_INIT"),
    ],
)
def test_bad_message_transfer_inits_are_refused_before_the_resolve(
    change: str, code: ErrorNo, words: str
) -> None:
    lab = _message_lab()
    message = lab.init()
    now: float | None = NOW
    entry = GenericIdEntry(1, PSK_MIME_PROT_TYPE, spi=gtgk_spi(1))
    ticket = _ticket_in(message)
    digest = next(p for p in message.payloads if isinstance(p, GeneralExtension))
    flip = {"F set": TicketFlag.F, "G set": TicketFlag.G, "H clear": TicketFlag.H}
    if change in flip or change == "I clear":
        bit = flip.get(change, TicketFlag.I)
        policy = attrs.evolve(ticket.policy, flags=ticket.policy.flags ^ bit)
        message = _swap(message, ticket, attrs.evolve(ticket, policy=policy))
    elif change == "two crypto sessions":
        second = attrs.evolve(entry, cs_id=2, spi=gtgk_spi(2))
        message = _with(message, cs_map=GenericIdMap((entry, second)))
    elif change == "TLS prot type":
        message = _with(
            message, cs_map=GenericIdMap((attrs.evolve(entry, prot_type=TLS_PROT_TYPE),))
        )
    elif change == "no SPI":
        message = _with(message, cs_map=GenericIdMap((attrs.evolve(entry, spi=b""),)))
    elif change == "S flag":
        message = _with(message, cs_map=GenericIdMap((attrs.evolve(entry, s_flag=True),)))
    elif change == "SP payload":
        sp = SecurityPolicy(0, PSK_MIME_PROT_TYPE, (SpParam(0, b"\x01"),))
        message = attrs.evolve(message, payloads=(*message.payloads[:-1], sp, message.payloads[-1]))
    elif change == "no digest":
        message = attrs.evolve(
            message, payloads=tuple(p for p in message.payloads if p is not digest)
        )
    elif change == "two digests":
        at = message.payloads.index(digest)
        twice = (*message.payloads[:at], digest, *message.payloads[at:])
        message = attrs.evolve(message, payloads=twice)
    elif change == "short digest":
        message = _swap(message, digest, GeneralExtension(BODY_DIGEST_EXT, bytes(20)))
    elif change == "no Initiator Data":
        message = _swap(message, ticket, attrs.evolve(ticket, initiator_data=b""))
    elif change == "IDRi not the ticket's":
        idri = next(
            p for p in message.payloads if isinstance(p, IdWithRole) and p.role == IdRole.IDRI
        )
        message = _swap(message, idri, IdWithRole.uri(IdRole.IDRI, "sip:mallory@e2ae.lab"))
    elif change == "no IDRr":
        message = attrs.evolve(
            message,
            payloads=tuple(
                p
                for p in message.payloads
                if not (isinstance(p, IdWithRole) and p.role == IdRole.IDRR)
            ),
        )
    elif change == "no RANDRi":
        message = attrs.evolve(
            message, payloads=tuple(p for p in message.payloads if not isinstance(p, RandWithRole))
        )
    elif change == "stale":
        now = NOW + 301
    elif change == "a counter":
        stamp = next(p for p in message.payloads if isinstance(p, Timestamp))
        message = _swap(message, stamp, Timestamp(TsType.COUNTER, 7))
    elif change == "not a transfer init":
        message = _with(message, data_type=DataType.TRANSFER_RESP)
    with pytest.raises(MikeyError) as caught:
        read_message_transfer_init(message, now=now)
    assert caught.value.code == code and words in caught.value.reason, caught.value.reason


def test_a_tampered_body_is_refused() -> None:
    lab = _message_lab()
    info = read_message_transfer_init(lab.init())
    bob = lab.resolve(info)
    with pytest.raises(MikeyError) as caught:
        verify_message_transfer_init(info, bob.mpki, BODY + b"!")
    assert caught.value.code == ErrorNo.AUTH_FAILURE
    assert "the body is not the one the TRANSFER_INIT names" in caught.value.reason


def test_another_mpki_does_not_verify_the_transfer_init() -> None:
    lab = _message_lab()
    info = read_message_transfer_init(lab.init())
    with pytest.raises(MikeyError) as caught:
        verify_message_transfer_init(info, lab.alice.mpkr, BODY)
    assert caught.value.code == ErrorNo.AUTH_FAILURE
    assert caught.value.reason == "the TRANSFER_INIT MAC does not verify"


def test_an_initiator_data_of_another_transfer_init_is_refused() -> None:
    # The V does not cover the Initiator Data (RFC 6043 §5.5): the Vi in it must be that V.
    lab = _message_lab()
    message, other = lab.init(), lab.init(body=b"another body")
    ticket = _ticket_in(message)
    moved = attrs.evolve(ticket, initiator_data=_ticket_in(other).initiator_data)
    info = read_message_transfer_init(_swap(message, ticket, moved))
    bob = lab.resolve(info)  # the KMS checks Vr over the Vi, both Alice's
    with pytest.raises(MikeyError) as caught:
        verify_message_transfer_init(info, bob.mpki, BODY)
    assert caught.value.code == ErrorNo.AUTH_FAILURE and "Vi" in caught.value.reason


def _accepted(lab: MessageLab, data: bytes) -> bool:
    """Whether Bob takes ``data`` as a message TRANSFER_INIT for BODY: decoded, read,
    resolved by the KMS (which checks Vr) and verified."""
    try:
        info = read_message_transfer_init(decode(data), now=NOW)
        bob = lab.resolve(info)
        verify_message_transfer_init(info, bob.mpki, BODY)
    except MikeyError:
        return False
    return True


def test_a_byte_flipped_anywhere_in_the_transfer_init_is_refused() -> None:
    lab = _message_lab()
    data = lab.init().encode()
    assert _accepted(lab, data)
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            assert not _accepted(lab, bytes(bad)), f"byte {i} ^ {mask:#x} was accepted"


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=200), randri=st.binary(min_size=16, max_size=32))
def test_what_the_initiator_builds_the_responder_reads_back(body: bytes, randri: bytes) -> None:
    lab = _message_lab()
    init = message_transfer_init(
        ALICE.identity,
        BOB.identity,
        lab.ticket,
        lab.alice.mpki,
        lab.alice.mpkr,
        gtgk_spi(1),
        hashlib.sha256(body).digest(),
        NOW,
        randri=randri,
    )
    info = read_message_transfer_init(decode(init.encode()))
    assert info.randri == randri and info.message == init
    verify_message_transfer_init(info, lab.alice.mpki, body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_with_a_mikey_error_only(data: bytes) -> None:
    try:
        read_message_transfer_init(decode(data))
    except MikeyError:
        pass


def test_end_to_end_a_message_with_a_kms_on_disk(tmp_path: Path) -> None:
    """Alice asks a KMS (state in a file) for a message ticket and sends a TRANSFER_INIT; Bob
    reads it, has the ticket resolved, opens the reply, verifies, and both hold one KEK."""
    store = KmsStore(tmp_path / "kms.sqlite")
    for user in (ALICE, BOB):
        store.put_user(user)
    kms = KmsCore(KMS_ID, store)
    ask = message_request_init(ALICE.identity, ALICE.key, (BOB.identity,), NOW, kms=KMS_ID)
    issued = kms.handle(ask.encode(), (ALICE.identity,), NOW)
    assert issued.status == 200, issued.outcome
    reply, keys = open_reply(issued.body, ALICE.key, ask)
    (ticket,) = (p for p in reply.payloads if isinstance(p, Ticket))
    alice = forked_keys(keys)
    (spi,) = alice.gtgks
    sent = message_transfer_init(
        ALICE.identity,
        BOB.identity,
        ticket,
        alice.mpki,
        alice.mpkr,
        spi,
        hashlib.sha256(BODY).digest(),
        NOW,
    )
    alice_kek = mime_kek(
        alice.gtgks[spi], 1, next(p.rand for p in sent.payloads if isinstance(p, RandWithRole))
    )

    info = read_message_transfer_init(decode(sent.encode()), now=NOW + 2)
    resolve = resolve_init(
        BOB.identity, BOB.key, info.ticket, NOW + 2, kms=KMS_ID, csb_id=info.csb_id
    )
    answer = kms.handle(resolve.encode(), (BOB.identity,), NOW + 2)
    assert answer.status == 200, answer.outcome
    bob = forked_keys(open_reply(answer.body, BOB.key, resolve)[1])
    verify_message_transfer_init(info, bob.mpki, BODY)
    assert mime_kek(bob.gtgks[info.spi], info.cs_id, info.randri) == alice_kek
    assert mime_kek_id(info.csb_id, info.cs_id, info.spi) == mime_kek_id(sent.header.csb_id, 1, spi)
    store.close()
