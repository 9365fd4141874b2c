"""How `sup chat` shows messages: numbered, with the chat they are in, one line each.

    (3) 14:02 [@bob] hi                          a direct chat: the chat says who wrote
    (4) 14:02 [@bob] me: hello                   mine (from this device or another of mine)
    (5) 14:03 [#family] alice: dinner at 8?      a group or channel: the sender is named
    (6) 14:04 [#family] me: (re 5 "dinner at 8?") yes
    (5) 14:05 [#family] alice: (edited) dinner at 7?
    (7) 14:06 [@bob] [file photo.jpg, image/jpeg, 52 kB: /save 7]
    (3) [@bob] (deleted for everyone)

The number is given the first time a message is shown in this session and stays with it, so commands
can name it (`/reply 5 yes`, `/save 7`). Text from others is printed with its control characters
replaced: a message must not be able to move the cursor or retitle the terminal.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import aiohttp

from sup.client.client import Client
from sup.client.http import ApiError
from sup.client.values import Attachment

SNIPPET = 30  # characters of a replied-to message quoted in the reply


@dataclass
class Shown:
    """A message as numbered on screen."""

    number: int
    chat_id: str
    message_id: str
    seq: int
    sender_user_id: str | None
    from_me: bool
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    created_at: int = 0
    edited: bool = False
    deleted: str | None = None  # once deleted: "for everyone", "for me", or "" (not known which)
    undecryptable: str = ""  # why, when it could not be decrypted


class View:
    """Names, chat labels and message numbers, looked up once and kept for the session."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.by_number: dict[int, Shown] = {}
        self._numbers: dict[str, int] = {}  # message id -> number
        self._names: dict[str, str] = {}
        self._labels: dict[str, str] = {}

    async def name(self, user_id: str | None) -> str:
        if user_id is None:
            return "server"
        if user_id not in self._names:
            try:
                self._names[user_id] = clean((await self.client.http.user(user_id))["username"])
            except ApiError:
                self._names[user_id] = short_id(user_id)
            except (aiohttp.ClientError, OSError, TimeoutError):
                return short_id(user_id)  # the server is away: asked again next time
        return self._names[user_id]

    async def user_id(self, username: str) -> str:
        user = await self.client.user_by_username(username)
        self._names[user["id"]] = clean(user["username"])
        return user["id"]

    async def label(self, chat: dict[str, Any]) -> str:
        """`@bob` for a direct chat, `#title` for a group or channel."""
        chat_id = chat["id"]
        if chat_id not in self._labels:
            label = "#" + clean(chat["title"]) if chat.get("title") else "#" + short_id(chat_id)
            if chat.get("type") == "direct":
                try:
                    members = await self.client.http.members(chat_id)
                except (ApiError, aiohttp.ClientError, OSError, TimeoutError):
                    return "@" + short_id(chat_id)  # the server is away: asked again next time
                others = [m["user_id"] for m in members if m["user_id"] != self.client.user_id]
                label = "@" + await self.name(others[0] if others else self.client.user_id)
            self._labels[chat_id] = label
        return self._labels[chat_id]

    def label_of(self, chat_id: str) -> str | None:
        """The label of a chat already shown (for the prompt, which cannot wait for the server)."""
        return self._labels.get(chat_id)

    def forget_label(self, chat_id: str) -> None:
        self._labels.pop(chat_id, None)

    def shown(self, message_id: str | None) -> Shown | None:
        number = self._numbers.get(message_id or "")
        return None if number is None else self.by_number[number]

    def keep(self, shown: Shown) -> Shown:
        """Number a message (or update the one shown before under the same id); the kept entry."""
        number = self._numbers.get(shown.message_id)
        if number is None:
            number = len(self.by_number) + 1
            self._numbers[shown.message_id] = number
        shown.number = number
        self.by_number[number] = shown
        return shown

    async def head(self, shown: Shown) -> str:
        """`(N) HH:MM [chat]`, and who wrote it where the chat does not say."""
        chat = await self.client.chat(shown.chat_id)
        stamp = f" {time.strftime('%H:%M', time.localtime(shown.created_at / 1000))}" if shown.created_at else ""
        head = f"({shown.number}){stamp} [{await self.label(chat)}]"
        if shown.from_me:
            return head + " me:"
        if chat.get("type") != "direct":  # in a direct chat, the chat's name says who wrote
            return head + f" {await self.name(shown.sender_user_id)}:"
        return head

    async def line(self, shown: Shown) -> str:
        head = await self.head(shown)
        if shown.deleted is not None:
            return f"{head} (deleted{' ' + shown.deleted if shown.deleted else ''})"
        if shown.undecryptable:
            return f"{head} !! could not decrypt this message ({shown.undecryptable})"
        marks = ["(edited)"] if shown.edited else []
        if shown.reply_to is not None:
            quoted = self.shown(shown.reply_to)
            if quoted is None:
                marks.append("(re an earlier message)")
            else:
                snippet = quoted.text if len(quoted.text) <= SNIPPET else quoted.text[: SNIPPET - 1] + "…"
                marks.append(f'(re {quoted.number} "{snippet}")')
        body = [clean(shown.text)] if shown.text else []
        body += [_file(a, shown.number) for a in shown.attachments]
        return " ".join([head, *marks, *body]).replace("\n", "\n    ")


def short_id(uuid: str) -> str:
    """The last 8 hex digits of an id: the server's ids are UUIDv7, whose first 8 are the time to a minute or so,
    the same for two devices that logged in together; the last ones are random."""
    return uuid.replace("-", "")[-8:]


def device_label(name: str, device_id: str) -> str:
    """`laptop (1a2b3c4d)`: how a device is named on screen (the name is its owner's, shown cleaned)."""
    return f"{clean(name) if name else 'an unnamed device'} ({short_id(device_id)})"


def clean(text: str) -> str:
    """Text with control characters (escape sequences among them) shown as `?`; line breaks and tabs stay."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else "?" for c in text)


def _file(attachment: Attachment, number: int) -> str:
    name = clean(attachment.name) or short_id(attachment.media_id)
    size = f", {_size(attachment.size)}" if attachment.size else ""
    return f"[file {name}, {clean(attachment.mime)}{size}: /save {number}]"


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.0f} kB"
    return f"{size / 1_000_000:.1f} MB"
