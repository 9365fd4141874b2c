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
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from sup.client.http import Tokens
from sup.searchtext import SNIPPET_CHARS, Terms, snippet, text_words

# 2: the full-text index of message text (created, and filled from what is there, on open).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS chats (chat_id TEXT PRIMARY KEY, info TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    chat_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender_user_id TEXT,
    sender_device_id TEXT,
    status TEXT NOT NULL,
    content TEXT,
    reason TEXT,
    created_at INTEGER,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages (chat_id, seq);
CREATE TABLE IF NOT EXISTS pending (
    message_id TEXT PRIMARY KEY,
    chat_id TEXT NOT NULL,
    sender_user_id TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    frame TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_by_sender ON pending (chat_id, sender_user_id, sender_device_id);
CREATE TABLE IF NOT EXISTS sender_key_shares (
    chat_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    distribution_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, device_id)
);
CREATE TABLE IF NOT EXISTS sender_key_rotations (chat_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    identity_key BLOB NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE IF NOT EXISTS held (
    frame_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    frame TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_by_sender ON held (user_id, device_id);
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    chat_id TEXT NOT NULL,
    content TEXT NOT NULL,
    queued_at REAL NOT NULL
);
"""

# The text of messages shown or sent here ("ok", "sent"), kept in step by triggers in the same
# transaction as the message: an edit re-indexes it, a deletion (content gone) takes it out. A plain
# FTS5 table (it keeps its own copy of the text), so taking out a row it never had is harmless.
_SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE message_text USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER message_text_insert AFTER INSERT ON messages
WHEN new.status IN ('ok', 'sent') AND json_extract(new.content, '$.text') IS NOT NULL BEGIN
    INSERT INTO message_text (rowid, text) VALUES (new.rowid, json_extract(new.content, '$.text'));
END;
CREATE TRIGGER message_text_update AFTER UPDATE OF status, content ON messages BEGIN
    DELETE FROM message_text WHERE rowid = old.rowid;
    INSERT INTO message_text (rowid, text) SELECT new.rowid, json_extract(new.content, '$.text')
        WHERE new.status IN ('ok', 'sent') AND json_extract(new.content, '$.text') IS NOT NULL;
END;
CREATE TRIGGER message_text_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_text WHERE rowid = old.rowid;
END;
INSERT INTO message_text (rowid, text) SELECT rowid, json_extract(content, '$.text') FROM messages
    WHERE status IN ('ok', 'sent') AND json_extract(content, '$.text') IS NOT NULL;
"""
_MESSAGE_KEYS = (
    "message_id",
    "chat_id",
    "seq",
    "sender_user_id",
    "sender_device_id",
    "status",
    "content",
    "reason",
    "created_at",
)

T = TypeVar("T")


class StoreError(Exception):
    """The file is not a SUP client store, or one written by a newer SUP."""


class StoreInUse(StoreError):
    """Another process (or another open ClientStore) holds this store."""


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Batch:
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

    def put_chat(self, chat: dict[str, Any]) -> None:
        self.statements.append(
            (
                "INSERT INTO chats (chat_id, info, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (chat_id) DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
                (chat["id"], _json(chat), time.time()),
            )
        )

    def forget_chat(self, chat_id: str) -> None:
        self.statements.append(("DELETE FROM chats WHERE chat_id = ?", (chat_id,)))

    def put_message(
        self,
        *,
        message_id: str,
        chat_id: str,
        seq: int,
        sender_user_id: str | None,
        sender_device_id: str | None,
        status: str,
        content: dict[str, Any] | None,
        reason: str | None = None,
        created_at: int | None = None,
    ) -> None:
        """A message as this device knows it (`status`: "ok", "sent", "undecryptable" or "deleted");
        replaces an older copy."""
        self.statements.append(
            (
                "INSERT INTO messages (message_id, chat_id, seq, sender_user_id, sender_device_id, status, content,"
                " reason, created_at, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id) DO UPDATE SET status = excluded.status, content = excluded.content,"
                " reason = excluded.reason, stored_at = excluded.stored_at",
                (
                    message_id,
                    chat_id,
                    seq,
                    sender_user_id,
                    sender_device_id,
                    status,
                    None if content is None else _json(content),
                    reason,
                    created_at,
                    time.time(),
                ),
            )
        )

    def mark_deleted(self, message_id: str) -> None:
        """A message deleted (for everyone, or for me): its content goes, the row stays so it is never shown again."""
        self.statements.append(
            (
                "UPDATE messages SET status = 'deleted', content = NULL, reason = NULL, stored_at = ?"
                " WHERE message_id = ?",
                (time.time(), message_id),
            )
        )

    def queue_outgoing(self, client_id: str, chat_id: str, content: dict[str, Any]) -> None:
        """A message to send when the server can be reached, after those queued before it."""
        self.statements.append(
            (
                "INSERT INTO outbox (client_id, chat_id, content, queued_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (client_id) DO NOTHING",
                (client_id, chat_id, _json(content), time.time()),
            )
        )

    def update_outgoing(self, client_id: str, content: dict[str, Any]) -> None:
        """A queued message's content changed (what it waits for); it keeps its place in line."""
        self.statements.append(("UPDATE outbox SET content = ? WHERE client_id = ?", (_json(content), client_id)))

    def dequeue_outgoing(self, client_id: str) -> None:
        self.statements.append(("DELETE FROM outbox WHERE client_id = ?", (client_id,)))

    def add_pending(self, frame: dict[str, Any]) -> None:
        """A group message waiting for its sender's key (the `message.new` frame, as received)."""
        message = frame["message"]
        self.statements.append(
            (
                "INSERT INTO pending (message_id, chat_id, sender_user_id, sender_device_id, frame, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING",
                (
                    message["id"],
                    message["chat_id"],
                    message["sender_id"],
                    message["sender_device_id"],
                    _json(frame),
                    time.time(),
                ),
            )
        )

    def remove_pending(self, message_id: str) -> None:
        self.statements.append(("DELETE FROM pending WHERE message_id = ?", (message_id,)))

    def shared_sender_key(self, chat_id: str, distribution_id: str, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            self.statements.append(
                (
                    "INSERT INTO sender_key_shares (chat_id, device_id, distribution_id) VALUES (?, ?, ?)"
                    " ON CONFLICT (chat_id, device_id) DO UPDATE SET distribution_id = excluded.distribution_id",
                    (chat_id, device_id, distribution_id),
                )
            )

    def unshare_sender_key(self, chat_id: str, device_ids: Iterable[str]) -> None:
        """These devices do not hold my sender key after all (the server said so): send it again."""
        for device_id in device_ids:
            self.statements.append(
                ("DELETE FROM sender_key_shares WHERE chat_id = ? AND device_id = ?", (chat_id, device_id))
            )

    def record_device(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        """A device of a user as met (first contact, a notice shown, or a new identity accepted)."""
        self.statements.append(
            (
                "INSERT INTO devices (user_id, device_id, identity_key, first_seen) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET identity_key = excluded.identity_key",
                (user_id, device_id, identity_key, time.time()),
            )
        )

    def forget_device(self, user_id: str, device_id: str) -> None:
        self.statements.append(("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)))

    def hold(self, frame_id: str, user_id: str, device_id: str, frame: dict[str, Any]) -> None:
        """An event from a device whose new identity key is not trusted yet, kept until it is (or is rejected)."""
        self.statements.append(
            (
                "INSERT INTO held (frame_id, user_id, device_id, frame, added_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (frame_id) DO NOTHING",
                (frame_id, user_id, device_id, _json(frame), time.time()),
            )
        )

    def release(self, frame_id: str) -> None:
        self.statements.append(("DELETE FROM held WHERE frame_id = ?", (frame_id,)))

    def forget_sender_key_shares(self, chat_id: str) -> None:
        self.statements.append(("DELETE FROM sender_key_shares WHERE chat_id = ?", (chat_id,)))

    def need_rotation(self, chat_id: str) -> None:
        self.statements.append(
            ("INSERT INTO sender_key_rotations (chat_id) VALUES (?) ON CONFLICT DO NOTHING", (chat_id,))
        )

    def rotated(self, chat_id: str) -> None:
        self.statements.append(("DELETE FROM sender_key_rotations WHERE chat_id = ?", (chat_id,)))
        self.forget_sender_key_shares(chat_id)


class ClientStore:
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
            self._searchable = _add_search_index(conn)
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

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda conn: conn.execute(sql, params).fetchall())

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

    # -- state (read from memory: it was loaded at open and is updated on every commit) -----

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    @property
    def server_url(self) -> str | None:
        return self._state.get("server_url")

    @property
    def user_id(self) -> str | None:
        return self._state.get("user_id")

    @property
    def username(self) -> str | None:
        return self._state.get("username")

    @property
    def device_id(self) -> str | None:
        return self._state.get("device_id")

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

    # -- chats -------------------------------------------------------------------------------

    async def chat(self, chat_id: str) -> dict[str, Any] | None:
        rows = await self._query("SELECT info FROM chats WHERE chat_id = ?", (chat_id,))
        return msgspec.json.decode(rows[0][0]) if rows else None

    async def chats(self) -> list[dict[str, Any]]:
        rows = await self._query("SELECT info FROM chats ORDER BY updated_at DESC")
        return [msgspec.json.decode(r[0]) for r in rows]

    async def put_chat(self, chat: dict[str, Any]) -> None:
        async with self.batch() as batch:
            batch.put_chat(chat)

    # -- messages ----------------------------------------------------------------------------

    async def messages(self, chat_id: str, *, limit: int = 100, before_seq: int | None = None) -> list[dict[str, Any]]:
        """Locally known messages of a chat, oldest first (the last `limit` before `before_seq`)."""
        rows = await self._query(
            "SELECT message_id, chat_id, seq, sender_user_id, sender_device_id, status, content, reason, created_at"
            " FROM messages WHERE chat_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (chat_id, before_seq if before_seq is not None else 2**62, limit),
        )
        return [_message(row) for row in reversed(rows)]

    async def search(self, terms: Terms, *, chat_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Messages kept here whose text has every term, newest first, each with a `snippet`:
        (text, is a match) segments around the first match."""
        where, params = "", []
        if chat_id is not None:
            where, params = " AND m.chat_id = ?", [chat_id]
        columns = ", ".join(f"m.{key}" for key in _MESSAGE_KEYS)
        if self._searchable:
            rows = await self._query(
                f"SELECT {columns} FROM message_text t JOIN messages m ON m.rowid = t.rowid"  # noqa: S608
                f" WHERE message_text MATCH ?{where} ORDER BY m.created_at DESC, m.seq DESC LIMIT ?",
                (terms.fts5(), *params, limit),
            )
        else:
            rows = await self._run(lambda conn: _scan(conn, columns, where, params, terms, limit))
        found = []
        for row in rows:
            item = _message(row)
            text = (item["content"] or {}).get("text") or ""
            item["snippet"] = snippet(text, terms, SNIPPET_CHARS)
            found.append(item)
        return found

    async def message_at(self, chat_id: str, message_id: str, seq: int) -> dict[str, Any] | None:
        """This device's copy of a message, if it has it under this seq (the table is indexed by chat and seq)."""
        rows = await self.messages(chat_id, limit=1, before_seq=seq + 1)
        return rows[0] if rows and rows[0]["message_id"] == message_id else None

    async def has_message(self, message_id: str) -> bool:
        return bool(await self._query("SELECT 1 FROM messages WHERE message_id = ?", (message_id,)))

    async def outbox(self, *, limit: int = 1000) -> list[tuple[str, str, dict[str, Any]]]:
        """(client id, chat id, content) of the messages waiting to be sent, oldest first."""
        rows = await self._query("SELECT client_id, chat_id, content FROM outbox ORDER BY position LIMIT ?", (limit,))
        return [(client_id, chat_id, msgspec.json.decode(content)) for client_id, chat_id, content in rows]

    # -- devices met, and events held for an untrusted identity ------------------------------

    async def known_devices(self, user_id: str) -> dict[str, bytes]:
        """device id -> identity key of every device of a user this device has met (and not seen removed)."""
        rows = await self._query("SELECT device_id, identity_key FROM devices WHERE user_id = ?", (user_id,))
        return {device_id: bytes(key) for device_id, key in rows}

    async def held(self, user_id: str, device_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(frame id, frame) held for one sender device, oldest first."""
        rows = await self._query(
            "SELECT frame_id, frame FROM held WHERE user_id = ? AND device_id = ? ORDER BY added_at, frame_id",
            (user_id, device_id),
        )
        return [(frame_id, msgspec.json.decode(frame)) for frame_id, frame in rows]

    # -- group messages waiting for a sender key ---------------------------------------------

    async def pending(
        self, chat_id: str | None = None, sender_user_id: str | None = None, sender_device_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Waiting `message.new` frames, oldest first, optionally of one chat and sender device."""
        sql = "SELECT frame FROM pending WHERE 1 = 1"
        params: list[Any] = []
        for column, value in (
            ("chat_id", chat_id),
            ("sender_user_id", sender_user_id),
            ("sender_device_id", sender_device_id),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = await self._query(sql + " ORDER BY added_at, message_id", tuple(params))
        return [msgspec.json.decode(r[0]) for r in rows]

    # -- sender keys -------------------------------------------------------------------------

    async def sender_key_shares(self, chat_id: str) -> dict[str, str]:
        """device id -> the distribution id of my sender key it holds, for one chat."""
        rows = await self._query(
            "SELECT device_id, distribution_id FROM sender_key_shares WHERE chat_id = ?", (chat_id,)
        )
        return dict(rows)

    async def chats_shared_with(self, device_ids: Iterable[str]) -> list[str]:
        """Chats where any of these devices holds my sender key."""
        ids = list(device_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self._query(
            f"SELECT DISTINCT chat_id FROM sender_key_shares WHERE device_id IN ({marks})",  # noqa: S608
            tuple(ids),
        )
        return [r[0] for r in rows]

    async def needs_rotation(self, chat_id: str) -> bool:
        return bool(await self._query("SELECT 1 FROM sender_key_rotations WHERE chat_id = ?", (chat_id,)))


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(_MESSAGE_KEYS, row, strict=True))
    item["content"] = msgspec.json.decode(item["content"]) if item["content"] else None
    return item


def _add_search_index(conn: sqlite3.Connection) -> bool:
    """Create the full-text index if it is not there, filled from the messages kept (in the caller's
    transaction); False when this SQLite has no FTS5."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'message_text'").fetchone():
        return True
    conn.execute("SAVEPOINT search_index")
    try:
        statement = ""
        for line in _SEARCH_SCHEMA.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):  # a trigger's own `;` does not end it
                conn.execute(statement)
                statement = ""
    except sqlite3.OperationalError as exc:
        conn.execute("ROLLBACK TO search_index")
        conn.execute("RELEASE search_index")
        if "fts5" not in str(exc):
            raise
        return False
    conn.execute("RELEASE search_index")
    return True


def _scan(
    conn: sqlite3.Connection, columns: str, where: str, params: list[Any], terms: Terms, limit: int
) -> list[tuple[Any, ...]]:
    """Search without FTS5: every kept message, newest first, its words compared here."""
    cursor = conn.execute(
        f"SELECT {columns} FROM messages m WHERE m.status IN ('ok', 'sent'){where}"  # noqa: S608
        " ORDER BY m.created_at DESC, m.seq DESC",
        params,
    )
    found = []
    for row in cursor:
        content = msgspec.json.decode(row[_MESSAGE_KEYS.index("content")] or b"null") or {}
        text = content.get("text")
        if isinstance(text, str) and terms.found_in(set(text_words(text))):
            found.append(row)
            if len(found) >= limit:
                break
    return found
