"""The chats a device is in, as it trusts them: encryption pinned on, members, and who left.

Part of `Client` (see client.py). The server describes chats; this part keeps what it said, except that a
chat seen once as encrypted (and every direct chat) stays encrypted whatever the server later says, and
that a member seen leaving a chat stays out of it (its messages refused) until `chat.member.added` names
it again: the server cannot keep a removed member writing to the group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import aiohttp
import msgspec

from sup.client.http import ApiError
from sup.client.state import DeviceState, Work
from sup.client.store import ClientStore

log = logging.getLogger("sup.client")


def is_encrypted(chat: dict[str, Any]) -> bool:
    """Whether a chat is end-to-end encrypted here: every direct chat is, whatever the server says."""
    return bool(chat.get("encrypted")) or chat.get("type") == "direct"


class Chats:
    """Chat info and member lists (cached), and the members seen leaving each chat (stored)."""

    def __init__(self, state: DeviceState) -> None:
        self.state = state
        self.known: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}
        # chat id -> users seen leaving it and not added back since (the store's `removed_members`)
        self.removed: dict[str, set[str]] = _load_removed(state.store)
        state.on_rollback.append(self._reload_removed)

    def _reload_removed(self) -> None:
        self.removed = _load_removed(self.state.store)

    # -- what Client offers ------------------------------------------------------------------

    async def direct_chat(self, user_id: str) -> dict[str, Any]:
        chat = await self.state.http.create_direct(user_id)
        return await self.remember(chat)

    async def create_group(self, title: str, member_ids: Iterable[str], *, encrypted: bool) -> dict[str, Any]:
        chat = await self.state.http.create_group(title, member_ids, encrypted=encrypted)
        return await self.remember(chat)

    async def add_members(self, chat_id: str, user_ids: Iterable[str]) -> list[str]:
        added = await self.state.http.add_members(chat_id, user_ids)
        self.members.pop(chat_id, None)
        return added

    async def remove_member(self, chat_id: str, user_id: str) -> None:
        await self.state.http.remove_member(chat_id, user_id)
        self.members.pop(chat_id, None)
        async with self.state.store.batch() as batch:
            batch.need_rotation(chat_id)

    async def chats(self) -> list[dict[str, Any]]:
        found = [await self.pin(chat) async for chat in self.state.http.chats()]
        async with self.state.store.batch() as batch:
            for chat in found:
                self.known[chat["id"]] = chat
                batch.put_chat(chat)
        return found

    async def chat(self, chat_id: str) -> dict[str, Any]:
        """A chat's info: memory, then the store, then the server."""
        chat = self.known.get(chat_id) or await self.state.store.chat(chat_id)
        if chat is None:
            chat = await self.pin(await self.state.http.chat(chat_id))
            await self.state.store.put_chat(chat)
        self.known[chat_id] = chat
        return chat

    # -- for the other parts -----------------------------------------------------------------

    async def remember(self, chat: dict[str, Any]) -> dict[str, Any]:
        chat = await self.pin(chat)
        self.known[chat["id"]] = chat
        await self.state.store.put_chat(chat)
        return chat

    async def pin(self, chat: dict[str, Any]) -> dict[str, Any]:
        """The chat as the server describes it, except that encryption is never turned off.

        A direct chat is always encrypted, and a chat seen encrypted once stays so: otherwise a server
        could announce `encrypted: false` and receive the next message in plaintext.
        """
        known = self.known.get(chat["id"]) or await self.state.store.chat(chat["id"])
        if is_encrypted(chat) and chat.get("encrypted"):
            return chat
        if is_encrypted(chat) or (known is not None and is_encrypted(known)):
            log.warning("the server says chat %s is not end-to-end encrypted: ignored, it stays encrypted", chat["id"])
            return {**chat, "encrypted": True}
        return chat

    async def member_ids(self, chat_id: str) -> list[str]:
        members = self.members.get(chat_id)
        if members is None:
            members = [m["user_id"] for m in await self.state.http.members(chat_id)]
            self.members[chat_id] = members
        return members

    async def for_message(self, chat_id: str, work: Work) -> dict[str, Any] | None:
        """The chat a message arrived in, looked up if needed; None when the server does not answer."""
        chat = self.known.get(chat_id) or await self.state.store.chat(chat_id)
        if chat is None:
            try:
                chat = await self.pin(await self.state.http.chat(chat_id))
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                log.warning("could not look up chat %s: %r", chat_id, error)
                return None
            self.known[chat_id] = chat
            work.batch.put_chat(chat)
        return chat

    def has_left(self, chat_id: str, user_id: str | None) -> bool:
        return user_id in self.removed.get(chat_id, ())

    # -- events ------------------------------------------------------------------------------

    async def on_event(self, frame: dict[str, Any], work: Work) -> None:
        """`chat.created`, `chat.updated`, `chat.member.added`, `chat.member.removed`, `chat.deleted`."""
        kind = frame["type"]
        if kind in ("chat.created", "chat.updated"):
            chat = await self.pin(frame["chat"])
            self.known[chat["id"]] = chat
            work.batch.put_chat(chat)
        elif kind == "chat.member.added":
            chat = await self.pin(frame["chat"])
            self.known[chat["id"]] = chat
            work.batch.put_chat(chat)
            self.members.pop(chat["id"], None)
            added = frame.get("user_ids") or []
            self._members_back(work, chat["id"], added)
            if self.state.user_id in added and chat["id"] in self.removed:
                # I was out of the chat: whoever came back meanwhile was announced to the members only.
                work.after_commit.append(lambda: self.recheck_removed([chat["id"]]))
        elif kind == "chat.member.removed":
            chat_id = frame["chat_id"]
            self.members.pop(chat_id, None)
            chat = self.known.get(chat_id) or await self.state.store.chat(chat_id)
            if frame["user_id"] != self.state.user_id:
                self._member_gone(work, chat_id, frame["user_id"])
                if chat and is_encrypted(chat) and chat.get("type") == "group":
                    work.batch.need_rotation(chat_id)
        elif kind == "chat.deleted":
            self.known.pop(frame["chat_id"], None)
            self.members.pop(frame["chat_id"], None)
            work.batch.forget_chat(frame["chat_id"])
            if self.removed.pop(frame["chat_id"], None) is not None:
                work.batch.set(removed_members=_dump_removed(self.removed))

    def on_resync(self, work: Work) -> None:
        """Events were pruned before they were read: the caches may be stale."""
        self.known.clear()
        self.members.clear()
        if self.removed:
            work.after_commit.append(lambda: self.recheck_removed(list(self.removed)))

    def _member_gone(self, work: Work, chat_id: str, user_id: str) -> None:
        """A member left: its sender keys here are dropped, and its messages refused until it is added again."""
        self.removed.setdefault(chat_id, set()).add(user_id)
        work.batch.set(removed_members=_dump_removed(self.removed))
        if self.state.crypto.forget_sender_keys(user_id, chat_id=chat_id):
            work.crypto_changed = True

    def _members_back(self, work: Work, chat_id: str, user_ids: Iterable[str]) -> None:
        removed = self.removed.get(chat_id)
        if not removed or removed.isdisjoint(user_ids):
            return
        removed.difference_update(user_ids)
        if not removed:
            del self.removed[chat_id]
        work.batch.set(removed_members=_dump_removed(self.removed))

    async def recheck_removed(self, chat_ids: list[str]) -> None:
        """After events were missed (a resync, or while I was out of a chat): who is listed as a member again
        was added back meanwhile (the member list is what my sends trust too)."""
        for chat_id in chat_ids:
            # The lock spans the lookup, so a removal handled meanwhile is not undone by an older list.
            async with self.state.lock:
                if self.state.closed or chat_id not in self.removed:
                    continue
                try:
                    members = [m["user_id"] for m in await self.state.http.members(chat_id)]
                except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    log.warning("could not list the members of chat %s: %r", chat_id, error)
                    continue
                work = Work()
                self._members_back(work, chat_id, members)
                await self.state.commit(work)


def _load_removed(store: ClientStore) -> dict[str, set[str]]:
    raw = store.get("removed_members")
    return {} if raw is None else {chat: set(users) for chat, users in msgspec.json.decode(raw).items()}


def _dump_removed(removed: dict[str, set[str]]) -> str:
    return msgspec.json.encode({chat: sorted(users) for chat, users in removed.items()}).decode()
