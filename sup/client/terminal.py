"""`sup chat`: a small end-to-end encrypted chat in the terminal, on the client SDK.

    sup chat --server https://sup.example --store alice.db register --username alice
    sup chat --store alice.db                # later: open the saved device
    > /dm bob                                 # the direct chat with bob becomes the current chat
    > hello bob                               # any other line is sent to the current chat

Lines starting with `/` are commands (`/help` lists them); incoming messages are printed
as they arrive. The device (tokens, keys, cursor, decrypted history) lives in the store
file, created with mode 0600.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

# aiohttp and the SDK are imported when a chat starts, not when the CLI builds its parser:
# `sup --help` should not pay for an HTTP client.

DEFAULT_STORE = "~/.local/share/sup/client.db"

HELP = """commands:
  /chats                      list my chats (numbered)
  /open N                     make chat N of the last /chats list current
  /dm USERNAME                the direct chat with a user becomes current
  /group TITLE USER [USER..]  create an encrypted group (TITLE without spaces)
  /add USERNAME, /remove USERNAME   change the current group's members
  /history                    what this device has of the current chat
  /safety USERNAME            the safety number to compare with that user
  /trust USERNAME             accept the changed keys of that user's devices (after comparing /safety);
                              the messages held for them are shown
  /reject USERNAME            refuse them: the held messages are shown as undecryptable
  /whoami, /help, /quit
anything else is sent to the current chat"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `sup chat`, on the parser the CLI made for it."""
    parser.add_argument("action", nargs="?", choices=["open", "register", "login"], default="open")
    parser.add_argument("--server", help="the server's base URL (for register and login), e.g. https://sup.example")
    parser.add_argument(
        "--store",
        default=os.environ.get("SUP_CLIENT_STORE", DEFAULT_STORE),
        help=f"this device's state file (default $SUP_CLIENT_STORE, else {DEFAULT_STORE})",
    )
    parser.add_argument("--username", help="for register and login (asked if missing)")
    parser.add_argument("--device-name", default="", help="how this device is listed (register, login)")
    parser.add_argument("--totp", help="a 2FA code, for login")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from the first input line")
    parser.add_argument("--with", dest="peer", help="start in the direct chat with this username")
    parser.add_argument(
        "--hold-key-changes",
        action="store_true",
        help="hold messages from a device whose identity key changed until /trust USERNAME (default: accept and warn)",
    )


def cmd_chat(args: argparse.Namespace) -> int:
    """Entry point for the CLI: `sup chat ...`."""
    try:
        import sup.client.crypto  # noqa: F401  (the client extra)
    except ImportError as exc:
        print(f"sup chat: needs the client extra: pip install 'sup-messenger[client]' ({exc})", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_chat(args))
    except KeyboardInterrupt:
        return 130


class Terminal:
    """The state of one chat session: the client, the current chat, names already looked up."""

    def __init__(self, client: Any, out: TextIO) -> None:
        self.client = client
        self.out = out
        self.current: dict[str, Any] | None = None
        self.listed: list[dict[str, Any]] = []
        self._names: dict[str, str] = {}
        # identity keys announced as changed and not trusted yet: user id -> device id -> key
        self.untrusted: dict[str, dict[str, bytes]] = {}

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def name(self, user_id: str | None) -> str:
        from sup.client.http import ApiError

        if user_id is None:
            return "server"
        if user_id not in self._names:
            try:
                self._names[user_id] = (await self.client.http.user(user_id))["username"]
            except ApiError:
                self._names[user_id] = user_id[:8]
        return self._names[user_id]

    async def user_id(self, username: str) -> str:
        user = await self.client.user_by_username(username)
        self._names[user["id"]] = user["username"]
        return user["id"]

    async def label(self, chat: dict[str, Any]) -> str:
        if chat.get("title"):
            return chat["title"]
        if chat.get("type") == "direct":
            others = [
                m["user_id"] for m in await self.client.http.members(chat["id"]) if m["user_id"] != self.client.user_id
            ]
            if others:
                return "@" + await self.name(others[0])
        return chat["id"][:8]

    async def use(self, chat: dict[str, Any]) -> None:
        self.current = chat
        lock = "encrypted" if chat.get("encrypted") else "NOT encrypted"
        self.say(f"-- now in {await self.label(chat)} ({chat['type']}, {lock})")

    async def show(self, item: Any) -> None:
        from sup.client.client import NewDevice, ReceivedMessage, SafetyNumberChanged, Undecryptable

        if isinstance(item, NewDevice):
            who = await self.name(item.user_id)
            whose = "your account" if item.user_id == self.client.user_id else who
            self.say(
                f"!! a new device {item.device_id[:8]} on {whose}: the safety number changed;"
                f" if you did not expect it, compare /safety {who}"
            )
            return
        if isinstance(item, SafetyNumberChanged):
            who = await self.name(item.user_id)
            if item.trusted:
                self.say(f"!! the safety number with {who} changed (a device has a new key)")
                return
            self.untrusted.setdefault(item.user_id, {})[item.device_id] = item.identity_key
            self.say(
                f"!! the safety number with {who} changed: device {item.device_id[:8]} has a new key and its messages"
                f" are held; compare /safety {who}, then /trust {who} or /reject {who}"
            )
            return
        chat = await self.client.chat(item.chat_id)
        where = await self.label(chat) if chat.get("type") != "direct" else ""  # the sender's name says it
        if self.current is not None and item.chat_id == self.current["id"]:
            where = ""
        who = await self.name(item.sender_user_id)
        stamp = time.strftime("%H:%M", time.localtime((item.created_at or 0) / 1000 or time.time()))
        prefix = f"[{stamp}]{' ' + where if where else ''} {who}"
        if isinstance(item, ReceivedMessage):
            body = item.text or ""
            if item.attachments:
                body += " " + " ".join(f"[file {a.name or a.media_id} {a.size} B]" for a in item.attachments)
            self.say(f"{prefix}{' (edited)' if item.edited else ''}: {body}")
        elif isinstance(item, Undecryptable):
            what = "an edit of this message (it stays as it was)" if item.edited else "this message"
            self.say(f"{prefix}: !! could not decrypt {what} ({item.reason})")

    async def command(self, line: str) -> bool:
        """Run one input line; False to quit."""
        import aiohttp

        from sup.client.client import ClientError
        from sup.client.http import ApiError, SessionEnded

        if not line.startswith("/"):
            if self.current is None:
                self.say("-- no current chat: /dm USERNAME, /chats then /open N, or /help")
            elif line:
                try:
                    await self.client.send_text(self.current["id"], line)
                except SessionEnded:
                    raise
                except (ApiError, ClientError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    self.say(f"-- not sent: {error}")
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
        except ApiError as error:
            self.say(f"-- {error.code}: {error.detail}")
        except ClientError as error:
            self.say(f"-- {error}")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self.say(f"-- the server did not answer: {error!r}")
        return True

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
            self.say(f"{number:3}. {await self.label(chat)} [{chat['type']}]{unread}")

    async def cmd_open(self, words: list[str]) -> None:
        if len(words) != 1 or not words[0].isdigit() or not 1 <= int(words[0]) <= len(self.listed):
            self.say("-- /open N, with N from the last /chats list")
            return
        await self.use(self.listed[int(words[0]) - 1])

    async def cmd_dm(self, words: list[str]) -> None:
        if len(words) != 1:
            self.say("-- /dm USERNAME")
            return
        await self.use(await self.client.direct_chat(await self.user_id(words[0])))

    async def cmd_group(self, words: list[str]) -> None:
        if len(words) < 2:
            self.say("-- /group TITLE USER [USER...]")
            return
        members = [await self.user_id(u) for u in words[1:]]
        await self.use(await self.client.create_group(words[0], members))

    async def cmd_add(self, words: list[str]) -> None:
        if self.current is None or len(words) != 1:
            self.say("-- /add USERNAME, in a group")
            return
        await self.client.add_members(self.current["id"], [await self.user_id(words[0])])
        self.say(f"-- added {words[0]}")

    async def cmd_remove(self, words: list[str]) -> None:
        if self.current is None or len(words) != 1:
            self.say("-- /remove USERNAME, in a group")
            return
        await self.client.remove_member(self.current["id"], await self.user_id(words[0]))
        self.say(f"-- removed {words[0]}")

    async def cmd_history(self, words: list[str]) -> None:
        if self.current is None:
            self.say("-- no current chat")
            return
        for message in await self.client.local_history(self.current["id"], limit=50):
            who = await self.name(message["sender_user_id"])
            if message["status"] == "undecryptable":
                self.say(f"  #{message['seq']} {who}: !! undecryptable ({message['reason']})")
            else:
                self.say(f"  #{message['seq']} {who}: {(message['content'] or {}).get('text') or ''}")

    async def cmd_safety(self, words: list[str]) -> None:
        if len(words) != 1:
            self.say("-- /safety USERNAME")
            return
        number = await self.client.safety_number(await self.user_id(words[0]))
        groups = [number[i : i + 5] for i in range(0, len(number), 5)]
        self.say("-- compare with " + words[0] + ":\n   " + " ".join(groups[:6]) + "\n   " + " ".join(groups[6:]))

    async def cmd_trust(self, words: list[str]) -> None:
        await self._decide(words, trust=True)

    async def cmd_reject(self, words: list[str]) -> None:
        await self._decide(words, trust=False)

    async def _decide(self, words: list[str], *, trust: bool) -> None:
        verb = "trust" if trust else "reject"
        if len(words) != 1:
            self.say(f"-- /{verb} USERNAME")
            return
        user_id = await self.user_id(words[0])
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
            self.say(f"-- {verb}ed the new key of {words[0]}'s device {device_id[:8]}")
        self.untrusted.pop(user_id, None)


async def stdin_reader() -> asyncio.StreamReader:
    """Lines from stdin without blocking the event loop (a thread reads when stdin is a regular file)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError, PermissionError):

        async def pump() -> None:
            while line := await asyncio.to_thread(sys.stdin.buffer.readline):
                reader.feed_data(line)
            reader.feed_eof()

        reader._sup_pump = asyncio.create_task(pump())  # type: ignore[attr-defined]  # kept alive with the reader
    return reader


def _expand(path: str) -> str:
    return os.path.expanduser(path)  # a string operation: nothing here waits on the disk


async def _read_line(reader: asyncio.StreamReader) -> str | None:
    raw = await reader.readline()
    return raw.decode(errors="replace").rstrip("\r\n") if raw else None


async def run_chat(
    args: argparse.Namespace, *, reader: asyncio.StreamReader | None = None, out: TextIO | None = None
) -> int:
    """Run `sup chat` until /quit or end of input; the exit status."""
    from sup.client.client import Client, ClientError
    from sup.client.http import ApiError, SessionEnded

    out = out or sys.stdout
    reader = reader or await stdin_reader()
    store = _expand(args.store)

    def fail(message: str) -> int:
        out.write(f"sup chat: {message}\n")
        out.flush()
        return 2

    try:
        if args.action == "open":
            client = await Client.open(store)
        else:
            if not args.server:
                return fail(f"{args.action} needs --server URL")
            username = args.username or await asyncio.to_thread(input, "Username: ")
            if args.password_stdin:
                password = await _read_line(reader) or ""
            else:
                password = await asyncio.to_thread(getpass.getpass, "Password: ")
            if args.action == "register":
                client = await Client.register(args.server, store, username, password, device_name=args.device_name)
            else:
                client = await Client.login(
                    args.server, store, username, password, totp_code=args.totp, device_name=args.device_name
                )
    except (ClientError, ApiError) as error:
        return fail(str(error))

    client.accept_identity_changes = not args.hold_key_changes
    terminal = Terminal(client, out)
    status = 0

    async def incoming() -> None:
        async for item in client.messages():
            await terminal.show(item)

    receiver = asyncio.create_task(incoming())
    try:
        terminal.say(f"-- {client.username} on {client.store.server_url}; /help for commands")
        if args.peer:
            await terminal.command(f"/dm {args.peer}")
        while True:
            line_task = asyncio.ensure_future(_read_line(reader))
            done, _ = await asyncio.wait({line_task, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:  # the stream ended: revoked, or the session is over
                line_task.cancel()
                error = receiver.exception()
                terminal.say(f"-- disconnected: {error}" if error else "-- disconnected")
                status = 1
                break
            line = line_task.result()
            if line is None or not await terminal.command(line.strip()):
                break
    except SessionEnded as error:
        terminal.say(f"-- this session is over ({error.code}): log in again")
        status = 1
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        await client.close()
    return status
