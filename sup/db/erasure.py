"""SQL that removes what a deleted account leaves across the tables.

The account's own row stays (emptied, see UserStore.erase): messages keep naming their sender,
so every member's copy of a chat ends up the same, with tombstones where that user's messages
were. What follows here is everything else of theirs.
"""

from __future__ import annotations

from sup.db.database import Queryable, Row

_DEVICES = "SELECT id FROM user_devices WHERE user_id = $1"

# Rows about the user or kept for the user alone, removed when the account is deleted. The order
# matters where a foreign key has no cascade: stories name their author's lists.
_PERSONAL = (
    "DELETE FROM contacts WHERE user_id = $1 OR contact_id = $1",
    "DELETE FROM blocked_users WHERE user_id = $1 OR blocked_id = $1",
    "DELETE FROM login_addresses WHERE user_id = $1",
    "DELETE FROM email_tokens WHERE user_id = $1",
    "DELETE FROM user_emails WHERE user_id = $1",
    "DELETE FROM push_subscriptions WHERE user_id = $1",
    "DELETE FROM chat_join_requests WHERE user_id = $1",
    "DELETE FROM recovery_codes WHERE user_id = $1",
    "DELETE FROM stories WHERE author_id = $1",
    "DELETE FROM story_list_members WHERE user_id = $1",
    "DELETE FROM story_lists WHERE owner_id = $1",
    "DELETE FROM story_views WHERE viewer_id = $1",
    "DELETE FROM user_sticker_packs WHERE user_id = $1",
    "DELETE FROM sticker_packs WHERE owner_id = $1",
    "DELETE FROM message_hidden WHERE user_id = $1",
    # What was stored for the user's devices: their event streams, the ciphertexts addressed to
    # them, their public keys and the group sender keys they sent or were sent.
    f"DELETE FROM device_events WHERE device_id IN ({_DEVICES})",
    f"DELETE FROM message_recipients WHERE device_id IN ({_DEVICES})",
    f"DELETE FROM sender_key_distributions WHERE recipient_device_id IN ({_DEVICES})"
    f" OR sender_device_id IN ({_DEVICES})",
    f"DELETE FROM sender_keys WHERE device_id IN ({_DEVICES})",
    "DELETE FROM device_keys WHERE user_id = $1",
)


class ErasureStore:
    async def forget_personal(self, tx: Queryable, user_id: str) -> None:
        """Remove the user's contacts, blocks (both ways), email, join requests, lists, stories, sticker packs,
        keys and device streams."""
        for statement in _PERSONAL:
            await tx.execute(statement, user_id)

    async def messages_left(self, db: Queryable, user_id: str, limit: int) -> list[Row]:
        """Messages the user sent that are not tombstones yet (system messages are the server's, not theirs)."""
        return list(
            await db.fetch(
                "SELECT id, chat_id, seq FROM messages WHERE sender_id = $1 AND deleted_at IS NULL"
                " AND kind <> 'system' ORDER BY chat_id, seq LIMIT $2",
                user_id,
                limit,
            )
        )

    async def reactions_left(self, db: Queryable, user_id: str, limit: int) -> list[Row]:
        """The user's reactions to messages, each with its message's chat."""
        return list(
            await db.fetch(
                "SELECT m.chat_id, r.message_id, r.emoji FROM message_reactions r"
                " JOIN messages m ON m.id = r.message_id WHERE r.user_id = $1 ORDER BY m.chat_id LIMIT $2",
                user_id,
                limit,
            )
        )

    async def media_left(self, db: Queryable, user_id: str, limit: int) -> list[str]:
        rows = await db.fetch("SELECT id FROM media WHERE owner_id = $1 ORDER BY id LIMIT $2", user_id, limit)
        return [row["id"] for row in rows]

    async def drop_uploads(self, tx: Queryable, user_id: str) -> list[str]:
        """Remove the user's resumable uploads in progress; their ids, whose stored chunks must go too."""
        rows = await tx.fetch("DELETE FROM media_uploads WHERE owner_id = $1 RETURNING id", user_id)
        return [row["id"] for row in rows]

    async def unfinished(self, db: Queryable, limit: int) -> list[str]:
        """Deleted accounts that still have messages, files, uploads or exports (an erasure cut short)."""
        rows = await db.fetch(
            "SELECT u.id FROM users u WHERE u.deleted_at IS NOT NULL AND ("
            "EXISTS (SELECT 1 FROM messages m WHERE m.sender_id = u.id AND m.deleted_at IS NULL AND m.kind <> 'system')"
            " OR EXISTS (SELECT 1 FROM message_reactions r WHERE r.user_id = u.id)"
            " OR EXISTS (SELECT 1 FROM media f WHERE f.owner_id = u.id)"
            " OR EXISTS (SELECT 1 FROM media_uploads p WHERE p.owner_id = u.id)"
            " OR EXISTS (SELECT 1 FROM account_exports e WHERE e.user_id = u.id)) LIMIT $1",
            limit,
        )
        return [row["id"] for row in rows]
