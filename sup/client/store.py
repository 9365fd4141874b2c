"""A device's local state in one SQLite file (mode 0600).

What a client must not lose: its tokens, its place in the event stream (the cursor), the
crypto state (identity, ratchets, sender keys), the messages it decrypted (they cannot be
decrypted twice), group messages waiting for their sender key, and which devices already
hold its sender keys, the devices it has met (to notice one added later), and messages held
until their sender's new identity key is trusted, and messages written while the server could not be
reached (the outbox, sent in order later). The text of the messages it keeps is indexed for full-text
search (FTS5), since the server cannot search encrypted chats. Several changes that belong together
(a ratchet step, the message it decrypted, the cursor of its event) are written in one transaction
with `batch()`, so a crash leaves either all of them or none; SQLite with synchronous=FULL makes a
commit durable.

Every statement runs in a worker thread (`asyncio.to_thread`), one at a time: the event
loop never waits on the disk. One process at a time: `open` takes an exclusive lock on
`<store>.lock` (two processes on one store would reuse ratchet keys and nonces).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sup.client.http import Tokens
from sup.client.tables import keys, messages
from sup.client.tables.keys import KeyReads, KeyWrites
from sup.client.tables.messages import MessageReads, MessageWrites
from sup.client.tables.search import SearchReads, add_search_index

# 2: the full-text index of message text (created, and filled from what is there, on open).
SCHEMA_VERSION = 2

# Single values (tokens, cursor, crypto state) by name; the other tables are described in tables/.
_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value);
"""
_SCHEMA = _STATE_SCHEMA + messages.SCHEMA + keys.SCHEMA

T = TypeVar("T")


class StoreError(Exception):
    """The file is not a SUP client store, or one written by a newer SUP."""


class StoreInUse(StoreError):
    """Another process (or another open ClientStore) holds this store."""


class Batch(MessageWrites, KeyWrites):
    """Changes applied together, in one transaction, when the `async with store.batch()` block ends."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        self.state: dict[str, Any] = {}

    def set(self, **values: Any) -> None:
        """Set state keys (None deletes); see ClientStore's properties for the names in use."""
        for key, value in values.items():
            self.state[key] = value
            if value is None:
                self.statements.append(("DELETE FROM state WHERE key = ?", (key,)))
            else:
                self.statements.append(
                    (
                        "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                        (key, value, value),
                    )
                )

    def set_tokens(self, tokens: Tokens | None) -> None:
        if tokens is None:
            self.set(access_token=None, refresh_token=None, token_expires_at=None)
        else:
            self.set(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                token_expires_at=tokens.expires_at,
            )


def _state_text(key: str) -> property:
    """A text value of the state table, read from memory (None until it is set)."""
    return property(lambda store: store._state.get(key))


class ClientStore(MessageReads, SearchReads, KeyReads):
    """The local state of one device. Open with `await ClientStore.open(path)`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._searchable = False  # whether this SQLite has FTS5 (nearly all do; else search scans)
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> ClientStore:
        store = cls(path)
        await asyncio.to_thread(store._open_sync)
        return store

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _open_sync(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # flock, not the SQLite lock: SQLite serialises statements, but two processes would each load
        # the same ratchet state and encrypt with the same message keys and nonces.
        lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StoreInUse(f"{self.path} is in use by another process (close it there first)") from None
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        try:
            self._open_database()
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def _open_database(self) -> None:
        # Created 0600 before SQLite touches it: it holds tokens and private keys. SQLite gives
        # its -wal and -shm files the same mode as the database file.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # a committed ratchet step survives a power cut
            conn.execute("PRAGMA busy_timeout = 5000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer SUP (store version {version})")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):  # not executescript: it would commit on its own
                if statement.strip():
                    conn.execute(statement)
            self._searchable = add_search_index(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            self._state = dict(conn.execute("SELECT key, value FROM state").fetchall())
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path} is not a SUP client store: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(self._locked, conn.close)
        self._unlock()

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the store is closed")
        return await asyncio.to_thread(self._locked, lambda: fn(conn))

    # -- writes ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Collect changes; they are committed together when the block ends without an exception."""
        batch = Batch()
        yield batch
        await self.apply(batch)

    async def apply(self, batch: Batch) -> None:
        if not batch.statements:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in batch.statements:
                    conn.execute(sql, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(write)
        for key, value in batch.state.items():
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = value

    async def set(self, **values: Any) -> None:
        async with self.batch() as batch:
            batch.set(**values)

    async def set_tokens(self, tokens: Tokens | None) -> None:
        async with self.batch() as batch:
            batch.set_tokens(tokens)

    async def put_chat(self, chat: dict[str, Any]) -> None:
        async with self.batch() as batch:
            batch.put_chat(chat)

    # -- state (read from memory: it was loaded at open and is updated on every commit) -----

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    server_url = _state_text("server_url")
    user_id = _state_text("user_id")
    username = _state_text("username")
    device_id = _state_text("device_id")

    @property
    def tokens(self) -> Tokens | None:
        access, refresh = self._state.get("access_token"), self._state.get("refresh_token")
        if not access or not refresh:
            return None
        return Tokens(access, refresh, float(self._state.get("token_expires_at") or 0))

    @property
    def cursor(self) -> int | None:
        """The last event cursor whose effects are committed here."""
        value = self._state.get("cursor")
        return None if value is None else int(value)

    @property
    def crypto(self) -> bytes | None:
        """The serialised crypto state (`DeviceCrypto.to_bytes()`)."""
        value = self._state.get("crypto")
        return None if value is None else bytes(value)
