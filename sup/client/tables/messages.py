"""Chats, messages, the outbox and group messages waiting for their sender key: what the client store keeps
of conversations (store.py).

The messages are the ones this device decrypted or sent (they cannot be decrypted twice); their text is
indexed for search (search.py).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from sup.client.tables import Reads, Writes, json_text

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    chat_id TEXT NOT NULL,
    content TEXT NOT NULL,
    queued_at REAL NOT NULL
);
"""
# The columns a message is read with, in order.
MESSAGE_KEYS = (
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


class MessageWrites(Writes):
    """What a batch writes to the chats, messages, outbox and pending tables."""

    def put_chat(self, chat: dict[str, Any]) -> None:
        self.statements.append(
            (
                "INSERT INTO chats (chat_id, info, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (chat_id) DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
                (chat["id"], json_text(chat), time.time()),
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
                    None if content is None else json_text(content),
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
                (client_id, chat_id, json_text(content), time.time()),
            )
        )

    def update_outgoing(self, client_id: str, content: dict[str, Any]) -> None:
        """A queued message's content changed (what it waits for); it keeps its place in line."""
        self.statements.append(("UPDATE outbox SET content = ? WHERE client_id = ?", (json_text(content), client_id)))

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
                    json_text(frame),
                    time.time(),
                ),
            )
        )

    def remove_pending(self, message_id: str) -> None:
        self.statements.append(("DELETE FROM pending WHERE message_id = ?", (message_id,)))


class MessageReads(Reads):
    """What the store reads from the chats, messages, outbox and pending tables."""

    async def chat(self, chat_id: str) -> dict[str, Any] | None:
        rows = await self._query("SELECT info FROM chats WHERE chat_id = ?", (chat_id,))
        return msgspec.json.decode(rows[0][0]) if rows else None

    async def chats(self) -> list[dict[str, Any]]:
        rows = await self._query("SELECT info FROM chats ORDER BY updated_at DESC")
        return [msgspec.json.decode(r[0]) for r in rows]

    async def messages(self, chat_id: str, *, limit: int = 100, before_seq: int | None = None) -> list[dict[str, Any]]:
        """Locally known messages of a chat, oldest first (the last `limit` before `before_seq`)."""
        rows = await self._query(
            "SELECT message_id, chat_id, seq, sender_user_id, sender_device_id, status, content, reason, created_at"
            " FROM messages WHERE chat_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (chat_id, before_seq if before_seq is not None else 2**62, limit),
        )
        return [message_from_row(row) for row in reversed(rows)]

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


def message_from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of MESSAGE_KEYS as a dict, its content decoded."""
    item = dict(zip(MESSAGE_KEYS, row, strict=True))
    item["content"] = msgspec.json.decode(item["content"]) if item["content"] else None
    return item
