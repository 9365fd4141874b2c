"""The message endpoints of the REST API (docs/api.md): send, history, edit, delete, reactions, receipts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

from sup.client.transport import NewContent, Transport, decode_message, message_content
from sup.client.transport import segment as _p


class MessagesApi(Transport):
    """Messages of a chat; a message's `ciphertext` comes back as bytes."""

    # -- messages ----------------------------------------------------------------------------

    async def send_message(
        self, chat_id: str, client_id: str, *, kind: str = "text", **content: Unpack[NewContent]
    ) -> dict[str, Any]:
        """POST /messages. The same `client_id` (and content) again returns the original message,
        so a send whose answer was lost is retried safely."""
        payload = {"chat_id": chat_id, "client_id": client_id, "kind": kind, **message_content(**content)}
        return decode_message(await self.request("POST", "/messages", json=payload, idempotent=True))

    async def history(
        self, chat_id: str, *, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> dict[str, Any]:
        """GET /messages/chat/{id}: `{"items", "next_before", "next_after"}`, items in seq order."""
        page = await self.request(
            "GET", f"/messages/chat/{_p(chat_id)}", params={"limit": limit, "before": before, "after": after}
        )
        for item in page["items"]:
            decode_message(item)
        return page

    async def message(self, message_id: str) -> dict[str, Any]:
        return decode_message(await self.request("GET", f"/messages/{_p(message_id)}"))

    async def edit_message(
        self,
        message_id: str,
        *,
        body: str | None = None,
        ciphertext: bytes | None = None,
        recipients: Mapping[str, bytes] | None = None,
    ) -> dict[str, Any]:
        payload = message_content(body=body, ciphertext=ciphertext, recipients=recipients)
        return decode_message(await self.request("PATCH", f"/messages/{_p(message_id)}", json=payload))

    async def delete_message(self, message_id: str, *, for_everyone: bool = True) -> None:
        scope = "everyone" if for_everyone else "me"
        await self.request("DELETE", f"/messages/{_p(message_id)}", params={"scope": scope})

    async def react(self, message_id: str, emoji: str) -> list[dict[str, Any]]:
        answer = await self.request(
            "POST", f"/messages/{_p(message_id)}/reactions", json={"emoji": emoji}, idempotent=True
        )
        return answer["reactions"]

    async def unreact(self, message_id: str, emoji: str) -> list[dict[str, Any]]:
        answer = await self.request("DELETE", f"/messages/{_p(message_id)}/reactions", params={"emoji": emoji})
        return answer["reactions"]

    async def mark_read(self, chat_id: str, seq: int) -> dict[str, Any]:
        """POST /messages/chat/{id}/read: a read receipt up to `seq`."""
        return await self.request("POST", f"/messages/chat/{_p(chat_id)}/read", json={"seq": seq}, idempotent=True)

    async def forward(self, message_id: str, chat_id: str, client_id: str) -> dict[str, Any]:
        answer = await self.request(
            "POST",
            f"/messages/{_p(message_id)}/forward",
            json={"chat_id": chat_id, "client_id": client_id},
            idempotent=True,
        )
        return decode_message(answer)

    async def pin(self, message_id: str) -> None:
        await self.request("POST", f"/messages/{_p(message_id)}/pin", idempotent=True)

    async def unpin(self, message_id: str) -> None:
        await self.request("DELETE", f"/messages/{_p(message_id)}/pin")
