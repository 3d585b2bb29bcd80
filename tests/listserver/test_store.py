"""The list server's store: stored messages (bounded per member and in all, oldest first,
expired at their ticket's TRe), registrations, a 0600 file, nothing lost across a restart."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listserver.store import MessageStore, StoreError, StoreFull

NOW = 1_800_000_000.0
BOB = "sip:bob@lab.example"
CAROL = "sip:carol@lab.example"
GROUP = "sip:friends@lab.example"


def _put(store: MessageStore, member: str = BOB, body: bytes = b"x", **kw: float) -> int:
    return store.put(
        member=member,
        group=GROUP,
        sender="<sip:alice@lab.example>;tag=1",
        content_type="multipart/mixed; boundary=b",
        body=body,
        now=kw.get("now", NOW),
        expires_at=kw.get("expires_at", NOW + 3600),
    )


def test_put_pending_delivered(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite")
    first = _put(store, body=b"one")
    second = _put(store, body=b"two", now=NOW + 1)
    _put(store, CAROL, body=b"for carol")
    waiting = store.pending(BOB, NOW + 2)
    assert [m.body for m in waiting] == [b"one", b"two"]
    assert [m.id for m in waiting] == [first, second]
    assert waiting[0].group == GROUP and waiting[0].sender.startswith("<sip:alice")
    assert waiting[0].content_type == "multipart/mixed; boundary=b"
    assert waiting[1].stored_at == NOW + 1 and waiting[1].expires_at == NOW + 3600
    store.delivered(first)
    assert [m.body for m in store.pending(BOB, NOW + 2)] == [b"two"]
    assert [m.body for m in store.pending(CAROL, NOW + 2)] == [b"for carol"]
    assert "body=" not in repr(waiting[0])


def test_nothing_is_lost_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = MessageStore(path)
    _put(store, body=b"kept")
    store.register(CAROL, NOW + 600)
    store.close()
    again = MessageStore(path)
    assert [m.body for m in again.pending(BOB, NOW)] == [b"kept"]
    assert again.registration(CAROL) == NOW + 600
    assert again.registration(BOB) is None


def test_the_file_is_created_0600_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    MessageStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        MessageStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"not sqlite at all" * 100)
    path.chmod(0o600)
    with pytest.raises(StoreError, match="not a list server database"):
        MessageStore(path)


def test_the_limits_per_member_and_in_all_keep_what_is_stored() -> None:
    store = MessageStore(":memory:", max_per_member=2, max_total=3)
    _put(store)
    _put(store)
    with pytest.raises(StoreFull) as info:
        _put(store)
    assert info.value.scope == "member"
    _put(store, CAROL)
    with pytest.raises(StoreFull) as info:
        _put(store, "sip:dave@lab.example")
    assert info.value.scope == "total"
    assert store.count() == 3 and store.count(BOB) == 2


def test_expired_messages_are_not_pending_and_are_dropped() -> None:
    store = MessageStore(":memory:")
    _put(store, body=b"old", expires_at=NOW + 10)
    _put(store, body=b"new", expires_at=NOW + 100)
    assert [m.body for m in store.pending(BOB, NOW + 10)] == [b"new"]
    assert store.expire(NOW + 50) == 1
    assert store.count() == 1
    assert store.expire(NOW + 50) == 0


def test_a_deregistration_is_recorded() -> None:
    store = MessageStore(":memory:")
    store.register(BOB, NOW + 60)
    assert store.registration(BOB) == NOW + 60
    store.register(BOB, 0.0)
    assert store.registration(BOB) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([BOB, CAROL]), st.binary(max_size=64)), max_size=20))
def test_pending_returns_each_member_s_messages_in_order(items: list[tuple[str, bytes]]) -> None:
    store = MessageStore(":memory:")
    for member, body in items:
        _put(store, member, body)
    for member in (BOB, CAROL):
        assert [m.body for m in store.pending(member, NOW)] == [b for m, b in items if m == member]
