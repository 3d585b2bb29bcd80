"""The KMS's persistent state in SQLite (standard library): provisioned users, issued tickets
and the replay cache, so a restart loses no user, no ticket and no nonce still in its window.

Pure apart from the database file: no Twisted, no clock (every call that depends on time takes
``now``, seconds since the epoch). Every table is bounded (:class:`StoreLimits`); a full table
refuses with :class:`StoreFull` instead of growing.

The file holds users' shared keys and issued keys in the clear: it is created readable by its
owner only (0600) and refused if anyone else may read it (docs/kms.md, "State").
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

#: Shortest shared key a user may have with the KMS (bytes): RFC 3830's 128-bit keys.
MIN_KEY_BYTES = 16
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    identity TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    groups TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
    ticket_id BLOB PRIMARY KEY,
    initiator TEXT NOT NULL,
    responders TEXT NOT NULL,
    flags INTEGER NOT NULL,
    keys BLOB NOT NULL,
    issued_at REAL NOT NULL,
    valid_from REAL NOT NULL,
    valid_until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_until ON tickets (valid_until);
CREATE TABLE IF NOT EXISTS nonces (
    identity TEXT NOT NULL,
    nonce BLOB NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (identity, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
"""


class StoreError(Exception):
    """The state file cannot be used (unreadable, wrong version, unsafe permissions)."""


class StoreFull(StoreError):
    """A bounded table is full; the request that needed a row is refused."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise StoreError(f"{what} must be a non-empty printable string, not {value!r}")
    return value


@attrs.frozen
class User:
    """A user provisioned with the KMS: its identity (as in IDRi/IDRr), the key it shares
    with the KMS, and the groups (e.g. a conference or list PSI) it is a member of."""

    identity: str
    key: bytes = attrs.field(repr=False)
    groups: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        _text(self.identity, "a user identity")
        if len(self.key) < MIN_KEY_BYTES:
            raise StoreError(
                f"user {self.identity}: the shared key must be at least {MIN_KEY_BYTES} bytes"
            )
        for group in self.groups:
            _text(group, f"user {self.identity}: a group")


@attrs.frozen
class TicketRecord:
    """A ticket the KMS issued: who asked (``initiator``), who may resolve it (identities or
    groups; empty: anybody the KMS knows), the ticket policy flags, the keys it carries (in
    the MIKEY key-data encoding the caller chose), and its validity."""

    ticket_id: bytes
    initiator: str
    responders: tuple[str, ...]
    flags: int
    keys: bytes = attrs.field(repr=False)
    issued_at: float
    valid_from: float
    valid_until: float

    def valid_at(self, now: float) -> bool:
        return self.valid_from <= now < self.valid_until


@attrs.frozen
class StoreLimits:
    """The most each table holds (docs/kms.md, "Bounds")."""

    max_users: int = 100_000
    max_tickets: int = 1_000_000
    max_nonces: int = 1_000_000


def _check_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError(
            f"{path}: KMS state holds keys; it must not be readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}; chmod 600 it)"
        )


class KmsStore:
    """One SQLite database; ``":memory:"`` for a store that ends with the process."""

    def __init__(self, path: Path | str, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self.path = str(path)
        if self.path != ":memory:":
            file = Path(self.path)
            if not file.exists():
                fd = os.open(file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
                os.close(fd)
            _check_permissions(file)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            if self.path != ":memory:":
                # Each write is committed and synced before the reply that depends on it.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a KMS state database ({exc})") from exc

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: schema version {row[0]}, expected {SCHEMA_VERSION}")

    def secret(self, name: str, size: int, random: Callable[[int], bytes]) -> bytes:
        """A key only the KMS holds, made with ``random`` the first time and kept after."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (f"secret:{name}",))
        found = row.fetchone()
        if found is not None:
            return bytes.fromhex(found[0])
        value = random(size)
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)", (f"secret:{name}", value.hex())
        )
        return value

    def close(self) -> None:
        self._db.close()

    # -- users

    def put_user(self, user: User) -> None:
        """Provision or update ``user``."""
        exists = self.get_user(user.identity) is not None
        if not exists and self.count("users") >= self.limits.max_users:
            raise StoreFull(f"{self.limits.max_users} users provisioned (max_users)")
        self._db.execute(
            "INSERT INTO users (identity, key, groups) VALUES (?, ?, ?) "
            "ON CONFLICT (identity) DO UPDATE SET key = excluded.key, groups = excluded.groups",
            (user.identity, user.key, json.dumps(list(user.groups))),
        )

    def get_user(self, identity: str) -> User | None:
        row = self._db.execute(
            "SELECT identity, key, groups FROM users WHERE identity = ?", (identity,)
        ).fetchone()
        return None if row is None else User(row[0], bytes(row[1]), tuple(json.loads(row[2])))

    def users(self) -> Iterator[User]:
        for row in self._db.execute("SELECT identity, key, groups FROM users ORDER BY identity"):
            yield User(row[0], bytes(row[1]), tuple(json.loads(row[2])))

    def remove_user(self, identity: str) -> bool:
        return self._db.execute("DELETE FROM users WHERE identity = ?", (identity,)).rowcount > 0

    # -- tickets

    def put_ticket(self, ticket: TicketRecord, now: float) -> None:
        """Record an issued ticket (expired ones are dropped first to make room)."""
        if self.count("tickets") >= self.limits.max_tickets:
            self.purge(now)
            if self.count("tickets") >= self.limits.max_tickets:
                raise StoreFull(f"{self.limits.max_tickets} tickets valid (max_tickets)")
        try:
            self._db.execute(
                "INSERT INTO tickets (ticket_id, initiator, responders, flags, keys, issued_at,"
                " valid_from, valid_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ticket.ticket_id,
                    ticket.initiator,
                    json.dumps(list(ticket.responders)),
                    ticket.flags,
                    ticket.keys,
                    ticket.issued_at,
                    ticket.valid_from,
                    ticket.valid_until,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError("a ticket with this id exists already") from exc

    def get_ticket(self, ticket_id: bytes) -> TicketRecord | None:
        row = self._db.execute(
            "SELECT ticket_id, initiator, responders, flags, keys, issued_at, valid_from,"
            " valid_until FROM tickets WHERE ticket_id = ?",
            (ticket_id,),
        ).fetchone()
        if row is None:
            return None
        return TicketRecord(
            bytes(row[0]),
            row[1],
            tuple(json.loads(row[2])),
            row[3],
            bytes(row[4]),
            row[5],
            row[6],
            row[7],
        )

    # -- replay cache

    def remember_nonce(self, identity: str, nonce: bytes, expires_at: float, now: float) -> bool:
        """Record ``nonce`` (e.g. T and RAND of a request) from ``identity``; False when it
        was seen before and has not expired: a replay."""
        row = self._db.execute(
            "SELECT expires_at FROM nonces WHERE identity = ? AND nonce = ?", (identity, nonce)
        ).fetchone()
        if row is not None and row[0] > now:
            return False
        if row is None and self.count("nonces") >= self.limits.max_nonces:
            self.purge(now)
            if self.count("nonces") >= self.limits.max_nonces:
                raise StoreFull(f"{self.limits.max_nonces} requests in the replay window")
        self._db.execute(
            "INSERT INTO nonces (identity, nonce, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (identity, nonce) DO UPDATE SET expires_at = excluded.expires_at",
            (identity, nonce, expires_at),
        )
        return True

    # -- housekeeping

    def purge(self, now: float) -> tuple[int, int]:
        """Drop expired tickets and nonces; how many of each."""
        tickets = self._db.execute("DELETE FROM tickets WHERE valid_until <= ?", (now,)).rowcount
        nonces = self._db.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,)).rowcount
        return tickets, nonces

    def count(self, table: str) -> int:
        if table not in ("users", "tickets", "nonces"):
            raise ValueError(f"no table {table!r}")
        (n,) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608
        return int(n)


__all__ = [
    "MIN_KEY_BYTES",
    "KmsStore",
    "StoreError",
    "StoreFull",
    "StoreLimits",
    "TicketRecord",
    "User",
]
