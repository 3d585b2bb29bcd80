"""What the list server keeps across a restart, in one SQLite file (created 0600): the
messages stored for members that could not be reached, and the members' registrations.

A stored message is the body protected for that member (the sender's parts, or the list
server's own protection): never plaintext, never a key. It is kept until its ticket's TRe
(``expires_at``), after which nobody could resolve it."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import attrs

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    member TEXT NOT NULL,
    grp TEXT NOT NULL,
    sender TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_member ON messages (member, id);
CREATE TABLE IF NOT EXISTS registrations (member TEXT PRIMARY KEY, expires_at REAL NOT NULL);
"""


class StoreError(Exception):
    """The store file cannot be used (permissions, not a list server database)."""


class StoreFull(StoreError):
    """No room for one more message: ``scope`` is ``member`` or ``total``."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"the store holds {limit} messages ({scope} limit)")
        self.scope = scope
        self.limit = limit


@attrs.frozen
class Stored:
    """One message waiting for its member."""

    id: int
    member: str
    group: str
    sender: str
    content_type: str
    body: bytes = attrs.field(repr=False)
    stored_at: float
    expires_at: float


class MessageStore:
    """One SQLite database; ``":memory:"`` for a store that ends with the process."""

    def __init__(
        self, path: Path | str, *, max_per_member: int = 100, max_total: int = 10_000
    ) -> None:
        self.max_per_member = max_per_member
        self.max_total = max_total
        self.path = str(path)
        if self.path != ":memory:":
            file = Path(self.path)
            if not file.exists():
                fd = os.open(file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
                os.close(fd)
            mode = file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise StoreError(
                    f"{file}: the list server's store must not be readable by group or others"
                    f" (mode {stat.S_IMODE(mode):04o}; chmod 600 it)"
                )
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path}: schema version {row[0]}, expected {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a list server database ({exc})") from None

    def close(self) -> None:
        self._db.close()

    # -- messages

    def count(self, member: str | None = None) -> int:
        if member is None:
            row = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE member = ?", (member,)
            ).fetchone()
        return int(row[0])

    def put(
        self,
        *,
        member: str,
        group: str,
        sender: str,
        content_type: str,
        body: bytes,
        now: float,
        expires_at: float,
    ) -> int:
        """Store a message for ``member``; its id. :class:`StoreFull` when the member's or
        the whole store's limit is reached (nothing already stored is dropped)."""
        if self.count() >= self.max_total:
            raise StoreFull("total", self.max_total)
        if self.count(member) >= self.max_per_member:
            raise StoreFull("member", self.max_per_member)
        cursor = self._db.execute(
            "INSERT INTO messages (member, grp, sender, content_type, body, stored_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (member, group, sender, content_type, body, now, expires_at),
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def pending(self, member: str, now: float) -> list[Stored]:
        """The messages for ``member`` that have not expired, oldest first."""
        rows = self._db.execute(
            "SELECT id, member, grp, sender, content_type, body, stored_at, expires_at"
            " FROM messages WHERE member = ? AND expires_at > ? ORDER BY id",
            (member, now),
        )
        return [
            Stored(int(r[0]), r[1], r[2], r[3], r[4], bytes(r[5]), float(r[6]), float(r[7]))
            for r in rows
        ]

    def delivered(self, message_id: int) -> None:
        self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def expire(self, now: float) -> int:
        """Drop the messages whose ticket has expired; how many."""
        cursor = self._db.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
        return int(cursor.rowcount)

    # -- registrations

    def register(self, member: str, expires_at: float) -> None:
        """Record ``member``'s registration until ``expires_at`` (0: deregistered)."""
        self._db.execute(
            "INSERT INTO registrations (member, expires_at) VALUES (?, ?)"
            " ON CONFLICT (member) DO UPDATE SET expires_at = excluded.expires_at",
            (member, expires_at),
        )

    def registration(self, member: str) -> float | None:
        """Until when ``member`` is registered (in the past: not now); None if never told."""
        row = self._db.execute(
            "SELECT expires_at FROM registrations WHERE member = ?", (member,)
        ).fetchone()
        return None if row is None else float(row[0])


__all__ = ["MessageStore", "StoreError", "StoreFull", "Stored"]
