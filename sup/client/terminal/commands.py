"""The commands of `sup chat`, and what it prints for each item the client yields."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp

from sup.client.client import (
    Attachment,
    Client,
    ClientError,
    MemberWithoutDevice,
    MessageDeleted,
    NewDevice,
    Queued,
    QueuedMessageDropped,
    QueuedMessageSent,
    ReceivedMessage,
    SafetyNumberChanged,
    Undecryptable,
    WaitingForDevice,
)
from sup.client.http import ApiError, SessionEnded
from sup.client.terminal.delivery import Outgoing, ReadMarks
from sup.client.terminal.view import Shown, View, clean, device_label, short_id

HISTORY_ON_OPEN = 10  # messages shown when a chat becomes current
HISTORY = 50  # messages /history shows

HELP = """commands (N is the number shown in front of a message):
  /chats                      list my chats (numbered)
  /open N                     make chat N of the last /chats list current
  /dm USERNAME                the direct chat with a user becomes current
  /group TITLE USER [USER..]  create an encrypted group (TITLE without spaces)
  /add USERNAME, /remove USERNAME   change the current group's members
  /history                    what this device has of the current chat
  /reply N TEXT               answer message N (in its chat)
  /edit N TEXT                replace the text of my message N
  /delete N                   delete message N for everyone (mine; any, for a chat's admins)
  /delete N me                delete message N for my account only
  /send PATH                  send a file to the current chat (encrypted in an encrypted chat)
  /save N [PATH]              download (and decrypt) the file of message N; by default to its name, here
  /safety USERNAME            the safety number to compare with that user
  /trust USERNAME             accept the changed keys of that user's devices (after comparing /safety);
                              the messages held for them are shown
  /reject USERNAME            refuse them: the held messages are shown as undecryptable
  /devices                    the devices logged in to my account
  /revoke ID                  log one of them out (ID: as /devices or a new-device notice shows it)
  /whoami, /help, /quit
anything else is sent to the current chat; while the server cannot be reached it is queued,
and sent in order when the connection is back (also after a restart of sup chat); a line to
someone who has no device yet waits for their first one, and is sent when they log in"""


class Terminal:
    """One chat session: the client, the current chat, what was shown, and the background senders."""

    def __init__(self, client: Client, out: TextIO | None = None) -> None:
        self.client = client
        self.out = out  # None: sys.stdout as it is when printing (prompt_toolkit replaces it)
        self.view = View(client)
        self.current: dict[str, Any] | None = None
        self.listed: list[dict[str, Any]] = []
        # identity keys announced as changed and not trusted yet: user id -> device id -> key
        self.untrusted: dict[str, dict[str, bytes]] = {}
        self.read_marks = ReadMarks(client)
        self.outgoing = Outgoing(client, self.say, self._sent)

    def say(self, text: str) -> None:
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def prompt(self) -> str:
        label = self.view.label_of(self.current["id"]) if self.current else None
        return f"[{label}]> " if label else "> "

    async def close(self) -> None:
        await self.outgoing.stop()
        await self.read_marks.stop()

    # -- what the client yields --------------------------------------------------------------

    async def show(self, item: Any) -> None:
        if isinstance(item, NewDevice):
            device = device_label(item.device_name, item.device_id)
            if item.user_id == self.client.user_id:  # no safety number to compare with myself
                self.say(
                    f"!! a new device logged in to your account: {device} — if this was not you, revoke it:"
                    f" /revoke {short_id(item.device_id)} (and change your password)"
                )
                return
            who = await self.view.name(item.user_id)
            self.say(
                f"!! {who} has a new device: {device}; the safety number with {who} changed —"
                f" if you did not expect it, compare /safety {who}"
            )
        elif isinstance(item, SafetyNumberChanged):
            who = await self.view.name(item.user_id)
            if item.trusted:
                self.say(f"!! the safety number with {who} changed (a device has a new key)")
                return
            self.untrusted.setdefault(item.user_id, {})[item.device_id] = item.identity_key
            self.say(
                f"!! the safety number with {who} changed: device {short_id(item.device_id)} has a new key and its"
                f" messages are held; compare /safety {who}, then /trust {who} or /reject {who}"
            )
        elif isinstance(item, WaitingForDevice):
            who = await self._names(item.user_ids)
            self.say(
                f'-- waiting for {_first_device_of(who)}: "{_snippet(item.text)}" is kept,'
                f" and sent when {_have(who)} logged in"
            )
        elif isinstance(item, QueuedMessageSent):
            await self._show_mine(item.chat_id, {"id": item.message_id, "seq": item.seq})
        elif isinstance(item, QueuedMessageDropped):
            self.say(f'-- not sent ({clean(item.reason)}): "{_snippet(item.text)}"')
        elif isinstance(item, MessageDeleted):
            shown = self.view.shown(item.message_id) or Shown(0, item.chat_id, item.message_id, item.seq, None, False)
            shown.deleted = "for everyone" if item.for_everyone else "for me"
            await self._print(self.view.keep(shown))
        elif isinstance(item, Undecryptable) and item.edited:
            shown = self.view.shown(item.message_id) or self.view.keep(_shown(item))
            head = await self.view.head(shown)
            self.say(f"{head} !! could not decrypt an edit of this message; it stays as it was ({item.reason})")
        elif isinstance(item, ReceivedMessage | Undecryptable):
            shown = _shown(item)
            before = self.view.shown(item.message_id)
            if before is not None and isinstance(item, ReceivedMessage) and item.edited:
                shown.attachments = shown.attachments or before.attachments  # an edit replaces the text only
            await self._print(self.view.keep(shown))

    async def show_waiting(self) -> None:
        """At the start: what an earlier session left waiting for a member's first device (it is announced once)."""
        for queued in await self.client.queued():
            if queued.waiting_for:
                await self.show(WaitingForDevice(queued.chat_id, queued.waiting_for, queued.client_id, queued.text))

    async def _print(self, shown: Shown) -> None:
        self.say(await self.view.line(shown))
        if self.current is not None and shown.chat_id == self.current["id"]:
            self.read_marks.seen(shown.chat_id, shown.seq)

    async def _sent(self, queued: Queued, sent: dict[str, Any]) -> None:
        await self._show_mine(queued.chat_id, sent)

    async def _names(self, user_ids: tuple[str, ...]) -> list[str]:
        return [await self.view.name(user_id) for user_id in user_ids]

    async def _show_mine(self, chat_id: str, sent: dict[str, Any]) -> None:
        if self.view.shown(sent["id"]) is not None:
            return  # a message that waited is reported twice: by the flush that sent it, and by the client
        row = await self.client.store.message_at(chat_id, sent["id"], sent["seq"])
        if row is not None:
            await self._print(self.view.keep(_from_row(row, self.client.user_id)))

    # -- input -------------------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        """Run one input line; False to quit."""
        if not line.startswith("/"):
            if self.current is None:
                self.say("-- no current chat: /dm USERNAME, /chats then /open N, or /help")
            elif line:
                await self._post(self.current["id"], line)
            return True
        name, *words = line[1:].split()
        if name in ("quit", "exit", "q"):
            return False
        handler: Callable[[list[str]], Any] | None = getattr(self, f"cmd_{name}", None)
        if handler is None:
            self.say(f"-- unknown command /{name}; /help lists them")
            return True
        try:
            await handler(words)
        except SessionEnded:
            raise
        except MemberWithoutDevice as error:  # a file or an edit (text waits in the outbox, and is announced)
            who = await self._names(error.user_ids)
            self.say(
                f"-- not sent: {_have(who)} no device that can read it yet, and only text messages wait for one;"
                f" send it again when {_have(who)} logged in"
            )
        except ApiError as error:
            self.say(f"-- {error.code}: {error.detail}")
        except ClientError as error:
            self.say(f"-- {error}")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self.say(f"-- the server did not answer: {error!r}")
        return True

    async def _post(self, chat_id: str, text: str, reply_to: str | None = None) -> None:
        """Queue a message (it keeps its place in line whatever happens), then let the sender send it."""
        await self.client.queue_text(chat_id, text, reply_to=reply_to)
        if self.outgoing.offline:
            waiting = sum(1 for q in await self.client.queued() if not q.waiting_for)
            self.say(f"-- queued ({waiting} waiting): the server cannot be reached; sent when the connection is back")
        self.outgoing.kick()

    def _numbered(self, words: list[str], usage: str) -> Shown | None:
        if not words or not words[0].isdigit() or int(words[0]) not in self.view.by_number:
            self.say(f"-- {usage}, with N the number of a message shown")
            return None
        return self.view.by_number[int(words[0])]

    async def use(self, chat: dict[str, Any]) -> None:
        """Make a chat current and show its last messages (which marks them read)."""
        self.current = chat
        lock = "encrypted" if chat.get("encrypted") else "NOT encrypted"
        self.say(f"-- now in {await self.view.label(chat)} ({chat['type']}, {lock})")
        await self._history(chat["id"], HISTORY_ON_OPEN)

    async def _history(self, chat_id: str, limit: int) -> None:
        for row in await self.client.local_history(chat_id, limit=limit):
            await self._print(self.view.keep(_from_row(row, self.client.user_id)))

    # -- commands ----------------------------------------------------------------------------

    async def cmd_help(self, words: list[str]) -> None:
        self.say(HELP)

    async def cmd_whoami(self, words: list[str]) -> None:
        self.say(f"-- {self.client.username} ({self.client.user_id}), device {self.client.device_id}")

    async def cmd_chats(self, words: list[str]) -> None:
        self.listed = await self.client.chats()
        if not self.listed:
            self.say("-- no chats yet: /dm USERNAME")
        for number, chat in enumerate(self.listed, 1):
            unread = f" ({chat['unread_count']} unread)" if chat.get("unread_count") else ""
            self.say(f"{number:3}. {await self.view.label(chat)} [{chat['type']}]{unread}")

    async def cmd_open(self, words: list[str]) -> None:
        if len(words) != 1 or not words[0].isdigit() or not 1 <= int(words[0]) <= len(self.listed):
            self.say("-- /open N, with N from the last /chats list")
            return
        await self.use(self.listed[int(words[0]) - 1])

    async def cmd_dm(self, words: list[str]) -> None:
        if len(words) != 1:
            self.say("-- /dm USERNAME")
            return
        await self.use(await self.client.direct_chat(await self.view.user_id(words[0])))

    async def cmd_group(self, words: list[str]) -> None:
        if len(words) < 2:
            self.say("-- /group TITLE USER [USER...]")
            return
        members = [await self.view.user_id(u) for u in words[1:]]
        await self.use(await self.client.create_group(words[0], members))

    async def cmd_add(self, words: list[str]) -> None:
        if self.current is None or len(words) != 1:
            self.say("-- /add USERNAME, in a group")
            return
        await self.client.add_members(self.current["id"], [await self.view.user_id(words[0])])
        self.say(f"-- added {words[0]}")

    async def cmd_remove(self, words: list[str]) -> None:
        if self.current is None or len(words) != 1:
            self.say("-- /remove USERNAME, in a group")
            return
        await self.client.remove_member(self.current["id"], await self.view.user_id(words[0]))
        self.say(f"-- removed {words[0]}")

    async def cmd_history(self, words: list[str]) -> None:
        if self.current is None:
            self.say("-- no current chat")
            return
        await self._history(self.current["id"], HISTORY)

    async def cmd_reply(self, words: list[str]) -> None:
        shown = self._numbered(words, "/reply N TEXT")
        if shown is None or len(words) < 2:
            return
        await self._post(shown.chat_id, " ".join(words[1:]), reply_to=shown.message_id)

    async def cmd_edit(self, words: list[str]) -> None:
        shown = self._numbered(words, "/edit N TEXT")
        if shown is None or len(words) < 2:
            return
        if not shown.from_me or shown.deleted is not None or shown.undecryptable:
            self.say(f"-- message {shown.number} is not one of mine that can be edited")
            return
        text = " ".join(words[1:])
        await self.client.edit_text(shown.chat_id, shown.message_id, text)
        shown.text, shown.edited = text, True
        await self._print(shown)

    async def cmd_delete(self, words: list[str]) -> None:
        shown = self._numbered(words, "/delete N [me]")
        if shown is None:
            return
        if words[1:] not in ([], ["me"]):
            self.say("-- /delete N (for everyone) or /delete N me (for my account only)")
            return
        # The server's message.deleted event comes back to this device too, and shows the deletion.
        await self.client.delete_message(shown.message_id, for_everyone=words[1:] != ["me"])

    async def cmd_send(self, words: list[str]) -> None:
        if self.current is None or len(words) != 1:
            self.say("-- /send PATH, in a chat")
            return
        path = words[0]
        try:
            data = await asyncio.to_thread(_read_file, path)
        except OSError as error:
            self.say(f"-- cannot read {path}: {error.strerror or error}")
            return
        name = os.path.basename(path)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        chat_id = self.current["id"]
        await self._show_mine(chat_id, await self.client.send_file(chat_id, data, name=name, mime=mime))

    async def cmd_save(self, words: list[str]) -> None:
        shown = self._numbered(words, "/save N [PATH]")
        if shown is None or len(words) > 2:
            return
        if not shown.attachments:
            self.say(f"-- message {shown.number} has no file")
            return
        attachment = shown.attachments[0]
        data = await self.client.download(attachment)  # DecryptError (a ClientError) if the blob was changed
        target = words[1] if len(words) == 2 else _safe_name(attachment)
        try:
            saved = await asyncio.to_thread(_write_file, target, data, overwrite=len(words) == 2)
        except FileExistsError:
            self.say(f"-- {target} exists: /save {shown.number} PATH to choose where")
            return
        except OSError as error:
            self.say(f"-- cannot write {target}: {error.strerror or error}")
            return
        self.say(f"-- saved the file of message {shown.number} to {saved} ({len(data)} bytes)")

    async def cmd_safety(self, words: list[str]) -> None:
        if len(words) != 1:
            self.say("-- /safety USERNAME")
            return
        number = await self.client.safety_number(await self.view.user_id(words[0]))
        groups = [number[i : i + 5] for i in range(0, len(number), 5)]
        self.say("-- compare with " + words[0] + ":\n   " + " ".join(groups[:6]) + "\n   " + " ".join(groups[6:]))

    async def cmd_devices(self, words: list[str]) -> None:
        for device in await self.client.http.devices():
            mine = " (this device)" if device.get("current") else ""
            self.say(f"   {device_label(device.get('name') or '', device['id'])}{mine}")

    async def cmd_revoke(self, words: list[str]) -> None:
        if len(words) != 1:
            self.say("-- /revoke ID, with ID as /devices shows it")
            return
        wanted = words[0].lower()
        found = [d for d in await self.client.http.devices() if short_id(d["id"]) == wanted or d["id"] == wanted]
        if not found:
            self.say(f"-- no device {words[0]} on your account: /devices lists them")
            return
        device = found[0]
        if device.get("current"):
            self.say("-- that is this device: /quit, or revoke it from another one")
            return
        await self.client.http.revoke_device(device["id"])
        self.say(f"-- logged out {device_label(device.get('name') or '', device['id'])}")

    async def cmd_trust(self, words: list[str]) -> None:
        await self._decide(words, trust=True)

    async def cmd_reject(self, words: list[str]) -> None:
        await self._decide(words, trust=False)

    async def _decide(self, words: list[str], *, trust: bool) -> None:
        verb = "trust" if trust else "reject"
        if len(words) != 1:
            self.say(f"-- /{verb} USERNAME")
            return
        user_id = await self.view.user_id(words[0])
        # Only keys announced in this session: the key trusted is the one shown when the number changed.
        changed = self.untrusted.get(user_id, {})
        if not changed:
            self.say(f"-- no changed key of {words[0]} is waiting (one is announced with '!! the safety number')")
            return
        for device_id, identity_key in list(changed.items()):
            if trust:
                await self.client.trust_identity(user_id, device_id, identity_key)
            else:
                await self.client.reject_identity(user_id, device_id)
            del changed[device_id]
            self.say(f"-- {verb}ed the new key of {words[0]}'s device {short_id(device_id)}")
        self.untrusted.pop(user_id, None)


def _first_device_of(names: list[str]) -> str:
    """`grandpa's first device`; for several members, `a first device of grandpa and carol`."""
    return f"{names[0]}'s first device" if len(names) == 1 else f"a first device of {' and '.join(names)}"


def _have(names: list[str]) -> str:
    """`grandpa has`, `grandpa and carol have`."""
    return f"{' and '.join(names)} {'has' if len(names) == 1 else 'have'}"


def _snippet(text: str, length: int = 40) -> str:
    text = clean(text).replace("\n", " ")
    return text if len(text) <= length else text[: length - 1] + "…"


def _shown(item: ReceivedMessage | Undecryptable) -> Shown:
    shown = Shown(0, item.chat_id, item.message_id, item.seq, item.sender_user_id, False, created_at=item.created_at)
    if isinstance(item, Undecryptable):
        shown.undecryptable = item.reason
        return shown
    shown.from_me, shown.text, shown.edited = item.from_me, item.text or "", item.edited
    shown.attachments, shown.reply_to = item.attachments, item.reply_to
    return shown


def _from_row(row: dict[str, Any], my_user_id: str) -> Shown:
    """A message from the local history."""
    content = row["content"] or {}
    shown = Shown(
        0,
        row["chat_id"],
        row["message_id"],
        row["seq"],
        row["sender_user_id"],
        row["sender_user_id"] == my_user_id,
        text=content.get("text") or "",
        attachments=tuple(Attachment.from_json(a) for a in content.get("attachments") or []),
        reply_to=content.get("reply_to"),
        created_at=row["created_at"] or 0,
        edited=bool(content.get("edited")),
    )
    if row["status"] == "undecryptable":
        shown.undecryptable = row["reason"] or "unknown reason"
    elif row["status"] == "deleted":
        shown.deleted = ""
    return shown


def _read_file(path: str) -> bytes:
    with open(os.path.expanduser(path), "rb") as file:
        return file.read()


def _safe_name(attachment: Attachment) -> str:
    """The sender's file name without any directory part (it is the sender's choice, not to be trusted)."""
    name = clean(os.path.basename(attachment.name.replace("\\", "/"))).strip()
    return name if name and name not in (".", "..") and not name.startswith(".") else attachment.media_id


def _write_file(path: str, data: bytes, *, overwrite: bool) -> str:
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        raise ClientError(f"{path} is a directory: give a file name")
    with open(path, "wb" if overwrite else "xb") as file:  # x: never replace a file the user did not name
        file.write(data)
    return path
