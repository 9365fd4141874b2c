"""The Client's stories and stickers (client.py).

A story's file and a sticker's image are uploaded as they are, for the server to process and show
(docs/e2e.md, "What the server sees"); a reply to a story, or a sticker sent to an encrypted chat, is an
encrypted message like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from sup.client.chats import Chats
from sup.client.http import MediaSource, SupHttp
from sup.client.sending import Sender
from sup.client.values import ClientError


class MediaMethods:
    """The Client's methods for stories and sticker packs."""

    http: SupHttp
    _chats: Chats
    _sender: Sender

    # -- stories -----------------------------------------------------------------------------

    async def post_story(
        self,
        source: MediaSource,
        *,
        audience: str = "contacts",
        caption: str = "",
        list_id: str | None = None,
        filename: str = "",
    ) -> dict[str, Any]:
        """Upload a photo or video and put it up as a story, for `audience` ("chats", "contacts",
        "close_friends", or "contacts_except" with the `list_id` of the people to leave out).

        Stories are not end-to-end encrypted: the file is uploaded as it is, processed and shown by the
        server to the audience, like a channel's (docs/e2e.md, "What the server sees").
        """
        media = await self.http.upload_media(source, filename=filename)
        return await self.http.post_story(media["id"], audience=audience, caption=caption, list_id=list_id)

    async def stories(self) -> list[dict[str, Any]]:
        """The stories I may see, by author (latest poster first): `{"author", "stories", "all_seen"}`."""
        return [group async for group in self.http.stories()]

    async def view_story(self, story_id: str) -> None:
        """Mark a story seen; its author sees who viewed it."""
        await self.http.view_story(story_id)

    async def story_views(self, story_id: str) -> list[dict[str, Any]]:
        """Who viewed my story, latest first: `{"user", "viewed_at"}`."""
        return [view async for view in self.http.story_views(story_id)]

    async def reply_to_story(self, story: dict[str, Any], text: str, *, client_id: str | None = None) -> dict:
        """Answer a story in the direct chat with its author (an encrypted message).

        Which story it answers travels inside the envelope (`"story": {"id", "author_id"}`): the server
        relays an ordinary message and does not learn that it is a reply to a story, nor to which.
        The author's SDK yields it as a ReceivedMessage whose `story` names the story.
        """
        chat = await self._chats.direct_chat(story["author_id"])
        reference = {"id": story["id"], "author_id": story["author_id"]}
        return await self._sender.send(
            chat["id"], text=text, data=None, attachments=(), reply_to=None, client_id=client_id, story=reference
        )

    # -- stickers ----------------------------------------------------------------------------

    async def send_sticker(self, chat_id: str, sticker_id: str, *, client_id: str | None = None) -> dict[str, Any]:
        """Send a sticker of a published pack. The server checks the sticker (so it sees which one is sent);
        in an encrypted chat receivers take the sticker from the envelope, not from the server."""
        return await self._sender.send(
            chat_id, text=None, data=None, attachments=(), reply_to=None, client_id=client_id, sticker_id=sticker_id
        )

    async def make_sticker_pack(
        self, title: str, stickers: Iterable[tuple[MediaSource, str]], *, publish: bool = True, within: float = 60
    ) -> dict[str, Any]:
        """Upload images (PNG or WebP, each with the emoji it stands for), wait until the server has
        checked them, and make a pack of them, published unless `publish=False`."""
        pack = await self.http.create_sticker_pack(title)
        for source, emoji in stickers:
            media = await self.http.upload_media(source, purpose="sticker")
            media = await self.processed(media["id"], within=within)
            if media["status"] != "ready":
                raise ClientError(f"the server refused a sticker image: {media.get('failure')}")
            await self.http.add_sticker(pack["id"], media["id"], emoji)
        if publish:
            return await self.http.publish_sticker_pack(pack["id"])
        return await self.http.sticker_pack(pack["id"])

    async def processed(self, media_id: str, *, within: float = 60) -> dict[str, Any]:
        """An upload once the server has processed it (`status` "ready" or "failed"); TimeoutError after `within`."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + within, 0.05
        while (media := await self.http.media(media_id))["status"] == "pending":
            if loop.time() > deadline:
                raise TimeoutError(f"media {media_id} is still being processed")
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)
        return media

    async def install_sticker_pack(self, pack_id: str) -> list[dict[str, Any]]:
        """Install a published pack (ApiError `conflict` if it is installed already); my packs, in order."""
        return await self.http.install_sticker_pack(pack_id)

    async def installed_sticker_packs(self) -> list[dict[str, Any]]:
        return await self.http.installed_sticker_packs()
