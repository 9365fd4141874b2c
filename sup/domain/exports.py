"""Data exports: a zip of what the server holds for a user, built by a durable job.

Built by a job rather than streamed in the request: an account with gigabytes of files would
need one long request that must start over whenever the connection drops, and that reads the
database for as long as the client takes to download. The job writes the zip once, into the
blob store (so any process serves it, from disk or S3), and the user downloads it with
ranges, resuming where a connection broke, for `EXPORT_KEEP_HOURS`. Jobs run a few at a time,
so many exports asked for at once queue up instead of loading the server, and each user may
ask for one per `EXPORT_EVERY_HOURS`.

What is in it is said in README.txt inside the zip (written below). Encrypted messages are
left out: the server holds only ciphertext it cannot read, made for the devices that can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from sup.blobs.store import BlobStore, StoredBlob, file_chunks
from sup.clock import Clock
from sup.db.accounts import BlockStore, ContactStore, DeviceStore, UserStore
from sup.db.chats import ChatStore, MemberStore
from sup.db.database import Database, Row, from_row
from sup.db.emails import EmailStore
from sup.db.exports import ExportStore
from sup.db.media import MediaStore
from sup.db.messages import MessageStore
from sup.db.stickers import StickerStore
from sup.db.stories import StoryStore
from sup.domain.files import Download, MediaFiles, clean_filename
from sup.errors import Code, DomainError, RateLimited
from sup.ids import is_uuid, uuid7
from sup.jobs.scheduler import PermanentJobError, Scheduler

log = logging.getLogger("sup.exports")

EXPORT_JOB = "accounts.export"
EXPORT_TIMEOUT_SECONDS = 600.0  # a zip of the largest quota (10 GiB) from a slow disk still fits
EXPORT_EVERY_HOURS = 24
EXPORT_KEEP_HOURS = 72
_PAGE = 500
_HOUR_MS = 3_600_000

README = """\
Your data on this SUP server, as exported on {date} (UTC).

profile.json        your profile, your settings, your verified email address, and the devices
                    logged in to your account
contacts.json       the people in your contacts
blocks.json         the people you block
chats.json          the chats you are a member of: your role, when you joined, your read marker,
                    and the members of your direct chats and groups (not of channels, whose
                    subscribers do not see each other)
messages/<chat>.jsonl  one line per message of that chat that you can see, oldest first
files.json          the files you uploaded, and files/ their contents, as you uploaded them
stories.json        your stories that are up now (their pictures are among your files)
story_lists.json    your close-friends list and your lists of people to leave out
sticker_packs.json  the sticker packs you made, and the ones you installed

Messages of end-to-end encrypted chats (direct chats, and groups that are encrypted) hold no
text here: the server stores only ciphertext made for your devices, and cannot read it. Their
readable copies are on your devices. For those chats you get what the server does know: who
sent what kind of message when, edits and deletions. Files you sent in encrypted chats were
encrypted by your device before upload: they are in files/ as the server holds them,
encrypted (files.json says which), and their keys are in the messages, on your devices.

Messages of other people in chats that are not encrypted (channels, unencrypted groups) are
here as you see them in the chat. Other people's files are not: only their ids.
"""


@dataclass(frozen=True, slots=True)
class ExportSources:
    """What an archive is read from: the stores of the tables it covers, and the blobs of the files."""

    users: UserStore
    devices: DeviceStore
    emails: EmailStore
    contacts: ContactStore
    blocks: BlockStore
    chats: ChatStore
    members: MemberStore
    messages: MessageStore
    media: MediaStore
    stories: StoryStore
    stickers: StickerStore
    blobs: BlobStore


class AccountExport(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: str  # pending, ready, failed
    size: int | None  # bytes of the zip, once ready
    failure: str | None
    created_at: int
    ready_at: int | None
    expires_at: int | None  # the zip is deleted then


class AccountExports(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AccountExport]


def _export(row: Row) -> AccountExport:
    return from_row(AccountExport, row)


def _no_export() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such export.")


@dataclass(slots=True, eq=False)
class ExportService:
    db: Database
    exports: ExportStore
    sources: ExportSources
    files: MediaFiles
    scheduler: Scheduler
    clock: Clock
    scratch_dir: Path

    def __post_init__(self) -> None:
        self.scheduler.register(EXPORT_JOB, self._build_job, timeout=EXPORT_TIMEOUT_SECONDS, max_attempts=2)
        self.scheduler.every("accounts.exports-expire", 3600, self.expire)

    # -- asking, looking, downloading -----------------------------------------------------------

    async def request(self, user_id: str) -> AccountExport:
        """Start building an export; 429 within `EXPORT_EVERY_HOURS` of the last one (a failed one aside)."""
        now = self.clock.now_ms()
        export_id = uuid7(now)
        async with self.db.transaction() as tx:
            await self.sources.users.lock(tx, user_id)  # one request at a time per user
            last = await self.exports.last_counted(tx, user_id)
            if last is not None:
                if last["state"] == "pending" and now - last["created_at"] < 2 * _HOUR_MS:
                    raise DomainError(Code.CONFLICT, "Your export is being built; wait for it.", export_id=last["id"])
                wait_ms = last["created_at"] + EXPORT_EVERY_HOURS * _HOUR_MS - now
                if wait_ms > 0:
                    raise RateLimited(wait_ms / 1000, f"One export per {EXPORT_EVERY_HOURS} hours; try again later.")
            await self.exports.insert(tx, id=export_id, user_id=user_id, now=now)
            await self.scheduler.enqueue(EXPORT_JOB, export_id.encode(), tx=tx)
            tx.after_commit(self._wake)
            return _export(await self.exports.get(tx, export_id))

    async def _wake(self) -> None:
        self.scheduler.wake()

    async def list_mine(self, user_id: str) -> AccountExports:
        return AccountExports(items=[_export(r) for r in await self.exports.of_user(self.db, user_id)])

    async def get(self, user_id: str, export_id: str) -> AccountExport:
        return _export(await self._mine(user_id, export_id))

    async def _mine(self, user_id: str, export_id: str) -> Row:
        row = await self.exports.get(self.db, export_id) if is_uuid(export_id) else None
        # Another user's export looks exactly like one that does not exist.
        if row is None or row["user_id"] != user_id:
            raise _no_export()
        return row

    async def download(self, user_id: str, export_id: str) -> Download:
        row = await self._mine(user_id, export_id)
        if row["state"] == "pending":
            raise DomainError(Code.CONFLICT, "The export is still being built; try again shortly.")
        if row["state"] == "failed" or row["expires_at"] <= self.clock.now_ms():
            raise DomainError(Code.NOT_FOUND, "This export is not available; ask for a new one.")
        day = datetime.fromtimestamp(row["created_at"] / 1000, UTC).strftime("%Y-%m-%d")
        name = clean_filename(f"sup-export-{day}-{export_id[:8]}.zip", "sup-export.zip")
        key = row["blob_key"]
        return Download(key, "application/zip", name, row["size"], key, False, self.sources.blobs)

    async def expire(self) -> None:
        """Hourly: exports past their time go, and their zips with them."""
        now = self.clock.now_ms()
        for row in await self.exports.expired(self.db, now, 1000):
            async with self.db.transaction() as tx:
                gone = await self.exports.delete(tx, row["id"])
            if gone is not None and gone["blob_key"] is not None:
                await self.files.release([gone["blob_key"]])

    # -- the job -------------------------------------------------------------------------------

    async def _build_job(self, payload: bytes) -> None:
        export_id = payload.decode()
        row = await self.exports.get(self.db, export_id)
        if row is None or row["state"] != "pending":
            return  # done already, or its user was deleted
        try:
            stored = await self._build(row["user_id"], export_id)
        except (asyncio.CancelledError, TimeoutError):
            raise  # cut short (shutdown, timeout): the job runs again
        except Exception as exc:
            log.exception("export %s could not be built", export_id)
            async with self.db.transaction() as tx:
                await self.exports.set_failed(tx, export_id, "The archive could not be built; ask for a new one.")
            raise PermanentJobError(f"export {export_id}: {exc}") from exc
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            done = await self.exports.set_ready(
                tx, export_id, stored.key, stored.size, now, now + EXPORT_KEEP_HOURS * _HOUR_MS
            )
        if not done:
            await self.files.release([stored.key])

    async def _build(self, user_id: str, export_id: str) -> StoredBlob:
        path = self.scratch_dir / f"export-{export_id}.zip"
        try:
            archive = await asyncio.to_thread(zipfile.ZipFile, path, "w", zipfile.ZIP_DEFLATED, True)
            try:
                await _Writer(archive, self.db, self.sources, user_id).write_all(self.clock.now_ms())
            finally:
                await asyncio.to_thread(archive.close)
            return await self.sources.blobs.put_stream(file_chunks(path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)


def _json(value: Any) -> bytes:
    return msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n"


class _Writer:
    """Writes one user's archive; each zip call runs in a thread, so the event loop never waits on the disk."""

    def __init__(self, archive: zipfile.ZipFile, db: Database, sources: ExportSources, user_id: str) -> None:
        self._zip = archive
        self._db = db
        self._s = sources
        self._user_id = user_id

    async def write_all(self, now: int) -> None:
        date = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        await self._entry("README.txt", README.format(date=date).encode())
        await self._profile(now)
        await self._entry("contacts.json", _json(await self._contacts()))
        await self._entry("blocks.json", _json(await self._blocks()))
        await self._chats()
        await self._files()
        await self._stories(now)
        await self._entry("sticker_packs.json", _json(await self._sticker_packs()))

    async def _entry(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._zip.writestr, name, data)

    async def _stream_entry(self, name: str, chunks: AsyncIterator[bytes], *, compress: bool) -> None:
        info = zipfile.ZipInfo(name, date_time=datetime.now(UTC).timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        target: IO[bytes] = await asyncio.to_thread(self._zip.open, info, "w", force_zip64=True)
        try:
            async for chunk in chunks:
                await asyncio.to_thread(target.write, chunk)
        finally:
            await asyncio.to_thread(target.close)

    async def _pages(self, fetch: Callable[[str | None], Awaitable[list[Row]]], key: Callable[[Row], str]) -> list[Row]:
        """Every row of a keyset-paginated query."""
        rows: list[Row] = []
        after = None
        while page := await fetch(after):
            rows += page
            if len(page) < _PAGE:
                break
            after = key(page[-1])
        return rows

    async def _profile(self, now: int) -> None:
        user = await self._s.users.get(self._db, self._user_id)
        presence = await self._s.users.presence(self._db, self._user_id)
        devices = await self._s.devices.list_active(self._db, self._user_id)
        email = await self._s.emails.address_of(self._db, self._user_id)
        profile = {
            "exported_at": now,
            "user": {
                "id": user["id"],
                "username": user["username"],
                "display_name": user["display_name"],
                "bio": user["bio"],
                "avatar_media_id": user["avatar_media_id"],
                "created_at": user["created_at"],
                "is_admin": bool(user["is_admin"]),
                "two_factor_enabled": user["totp_enabled_at"] is not None,
                "presence_visible_to": presence["presence_visibility"],
                "email": {"address": email["address"], "verified_at": email["verified_at"]} if email else None,
            },
            "devices": [
                {"id": d["id"], "name": d["name"], "created_at": d["created_at"], "last_seen_at": d["last_seen_at"]}
                for d in devices
            ],
        }
        await self._entry("profile.json", _json(profile))

    async def _contacts(self) -> list[dict[str, Any]]:
        rows = await self._pages(
            lambda after: self._s.contacts.page(self._db, self._user_id, after, _PAGE), lambda r: r["contact_id"]
        )
        return [
            {
                "user_id": r["contact_id"],
                "username": r["username"],
                "display_name": r["display_name"],
                "added_at": r["created_at"],
            }
            for r in rows
        ]

    async def _blocks(self) -> list[dict[str, Any]]:
        rows = await self._pages(
            lambda after: self._s.blocks.page(self._db, self._user_id, after, _PAGE), lambda r: r["blocked_id"]
        )
        return [{"user_id": r["blocked_id"], "username": r["username"], "blocked_at": r["created_at"]} for r in rows]

    async def _chats(self) -> None:
        chats = []
        cursor = None
        while page := await self._s.chats.page_for_user(self._db, self._user_id, cursor, _PAGE):
            for chat, member, _ in page:
                entry = {
                    "id": chat.id,
                    "type": chat.type,
                    "title": chat.title,
                    "description": chat.description,
                    "encrypted": chat.encrypted,
                    "created_at": chat.created_at,
                    "my_role": {"kind": member.kind, "name": member.role_name},
                    "joined_at": member.joined_at,
                    "last_read_seq": member.last_read_seq,
                    "messages": f"messages/{chat.id}.jsonl",
                    "message_text": "not included: end-to-end encrypted" if chat.encrypted else "included",
                }
                if chat.type != "channel":
                    members = await self._pages(
                        lambda after, chat_id=chat.id: self._s.members.list(self._db, chat_id, after, _PAGE),
                        lambda r: r["user_id"],
                    )
                    entry["members"] = [
                        {"user_id": m["user_id"], "username": m["username"], "display_name": m["display_name"]}
                        for m in members
                    ]
                chats.append(entry)
                await self._stream_entry(
                    f"messages/{chat.id}.jsonl", self._message_lines(chat.id, chat.encrypted), compress=True
                )
            if len(page) < _PAGE:
                break
            last_chat, _, activity = page[-1]
            cursor = (activity, last_chat.id)
        await self._entry("chats.json", _json(chats))

    async def _message_lines(self, chat_id: str, encrypted: bool) -> AsyncIterator[bytes]:
        after = 0
        while rows := await self._s.messages.page(
            self._db, chat_id, self._user_id, before=None, after=after, limit=_PAGE
        ):
            lines = []
            for m in rows:
                line: dict[str, Any] = {
                    "id": m.id,
                    "seq": m.seq,
                    "sender_id": m.sender_id,
                    "kind": m.kind,
                    "created_at": m.created_at,
                    "edited_at": m.edited_at,
                    "deleted": m.deleted_at is not None,
                    "reply_to": m.reply_to,
                    "media_id": m.media_id,
                    "sticker_id": m.sticker_id,
                }
                # System messages (joined, left, renamed) are the server's own plaintext, in every chat.
                if not encrypted or m.kind == "system":
                    line["body"] = m.body
                    line["forwarded_from"] = msgspec.json.decode(m.forwarded_from) if m.forwarded_from else None
                lines.append(msgspec.json.encode(line) + b"\n")
            yield b"".join(lines)
            after = rows[-1].seq

    async def _files(self) -> None:
        rows = await self._pages(
            lambda after: self._s.media.page(self._db, self._user_id, after, _PAGE), lambda r: r["id"]
        )
        listed = []
        for r in rows:
            path = f"files/{r['id']}-{clean_filename(r['filename'], 'file')}"
            listed.append(
                {
                    "id": r["id"],
                    "filename": r["filename"],
                    "path": path,
                    "kind": r["kind"],
                    "mime": r["mime"],
                    "size": r["size"],
                    "sha256": r["sha256"],
                    "purpose": r["purpose"],
                    "encrypted_by_your_device": bool(r["encrypted"]),
                    "created_at": r["created_at"],
                }
            )
            if not await self._s.blobs.exists(r["blob_key"]):  # e.g. restored from a backup without its blobs
                listed[-1]["path"] = None
                continue
            # Already compressed (photos, video) or encrypted: stored as they are.
            await self._stream_entry(path, self._s.blobs.read_range(r["blob_key"]), compress=False)
        await self._entry("files.json", _json(listed))

    async def _stories(self, now: int) -> None:
        stories = await self._s.stories.feed_stories(self._db, self._user_id, now, [self._user_id])
        await self._entry(
            "stories.json",
            _json(
                [
                    {
                        "id": s.id,
                        "media_id": s.media_id,
                        "caption": s.caption,
                        "audience": s.audience,
                        "list_id": s.list_id,
                        "created_at": s.created_at,
                        "expires_at": s.expires_at,
                    }
                    for s in stories
                ]
            ),
        )
        lists = []
        for found in await self._s.stories.lists(self._db, self._user_id):
            members = await self._s.stories.members(self._db, found["id"])
            lists.append(
                {
                    "id": found["id"],
                    "kind": found["kind"],
                    "name": found["name"],
                    "members": [
                        {"user_id": m["id"], "username": m["username"], "added_at": m["added_at"]} for m in members
                    ],
                }
            )
        await self._entry("story_lists.json", _json(lists))

    async def _sticker_packs(self) -> dict[str, Any]:
        packs = await self._s.stickers.packs_of(self._db, self._user_id)
        stickers = await self._s.stickers.stickers_of(self._db, [p["id"] for p in packs])
        return {
            "made": [
                {
                    "id": p["id"],
                    "title": p["title"],
                    "slug": p["slug"],
                    "published_at": p["published_at"],
                    "stickers": [
                        {"id": k["id"], "media_id": k["media_id"], "emoji": k["emoji"]}
                        for k in stickers
                        if k["pack_id"] == p["id"]
                    ],
                }
                for p in packs
            ],
            "installed": await self._s.stickers.installed_ids(self._db, self._user_id),
        }
