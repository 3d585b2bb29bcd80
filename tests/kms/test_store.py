"""The KMS state in SQLite: users, tickets and the replay cache survive a restart; every
table is bounded; the file is kept from other users."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kms.store import KmsStore, StoreError, StoreFull, StoreLimits, TicketRecord, User

KEY = bytes(range(16))


def _ticket(n: int, until: float = 100.0) -> TicketRecord:
    return TicketRecord(
        ticket_id=n.to_bytes(16, "big"),
        initiator="sip:alice@e2ae.lab",
        responders=("sip:bob@e2ae.lab", "sip:conf@e2ae.lab"),
        flags=0b1010,
        keys=b"\x01" * 20 + n.to_bytes(2, "big"),
        issued_at=1.0,
        valid_from=1.0,
        valid_until=until,
    )


def test_a_restart_keeps_users_tickets_and_nonces(tmp_path: Path) -> None:
    path = tmp_path / "kms.sqlite"
    store = KmsStore(path)
    store.put_user(User("sip:alice@e2ae.lab", KEY, ("sip:conf@e2ae.lab",)))
    store.put_ticket(_ticket(1), now=1.0)
    assert store.remember_nonce("sip:alice@e2ae.lab", b"T+RAND", expires_at=50.0, now=1.0)
    store.close()

    again = KmsStore(path)
    assert again.get_user("sip:alice@e2ae.lab") == User(
        "sip:alice@e2ae.lab", KEY, ("sip:conf@e2ae.lab",)
    )
    assert again.get_ticket((1).to_bytes(16, "big")) == _ticket(1)
    assert not again.remember_nonce("sip:alice@e2ae.lab", b"T+RAND", expires_at=60.0, now=2.0)


def test_the_file_is_created_for_its_owner_only_and_refused_when_others_may_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kms.sqlite"
    KmsStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        KmsStore(path)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "kms.sqlite"
    path.write_bytes(b"not sqlite at all" * 100)
    os.chmod(path, 0o600)
    with pytest.raises(StoreError, match="not a KMS state database"):
        KmsStore(path)


def test_updating_a_user_replaces_key_and_groups() -> None:
    store = KmsStore(":memory:")
    store.put_user(User("sip:bob@e2ae.lab", KEY))
    store.put_user(User("sip:bob@e2ae.lab", KEY[::-1], ("g",)))
    assert [u.key for u in store.users()] == [KEY[::-1]]
    assert store.get_user("sip:bob@e2ae.lab").groups == ("g",)  # type: ignore[union-attr]
    assert store.remove_user("sip:bob@e2ae.lab") and not store.remove_user("sip:bob@e2ae.lab")
    assert store.get_user("sip:bob@e2ae.lab") is None


@pytest.mark.parametrize(
    ("identity", "key", "words"),
    [("", KEY, "non-empty"), ("sip:a\n@x", KEY, "printable"), ("sip:a@x", b"short", "16 bytes")],
)
def test_a_bad_user_is_refused(identity: str, key: bytes, words: str) -> None:
    with pytest.raises(StoreError, match=words):
        User(identity, key)


def test_a_users_key_is_not_in_its_repr() -> None:
    assert KEY.hex() not in repr(User("sip:a@x", KEY)) and repr(KEY) not in repr(
        User("sip:a@x", KEY)
    )


def test_a_nonce_is_fresh_again_after_it_expires() -> None:
    store = KmsStore(":memory:")
    assert store.remember_nonce("u", b"n", expires_at=10.0, now=0.0)
    assert not store.remember_nonce("u", b"n", expires_at=20.0, now=9.999)
    assert store.remember_nonce("u", b"n", expires_at=30.0, now=10.0)
    assert store.remember_nonce("v", b"n", expires_at=30.0, now=10.0)


def test_ticket_validity_and_purge() -> None:
    store = KmsStore(":memory:")
    store.put_ticket(_ticket(1, until=10.0), now=1.0)
    store.put_ticket(_ticket(2, until=20.0), now=1.0)
    ticket = store.get_ticket((1).to_bytes(16, "big"))
    assert ticket is not None and ticket.valid_at(9.9) and not ticket.valid_at(10.0)
    assert not ticket.valid_at(0.5)
    assert store.purge(10.0) == (1, 0)
    assert store.get_ticket((1).to_bytes(16, "big")) is None
    assert store.count("tickets") == 1
    with pytest.raises(StoreError, match="exists already"):
        store.put_ticket(_ticket(2), now=1.0)


def test_full_tables_refuse_after_dropping_what_expired() -> None:
    store = KmsStore(":memory:", StoreLimits(max_users=1, max_tickets=2, max_nonces=2))
    store.put_user(User("a", KEY))
    store.put_user(User("a", KEY[::-1]))  # an update needs no new row
    with pytest.raises(StoreFull, match="max_users"):
        store.put_user(User("b", KEY))

    store.put_ticket(_ticket(1, until=5.0), now=1.0)
    store.put_ticket(_ticket(2, until=50.0), now=1.0)
    store.put_ticket(_ticket(3, until=50.0), now=6.0)  # ticket 1 expired: room made
    with pytest.raises(StoreFull, match="max_tickets"):
        store.put_ticket(_ticket(4, until=50.0), now=6.0)
    assert store.count("tickets") == 2

    assert store.remember_nonce("a", b"1", expires_at=5.0, now=0.0)
    assert store.remember_nonce("a", b"2", expires_at=50.0, now=0.0)
    assert store.remember_nonce("a", b"3", expires_at=50.0, now=6.0)
    with pytest.raises(StoreFull, match="replay window"):
        store.remember_nonce("a", b"4", expires_at=50.0, now=6.0)
