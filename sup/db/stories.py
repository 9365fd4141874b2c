"""SQL for stories, their views, and the lists that choose their audience.

Who may see a story is written once, as `visible_to`: every read (the feed, one story, its file,
marking it viewed) and the fan-out of `story.new` use it, so none can drift from the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sup.db.accounts import hold_user_row
from sup.db.database import Queryable, Row, fetch_in, from_row, insert_row, keyset_page

_STORY_COLUMNS = "s.id, s.author_id, s.media_id, s.caption, s.audience, s.list_id, s.created_at, s.expires_at"
_LISTS = "SELECT id, owner_id, kind, name, created_at, updated_at FROM story_lists"
_STORY_MEDIA = "m.kind, m.mime, m.status, m.width, m.height, m.duration_ms, m.info"


def visible_to(story: str, viewer: str, now: str) -> str:
    """SQL that is true when story `story` (a table alias) is alive and `viewer` may see it.

    `viewer` and `now` are SQL expressions (placeholders such as `$2`, or columns). The author
    sees their own stories; nobody sees one across a block, in either direction. Otherwise the
    audience decides: `chats`, everyone sharing a direct chat or a group with the author (not a
    channel: subscribers do not see each other); `contacts`, the author's contacts;
    `close_friends`, the people on the list the story names; `contacts_except`, the author's
    contacts but for the people on the list it names. Lists and contacts are read as they are
    now, so a change applies to stories already up.
    """
    s, v = story, viewer
    contact = f"EXISTS (SELECT 1 FROM contacts ct WHERE ct.user_id = {s}.author_id AND ct.contact_id = {v})"
    listed = f"EXISTS (SELECT 1 FROM story_list_members lm WHERE lm.list_id = {s}.list_id AND lm.user_id = {v})"
    shares_chat = (
        "EXISTS (SELECT 1 FROM chat_members ma JOIN chat_members mb ON mb.chat_id = ma.chat_id"
        f" JOIN chats ch ON ch.id = ma.chat_id WHERE ma.user_id = {s}.author_id AND mb.user_id = {v}"
        " AND ch.type <> 'channel')"
    )
    blocked = (
        "EXISTS (SELECT 1 FROM blocked_users bu WHERE"
        f" (bu.user_id = {s}.author_id AND bu.blocked_id = {v})"
        f" OR (bu.user_id = {v} AND bu.blocked_id = {s}.author_id))"
    )
    return (
        f"({s}.expires_at > {now} AND ({s}.author_id = {v} OR (NOT {blocked} AND CASE {s}.audience"
        f" WHEN 'contacts' THEN {contact}"
        f" WHEN 'close_friends' THEN {listed}"
        f" WHEN 'contacts_except' THEN {contact} AND NOT {listed}"
        f" ELSE {shares_chat} END)))"
    )


class StoryRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    author_id: str
    media_id: str
    caption: str
    audience: str
    list_id: str | None
    created_at: int
    expires_at: int
    # the file, as processing left it
    kind: str
    mime: str
    status: str
    width: int | None
    height: int | None
    duration_ms: int | None
    info: str | None
    seen: bool = False


def story_row(row: Row) -> StoryRow:
    return from_row(StoryRow, row, seen=bool(row["seen"]))


class StoryStore:
    async def insert(
        self,
        tx: Queryable,
        *,
        id: str,
        author_id: str,
        media_id: str,
        caption: str,
        audience: str,
        list_id: str | None,
        now: int,
        expires_at: int,
    ) -> None:
        story = {
            "id": id,
            "author_id": author_id,
            "media_id": media_id,
            "caption": caption,
            "audience": audience,
            "list_id": list_id,
            "created_at": now,
            "expires_at": expires_at,
        }
        await insert_row(tx, "stories", story)

    async def lock_author(self, tx: Queryable, author_id: str) -> None:
        """Hold the author's row until commit: one count of live stories and insert at a time."""
        await hold_user_row(tx, author_id)

    async def live_count(self, db: Queryable, author_id: str, now: int) -> int:
        return await db.fetchval(
            "SELECT COUNT(*) FROM stories WHERE author_id = $1 AND expires_at > $2", author_id, now
        )

    async def visible(self, db: Queryable, story_id: str, viewer_id: str, now: int) -> StoryRow | None:
        """The story, if it is alive and the viewer may see it (with whether they have seen it)."""
        row = await db.fetchrow(
            f"SELECT {_STORY_COLUMNS}, {_STORY_MEDIA}, EXISTS (SELECT 1 FROM story_views w"
            " WHERE w.story_id = s.id AND w.viewer_id = $2) AS seen"
            f" FROM stories s JOIN media m ON m.id = s.media_id WHERE s.id = $1 AND {visible_to('s', '$2', '$3')}",
            story_id,
            viewer_id,
            now,
        )
        return None if row is None else story_row(row)

    async def get(self, db: Queryable, story_id: str) -> Row | None:
        """The bare row, alive or not (for its author)."""
        return await db.fetchrow(
            "SELECT id, author_id, media_id, audience, list_id, expires_at FROM stories WHERE id = $1", story_id
        )

    async def feed_authors(
        self, db: Queryable, viewer_id: str, now: int, before: tuple[int, str] | None, limit: int
    ) -> list[Row]:
        """Authors with a story the viewer may see, the most recent poster first: (author_id, latest).

        Only the stories of people who could have the viewer in an audience are looked at: the
        viewer, whoever has the viewer as a contact or on a list, and whoever shares a chat with them.
        """
        having = ""
        args: list[object] = [viewer_id, now, limit]
        if before is not None:
            having = " HAVING MAX(s.created_at) < $4 OR (MAX(s.created_at) = $4 AND s.author_id < $5)"
            args += list(before)
        return list(
            await db.fetch(
                "SELECT s.author_id, MAX(s.created_at) AS latest FROM stories s"
                " WHERE (s.author_id = $1 OR s.author_id IN ("
                " SELECT user_id FROM contacts WHERE contact_id = $1"
                " UNION SELECT l.owner_id FROM story_list_members lm JOIN story_lists l ON l.id = lm.list_id"
                " WHERE lm.user_id = $1"
                " UNION SELECT ma.user_id FROM chat_members mb JOIN chat_members ma ON ma.chat_id = mb.chat_id"
                " WHERE mb.user_id = $1))"
                f" AND {visible_to('s', '$1', '$2')}"
                f" GROUP BY s.author_id{having} ORDER BY latest DESC, s.author_id DESC LIMIT $3",
                *args,
            )
        )

    async def feed_stories(self, db: Queryable, viewer_id: str, now: int, author_ids: Sequence[str]) -> list[StoryRow]:
        """The stories of these authors the viewer may see, newest first."""
        rows = await fetch_in(
            db,
            f"SELECT {_STORY_COLUMNS}, {_STORY_MEDIA}, EXISTS (SELECT 1 FROM story_views w"
            " WHERE w.story_id = s.id AND w.viewer_id = $1) AS seen"
            " FROM stories s JOIN media m ON m.id = s.media_id WHERE s.author_id IN ($ids)"
            f" AND {visible_to('s', '$1', '$2')} ORDER BY s.created_at DESC, s.id DESC",
            author_ids,
            viewer_id,
            now,
        )
        return [story_row(r) for r in rows]

    async def audience(self, db: Queryable, story_id: str, author_id: str, now: int) -> list[str]:
        """Everyone but the author who may see the story now (for its events).

        The candidates are the only people any audience can hold: the author's contacts, the
        people on the author's lists and those sharing a chat with the author.
        """
        rows = await db.fetch(
            "SELECT c.user_id FROM stories s, ("
            " SELECT contact_id AS user_id FROM contacts WHERE user_id = $3"
            " UNION SELECT lm.user_id FROM story_list_members lm JOIN story_lists l ON l.id = lm.list_id"
            " WHERE l.owner_id = $3"
            " UNION SELECT mb.user_id FROM chat_members ma JOIN chat_members mb ON mb.chat_id = ma.chat_id"
            " WHERE ma.user_id = $3"
            ") c"
            f" WHERE s.id = $1 AND c.user_id <> $3 AND {visible_to('s', 'c.user_id', '$2')}",
            story_id,
            now,
            author_id,
        )
        return [r["user_id"] for r in rows]

    async def delete(self, tx: Queryable, story_id: str) -> Row | None:
        return await tx.fetchrow("DELETE FROM stories WHERE id = $1 RETURNING id, author_id, media_id", story_id)

    async def expired(self, db: Queryable, now: int, limit: int) -> list[Row]:
        return list(
            await db.fetch(
                "SELECT id, author_id, media_id FROM stories WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
                now,
                limit,
            )
        )

    # -- views -------------------------------------------------------------------------------

    async def add_view(self, tx: Queryable, story_id: str, viewer_id: str, now: int) -> bool:
        """Record a view; False if this viewer had seen it already (the first time stands)."""
        view = {"story_id": story_id, "viewer_id": viewer_id, "viewed_at": now}
        return await insert_row(tx, "story_views", view, "ON CONFLICT (story_id, viewer_id) DO NOTHING")

    async def view_count(self, db: Queryable, story_ids: Sequence[str]) -> dict[str, int]:
        rows = await fetch_in(
            db, "SELECT story_id, COUNT(*) AS n FROM story_views WHERE story_id IN ($ids) GROUP BY story_id", story_ids
        )
        return {r["story_id"]: r["n"] for r in rows}

    async def views(self, db: Queryable, story_id: str, before: tuple[int, str] | None, limit: int) -> list[Row]:
        """Who viewed the story, the latest first, with their profiles."""
        return await keyset_page(
            db,
            "SELECT v.viewer_id, v.viewed_at, u.id, u.username, u.display_name, u.bio, u.avatar_media_id, u.created_at"
            " FROM story_views v JOIN users u ON u.id = v.viewer_id WHERE v.story_id = $1",
            ("v.viewed_at", "v.viewer_id"),
            story_id,
            before,
            limit,
            descending=True,
        )

    # -- audience lists ------------------------------------------------------------------------

    async def lists(self, db: Queryable, owner_id: str) -> list[Row]:
        return list(
            await db.fetch(
                "SELECT l.id, l.kind, l.name, l.created_at, l.updated_at,"
                " (SELECT COUNT(*) FROM story_list_members m WHERE m.list_id = l.id) AS size"
                " FROM story_lists l WHERE l.owner_id = $1 ORDER BY CASE l.kind WHEN 'close_friends' THEN 0 ELSE 1 END,"
                " l.created_at, l.id",
                owner_id,
            )
        )

    async def get_list(self, db: Queryable, list_id: str) -> Row | None:
        return await db.fetchrow(f"{_LISTS} WHERE id = $1", list_id)

    async def close_friends(self, db: Queryable, owner_id: str) -> Row | None:
        return await db.fetchrow(f"{_LISTS} WHERE owner_id = $1 AND kind = 'close_friends'", owner_id)

    async def insert_list(self, tx: Queryable, *, id: str, owner_id: str, kind: str, name: str, now: int) -> bool:
        """False if the owner has a close-friends list already (there is one per user)."""
        story_list = {"id": id, "owner_id": owner_id, "kind": kind, "name": name, "created_at": now, "updated_at": now}
        return await insert_row(tx, "story_lists", story_list, "ON CONFLICT DO NOTHING")

    async def count_lists(self, db: Queryable, owner_id: str, kind: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM story_lists WHERE owner_id = $1 AND kind = $2", owner_id, kind)

    async def rename_list(self, tx: Queryable, list_id: str, name: str, now: int) -> None:
        await tx.execute("UPDATE story_lists SET name = $2, updated_at = $3 WHERE id = $1", list_id, name, now)

    async def touch_list(self, tx: Queryable, list_id: str, now: int) -> None:
        await tx.execute("UPDATE story_lists SET updated_at = $2 WHERE id = $1", list_id, now)

    async def list_in_use(self, db: Queryable, list_id: str, now: int) -> bool:
        return bool(
            await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM stories WHERE list_id = $1 AND expires_at > $2)", list_id, now
            )
        )

    async def delete_list(self, tx: Queryable, list_id: str) -> None:
        # Expired stories that still name it (the expiry job has not run yet) are past showing anyway.
        await tx.execute("DELETE FROM stories WHERE list_id = $1", list_id)
        await tx.execute("DELETE FROM story_lists WHERE id = $1", list_id)

    async def members(self, db: Queryable, list_id: str) -> list[Row]:
        return list(
            await db.fetch(
                "SELECT m.added_at, u.id, u.username, u.display_name, u.bio, u.avatar_media_id, u.created_at"
                " FROM story_list_members m JOIN users u ON u.id = m.user_id WHERE m.list_id = $1"
                " ORDER BY u.username_key",
                list_id,
            )
        )

    async def member_count(self, db: Queryable, list_id: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM story_list_members WHERE list_id = $1", list_id)

    async def add_members(self, tx: Queryable, list_id: str, user_ids: Sequence[str], now: int) -> None:
        for user_id in user_ids:
            member = {"list_id": list_id, "user_id": user_id, "added_at": now}
            await insert_row(tx, "story_list_members", member, "ON CONFLICT (list_id, user_id) DO NOTHING")

    async def remove_members(self, tx: Queryable, list_id: str, user_ids: Sequence[str]) -> int:
        removed = 0
        for user_id in user_ids:
            removed += await tx.execute(
                "DELETE FROM story_list_members WHERE list_id = $1 AND user_id = $2", list_id, user_id
            )
        return removed

    async def clear_members(self, tx: Queryable, list_id: str) -> None:
        await tx.execute("DELETE FROM story_list_members WHERE list_id = $1", list_id)

    async def known_to(self, db: Queryable, owner_id: str, user_ids: Sequence[str]) -> set[str]:
        """Which of these users the owner knows: a contact, or someone sharing a direct chat or group."""
        rows = await fetch_in(
            db,
            "SELECT u.id FROM users u WHERE u.id IN ($ids) AND u.id <> $1 AND ("
            " EXISTS (SELECT 1 FROM contacts c WHERE c.user_id = $1 AND c.contact_id = u.id)"
            " OR EXISTS (SELECT 1 FROM chat_members ma JOIN chat_members mb ON mb.chat_id = ma.chat_id"
            " JOIN chats ch ON ch.id = ma.chat_id WHERE ma.user_id = $1 AND mb.user_id = u.id"
            " AND ch.type <> 'channel'))",
            user_ids,
            owner_id,
        )
        return {r["id"] for r in rows}
