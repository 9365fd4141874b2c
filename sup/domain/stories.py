"""Stories: a photo or video with a caption, shown to an audience the author picks, until it expires.

The audience is checked on every read (sup/db/stories.py `visible_to` is the one rule), and a
story I may not see does not exist for me (404). The file follows its story: only the audience
may fetch it, only while the story lives (sup/domain/files.py), and when the story goes, so does
the file, unless something else uses it. Stories are readable by the server, like channel posts
(docs/e2e.md says what it would take to encrypt them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from sup.clock import Clock
from sup.config import StoriesConfig
from sup.db.accounts import DeviceStore, UserStore
from sup.db.database import Database, Queryable, Row, Transaction, from_row
from sup.db.media import BLOB_COLUMNS, MediaStore
from sup.db.stories import StoryRow, StoryStore
from sup.domain.accounts import User, check_text, user_from_row
from sup.domain.attachments import MediaAttachments
from sup.domain.events import EventWriter, encode
from sup.domain.files import MediaFiles
from sup.domain.views import view_of
from sup.errors import Code, DomainError
from sup.ids import is_uuid, uuid7
from sup.jobs.scheduler import Scheduler

AUDIENCES = ("chats", "contacts", "close_friends", "contacts_except")
CAPTION_MAX = 2048
LIST_NAME_MAX = 64
CLOSE_FRIENDS = "close-friends"  # stands for my close-friends list's id in paths
CLOSE_FRIENDS_NAME = "Close friends"
EXPIRE_JOB = "stories.expire"
_EXPIRE_BATCH = 500


class StoryMedia(msgspec.Struct, frozen=True, kw_only=True):
    """What a viewer needs to show the file before fetching it."""

    kind: str  # image or video
    mime: str
    status: str  # pending until processed: the file answers 409 media_not_ready until then
    width: int | None
    height: int | None
    duration_ms: int | None
    placeholder: str | None  # BlurHash


class Story(msgspec.Struct, frozen=True, kw_only=True):
    """A story as one user sees it. `audience`, `list_id` and `view_count` are for its author only."""

    id: str
    author_id: str
    media_id: str
    media: StoryMedia
    caption: str
    created_at: int
    expires_at: int
    seen: bool  # I marked it viewed (my own: always)
    audience: str | None = None
    list_id: str | None = None
    view_count: int | None = None


class StoryAuthor(msgspec.Struct, frozen=True, kw_only=True):
    author: User
    stories: list[Story]  # newest first
    all_seen: bool


class StoryFeed(msgspec.Struct, frozen=True, kw_only=True):
    authors: list[StoryAuthor]  # whoever posted last comes first
    next_cursor: str | None


class StoryView(msgspec.Struct, frozen=True, kw_only=True):
    user: User
    viewed_at: int


class StoryViewPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[StoryView]  # latest first
    count: int
    next_cursor: str | None


class AudienceList(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str  # close_friends or exclude
    name: str
    size: int
    created_at: int
    updated_at: int


class AudienceListMember(msgspec.Struct, frozen=True, kw_only=True):
    user: User
    added_at: int


class AudienceListDetail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    name: str
    members: list[AudienceListMember]
    created_at: int
    updated_at: int


def _no_story() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such story (stories disappear when they expire).")


def _no_list() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such list.")


def _bad(detail: str, field: str, **extra: object) -> DomainError:
    return DomainError(Code.VALIDATION_FAILED, detail, field=field, **extra)


def story_from_row(row: StoryRow, *, for_author: bool, view_count: int = 0) -> Story:
    info = json.loads(row.info) if row.info else {}
    media = view_of(StoryMedia, row, placeholder=info.get("placeholder"))
    if for_author:
        return view_of(Story, row, media=media, seen=True, view_count=view_count)
    # Who may see a story, and how many did, are for its author alone.
    return view_of(Story, row, media=media, seen=row.seen, audience=None, list_id=None)


def _cursor(value: str | None) -> tuple[int, str] | None:
    """`<created_at>_<id>`, as the previous page gave it."""
    if value is None:
        return None
    at, _, key = value.partition("_")
    if not (at.isascii() and at.isdigit() and len(at) <= 19 and is_uuid(key)):
        raise _bad("before is the next_cursor of the previous page.", "before")
    return int(at), key


@dataclass(slots=True, eq=False)
class StoryService:
    db: Database
    stories: StoryStore
    users: UserStore
    devices: DeviceStore
    media: MediaStore
    attachments: MediaAttachments
    files: MediaFiles
    events: EventWriter
    scheduler: Scheduler
    clock: Clock
    config: StoriesConfig

    def __post_init__(self) -> None:
        self.scheduler.every(EXPIRE_JOB, self.config.expire_interval_seconds, self.expire, timeout=600)

    # -- posting and deleting ----------------------------------------------------------------

    async def post(self, author_id: str, *, media_id: str, caption: str, audience: str, list_id: str | None) -> Story:
        """Put up a story for `lifetime_hours`; its audience's devices get `story.new`."""
        caption = check_text(caption, "caption", CAPTION_MAX)
        if audience not in AUDIENCES:
            raise _bad(f"audience is one of {', '.join(AUDIENCES)}.", "audience")
        if (audience == "contacts_except") != (list_id is not None):
            raise _bad("list_id names the list to leave out, for audience contacts_except only.", "list_id")
        now = self.clock.now_ms()
        story_id = uuid7(now)
        expires_at = now + round(self.config.lifetime_hours * 3_600_000)
        async with self.db.transaction() as tx:
            await self.stories.lock_author(tx, author_id)
            if await self.stories.live_count(tx, author_id, now) >= self.config.max_live:
                raise DomainError(
                    Code.CONFLICT, f"You have {self.config.max_live} stories up already; delete one first."
                )
            if audience == "close_friends":
                list_id = await self._close_friends_id(tx, author_id, now)
            elif audience == "contacts_except":
                found = await self.stories.get_list(tx, list_id) if is_uuid(list_id) else None
                if found is None or found["owner_id"] != author_id or found["kind"] != "exclude":
                    raise _bad("list_id names none of your lists of people to leave out.", "list_id")
            await self.attachments.for_story(tx, author_id, media_id, now)
            await self.stories.insert(
                tx,
                id=story_id,
                author_id=author_id,
                media_id=media_id,
                caption=caption,
                audience=audience,
                list_id=list_id,
                now=now,
                expires_at=expires_at,
            )
            row = await self.stories.visible(tx, story_id, author_id, now)
            assert row is not None
            audience_ids = await self.stories.audience(tx, story_id, author_id, now)
            author = user_from_row(await self.users.get(tx, author_id))
            own = await self.devices.active_ids_of(tx, [author_id])
            others = await self.devices.active_ids_of(tx, audience_ids)
            mine = encode({"story": story_from_row(row, for_author=True), "author": author})
            theirs = encode({"story": story_from_row(row, for_author=False), "author": author})
            await self.events.append(tx, "story.new", [*own, *others], theirs, now, per_device=dict.fromkeys(own, mine))
        return story_from_row(row, for_author=True)

    async def delete(self, author_id: str, story_id: str) -> None:
        """Take my story down before it expires; whoever could see it gets `story.deleted`."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self.stories.get(tx, story_id) if is_uuid(story_id) else None
            if row is None or row["author_id"] != author_id:
                raise _no_story()
            audience_ids = await self.stories.audience(tx, story_id, author_id, now)
            devices = await self.devices.active_ids_of(tx, [author_id, *audience_ids])
            released = await self._remove(tx, row)
            body = encode({"story_id": story_id, "author_id": author_id})
            await self.events.append(tx, "story.deleted", devices, body, now)
        await self.files.release(released)

    async def _remove(self, tx: Transaction, row: Row) -> list[str]:
        """Delete a story (its views go with it) and its file if nothing else uses it; the blobs to release."""
        await self.stories.delete(tx, row["id"])
        gone = await self.media.delete_if_unused(tx, row["media_id"])
        return [gone[c] for c in BLOB_COLUMNS if gone is not None and gone[c] is not None]

    async def expire(self) -> None:
        """Periodic: expired stories go, with their views and (when nothing else uses them) their files."""
        now = self.clock.now_ms()
        while True:
            rows = await self.stories.expired(self.db, now, _EXPIRE_BATCH)
            for row in rows:
                async with self.db.transaction() as tx:
                    released = await self._remove(tx, row)
                await self.files.release(released)
            if len(rows) < _EXPIRE_BATCH:
                return

    # -- reading -----------------------------------------------------------------------------

    async def feed(self, viewer_id: str, *, before: str | None, limit: int) -> StoryFeed:
        """The stories I may see, by author (whoever posted last first), each author's newest first."""
        now = self.clock.now_ms()
        authors = await self.stories.feed_authors(self.db, viewer_id, now, _cursor(before), limit + 1)
        page = authors[:limit]
        author_ids = [r["author_id"] for r in page]
        rows = await self.stories.feed_stories(self.db, viewer_id, now, author_ids)
        profiles = {r["id"]: user_from_row(r) for r in await self.users.get_many(self.db, author_ids)}
        counts = await self.stories.view_count(self.db, [r.id for r in rows if r.author_id == viewer_id])
        by_author: dict[str, list[Story]] = {}
        for row in rows:
            mine = row.author_id == viewer_id
            story = story_from_row(row, for_author=mine, view_count=counts.get(row.id, 0))
            by_author.setdefault(row.author_id, []).append(story)
        groups = [
            StoryAuthor(author=profiles[a], stories=by_author[a], all_seen=all(s.seen for s in by_author[a]))
            for a in author_ids
            if a in by_author and a in profiles  # expired or deleted between the two reads
        ]
        last = page[-1] if page else None
        next_cursor = f"{last['latest']}_{last['author_id']}" if last is not None and len(authors) > limit else None
        return StoryFeed(authors=groups, next_cursor=next_cursor)

    async def get(self, viewer_id: str, story_id: str) -> Story:
        row = await self._visible(self.db, viewer_id, story_id, self.clock.now_ms())
        mine = row.author_id == viewer_id
        counts = await self.stories.view_count(self.db, [row.id]) if mine else {}
        return story_from_row(row, for_author=mine, view_count=counts.get(row.id, 0))

    async def _visible(self, db: Queryable, viewer_id: str, story_id: str, now: int) -> StoryRow:
        row = await self.stories.visible(db, story_id, viewer_id, now) if is_uuid(story_id) else None
        if row is None:
            raise _no_story()
        return row

    # -- views -------------------------------------------------------------------------------

    async def view(self, viewer_id: str, story_id: str) -> None:
        """Mark a story I may see as viewed; the first time stands. The author's own views are not counted."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._visible(tx, viewer_id, story_id, now)
            if row.author_id != viewer_id:
                await self.stories.add_view(tx, story_id, viewer_id, now)

    async def views(self, author_id: str, story_id: str, *, before: str | None, limit: int) -> StoryViewPage:
        """Who viewed my story and when, latest first: for the author only."""
        now = self.clock.now_ms()
        row = await self.stories.get(self.db, story_id) if is_uuid(story_id) else None
        if row is None or row["expires_at"] <= now:
            raise _no_story()
        if row["author_id"] != author_id:
            await self._visible(self.db, author_id, story_id, now)  # 404 unless I may see the story at all
            raise DomainError(Code.FORBIDDEN, "Only a story's author sees who viewed it.")
        rows = await self.stories.views(self.db, story_id, _cursor(before), limit + 1)
        items = [StoryView(user=user_from_row(r), viewed_at=r["viewed_at"]) for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        count = (await self.stories.view_count(self.db, [story_id])).get(story_id, 0)
        next_cursor = f"{last['viewed_at']}_{last['viewer_id']}" if last is not None else None
        return StoryViewPage(items=items, count=count, next_cursor=next_cursor)

    # -- audience lists ----------------------------------------------------------------------

    async def _close_friends_id(self, tx: Queryable, owner_id: str, now: int) -> str:
        """My close-friends list, made (empty) the first time it is needed: there is one per user."""
        await self.stories.insert_list(
            tx, id=uuid7(now), owner_id=owner_id, kind="close_friends", name=CLOSE_FRIENDS_NAME, now=now
        )
        found = await self.stories.close_friends(tx, owner_id)
        assert found is not None
        return found["id"]

    async def _my_list(self, tx: Queryable, owner_id: str, list_id: str, now: int) -> Row:
        if list_id == CLOSE_FRIENDS:
            list_id = await self._close_friends_id(tx, owner_id, now)
        found = await self.stories.get_list(tx, list_id) if is_uuid(list_id) else None
        if found is None or found["owner_id"] != owner_id:
            raise _no_list()
        return found

    async def lists(self, owner_id: str) -> list[AudienceList]:
        """My close-friends list first, then my lists of people to leave out."""
        async with self.db.transaction() as tx:
            await self._close_friends_id(tx, owner_id, self.clock.now_ms())
            rows = await self.stories.lists(tx, owner_id)
        return [from_row(AudienceList, r) for r in rows]

    async def get_list(self, owner_id: str, list_id: str) -> AudienceListDetail:
        async with self.db.transaction() as tx:
            found = await self._my_list(tx, owner_id, list_id, self.clock.now_ms())
            return await self._detail(tx, found)

    async def create_list(self, owner_id: str, *, name: str, user_ids: Sequence[str]) -> AudienceListDetail:
        """A new list of people to leave out of a story (audience contacts_except)."""
        name = self._check_name(name)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.stories.lock_author(tx, owner_id)
            if await self.stories.count_lists(tx, owner_id, "exclude") >= self.config.max_lists:
                raise DomainError(Code.CONFLICT, f"You have {self.config.max_lists} lists already; delete one first.")
            members = await self._check_members(tx, owner_id, user_ids)
            list_id = uuid7(now)
            await self.stories.insert_list(tx, id=list_id, owner_id=owner_id, kind="exclude", name=name, now=now)
            await self.stories.add_members(tx, list_id, members, now)
            return await self._detail(tx, await self.stories.get_list(tx, list_id))

    async def update_list(
        self, owner_id: str, list_id: str, *, name: str | None, user_ids: Sequence[str] | None
    ) -> AudienceListDetail:
        """Rename a list, or replace who is on it (None: leave as it is)."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            found = await self._my_list(tx, owner_id, list_id, now)
            if name is not None:
                if found["kind"] == "close_friends":
                    raise _bad("The close-friends list keeps its name.", "name")
                await self.stories.rename_list(tx, found["id"], self._check_name(name), now)
            if user_ids is not None:
                members = await self._check_members(tx, owner_id, user_ids)
                await self.stories.clear_members(tx, found["id"])
                await self.stories.add_members(tx, found["id"], members, now)
            await self.stories.touch_list(tx, found["id"], now)
            return await self._detail(tx, await self.stories.get_list(tx, found["id"]))

    async def add_to_list(self, owner_id: str, list_id: str, user_ids: Sequence[str]) -> AudienceListDetail:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            found = await self._my_list(tx, owner_id, list_id, now)
            members = await self._check_members(tx, owner_id, user_ids, already=found["id"])
            await self.stories.add_members(tx, found["id"], members, now)
            await self.stories.touch_list(tx, found["id"], now)
            return await self._detail(tx, await self.stories.get_list(tx, found["id"]))

    async def remove_from_list(self, owner_id: str, list_id: str, user_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            found = await self._my_list(tx, owner_id, list_id, now)
            if not is_uuid(user_id) or not await self.stories.remove_members(tx, found["id"], [user_id]):
                raise DomainError(Code.NOT_FOUND, "That user is not on this list.")
            await self.stories.touch_list(tx, found["id"], now)

    async def delete_list(self, owner_id: str, list_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            found = await self._my_list(tx, owner_id, list_id, now)
            if found["kind"] == "close_friends":
                raise DomainError(Code.CONFLICT, "The close-friends list cannot be deleted; empty it instead.")
            if await self.stories.list_in_use(tx, found["id"], now):
                raise DomainError(
                    Code.CONFLICT, "A story that is up leaves this list out; delete the story or wait until it expires."
                )
            await self.stories.delete_list(tx, found["id"])

    def _check_name(self, name: str) -> str:
        name = check_text(name, "name", LIST_NAME_MAX)
        if not name:
            raise _bad(f"name is 1 to {LIST_NAME_MAX} characters.", "name")
        return name

    async def _check_members(
        self, tx: Queryable, owner_id: str, user_ids: Sequence[str], *, already: str | None = None
    ) -> list[str]:
        """The ids, once each, if they are all people I know (a contact, or someone I share a chat with)."""
        wanted = list(dict.fromkeys(user_ids))
        if any(not is_uuid(u) for u in wanted):
            raise _bad("user_ids are user ids.", "user_ids")
        known = await self.stories.known_to(tx, owner_id, wanted)
        if strangers := [u for u in wanted if u not in known]:
            raise _bad(
                "Audience lists hold people you know: your contacts and people you share a chat with.",
                "user_ids",
                user_ids=strangers,
            )
        size = len(wanted) + (await self.stories.member_count(tx, already) if already else 0)
        if size > self.config.max_list_members:
            raise _bad(f"A list holds at most {self.config.max_list_members} people.", "user_ids")
        return wanted

    async def _detail(self, db: Queryable, found: Row) -> AudienceListDetail:
        rows = await self.stories.members(db, found["id"])
        return AudienceListDetail(
            id=found["id"],
            kind=found["kind"],
            name=found["name"],
            members=[AudienceListMember(user=user_from_row(r), added_at=r["added_at"]) for r in rows],
            created_at=found["created_at"],
            updated_at=found["updated_at"],
        )
