"""The story endpoints of the REST API (docs/api.md): stories, their views, and the lists of who sees them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from sup.client.transport import Transport, given
from sup.client.transport import segment as _p


class StoriesApi(Transport):
    """Stories and the lists of people they are shown to (or kept from)."""

    # -- stories -----------------------------------------------------------------------------

    async def post_story(
        self, media_id: str, *, audience: str = "contacts", caption: str = "", list_id: str | None = None
    ) -> dict[str, Any]:
        """POST /stories: my unencrypted upload (image or video) as a story for `audience`: "chats",
        "contacts", "close_friends" or "contacts_except" (with `list_id`, the list left out)."""
        body = {"media_id": media_id, "audience": audience, "caption": caption, **given(list_id=list_id)}
        return await self.request("POST", "/stories", json=body)

    async def stories_page(self, *, limit: int = 50, before: str | None = None) -> dict[str, Any]:
        """GET /stories: `{"authors": [{"author", "stories", "all_seen"}], "next_cursor"}`, latest poster first."""
        return await self.request("GET", "/stories", params={"limit": limit, "before": before})

    def stories(self) -> AsyncIterator[dict[str, Any]]:
        """Every author with stories I may see (`{"author", "stories", "all_seen"}`), page by page."""
        return self._paged("/stories", key="authors", cursor_param="before", limit=100)

    async def story(self, story_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/stories/{_p(story_id)}")

    async def delete_story(self, story_id: str) -> None:
        await self.request("DELETE", f"/stories/{_p(story_id)}")

    async def view_story(self, story_id: str) -> None:
        """POST /stories/{id}/view: mark it seen (again changes nothing)."""
        await self.request("POST", f"/stories/{_p(story_id)}/view", idempotent=True)

    def story_views(self, story_id: str) -> AsyncIterator[dict[str, Any]]:
        """Who viewed my story (`{"user", "viewed_at"}`), latest first."""
        return self._paged(f"/stories/{_p(story_id)}/views", cursor_param="before")

    async def story_lists(self) -> list[dict[str, Any]]:
        """GET /stories/lists: my close-friends list, then my lists of people to leave out."""
        return (await self.request("GET", "/stories/lists"))["lists"]

    async def story_list(self, list_id: str = "close-friends") -> dict[str, Any]:
        return await self.request("GET", f"/stories/lists/{_p(list_id)}")

    async def create_story_list(self, name: str, user_ids: Iterable[str] = ()) -> dict[str, Any]:
        return await self.request("POST", "/stories/lists", json={"name": name, "user_ids": list(user_ids)})

    async def update_story_list(
        self, list_id: str = "close-friends", *, name: str | None = None, user_ids: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """PATCH /stories/lists/{id}: rename it, or replace who is on it (`close-friends` names that list)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if user_ids is not None:
            body["user_ids"] = list(user_ids)
        return await self.request("PATCH", f"/stories/lists/{_p(list_id)}", json=body)

    async def add_to_story_list(self, list_id: str, user_ids: Iterable[str]) -> dict[str, Any]:
        return await self.request(
            "POST", f"/stories/lists/{_p(list_id)}/members", json={"user_ids": list(user_ids)}, idempotent=True
        )

    async def remove_from_story_list(self, list_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/stories/lists/{_p(list_id)}/members/{_p(user_id)}")

    async def delete_story_list(self, list_id: str) -> None:
        await self.request("DELETE", f"/stories/lists/{_p(list_id)}")
