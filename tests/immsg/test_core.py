"""The protected MESSAGE body end to end without a socket: a KMS in process issues a forking
ticket to the sender, the sender protects a text, the receiver reads it, resolves the ticket
as itself and opens it; every refusal has its SIP status; openssl cms opens our body and
ours opens openssl's."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immsg import cms, mime
from immsg import core as im
from kms.client import forked_keys, message_request_init, open_reply, resolve_init, ticket_of
from kms.core import KmsCore
from kms.store import KmsStore, User
from mikey import transfer
from mikey.message import decode
from tests.conftest import require_tool

KMS_ID = "kms.e2ae.lab"
NOW = 1_800_000_000.0
ALICE = User("sip:alice@e2ae.lab", hashlib.sha256(b"alice").digest()[:16])
BOB = User("sip:bob@e2ae.lab", hashlib.sha256(b"bob").digest()[:16])
CAROL = User("sip:carol@e2ae.lab", hashlib.sha256(b"carol").digest()[:16])


@pytest.fixture
def kms() -> KmsCore:
    store = KmsStore(":memory:")
    for user in (ALICE, BOB, CAROL):
        store.put_user(user)
    return KmsCore(KMS_ID, store)


def _ask(kms: KmsCore, user: User, request: object, now: float = NOW) -> tuple[object, tuple]:
    from mikey.message import Message

    assert isinstance(request, Message)
    reply = kms.handle(request.encode(), (user.identity,), now)
    assert reply.status == 200, reply.outcome
    return open_reply(reply.body, user.key, request)


def _send(
    kms: KmsCore, text: str = "hello Bob", to: str = BOB.identity, **kw: object
) -> im.Outgoing:
    request = message_request_init(ALICE.identity, ALICE.key, (to,), NOW, kms=KMS_ID)
    reply, keys = _ask(kms, ALICE, request)
    forked = forked_keys(keys)  # type: ignore[arg-type]
    ((spi, gtgk),) = forked.gtgks.items()
    return im.protect(
        im.text_entity(text),
        sender=ALICE.identity,
        recipient=to,
        ticket=ticket_of(reply),  # type: ignore[arg-type]
        mpki=forked.mpki,
        mpkr=forked.mpkr,
        gtgk=gtgk,
        gtgk_spi=spi,
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )


def _receive(kms: KmsCore, out_ct: str, body: bytes, user: User = BOB) -> str:
    incoming = im.read(out_ct, body)
    im.check_fresh(incoming, NOW + 1)
    info = incoming.transfer
    request = resolve_init(
        user.identity, user.key, incoming.ticket, NOW + 1, kms=KMS_ID, csb_id=info.csb_id
    )
    _, keys = _ask(kms, user, request, NOW + 1)
    forked = forked_keys(keys)  # type: ignore[arg-type]
    return im.text_of(im.open_content(incoming, mpki=forked.mpki, gtgk=forked.gtgks[info.spi]))


def test_a_text_protected_for_bob_opens_for_bob(kms: KmsCore) -> None:
    out = _send(kms, "héllo Bob")
    assert out.content_type.startswith("multipart/mixed;")
    assert b"h\xc3\xa9llo" not in out.body and b"hello" not in out.body
    assert _receive(kms, out.content_type, out.body) == "héllo Bob"
    parts = mime.parse_multipart(out.content_type, out.body)
    assert [p.content_type for p in parts] == [im.MIKEY_TYPE, im.SMIME_TYPE]
    init = decode(parts[0].body)
    info = transfer.read_message_transfer_init(init)
    assert info.initiator == ALICE.identity and info.responder == BOB.identity
    assert info.body_digest == hashlib.sha256(parts[1].body).digest()


def test_carol_who_is_not_named_gets_no_key(kms: KmsCore) -> None:
    out = _send(kms)
    incoming = im.read(out.content_type, out.body)
    request = resolve_init(
        CAROL.identity, CAROL.key, incoming.ticket, NOW, kms=KMS_ID, csb_id=incoming.transfer.csb_id
    )
    reply = kms.handle(request.encode(), (CAROL.identity,), NOW)
    assert reply.status == 403 and "does not name" in reply.outcome


def test_the_uri_list_travels_unprotected(kms: KmsCore) -> None:
    members = ("sip:bob@e2ae.lab", "sip:carol@e2ae.lab")
    out = _send(kms, to="sip:friends@e2ae.lab", recipients=members)
    assert b'uri="sip:carol@e2ae.lab"' in out.body
    incoming = im.read(out.content_type, out.body)
    assert incoming.recipients == members


def _replace_part(out: im.Outgoing, index: int, body: bytes) -> tuple[str, bytes]:
    parts = list(mime.parse_multipart(out.content_type, out.body))
    parts[index] = mime.Part(parts[index].headers, body)
    return mime.multipart(parts)


def test_a_tampered_cms_body_is_403_before_any_decryption(kms: KmsCore) -> None:
    out = _send(kms)
    der = mime.parse_multipart(out.content_type, out.body)[1].body
    flipped = der[:-5] + bytes([der[-5] ^ 1]) + der[-4:]
    ct, body = _replace_part(out, 1, flipped)
    with pytest.raises(im.ImError) as caught:
        _receive(kms, ct, body)
    assert caught.value.status == 403
    assert "body is not the one the TRANSFER_INIT names" in caught.value.reason


def test_a_tampered_transfer_init_is_refused(kms: KmsCore) -> None:
    out = _send(kms)
    init = mime.parse_multipart(out.content_type, out.body)[0].body
    # the last byte is in Vr of the Initiator Data (the KMS refuses), a byte inside the IDRr
    # changes what Vi covers (we refuse)
    at = init.index(b"sip:bob") + 4
    changed = init[:at] + b"c" + init[at + 1 :]
    ct, body = _replace_part(out, 0, changed)
    with pytest.raises(im.ImError) as caught:
        _receive(kms, ct, body)
    assert caught.value.status == 403


def test_a_body_for_another_key_id_is_493(kms: KmsCore) -> None:
    out = _send(kms)
    parts = mime.parse_multipart(out.content_type, out.body)
    other = cms.seal(b"Content-Type: text/plain\r\n\r\nx", bytes(16), b"\x01\x02\x03")
    ct, body = mime.multipart([parts[0], mime.smime_part(other)])
    with pytest.raises(im.ImError) as caught:
        im.read(ct, body)
    assert caught.value.status == 493 and "key id 010203" in caught.value.reason


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"hello", 415),
        ("multipart/mixed; boundary=x", b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--", 415),
        ("multipart/mixed; boundary=x", b"--x\r\n\r\n", 400),
        ("multipart/mixed; boundary=x", b"x" * (im.MAX_BODY_BYTES + 1), 413),
    ],
)
def test_bad_bodies_get_their_status(content_type: str, body: bytes, status: int) -> None:
    with pytest.raises(im.ImError) as caught:
        im.read(content_type, body)
    assert caught.value.status == status and caught.value.reason


def test_replays_and_stale_timestamps_are_403(kms: KmsCore) -> None:
    out = _send(kms)
    incoming = im.read(out.content_type, out.body)
    cache = im.ReplayCache()
    until = im.check_fresh(incoming, NOW)
    cache.check(incoming.nonce, NOW)
    cache.remember(incoming.nonce, until, NOW)
    with pytest.raises(im.ImError, match="replayed"):
        cache.check(incoming.nonce, NOW + 10)
    _, end = im.ticket_validity(incoming.ticket)
    assert end is not None and until > end
    with pytest.raises(im.ImError, match="expired"):
        im.check_fresh(incoming, end + im.FRESHNESS + 1)
    with pytest.raises(im.ImError, match="future"):
        im.check_fresh(incoming, NOW - im.FRESHNESS - 1)
    # an old message whose ticket is still valid is fine: it may have been stored
    assert im.check_fresh(incoming, NOW + 1800) == until


def test_the_replay_cache_is_bounded() -> None:
    cache = im.ReplayCache(limit=3)
    for n in range(10):
        cache.remember(bytes([n]), NOW + 100, NOW)
    assert len(cache) == 3
    cache.check(bytes([0]), NOW)  # the oldest went first
    with pytest.raises(im.ImError):
        cache.check(bytes([9]), NOW)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4000))
def test_any_body_is_read_or_refused_with_a_status(body: bytes) -> None:
    for ct in ("multipart/mixed; boundary=abc", "multipart/mixed"):
        try:
            im.read(ct, body)
        except im.ImError as exc:
            assert 400 <= exc.status < 500


# -- openssl cms, the real peer --------------------------------------------------------------


def _keys_for_bob(kms: KmsCore, out_ct: str, body: bytes) -> tuple[bytes, bytes, im.Incoming]:
    incoming = im.read(out_ct, body)
    info = incoming.transfer
    request = resolve_init(
        BOB.identity, BOB.key, incoming.ticket, NOW, kms=KMS_ID, csb_id=info.csb_id
    )
    _, keys = _ask(kms, BOB, request)
    forked = forked_keys(keys)  # type: ignore[arg-type]
    kek = transfer.mime_kek(forked.gtgks[info.spi], info.cs_id, info.randri)
    return kek, incoming.kek_id, incoming


def test_openssl_cms_decrypts_the_body_our_sender_made(kms: KmsCore, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    out = _send(kms, "for openssl")
    kek, kek_id, incoming = _keys_for_bob(kms, out.content_type, out.body)
    (tmp_path / "m.der").write_bytes(incoming.cms)
    result = subprocess.run(
        [
            openssl,
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "m.der"),
            "-secretkey",
            kek.hex(),
            "-secretkeyid",
            kek_id.hex(),
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert im.text_of(result.stdout) == "for openssl"


def test_a_body_openssl_cms_encrypted_is_accepted(kms: KmsCore, tmp_path: Path) -> None:
    """The sender's TRANSFER_INIT and keys, the CMS object from openssl cms -encrypt."""
    openssl = require_tool("openssl")
    request = message_request_init(ALICE.identity, ALICE.key, (BOB.identity,), NOW, kms=KMS_ID)
    reply, keys = _ask(kms, ALICE, request)
    forked = forked_keys(keys)  # type: ignore[arg-type]
    ((spi, gtgk),) = forked.gtgks.items()
    randri, csb = b"r" * 16, 0x01020304
    kek = transfer.mime_kek(gtgk, 1, randri)
    kek_id = transfer.mime_kek_id(csb, 1, spi)
    (tmp_path / "m.txt").write_bytes(im.text_entity("made by openssl"))
    subprocess.run(
        [
            openssl,
            "cms",
            "-encrypt",
            "-binary",
            "-aes-128-gcm",
            "-in",
            str(tmp_path / "m.txt"),
            "-secretkey",
            kek.hex(),
            "-secretkeyid",
            kek_id.hex(),
            "-outform",
            "DER",
            "-out",
            str(tmp_path / "m.der"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    der = (tmp_path / "m.der").read_bytes()
    init = transfer.message_transfer_init(
        ALICE.identity,
        BOB.identity,
        ticket_of(reply),
        forked.mpki,
        forked.mpkr,
        spi,  # type: ignore[arg-type]
        hashlib.sha256(der).digest(),
        NOW,
        csb_id=csb,
        randri=randri,
    )
    ct, body = mime.multipart([mime.mikey_part(init.encode()), mime.smime_part(der)])
    assert _receive(kms, ct, body) == "made by openssl"
