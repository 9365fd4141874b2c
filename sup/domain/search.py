"""Search: users by name, chats by title, messages by their words.

What the server can search is what it can read: plaintext messages (channels, unencrypted
groups), never an end-to-end encrypted chat, whose messages have no body here; clients search
those on the device (the SDK's `Client.search`). Every search is the user's own view:

- messages only from chats the user is a member of now, never one deleted for everyone, nor
  one the user deleted for themselves (`message_hidden`);
- users, but not the user asking, nor anyone who blocks them;
- the user's own chats, and public ones whose owner and admins do not block the user.

The database finds candidates through its index (sup/db/search.py); the ranking and the
snippets are computed here, in the same way on SQLite and Postgres (sup/searchtext.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from sup.db.chats import MemberStore
from sup.db.database import Database, Row
from sup.db.search import ChatHit, MessageHit, SearchStore
from sup.domain.access import ChatAccess
from sup.domain.accounts import User, user_from_row
from sup.domain.cursors import bad_cursor
from sup.domain.joining import ChatCard, card
from sup.domain.timeline import Message, message_from_row
from sup.errors import Code, DomainError
from sup.ids import is_uuid
from sup.searchtext import Terms, TooManyTerms, name_rank, query_terms, relevance, snippet

NAME_QUERY_MAX = 64
# Relevance ranks this many of the newest matches: a bounded amount of work per page, whatever
# the query. Newest first pages through every match.
RELEVANCE_CANDIDATES = 500

T = TypeVar("T")


class UserResults(msgspec.Struct, frozen=True):
    items: list[User]


class ChatResults(msgspec.Struct, frozen=True):
    items: list[ChatCard]


class SnippetPart(msgspec.Struct, frozen=True):
    text: str
    match: bool


class MessageResult(msgspec.Struct, frozen=True, kw_only=True):
    message: Message
    snippet: list[SnippetPart]  # a short piece of the body around the match; `match` parts are the words found
    score: float | None = None  # with order=relevance: higher matched better


class MessageResults(msgspec.Struct, frozen=True):
    items: list[MessageResult]
    next_cursor: str | None


def _best(items: Iterable[T], order: Callable[[T], tuple[Any, ...] | None], limit: int) -> list[T]:
    """The first `limit` items by `order`, leaving out those it gives None (the name does not match)."""
    ranked = [(key, item) for item in items if (key := order(item)) is not None]
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked[:limit]]


@dataclass(slots=True, eq=False)
class SearchService:
    db: Database
    store: SearchStore
    members: MemberStore
    access: ChatAccess

    async def users(self, who_id: str, query: str, limit: int) -> UserResults:
        """Users by username or display name: exact, then starting with, containing, similar."""
        q = _name_query(query)
        if not q:
            return UserResults([])
        rows = await self.store.users(self.db, who_id, q)

        def order(row: Row) -> tuple[Any, ...] | None:
            rank = name_rank(q, row["username"], row["display_name"])
            return None if rank is None else (rank, row["username"].lower())

        return UserResults([user_from_row(row) for row in _best(rows, order, limit)])

    async def chats(self, who_id: str, query: str, limit: int) -> ChatResults:
        """My groups and channels, and public ones, by title; mine first among equals."""
        q = _name_query(query)
        if not q:
            return ChatResults([])
        hits = await self.store.chats(self.db, who_id, q)

        def order(hit: ChatHit) -> tuple[Any, ...] | None:
            rank = name_rank(q, hit.chat.title)
            return None if rank is None else (rank, not hit.joined, hit.chat.title.lower(), hit.chat.id)

        best = _best(hits, order, limit)
        counts = await self.members.counts(self.db, [hit.chat.id for hit in best])
        return ChatResults([card(hit.chat, counts.get(hit.chat.id, 0), hit.joined) for hit in best])

    async def messages(
        self,
        who_id: str,
        query: str,
        *,
        chat_id: str | None,
        order: Literal["newest", "relevance"],
        before: str | None,
        limit: int,
    ) -> MessageResults:
        """Messages with every word of the query, in my chats (or one of them), a page at a time."""
        try:
            terms = query_terms(query)
        except TooManyTerms as exc:
            raise DomainError(Code.VALIDATION_FAILED, str(exc), field="q") from None
        if chat_id is not None:
            await self.access.access_chat(self.db, who_id, chat_id)
        if terms is None:
            if before is not None:
                _parse_cursor(before, order, self.store.valid_key, chat_id is not None)
            return MessageResults([], None)
        if order == "newest":
            return await self._newest(who_id, terms, chat_id, before, limit)
        return await self._most_relevant(who_id, terms, chat_id, before, limit)

    async def _newest(
        self, who_id: str, terms: Terms, chat_id: str | None, before: str | None, limit: int
    ) -> MessageResults:
        below = _parse_cursor(before, "newest", self.store.valid_key, chat_id is not None)[0] if before else None
        hits = await self.store.messages(self.db, who_id, terms, chat_id=chat_id, below=below, limit=limit + 1)
        items = [_result(hit, terms) for hit in hits[:limit]]
        return MessageResults(items, f"n:{hits[limit - 1].key}" if len(hits) > limit else None)

    async def _most_relevant(
        self, who_id: str, terms: Terms, chat_id: str | None, before: str | None, limit: int
    ) -> MessageResults:
        """The newest RELEVANCE_CANDIDATES matches, best first. The first page fixes the newest
        one as the snapshot; later pages rank the same candidates (less whatever was deleted or
        hidden since), so new messages do not shift them."""
        snapshot, after = (None, None)
        if before:
            snapshot, after = _parse_cursor(before, "relevance", self.store.valid_key, chat_id is not None)
        hits = await self.store.messages(
            self.db, who_id, terms, chat_id=chat_id, below=snapshot, inclusive=True, limit=RELEVANCE_CANDIDATES
        )
        if not hits:
            return MessageResults([], None)
        snapshot = snapshot or hits[0].key
        # Best first; among equals newest first (UUIDv7 ids sort by time).
        scored = sorted(
            ((relevance(hit.message.body or "", terms), hit.message.id, hit) for hit in hits),
            key=lambda item: item[:2],
            reverse=True,
        )
        if after is not None:
            scored = [item for item in scored if item[:2] < after]
        page = scored[:limit]
        items = [_result(hit, terms, score) for score, _, hit in page]
        next_cursor = None
        if len(scored) > limit:
            score, message_id, _ = page[-1]
            next_cursor = f"r:{snapshot}:{score!r}:{message_id}"
        return MessageResults(items, next_cursor)


def _result(hit: MessageHit, terms: Terms, score: float | None = None) -> MessageResult:
    parts = [SnippetPart(text, matched) for text, matched in snippet(hit.message.body or "", terms)]
    return MessageResult(message=message_from_row(hit.message), snippet=parts, score=score)


def _name_query(query: str) -> str:
    q = " ".join(query.split()).lower()
    if len(q) > NAME_QUERY_MAX:
        raise DomainError(Code.VALIDATION_FAILED, f"q is at most {NAME_QUERY_MAX} characters.", field="q")
    return q


def _parse_cursor(
    cursor: str, order: str, valid_key: Callable[[str, bool], bool], in_chat: bool
) -> tuple[str, tuple[float, str] | None]:
    """A cursor this server gave out for this order (and for one chat, or all): (store key, and for
    relevance the last (score, id))."""
    kind, _, rest = cursor.partition(":")
    if order == "newest":
        if kind != "n" or not valid_key(rest, in_chat):
            raise bad_cursor()
        return rest, None
    parts = rest.rsplit(":", 2)
    if kind != "r" or len(parts) != 3 or not valid_key(parts[0], in_chat) or not is_uuid(parts[2]):
        raise bad_cursor()
    try:
        score = float(parts[1])
    except ValueError:
        raise bad_cursor() from None
    if score != score or abs(score) > 1e6:  # NaN or absurd
        raise bad_cursor()
    return parts[0], (score, parts[2])
