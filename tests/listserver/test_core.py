"""The list server's decisions without a socket: who may resolve the sender's ticket (pass
through) and who gets the list server's own protection; the URI list; the body a
pass-through member gets. Tickets come from a KMS in process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.fingerprint import Fingerprint
from immsg import core as im
from immsg import mime
from kms.client import forked_keys, message_request_init, open_reply, ticket_of
from kms.core import KmsCore
from kms.store import KmsStore, User
from listserver import core
from listserver.config import Group, KmsLink, ListServerConfig
from mikey.payloads import Ticket

KMS_ID = "kms.e2ae.lab"
NOW = 1_800_000_000.0
PSI = "sip:friends@lab.example"
ALICE = User("sip:alice@lab.example", hashlib.sha256(b"alice").digest()[:16])
BOB = "sip:bob@lab.example"
CAROL = "sip:carol@lab.example"
DAVE = "sip:dave@lab.example"
MEMBERS = (ALICE.identity, BOB, CAROL, DAVE)


@pytest.fixture(scope="module")
def kms() -> KmsCore:
    store = KmsStore(":memory:")
    store.put_user(ALICE)
    return KmsCore(KMS_ID, store)


def _send(kms: KmsCore, responders: Sequence[str], recipients: Sequence[str] = ()) -> im.Outgoing:
    request = message_request_init(ALICE.identity, ALICE.key, tuple(responders), NOW, kms=KMS_ID)
    reply = kms.handle(request.encode(), (ALICE.identity,), NOW)
    assert reply.status == 200, reply.outcome
    message, keys = open_reply(reply.body, ALICE.key, request)
    forked = forked_keys(keys)
    ((spi, gtgk),) = forked.gtgks.items()
    return im.protect(
        im.text_entity("hello friends"),
        sender=ALICE.identity,
        recipient=PSI,
        ticket=ticket_of(message),
        mpki=forked.mpki,
        mpkr=forked.mpkr,
        gtgk=gtgk,
        gtgk_spi=spi,
        now=NOW,
        recipients=recipients,
    )


def _ticket(kms: KmsCore, responders: Sequence[str]) -> Ticket:
    out = _send(kms, responders)
    return im.read(out.content_type, out.body).ticket


def test_responders_are_the_ticket_policy_s_idrr(kms: KmsCore) -> None:
    assert core.responders(_ticket(kms, (PSI, BOB))) == (PSI, BOB)
    assert core.responders(_ticket(kms, ())) == ()


def test_entitled(kms: KmsCore) -> None:
    anybody = _ticket(kms, ())
    assert core.entitled(BOB, anybody, PSI, False)
    named = _ticket(kms, (PSI, BOB))
    assert core.entitled(BOB, named, PSI, False)
    assert not core.entitled(CAROL, named, PSI, False)
    assert core.entitled(CAROL, named, PSI, True)  # the KMS knows the group
    only_bob = _ticket(kms, (BOB,))
    assert not core.entitled(CAROL, only_bob, PSI, True)  # the PSI is not named
    assert not core.entitled(CAROL, only_bob, "sip:other@lab.example", True)


def test_plan_splits_the_members_and_leaves_the_sender_out(kms: KmsCore) -> None:
    out = _send(kms, (PSI, BOB))
    incoming = im.read(out.content_type, out.body)
    plan = core.plan(incoming, MEMBERS, psi=PSI, kms_group=False)
    assert plan == core.Plan((BOB,), (CAROL, DAVE))
    assert plan.members == (BOB, CAROL, DAVE)
    assert core.plan(incoming, MEMBERS, psi=PSI, kms_group=True) == core.Plan(
        (BOB, CAROL, DAVE), ()
    )


def test_the_uri_list_chooses_among_the_members(kms: KmsCore) -> None:
    out = _send(kms, (PSI,), recipients=(DAVE, BOB))
    incoming = im.read(out.content_type, out.body)
    assert core.plan(incoming, MEMBERS, psi=PSI, kms_group=True) == core.Plan((DAVE, BOB), ())
    stranger = _send(kms, (PSI,), recipients=(BOB, "sip:eve@lab.example"))
    with pytest.raises(im.ImError) as info:
        core.plan(im.read(stranger.content_type, stranger.body), MEMBERS, psi=PSI, kms_group=True)
    assert info.value.status == 403 and "sip:eve@lab.example" in info.value.reason


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(MEMBERS), max_size=8),
    st.lists(st.sampled_from([*MEMBERS, "sip:eve@lab.example"]), max_size=6),
)
def test_targets_are_members_only(members: list[str], uri_list: list[str]) -> None:
    try:
        chosen = core.targets(members, uri_list)
    except im.ImError as exc:
        assert exc.status == 403
        assert any(u not in members for u in uri_list)
        return
    assert set(chosen) <= set(members)
    assert set(chosen) == set(uri_list or members)
    if uri_list:
        assert len(chosen) == len(set(chosen))


def test_the_pass_through_body_drops_the_recipient_list_only(kms: KmsCore) -> None:
    out = _send(kms, (PSI,), recipients=(BOB, CAROL))
    ct, body = core.pass_through_body(out.content_type, out.body)
    sent = mime.parse_multipart(out.content_type, out.body)
    kept = mime.parse_multipart(ct, body)
    assert [p.content_type for p in sent] == [im.MIKEY_TYPE, im.SMIME_TYPE, im.LIST_TYPE]
    assert kept == sent[:2]  # the MIKEY and S/MIME parts, headers and bytes as they were
    assert ct == out.content_type  # the sender's boundary
    for part in sent[:2]:
        assert mime.encode_part(part) in body
    incoming = im.read(ct, body)
    assert incoming.recipients == ()
    assert incoming.cms == im.read(out.content_type, out.body).cms


def test_a_body_without_a_recipient_list_passes_as_it_came(kms: KmsCore) -> None:
    out = _send(kms, (PSI,))
    assert core.pass_through_body(out.content_type, out.body) == (out.content_type, out.body)


def test_a_malformed_body_is_400() -> None:
    with pytest.raises(im.ImError) as info:
        core.pass_through_body("multipart/mixed; boundary=x", b"nothing here")
    assert info.value.status == 400


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["x", "b1", "zz"]))
def test_any_body_passes_or_is_refused_with_400(body: bytes, boundary: str) -> None:
    try:
        ct, out = core.pass_through_body(f"multipart/mixed; boundary={boundary}", body)
    except im.ImError as exc:
        assert exc.status == 400
        return
    assert [p for p in mime.parse_multipart(ct, out) if p.content_type == im.LIST_TYPE] == []


def test_members_of() -> None:
    config = ListServerConfig(
        sip=("127.0.0.1", 0),
        core=("127.0.0.1", 5060),
        identity="sip:lists@lab.example",
        kms=KmsLink(("127.0.0.1", 1), Fingerprint("sha-256", bytes(32)), b"k"),
        store=Path(":memory:"),
        groups=(Group(PSI, MEMBERS, True),),
    )
    group = core.members_of(config, PSI)
    assert group is not None and group.members == MEMBERS and group.kms_group
    assert core.members_of(config, BOB) is None


def test_ticket_reuse_stops_a_minute_before_its_end() -> None:
    assert core.ticket_reusable(NOW + 61, NOW)
    assert not core.ticket_reusable(NOW + 60, NOW)
    assert not core.ticket_reusable(None, NOW)


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (200, "delivered"),
        (202, "delivered"),
        (480, "store"),
        (404, "store"),
        (408, "store"),
        (503, "store"),
        (403, "refused"),
        (415, "refused"),
        (500, "refused"),
    ],
)
def test_outcome_of_a_member_s_answer(status: int, result: str) -> None:
    assert core.outcome(status) == result


def test_register_expires() -> None:
    assert core.register_expires("600", []) == 600
    assert core.register_expires("600", ["0"]) == 0
    assert core.register_expires(None, [None]) == 3600
    assert core.register_expires(" 0 ", []) == 0
    for bad in ("soon", "\u00b2", "\u0663", "-1", "1" * 11):
        with pytest.raises(im.ImError) as info:
            core.register_expires(bad, [])
        assert info.value.status == 400


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=12)),
    st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=3),
)
def test_register_expires_is_a_number_or_400(
    expires: str | None, contacts: list[str | None]
) -> None:
    try:
        seconds = core.register_expires(expires, contacts)
    except im.ImError as exc:
        assert exc.status == 400
        return
    given_values = [c for c in contacts if c is not None] or [expires]
    if given_values[0] is None:
        assert seconds == 3600
    else:
        assert seconds == int(given_values[0].strip())
