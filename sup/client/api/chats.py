"""The chat endpoints of the REST API (docs/api.md): chats and members, joining, and the server's search."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from sup.client.transport import Transport, decode_message, given
from sup.client.transport import segment as _p


class ChatsApi(Transport):
    """Chats, their members, invite links and join requests; the server's search."""

    # -- chats -------------------------------------------------------------------------------

    async def create_chat(
        self,
        type: str,
        member_ids: Iterable[str] = (),
        *,
        title: str = "",
        description: str = "",
        encrypted: bool | None = None,
        visibility: str | None = None,
    ) -> dict[str, Any]:
        """POST /chats. Direct chats and groups are encrypted unless `encrypted=False`; channels never.
        `visibility="public"` (channels and unencrypted groups) lets anyone find and join it."""
        body = {
            "type": type,
            "member_ids": list(member_ids),
            "title": title,
            **given(description=description or None, encrypted=encrypted, visibility=visibility),
        }
        return await self.request("POST", "/chats", json=body)

    async def create_direct(self, user_id: str, *, encrypted: bool | None = None) -> dict[str, Any]:
        """The direct chat with a user (there is one per pair: asking again returns it)."""
        return await self.create_chat("direct", [user_id], encrypted=encrypted)

    async def create_group(
        self, title: str, member_ids: Iterable[str] = (), *, encrypted: bool = True, description: str = ""
    ) -> dict[str, Any]:
        return await self.create_chat("group", member_ids, title=title, description=description, encrypted=encrypted)

    async def create_channel(
        self, title: str, member_ids: Iterable[str] = (), *, description: str = "", visibility: str | None = None
    ) -> dict:
        return await self.create_chat(
            "channel", member_ids, title=title, description=description, encrypted=False, visibility=visibility
        )

    async def chats_page(self, *, limit: int = 50, before: str | None = None) -> dict[str, Any]:
        """GET /chats: one page, most recently active first; `next_cursor` goes in `before`."""
        return await self.request("GET", "/chats", params={"limit": limit, "before": before})

    def chats(self) -> AsyncIterator[dict[str, Any]]:
        """Every chat I am in, page by page."""
        return self._paged("/chats", cursor_param="before")

    async def chat(self, chat_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/chats/{_p(chat_id)}")

    async def update_chat(self, chat_id: str, **fields: Any) -> dict[str, Any]:
        return await self.request("PATCH", f"/chats/{_p(chat_id)}", json=fields)

    async def delete_chat(self, chat_id: str) -> None:
        await self.request("DELETE", f"/chats/{_p(chat_id)}")

    async def leave_chat(self, chat_id: str) -> None:
        await self.request("POST", f"/chats/{_p(chat_id)}/leave", idempotent=True)

    async def members(self, chat_id: str) -> list[dict[str, Any]]:
        """Every member of a chat (all pages)."""
        return [m async for m in self._paged(f"/chats/{_p(chat_id)}/members")]

    async def add_members(self, chat_id: str, user_ids: Iterable[str]) -> list[str]:
        answer = await self.request(
            "POST", f"/chats/{_p(chat_id)}/members", json={"user_ids": list(user_ids)}, idempotent=True
        )
        return answer["added"]

    async def remove_member(self, chat_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/chats/{_p(chat_id)}/members/{_p(user_id)}")

    async def typing(self, chat_id: str, active: bool = True) -> None:
        await self.request("POST", f"/chats/{_p(chat_id)}/typing", json={"active": active}, idempotent=True)

    # -- joining: public chats, invite links, join requests -----------------------------------

    async def join_chat(self, chat_id: str) -> dict[str, Any]:
        """POST /chats/{id}/join: join a public chat. `{"status": "joined" | "member", "chat"}`."""
        return await self.request("POST", f"/chats/{_p(chat_id)}/join", idempotent=True)

    async def create_invite(
        self,
        chat_id: str,
        *,
        name: str = "",
        requires_approval: bool = False,
        expires_in: int | None = None,
        max_uses: int | None = None,
    ) -> dict[str, Any]:
        """POST /chats/{id}/invites: a new invite link (`code` is its secret part); `expires_in` in seconds."""
        body = {"name": name, "requires_approval": requires_approval, **given(expires_in=expires_in, max_uses=max_uses)}
        return await self.request("POST", f"/chats/{_p(chat_id)}/invites", json=body)

    async def invites(self, chat_id: str) -> list[dict[str, Any]]:
        """Every invite link of a chat, newest first (revoked and spent ones say so in `usable`)."""
        return [i async for i in self._paged(f"/chats/{_p(chat_id)}/invites")]

    async def revoke_invite(self, chat_id: str, invite_id: str) -> None:
        await self.request("DELETE", f"/chats/{_p(chat_id)}/invites/{_p(invite_id)}", idempotent=True)

    async def preview_invite(self, code: str) -> dict[str, Any]:
        """POST /chat-invites/preview: `{"chat": {...}, "requires_approval", "expires_at", "requested"}`."""
        return await self.request("POST", "/chat-invites/preview", json={"code": code}, idempotent=True)

    async def join_by_invite(self, code: str) -> dict[str, Any]:
        """POST /chat-invites/join: `{"status": "joined" | "member" | "requested", "chat", "request"}`."""
        return await self.request("POST", "/chat-invites/join", json={"code": code}, idempotent=True)

    async def join_requests(self, chat_id: str) -> list[dict[str, Any]]:
        """Every join request waiting in a chat, oldest first."""
        return [r async for r in self._paged(f"/chats/{_p(chat_id)}/join-requests")]

    async def approve_join_request(self, chat_id: str, user_id: str) -> None:
        await self.request("POST", f"/chats/{_p(chat_id)}/join-requests/{_p(user_id)}/approve", idempotent=True)

    async def decline_join_request(self, chat_id: str, user_id: str = "me") -> None:
        """Decline someone's request, or (`me`, the default) withdraw mine."""
        await self.request("DELETE", f"/chats/{_p(chat_id)}/join-requests/{_p(user_id)}")

    # -- search (what the server can read: plaintext chats) -----------------------------------

    async def search_users(self, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """GET /search/users: users by username or display name, best match first."""
        return (await self.request("GET", "/search/users", params={"q": q, "limit": limit}))["items"]

    async def search_chats(self, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """GET /search/chats: my groups and channels, and public ones, by title; `joined` says which."""
        return (await self.request("GET", "/search/chats", params={"q": q, "limit": limit}))["items"]

    async def search_messages(
        self,
        q: str,
        *,
        chat_id: str | None = None,
        order: str = "newest",
        before: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """GET /search/messages: one page, `{"items": [{"message", "snippet", "score"}], "next_cursor"}`;
        pass `next_cursor` as `before` for the next. Encrypted chats are not searched (see Client.search)."""
        params = {"q": q, "chat_id": chat_id, "order": order, "before": before, "limit": limit}
        page = await self.request("GET", "/search/messages", params=params)
        for item in page["items"]:
            decode_message(item["message"])
        return page
