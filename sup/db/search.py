"""SQL for search: messages by their words, users and chats by name.

The one store where the dialects differ in more than a word (migrations/0007_search.*):
SQLite asks FTS5 tables kept in step by triggers, Postgres asks GIN indexes on the tables
themselves (tsvector for messages, pg_trgm for names). Each dialect is one small class below;
both take the same arguments and return the same rows, and the rules (who may see what) are
in the SQL they share. What the user typed arrives as `Terms` (sup/searchtext.py), already
cut into words: it is never read as query syntax.

Candidates, not answers: the domain (sup/domain/search.py) ranks what comes back, the same
way on both, so these queries only have to find every row that could qualify.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from sup.db.chats import CHAT_COLUMNS, ChatRow, chat_row
from sup.db.database import Queryable, Row
from sup.db.messages import MESSAGE_COLUMNS, MessageRow, message_row
from sup.ids import is_uuid
from sup.searchtext import Terms, like_pattern

NAME_CANDIDATES = 200  # rows a name search ranks; a query that matches more should be longer

_M = ", ".join(f"m.{column.strip()}" for column in MESSAGE_COLUMNS.split(","))
_U = "u.id, u.username, u.display_name, u.bio, u.avatar_media_id, u.created_at"

# Rules both dialects apply. $1 is always the searching user.
_VISIBLE_MESSAGE = (
    " AND m.deleted_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM message_hidden h WHERE h.user_id = $1 AND h.message_id = m.id)"
)
_VISIBLE_USER = (
    " AND u.id <> $1 AND NOT EXISTS (SELECT 1 FROM blocked_users b WHERE b.user_id = u.id AND b.blocked_id = $1)"
    " AND u.deleted_at IS NULL"  # an emptied account, kept only as the sender of its old messages
)
# A chat I am in, or a public one whose owner and admins do not block me (they would not let me join).
_VISIBLE_CHAT = (
    " AND (me.user_id IS NOT NULL OR (c.visibility = 'public' AND NOT EXISTS ("
    "SELECT 1 FROM blocked_users b JOIN chat_members a ON a.chat_id = c.id AND a.user_id = b.user_id"
    " JOIN chat_roles r ON r.id = a.role_id WHERE b.blocked_id = $1 AND r.kind IN ('owner', 'admin'))))"
)


def _messages_query(source: str, match: str) -> str:
    """A dialect's message search: `source` holds `messages m`, `match` tests it against $2.

    $1 is the user, $3 the limit; {where} takes the rest of the conditions and {position}
    where a row stands, newest first (the cursor's key).
    """
    return (
        f"SELECT {{position}} AS search_key, {_M} FROM {source}"
        " JOIN chat_members me ON me.chat_id = m.chat_id AND me.user_id = $1"
        f" WHERE {match}{{where}} ORDER BY {{position}} DESC LIMIT $3"
    )


class MessageHit:
    """A message found, and where it stands in newest-first order (`key`, the cursor)."""

    __slots__ = ("key", "message")

    def __init__(self, key: str, message: MessageRow) -> None:
        self.key = key
        self.message = message


class ChatHit:
    __slots__ = ("chat", "joined")

    def __init__(self, chat: ChatRow, joined: bool) -> None:
        self.chat = chat
        self.joined = joined


class SearchStore(ABC):
    """What both dialects share; `for_dialect` picks the one to use."""

    @staticmethod
    def for_dialect(dialect: str) -> SearchStore:
        return {"sqlite": SQLiteSearch, "postgres": PostgresSearch}[dialect]()

    # -- messages ----------------------------------------------------------------------------

    async def messages(
        self,
        db: Queryable,
        user_id: str,
        terms: Terms,
        *,
        chat_id: str | None,
        below: str | None,
        inclusive: bool = False,
        limit: int,
    ) -> list[MessageHit]:
        """Messages with every term, in chats the user is in (or in one), newest first; those after
        the cursor key `below` (or at it too, with `inclusive`)."""
        in_chat = chat_id is not None
        position = self._position(in_chat)
        args: list[Any] = [user_id, self._match(terms), limit]
        where = ""
        if chat_id is not None:
            args.append(chat_id)
            where += f" AND m.chat_id = ${len(args)}"
        if below is not None:
            args.append(below if position == "m.id" else int(below))
            where += f" AND {position} {'<=' if inclusive else '<'} ${len(args)}"
        sql = self._MESSAGES.replace("{where}", where + _VISIBLE_MESSAGE).replace("{position}", position)
        return [MessageHit(str(row["search_key"]), message_row(row)) for row in await db.fetch(sql, *args)]

    def valid_key(self, key: str, in_chat: bool) -> bool:
        """Whether `key` is a cursor key this dialect hands out (searching one chat, or all)."""
        if self._position(in_chat) == "m.id":
            return is_uuid(key)
        return key.isdigit() and len(key) <= 18

    # The dialect's part: its query (from _messages_query, $2 what _match gives), and the query language.
    _MESSAGES: str

    @abstractmethod
    def _match(self, terms: Terms) -> str: ...

    @abstractmethod
    def _position(self, in_chat: bool) -> str: ...

    # -- names -------------------------------------------------------------------------------

    @abstractmethod
    async def users(self, db: Queryable, user_id: str, query: str) -> list[Row]:
        """Users whose username or display name may match `query` (lower case), but not the
        searching user nor anyone who blocks them."""

    @abstractmethod
    async def chats(self, db: Queryable, user_id: str, query: str) -> list[ChatHit]:
        """Chats whose title may match `query` (lower case): the user's, and public ones."""

    @staticmethod
    def _chat_hits(rows: Any) -> list[ChatHit]:
        return [ChatHit(chat_row(row), bool(row["joined"])) for row in rows]


class SQLiteSearch(SearchStore):
    """FTS5: `message_search` (unicode61, diacritics removed), `user_search` and `chat_search`
    (trigrams). Their rowids are the rowids of messages, users and chats."""

    # FTS5 walks its matches in rowid order (the order messages were stored), newest first, and
    # stops at the limit: no sort, however many messages match.
    _MESSAGES = _messages_query("message_search s JOIN messages m ON m.rowid = s.rowid", "message_search MATCH $2")

    def _match(self, terms: Terms) -> str:
        return terms.fts5()

    def _position(self, in_chat: bool) -> str:
        return "s.rowid"

    async def users(self, db: Queryable, user_id: str, query: str) -> list[Row]:
        if len(query) < 3:  # shorter than a trigram: the start of a name (a scan, but a short one)
            pattern = like_pattern(query)
            return list(
                await db.fetch(
                    f"SELECT {_U} FROM users u WHERE (u.username_key LIKE $2 ESCAPE '\\'"
                    " OR lower(u.display_name) LIKE $2 ESCAPE '\\' OR lower(u.display_name) LIKE $3 ESCAPE '\\')"
                    f"{_VISIBLE_USER} ORDER BY u.username_key LIMIT $4",
                    user_id,
                    pattern + "%",
                    "% " + pattern + "%",
                    NAME_CANDIDATES,
                )
            )
        found: dict[str, Row] = {}
        for match in (_fts5_phrase(query), _fts5_any_trigram(query)):  # contains it; spelled like it
            for row in await db.fetch(
                f"SELECT {_U} FROM user_search s JOIN users u ON u.rowid = s.rowid"
                f" WHERE user_search MATCH $2{_VISIBLE_USER} ORDER BY s.rank LIMIT $3",
                user_id,
                match,
                NAME_CANDIDATES,
            ):
                found.setdefault(row["id"], row)
        return list(found.values())

    async def chats(self, db: Queryable, user_id: str, query: str) -> list[ChatHit]:
        select = (
            f"SELECT {CHAT_COLUMNS}, me.user_id IS NOT NULL AS joined FROM {{source}}"
            " LEFT JOIN chat_members me ON me.chat_id = c.id AND me.user_id = $1"
        )
        if len(query) < 3:
            rows = await db.fetch(
                select.format(source="chats c") + f" WHERE c.type <> 'direct' AND (lower(c.title) LIKE $2 ESCAPE '\\'"
                " OR lower(c.title) LIKE $3 ESCAPE '\\')"
                f"{_VISIBLE_CHAT} ORDER BY c.title LIMIT $4",
                user_id,
                like_pattern(query) + "%",
                "% " + like_pattern(query) + "%",
                NAME_CANDIDATES,
            )
            return self._chat_hits(rows)
        found: dict[str, ChatHit] = {}
        for match in (_fts5_phrase(query), _fts5_any_trigram(query)):
            rows = await db.fetch(
                select.format(source="chat_search s JOIN chats c ON c.rowid = s.rowid")
                + f" WHERE chat_search MATCH $2 AND c.type <> 'direct'{_VISIBLE_CHAT} ORDER BY s.rank LIMIT $3",
                user_id,
                match,
                NAME_CANDIDATES,
            )
            for hit in self._chat_hits(rows):
                found.setdefault(hit.chat.id, hit)
        return list(found.values())


def _fts5_phrase(text: str) -> str:
    """A trigram-table query for `text` anywhere in a name (quoted: nothing in it is syntax)."""
    return '"' + text.replace('"', '""') + '"'


def _fts5_any_trigram(text: str) -> str:
    """Names sharing any three characters in a row with `text`: candidates for a similar spelling."""
    grams = dict.fromkeys(text[i : i + 3] for i in range(len(text) - 2))
    return " OR ".join(_fts5_phrase(gram) for gram in grams)


class PostgresSearch(SearchStore):
    """GIN indexes: `message_search` on the stored `messages.search_document` (a tsvector in the
    `sup_search` configuration), `user_search` and `chat_search` (pg_trgm)."""

    # Newest first: by id (UUIDv7 ids begin with their creation time, so the primary key is also a
    # time index), or by seq within one chat (its own index). For a word in most messages the
    # planner walks that index backwards, testing each row's stored document, and stops at the
    # limit; for a rarer word it takes the matches from the GIN index and sorts them. (System
    # messages have no document.)
    _MESSAGES = _messages_query("messages m", "m.search_document @@ to_tsquery('sup_search', $2)")

    def _match(self, terms: Terms) -> str:
        return terms.tsquery()

    def _position(self, in_chat: bool) -> str:
        return "m.seq" if in_chat else "m.id"

    async def users(self, db: Queryable, user_id: str, query: str) -> list[Row]:
        # $2 a LIKE pattern, $3 the query itself (for similarity), $5 a word start in a longer name.
        pattern = like_pattern(query)
        if len(query) < 3:
            condition = (
                "(u.username_key LIKE $2 ESCAPE '\\' OR lower(u.display_name) LIKE $2 ESCAPE '\\'"
                " OR lower(u.display_name) LIKE $5 ESCAPE '\\')"
            )
            args = [pattern + "%", query, NAME_CANDIDATES, "% " + pattern + "%"]
        else:
            condition = (
                "(u.username_key LIKE $2 ESCAPE '\\' OR lower(u.display_name) LIKE $2 ESCAPE '\\'"
                " OR u.username_key % $3 OR lower(u.display_name) % $3)"
            )
            args = ["%" + pattern + "%", query, NAME_CANDIDATES]
        return list(
            await db.fetch(
                f"SELECT {_U} FROM users u WHERE {condition}{_VISIBLE_USER}"
                " ORDER BY greatest(similarity(u.username_key, $3), similarity(lower(u.display_name), $3)) DESC,"
                " u.username_key LIMIT $4",
                user_id,
                *args,
            )
        )

    async def chats(self, db: Queryable, user_id: str, query: str) -> list[ChatHit]:
        pattern = like_pattern(query)
        if len(query) < 3:
            condition = "(lower(c.title) LIKE $2 ESCAPE '\\' OR lower(c.title) LIKE $5 ESCAPE '\\')"
            args = [pattern + "%", query, NAME_CANDIDATES, "% " + pattern + "%"]
        else:
            condition = "(lower(c.title) LIKE $2 ESCAPE '\\' OR lower(c.title) % $3)"
            args = ["%" + pattern + "%", query, NAME_CANDIDATES]
        rows = await db.fetch(
            f"SELECT {CHAT_COLUMNS}, me.user_id IS NOT NULL AS joined FROM chats c"
            " LEFT JOIN chat_members me ON me.chat_id = c.id AND me.user_id = $1"
            f" WHERE c.type <> 'direct' AND {condition}{_VISIBLE_CHAT}"
            " ORDER BY similarity(lower(c.title), $3) DESC, c.id LIMIT $4",
            user_id,
            *args,
        )
        return self._chat_hits(rows)
