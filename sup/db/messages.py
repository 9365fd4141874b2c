"""SQL for messages, their per-device ciphertexts, reactions, pins and hidden flags."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sup.db.database import Queryable, Row, Transaction, changed_one, fetch_in, from_row, insert_row

MESSAGE_COLUMNS = (
    "id, chat_id, seq, sender_id, sender_device_id, client_id, content_hash, kind, body, ciphertext, media_id,"
    " sticker_id, reply_to, forwarded_from, edited_at, deleted_at, created_at"
)


class MessageRow(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message; `ciphertext` is the group ciphertext (per-device ones are in message_recipients)."""

    id: str
    chat_id: str
    seq: int
    sender_id: str | None
    sender_device_id: str | None
    client_id: str
    content_hash: bytes
    kind: str
    body: str | None
    ciphertext: bytes | None
    media_id: str | None
    sticker_id: str | None
    reply_to: str | None
    forwarded_from: str | None  # JSON
    edited_at: int | None
    deleted_at: int | None
    created_at: int


def message_row(row: Row) -> MessageRow:
    ciphertext = row["ciphertext"]
    return from_row(
        MessageRow,
        row,
        content_hash=bytes(row["content_hash"]),
        ciphertext=bytes(ciphertext) if ciphertext else None,
    )


# The chat's seq bump and the message's insert: on Postgres one statement (one round trip per send
# fewer); the UPDATE still takes the chat row's lock, which keeps seqs gap-free under concurrent
# senders. SQLite has no UPDATE in a WITH clause, and no round trips to save.
_BUMP_CHAT = "UPDATE chats SET last_seq = last_seq + 1, last_message_at = $14 WHERE id = $2 RETURNING last_seq"
_INSERT_VALUES = (
    " VALUES ($1, $2, {seq}, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, NULL, $14) RETURNING seq"
)

# SQLite's search index learns a transaction's new messages in one statement just before its commit
# (a trigger did it per insert, and FTS5 writes its pending terms out at the end of every statement
# that touches it: a tenth of a send's cost). Edits and deletes keep their triggers; a message is
# never edited in the transaction that sent it. The test is the one those triggers use
# (migrations/0007_search.up.sqlite.sql).
_INDEX_NEW = (
    "INSERT INTO message_search (rowid, body) SELECT rowid, body FROM messages"
    " WHERE id IN (SELECT value FROM json_each($1)) AND body IS NOT NULL AND kind <> 'system'"
)


def _searchable(kind: str, body: str | None) -> bool:
    return body is not None and kind != "system"


async def _index_new(tx: Transaction, message_ids: list[str]) -> None:
    await tx.execute(_INDEX_NEW, msgspec.json.encode(message_ids).decode())


class MessageStore:
    def __init__(self, dialect: str = "sqlite") -> None:
        insert = f"INSERT INTO messages ({MESSAGE_COLUMNS})"
        if dialect == "postgres":
            self._bump = None
            self._insert = f"WITH s AS ({_BUMP_CHAT}) {insert}" + _INSERT_VALUES.format(seq="(SELECT last_seq FROM s)")
        else:
            self._bump = _BUMP_CHAT
            self._insert = insert + _INSERT_VALUES.format(seq="$15")
        # Postgres computes its search column in the row itself.
        self._index_later = dialect == "sqlite"

    async def insert_next(
        self,
        tx: Transaction,
        *,
        id: str,
        chat_id: str,
        sender_id: str | None,
        sender_device_id: str | None,
        client_id: str,
        content_hash: bytes,
        kind: str,
        body: str | None,
        ciphertext: bytes | None,
        media_id: str | None,
        sticker_id: str | None,
        reply_to: str | None,
        forwarded_from: str | None,
        now: int,
    ) -> int:
        """Insert a message as the chat's next one; return its seq (the chat row stays locked until the commit)."""
        args: list[object] = [
            id,
            chat_id,
            sender_id,
            sender_device_id,
            client_id,
            content_hash,
            kind,
            body,
            ciphertext,
            media_id,
            sticker_id,
            reply_to,
            forwarded_from,
            now,
        ]
        if self._bump is not None:
            args.append(await tx.fetchval(self._bump, *args))
        seq = await tx.fetchval(self._insert, *args)
        if self._index_later and _searchable(kind, body):
            tx.defer(_index_new, id)
        return seq

    async def get(self, db: Queryable, message_id: str) -> MessageRow | None:
        row = await db.fetchrow(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id)
        return None if row is None else message_row(row)

    async def page(
        self,
        db: Queryable,
        chat_id: str,
        viewer_id: str,
        *,
        before: int | None,
        after: int | None,
        limit: int,
    ) -> list[MessageRow]:
        """Messages by seq: the newest `limit` below `before`, or the oldest above `after` (ascending)."""
        hidden = " AND NOT EXISTS (SELECT 1 FROM message_hidden h WHERE h.user_id = $2 AND h.message_id = messages.id)"
        select = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1{hidden}"
        if after is not None:
            rows = await db.fetch(f"{select} AND seq > $3 ORDER BY seq LIMIT $4", chat_id, viewer_id, after, limit)
            return [message_row(r) for r in rows]
        if before is not None:
            rows = await db.fetch(
                f"{select} AND seq < $3 ORDER BY seq DESC LIMIT $4", chat_id, viewer_id, before, limit
            )
        else:
            rows = await db.fetch(f"{select} ORDER BY seq DESC LIMIT $3", chat_id, viewer_id, limit)
        return [message_row(r) for r in reversed(rows)]

    async def last_visible(self, db: Queryable, chat_id: str, viewer_id: str) -> MessageRow | None:
        rows = await self.page(db, chat_id, viewer_id, before=None, after=None, limit=1)
        return rows[0] if rows else None

    async def unread(
        self, db: Queryable, chat_id: str, viewer_id: str, after_seq: int, *, readable_by: str | None = None
    ) -> int:
        """Messages of others after my read marker; with `readable_by` (a device, in an encrypted chat),
        only those that device can decrypt: a ciphertext of its own, or a group message sent after it
        published its keys (the server's sender-key rule made sure it got the key)."""
        readable = (
            " AND (EXISTS (SELECT 1 FROM message_recipients r WHERE r.message_id = messages.id AND r.device_id = $4)"
            " OR (messages.ciphertext IS NOT NULL"
            " AND messages.created_at >= (SELECT k.created_at FROM device_keys k WHERE k.device_id = $4)))"
        )
        return await db.fetchval(
            "SELECT COUNT(*) FROM messages WHERE chat_id = $1 AND seq > $3 AND deleted_at IS NULL"
            " AND kind <> 'system' AND (sender_id IS NULL OR sender_id <> $2)"
            " AND NOT EXISTS (SELECT 1 FROM message_hidden h WHERE h.user_id = $2 AND h.message_id = messages.id)"
            + (readable if readable_by else ""),
            chat_id,
            viewer_id,
            after_seq,
            *([readable_by] if readable_by else []),
        )

    async def edit(self, tx: Queryable, message_id: str, body: str | None, ciphertext: bytes | None, now: int) -> None:
        await tx.execute(
            "UPDATE messages SET body = $2, ciphertext = $3, edited_at = $4 WHERE id = $1",
            message_id,
            body,
            ciphertext,
            now,
        )

    async def tombstone(self, tx: Queryable, message_id: str, now: int) -> bool:
        """Delete for everyone: the content goes, the row (id, seq, sender) stays so clients converge.

        False if it was a tombstone already.
        """
        changed = await tx.execute(
            "UPDATE messages SET body = NULL, ciphertext = NULL, media_id = NULL, sticker_id = NULL,"
            " deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
            message_id,
            now,
        )
        await tx.execute("DELETE FROM message_recipients WHERE message_id = $1", message_id)
        await tx.execute("DELETE FROM message_reactions WHERE message_id = $1", message_id)
        return changed == 1

    async def hide(self, tx: Queryable, user_id: str, message_id: str) -> None:
        row = {"user_id": user_id, "message_id": message_id}
        await insert_row(tx, "message_hidden", row, "ON CONFLICT (user_id, message_id) DO NOTHING")


class RecipientStore:
    async def insert(self, tx: Queryable, message_id: str, ciphertexts: Sequence[tuple[str, bytes]]) -> None:
        for start in range(0, len(ciphertexts), 500):
            chunk = ciphertexts[start : start + 500]
            values = ", ".join(f"($1, ${i * 2 + 2}, ${i * 2 + 3})" for i in range(len(chunk)))
            args: list[object] = [message_id]
            for device_id, ciphertext in chunk:
                args += [device_id, ciphertext]
            await tx.execute(
                f"INSERT INTO message_recipients (message_id, device_id, ciphertext) VALUES {values}", *args
            )

    async def replace(self, tx: Queryable, message_id: str, ciphertexts: Sequence[tuple[str, bytes]]) -> None:
        await tx.execute("DELETE FROM message_recipients WHERE message_id = $1", message_id)
        await self.insert(tx, message_id, ciphertexts)

    async def for_device(self, db: Queryable, message_ids: Sequence[str], device_id: str) -> dict[str, bytes]:
        rows = await fetch_in(
            db,
            "SELECT message_id, ciphertext FROM message_recipients WHERE device_id = $1 AND message_id IN ($ids)",
            message_ids,
            device_id,
        )
        return {r["message_id"]: bytes(r["ciphertext"]) for r in rows}

    async def device_ids(self, db: Queryable, message_id: str) -> list[str]:
        rows = await db.fetch("SELECT device_id FROM message_recipients WHERE message_id = $1", message_id)
        return [r["device_id"] for r in rows]


class ReactionStore:
    async def add(self, tx: Queryable, message_id: str, user_id: str, emoji: str, now: int) -> bool:
        reaction = {"message_id": message_id, "user_id": user_id, "emoji": emoji, "created_at": now}
        return await insert_row(
            tx, "message_reactions", reaction, "ON CONFLICT (message_id, user_id, emoji) DO NOTHING"
        )

    async def remove(self, tx: Queryable, message_id: str, user_id: str, emoji: str) -> bool:
        return await changed_one(
            tx,
            "DELETE FROM message_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
            message_id,
            user_id,
            emoji,
        )

    async def summary(self, db: Queryable, message_ids: Sequence[str], viewer_id: str) -> dict[str, list[Row]]:
        """Per message: each emoji with its count and whether the viewer used it."""
        rows = await fetch_in(
            db,
            "SELECT message_id, emoji, COUNT(*) AS count,"
            " SUM(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS mine FROM message_reactions"
            " WHERE message_id IN ($ids) GROUP BY message_id, emoji ORDER BY message_id, MIN(created_at)",
            message_ids,
            viewer_id,
        )
        result: dict[str, list[Row]] = {}
        for row in rows:
            result.setdefault(row["message_id"], []).append(row)
        return result


class PinStore:
    async def pin(self, tx: Queryable, chat_id: str, message_id: str, user_id: str, now: int) -> bool:
        pin = {"chat_id": chat_id, "message_id": message_id, "pinned_by": user_id, "pinned_at": now}
        return await insert_row(tx, "chat_pins", pin, "ON CONFLICT (chat_id, message_id) DO NOTHING")

    async def unpin(self, tx: Queryable, chat_id: str, message_id: str) -> bool:
        return await changed_one(
            tx, "DELETE FROM chat_pins WHERE chat_id = $1 AND message_id = $2", chat_id, message_id
        )

    async def for_chat(self, db: Queryable, chat_id: str) -> list[Row]:
        return list(
            await db.fetch(
                "SELECT message_id, pinned_by, pinned_at FROM chat_pins WHERE chat_id = $1 ORDER BY pinned_at DESC",
                chat_id,
            )
        )
