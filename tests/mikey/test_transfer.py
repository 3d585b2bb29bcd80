"""The Ticket Transfer exchange between the ends for TLS crypto sessions, with a real KMS
core: Alice's TRANSFER_INIT, Bob's checks, resolve and TRANSFER_RESP, the same TLS-PSKs on
both sides; every bad TRANSFER_INIT refused with its MIKEY error number."""

from __future__ import annotations

import hashlib

import attrs
import pytest

from kms.client import open_reply, request_init, resolve_init, tgk_spi
from kms.core import KmsCore
from kms.store import KmsStore, User
from mikey import decode
from mikey.constants import DataType, ErrorNo, KeyType, RandRole
from mikey.errors import MikeyError
from mikey.keys import ticket_tls_psk
from mikey.message import GenericIdEntry, GenericIdMap, Message
from mikey.payloads import (
    KeyData,
    RandWithRole,
    SecurityPolicy,
    SpParam,
    Ticket,
    TicketFlag,
)
from mikey.transfer import (
    TLS_PROT_TYPE,
    read_transfer_init,
    session_psks,
    tls_map,
    transfer_init,
    transfer_resp,
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
