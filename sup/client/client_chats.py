"""The Client's chats, joining and search (client.py): what a device asks about the chats it is in, or
could join, and the search of the messages it keeps.

Chat info goes through `Chats` (chats.py), which remembers it and pins encryption on; joining by a
link takes its code (`invite_code`); `search` reads the full-text index of the store (tables/search.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sup.client.chats import Chats
from sup.client.http import SupHttp
from sup.client.store import ClientStore
from sup.client.values import FoundMessage
from sup.searchtext import query_terms


def invite_code(link: str) -> str:
    """The code of an invite link (what follows its last `/`, `#` or `=`), or the code itself."""
    return re.split(r"[/#=]", link.strip())[-1]


class ChatMethods:
    """The Client's methods for chats, joining and search."""

    http: SupHttp
    store: ClientStore
    _chats: Chats

    # -- chats -------------------------------------------------------------------------------

    async def user_by_username(self, username: str) -> dict[str, Any]:
        return await self.http.user_by_username(username)

    async def direct_chat(self, user_id: str) -> dict[str, Any]:
        """The (end-to-end encrypted) direct chat with a user, created if needed."""
        return await self._chats.direct_chat(user_id)

    async def direct_chat_with(self, username: str) -> dict[str, Any]:
        return await self.direct_chat((await self.http.user_by_username(username))["id"])

    async def create_group(self, title: str, member_ids: Iterable[str] = (), *, encrypted: bool = True) -> dict:
        return await self._chats.create_group(title, member_ids, encrypted=encrypted)

    async def add_members(self, chat_id: str, user_ids: Iterable[str]) -> list[str]:
        return await self._chats.add_members(chat_id, user_ids)

    async def remove_member(self, chat_id: str, user_id: str) -> None:
        """Remove a member; in an encrypted group my sender key is replaced before my next message."""
        await self._chats.remove_member(chat_id, user_id)

    async def chats(self) -> list[dict[str, Any]]:
        """My chats, from the server (and remembered locally)."""
        return await self._chats.chats()

    async def chat(self, chat_id: str) -> dict[str, Any]:
        """A chat's info: memory, then the store, then the server."""
        return await self._chats.chat(chat_id)

    async def local_history(self, chat_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Messages this device sent or decrypted in a chat, oldest first (the server cannot decrypt them)."""
        return await self.store.messages(chat_id, limit=limit)

    # -- joining -----------------------------------------------------------------------------

    async def join_chat(self, chat_id: str) -> dict[str, Any]:
        """Join a public chat (one `search_chats` found); the chat, as a member sees it."""
        return await self._joined(await self.http.join_chat(chat_id))

    async def preview_invite(self, link: str) -> dict[str, Any]:
        """What an invite link (or its code) leads to: `{"chat": {title, member_count, ...}, "requires_approval"}`."""
        return await self.http.preview_invite(invite_code(link))

    async def join_by_invite(self, link: str) -> dict[str, Any]:
        """Join through an invite link (or its code). `{"status": "joined" | "member" | "requested", ...}`:
        when the link asks for approval, the chat comes later, with `chat.member.added`.

        In an encrypted group nothing sent before the join can be read here (that is what sender keys
        are for); the members' clients give their keys to this device before their next messages."""
        return await self._joined(await self.http.join_by_invite(invite_code(link)))

    async def _joined(self, answer: dict[str, Any]) -> dict[str, Any]:
        if answer.get("chat"):
            answer = {**answer, "chat": await self._chats.remember(answer["chat"])}
            self._chats.members.pop(answer["chat"]["id"], None)
        return answer

    async def create_invite(self, chat_id: str, **settings: Any) -> dict[str, Any]:
        """A new invite link for a chat I may invite to (settings: `name`, `requires_approval`,
        `expires_in` seconds, `max_uses`); share its `code`, in a link of the web client."""
        return await self.http.create_invite(chat_id, **settings)

    async def invites(self, chat_id: str) -> list[dict[str, Any]]:
        return await self.http.invites(chat_id)

    async def revoke_invite(self, chat_id: str, invite_id: str) -> None:
        await self.http.revoke_invite(chat_id, invite_id)

    async def join_requests(self, chat_id: str) -> list[dict[str, Any]]:
        """Who waits to be let into a chat through a link that asks for approval."""
        return await self.http.join_requests(chat_id)

    async def approve_join_request(self, chat_id: str, user_id: str) -> None:
        await self.http.approve_join_request(chat_id, user_id)

    async def decline_join_request(self, chat_id: str, user_id: str = "me") -> None:
        """Decline someone's request to join, or (the default) withdraw mine."""
        await self.http.decline_join_request(chat_id, user_id)

    # -- search ------------------------------------------------------------------------------

    async def search(self, query: str, chat_id: str | None = None, *, limit: int = 50) -> list[FoundMessage]:
        """Messages kept on this device (received and decrypted, or sent from it) with every word of
        `query`, newest first; in one chat, or in all. This is how end-to-end encrypted chats are
        searched: the server cannot read them. Plaintext chats (channels) are searched here too, as
        far as this device has their messages; `search_messages` asks the server for all of them.

        Words are matched as the server does (case and diacritics aside; the last word also as the
        start of a longer one while it is being typed). ValueError for more than 16 words."""
        terms = query_terms(query)
        if terms is None:
            return []
        found = []
        for row in await self.store.search(terms, chat_id=chat_id, limit=limit):
            found.append(
                FoundMessage(
                    chat_id=row["chat_id"],
                    message_id=row["message_id"],
                    seq=row["seq"],
                    sender_user_id=row["sender_user_id"],
                    sender_device_id=row["sender_device_id"],
                    text=row["content"]["text"],
                    created_at=row["created_at"] or 0,
                    snippet=tuple(row["snippet"]),
                )
            )
        return found

    async def search_messages(
        self, query: str, *, chat_id: str | None = None, order: str = "newest", before: str | None = None
    ) -> dict[str, Any]:
        """The server's search of the chats it can read (channels, unencrypted groups): one page."""
        return await self.http.search_messages(query, chat_id=chat_id, order=order, before=before)

    async def search_users(self, query: str) -> list[dict[str, Any]]:
        """Users by username or display name (start, part, or similar spelling), best first."""
        return await self.http.search_users(query)

    async def search_chats(self, query: str) -> list[dict[str, Any]]:
        """My groups and channels, and public ones I may join (`joined: false`), by title."""
        return await self.http.search_chats(query)
