"""`sup chat`, the terminal client, against a real server: driven through pipes, as a user's script would.

In-process sessions (`run_chat` with a StreamReader) for what is shown and sent; `sup chat` subprocesses
for what only a process shows (end of input, no stdin, invite codes).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sup.app import build_app
from sup.client.client import Client, MessageDeleted, ReceivedMessage
from sup.client.http import SessionEnded
from sup.client.store import ClientStore
from sup.client.terminal import add_arguments, run_chat
from sup.client.terminal.lines import PromptLines
from sup.client.terminal.view import short_id
from sup.transport.services import SERVICES
from tests.conftest import Server, make_config, new_username
from tests.processes import Running, sup, sup_env
from tests.test_client_sdk import PASSWORD, until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def chat_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


class Session:
    """One `sup chat` run in this process: lines go in through a pipe, output is collected."""

    def __init__(self, args: argparse.Namespace, *first_lines: str) -> None:
        self.reader = asyncio.StreamReader()
        self.out = io.StringIO()
        self.type(*first_lines)
        self.task = asyncio.create_task(run_chat(args, reader=self.reader, out=self.out))

    def type(self, *lines: str) -> None:
        for line in lines:
            self.reader.feed_data(f"{line}\n".encode())

    @property
    def shown(self) -> str:
        return self.out.getvalue()

    async def expect(self, pattern: str, within: float = 10.0) -> re.Match[str]:
        """The first match of `pattern` in the output, once it is there."""
        await until(lambda: re.search(pattern, self.shown, re.MULTILINE) is not None, within)
        match = re.search(pattern, self.shown, re.MULTILINE)
        assert match is not None
        return match

    async def quit(self) -> int:
        self.type("/quit")
        return await asyncio.wait_for(self.task, 15)


async def register_in_terminal(server_url: str, tmp_path: Path, peer: str, *extra: str) -> tuple[Session, str]:
    name = new_username()
    args = chat_args(
        "register",
        *("--server", server_url, "--store", str(tmp_path / f"{name}.db"), "--username", name),
        *("--password-stdin", "--with", peer, *extra),
    )
    session = Session(args, PASSWORD)
    await session.expect(rf"now in @{peer} \(direct, encrypted\)")
    return session, name


async def bob_and_a_terminal(server_url: str, tmp_path: Path) -> tuple[Client, str, Session, str]:
    """Bob on the SDK, and a new user in the terminal in a direct chat with him: (bob, his name, session, its name)."""
    bob_name = new_username()
    bob = await Client.register(server_url, str(tmp_path / "bob.db"), bob_name, PASSWORD)
    session, name = await register_in_terminal(server_url, tmp_path, bob_name)
    return bob, bob_name, session, name


async def next_text(client: Client, within: float = 10.0) -> ReceivedMessage:
    """The next ReceivedMessage, skipping notices."""
    while True:
        item = await client.next_message(within)
        if isinstance(item, ReceivedMessage):
            return item


# -- what is shown, and the commands on messages --------------------------------------------------


async def test_direct_chats_groups_replies_edits_deletions_and_files(server: Server, tmp_path: Path):
    bob, bob_name, session, alice_name = await bob_and_a_terminal(server.url, tmp_path)
    try:
        session.type("hello bob")
        first = await next_text(bob)
        assert first.text == "hello bob"
        mine = int((await session.expect(r"^\((\d+)\) \S+ \[@" + bob_name + r"\] me: hello bob$")).group(1))

        # a direct message names the chat, not the sender; a group message names both
        direct = first.chat_id
        reply = await bob.send_text(direct, "hi alice", reply_to=first.message_id)
        number = int(
            (await session.expect(rf"^\((\d+)\) \S+ \[@{bob_name}\] \(re {mine} \"hello bob\"\) hi alice$")).group(1)
        )
        group = await bob.create_group("family", [(await bob.user_by_username(alice_name))["id"]])
        await bob.send_text(group["id"], "dinner at 8?")
        await session.expect(rf"^\(\d+\) \S+ \[#family\] {bob_name}: dinner at 8\?$")

        await bob.edit_text(direct, reply["id"], "hi alice!")
        await session.expect(rf"^\({number}\) \S+ \[@{bob_name}\] \(edited\) \(re {mine} \"hello bob\"\) hi alice!$")

        # a file: shown with its name, saved and decrypted by number
        await bob.send_file(direct, b"the minutes", name="minutes.txt", mime="text/plain")
        file_number = int(
            (await session.expect(r"^\((\d+)\) .*\[file minutes\.txt, text/plain, 11 B: /save (\d+)\]$")).group(1)
        )
        saved = tmp_path / "saved.txt"
        session.type(f"/save {file_number} {saved}")
        await session.expect(rf"saved the file of message {file_number} to {re.escape(str(saved))}")
        assert saved.read_bytes() == b"the minutes"

        # alice's commands: reply, edit, delete, send a file
        session.type(f"/reply {number} fine, you?")
        answer = await next_text(bob)
        assert answer.text == "fine, you?" and answer.reply_to == reply["id"]
        answered = int(
            (await session.expect(r"^\((\d+)\) \S+ \[@\S+\] me: \(re \d+ \"hi alice!\"\) fine, you\?$")).group(1)
        )
        session.type(f"/edit {answered} fine, and you?")
        edited = await next_text(bob)
        assert edited.edited and edited.text == "fine, and you?" and edited.message_id == answer.message_id
        await session.expect(rf"^\({answered}\) \S+ \[@\S+\] me: \(edited\) \(re \d+ \"hi alice!\"\) fine, and you\?$")
        session.type(f"/edit {number} not mine")
        await session.expect(rf"message {number} is not one of mine")

        upload = tmp_path / "photo.png"
        upload.write_bytes(b"\x89PNG not really")
        session.type(f"/send {upload}")
        got = await next_text(bob)
        assert got.attachments[0].name == "photo.png" and got.attachments[0].mime == "image/png"
        assert await bob.download(got.attachments[0]) == b"\x89PNG not really"

        session.type(f"/delete {answered}")
        deleted = await bob.next_message(10)
        assert deleted == MessageDeleted(direct, answer.message_id, answer.seq, True)
        await session.expect(rf"^\({answered}\) \S+ \[@\S+\] me: \(deleted for everyone\)$")
        session.type(f"/delete {number} me")
        await session.expect(rf"^\({number}\) \S+ \[@{bob_name}\] \(deleted for me\)$")
        history = {m["message_id"]: m for m in await bob.local_history(direct)}
        assert history[answer.message_id]["status"] == "deleted" and history[answer.message_id]["content"] is None
        assert history[reply["id"]]["status"] == "sent"  # deleted for alice only
        assert history[reply["id"]]["content"]["text"] == "hi alice!"  # the sender's own copy has the edit

        session.type("/help")
        await session.expect(r"/save N \[PATH\]")
        assert await session.quit() == 0
    finally:
        await bob.close()
    assert "Traceback" not in session.shown


async def test_control_characters_from_others_are_not_printed(server: Server, tmp_path: Path):
    bob, _, session, _ = await bob_and_a_terminal(server.url, tmp_path)
    try:
        session.type("hi")
        chat_id = (await next_text(bob)).chat_id
        await bob.send_text(chat_id, "\x1b]0;owned\x07\x1b[2Jstill here")
        await session.expect(r"\?\]0;owned\?\?\[2Jstill here$")
        assert "\x1b" not in session.shown
        assert await session.quit() == 0
    finally:
        await bob.close()


# -- new devices -----------------------------------------------------------------------------------


async def test_a_new_device_is_shown_with_its_name_and_my_own_is_not_a_safety_number(server: Server, tmp_path: Path):
    bob, bob_name, session, alice_name = await bob_and_a_terminal(server.url, tmp_path)
    tablet = laptop = None
    try:
        session.type("hi")
        await next_text(bob)  # alice met bob's devices when she sent it

        tablet = await Client.login(server.url, str(tmp_path / "tablet.db"), bob_name, PASSWORD, device_name="tablet")
        short = short_id(tablet.device_id)
        await session.expect(
            rf"^!! {bob_name} has a new device: tablet \({short}\); the safety number with {bob_name} changed"
            rf" — if you did not expect it, compare /safety {bob_name}$"
        )

        # my own new login: nothing to compare with myself, but how to get rid of it if it was not me
        laptop = await Client.login(server.url, str(tmp_path / "laptop.db"), alice_name, PASSWORD, device_name="laptop")
        mine = short_id(laptop.device_id)
        line = (await session.expect(rf"^!! a new device logged in to your account: laptop \({mine}\) .*$")).group(0)
        assert f"if this was not you, revoke it: /revoke {mine}" in line and "safety" not in line
        session.type("/devices")
        await session.expect(rf"^   laptop \({mine}\)$")
        await session.expect(r"^   .+ \(\w{8}\) \(this device\)$")
        session.type(f"/revoke {mine}")
        await session.expect(rf"^-- logged out laptop \({mine}\)$")
        with pytest.raises(SessionEnded):
            await laptop.http.me()
        assert await session.quit() == 0
    finally:
        for client in (bob, tablet, laptop):
            if client is not None:
                await client.close()
    assert "Traceback" not in session.shown


# -- a member without a device ---------------------------------------------------------------------


async def test_a_line_to_someone_without_a_device_waits_for_it_and_goes_when_it_comes(server: Server, tmp_path: Path):
    grandpa_name = new_username()
    await server.app[SERVICES].accounts.create_user(grandpa_name, PASSWORD)  # sup admin create-user grandpa
    session, _ = await register_in_terminal(server.url, tmp_path, grandpa_name)
    grandpa = None
    try:
        session.type("hello grandpa", "are you there?")
        await session.expect(
            rf'^-- waiting for {grandpa_name}\'s first device: "hello grandpa" is kept, and sent when {grandpa_name}'
            r" has logged in$"
        )
        await session.expect(rf'^-- waiting for {grandpa_name}\'s first device: "are you there\?" is kept')
        upload = tmp_path / "photo.jpg"
        upload.write_bytes(b"not really a photo")
        session.type(f"/send {upload}")
        await session.expect(rf"^-- not sent: {grandpa_name} has no device that can read it yet, and only text")
        assert "member_without_device" not in session.shown and "not sent (" not in session.shown

        grandpa = await Client.login(server.url, str(tmp_path / "grandpa.db"), grandpa_name, PASSWORD)
        assert [(await next_text(grandpa)).text for _ in range(2)] == ["hello grandpa", "are you there?"]
        await session.expect(rf"^\(\d+\) \S+ \[@{grandpa_name}\] me: hello grandpa$")
        await session.expect(rf"^\(\d+\) \S+ \[@{grandpa_name}\] me: are you there\?$")
        session.type("and now?")
        assert (await next_text(grandpa)).text == "and now?"
        assert await session.quit() == 0
    finally:
        if grandpa is not None:
            await grandpa.close()
    assert len(re.findall(r"me: hello grandpa$", session.shown, re.MULTILINE)) == 1  # shown once
    assert "still" not in session.shown and "Traceback" not in session.shown


# -- read receipts --------------------------------------------------------------------------------


async def test_messages_shown_in_the_current_chat_are_marked_read_once_per_burst(server: Server, tmp_path: Path):
    bob_name = new_username()
    bob = await Client.register(server.url, str(tmp_path / "bob.db"), bob_name, PASSWORD)
    receipts: list[dict[str, Any]] = []
    bob.on_event(lambda frame: receipts.append(frame) if frame.get("type") == "receipt.read" else None)
    session, alice_name = await register_in_terminal(server.url, tmp_path, bob_name)
    try:
        session.type("hi bob")
        chat_id = (await next_text(bob)).chat_id
        alice_id = (await bob.user_by_username(alice_name))["id"]
        elsewhere = await bob.create_group("elsewhere", [alice_id])
        await bob.send_text(elsewhere["id"], "not in the current chat")
        sent = [await bob.send_text(chat_id, f"burst {n}") for n in range(5)]
        await session.expect(r"burst 4$")
        await until(lambda: any(r["chat_id"] == chat_id and r["seq"] == sent[-1]["seq"] for r in receipts))
        from_alice = [r for r in receipts if r["user_id"] == alice_id and r["chat_id"] == chat_id]
        assert len(from_alice) < len(sent), from_alice  # coalesced, not one per message
        assert all(r["chat_id"] != elsewhere["id"] for r in receipts if r["user_id"] == alice_id)
        session.type("/chats")
        await session.expect(rf"^ +\d+\. @{bob_name} \[direct\]$")  # no unread left
        await session.expect(r"^ +\d+\. #elsewhere \[group\] \(\d+ unread\)$")  # not shown while current
        assert await session.quit() == 0
    finally:
        await bob.close()


async def test_chats_counts_unread_as_this_device_can_read_them(server: Server, tmp_path: Path):
    """The server counts, per device, the unread messages that device can decrypt: a device that logged in
    later does not count what was sent before it had keys."""
    bob_name, alice_name = new_username(), new_username()
    bob = await Client.register(server.url, str(tmp_path / "bob.db"), bob_name, PASSWORD)
    alice = await Client.register(server.url, str(tmp_path / "alice.db"), alice_name, PASSWORD)
    session = None
    try:
        chat = await bob.direct_chat(alice.user_id)
        for n in range(2):
            await bob.send_text(chat["id"], f"before {n}")
        args = chat_args(
            "login",
            *("--server", server.url, "--store", str(tmp_path / "laptop.db"), "--username", alice_name),
            "--password-stdin",
        )
        session = Session(args, PASSWORD)
        await session.expect(rf"^-- {alice_name} on ")
        await bob.send_text(chat["id"], "after")
        await session.expect(rf"^\(\d+\) \S+ \[@{bob_name}\] after$")  # shown, but not in the current chat
        session.type("/chats")
        await session.expect(rf"^ +\d+\. @{bob_name} \[direct\] \(1 unread\)$")
        assert [c["unread_count"] for c in await alice.chats() if c["id"] == chat["id"]] == [3]
        assert await session.quit() == 0
    finally:
        await bob.close()
        await alice.close()


# -- the outbox ------------------------------------------------------------------------------------


class Restartable:
    """A server on a fixed port that can be stopped and started again (same database, same secrets)."""

    def __init__(self, database_url: str, data_dir: str) -> None:
        self.config = make_config(data_dir, database_url, SUP_WEBSOCKET_CATCH_UP_SECONDS="0.2")
        self.server: TestServer | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = TestServer(build_app(self.config), host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


@pytest.fixture
async def restartable(database_url: str, tmp_path: Path) -> AsyncIterator[Restartable]:
    server = Restartable(database_url, str(tmp_path / "server"))
    await server.start()
    yield server
    await server.stop()


async def test_lines_typed_while_the_server_is_down_are_sent_in_order_when_it_is_back(
    restartable: Restartable, tmp_path: Path
):
    bob, bob_name, session, alice_name = await bob_and_a_terminal(restartable.url, tmp_path)
    store = str(tmp_path / f"{alice_name}.db")
    try:
        session.type("one")
        assert (await next_text(bob)).text == "one"

        await restartable.stop()
        session.type("two")
        await session.expect(r"1 message queued: the server cannot be reached", within=20)
        session.type("three")
        await session.expect(r"queued \(2 waiting\)")
        assert await session.quit() == 0  # the outbox stays in the store

        # a new session, while the server is still away; then the server comes back
        session = Session(chat_args("--store", store))
        await session.expect(r"2 messages queued: the server cannot be reached", within=20)
        await restartable.start()
        assert [(await next_text(bob, 30)).text for _ in range(2)] == ["two", "three"]  # in order, once each
        await session.expect(r"the server is back: the queued messages are sent", within=20)
        await session.expect(r"^\(\d+\) \S+ \[@\S+\] me: three$")
        session.type(f"/dm {bob_name}", "four")
        assert (await next_text(bob)).text == "four"
        assert await session.quit() == 0
    finally:
        await bob.close()
    opened = await ClientStore.open(store)
    try:
        assert await opened.outbox() == []
    finally:
        await opened.close()


# -- a terminal: prompt_toolkit ---------------------------------------------------------------------


async def test_at_a_terminal_lines_come_from_prompt_toolkit(server: Server, tmp_path: Path):
    """The prompt_toolkit source, fed keys through a pipe: lines, Ctrl-D as the end of input."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    bob_name = new_username()
    bob = await Client.register(server.url, str(tmp_path / "bob.db"), bob_name, PASSWORD)
    alice = await Client.register(server.url, str(tmp_path / "alice.db"), new_username(), PASSWORD)
    await alice.close()
    out = io.StringIO()
    try:
        with create_pipe_input() as keys:
            lines = PromptLines(input=keys, output=DummyOutput())
            args = chat_args("--store", str(tmp_path / "alice.db"), "--with", bob_name)
            task = asyncio.create_task(run_chat(args, reader=lines, out=out))
            keys.send_text("typed at a terminal\r")
            got = await next_text(bob)
            assert got.text == "typed at a terminal"
            await bob.send_text(got.chat_id, "while you type")
            await until(lambda: f"[@{bob_name}] while you type" in out.getvalue())
            keys.send_text("/whoami\r")
            await until(lambda: f"-- {alice.username} (" in out.getvalue())
            keys.send_text("\x04")  # Ctrl-D: the end of input
            assert await asyncio.wait_for(task, 15) == 0
    finally:
        await bob.close()


# -- processes: the end of input, no input, invite codes ------------------------------------------


async def chat_process(env: dict[str, str], *args: str, stdin: Any) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sup", "chat", *args, env=env, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_register_with_an_invite_and_end_of_input_ends_cleanly(tmp_path: Path):
    env = sup_env(tmp_path, SUP_AUTH_REGISTRATION="invite")
    code, out, err = await sup("admin", "invite", "--uses", "1", env=env)
    assert code == 0, err
    invite = out.strip()
    running = await Running.start(env)
    try:
        store = str(tmp_path / "alice.db")
        register = ("register", "--server", running.url, "--store", store, "--username", new_username())
        code, out, err = await sup("chat", *register, "--password-stdin", env=env, stdin=f"{PASSWORD}\n".encode())
        assert code == 2 and "invalid_invite" in out and "Traceback" not in err
        with_invite = ("--password-stdin", "--invite", invite)
        code, out, err = await sup("chat", *register, *with_invite, env=env, stdin=f"{PASSWORD}\n/whoami\n".encode())
        assert code == 0, out + err
        assert "Traceback" not in err and f"-- {register[-1]} (" in out

        # no terminal: /dev/null ends the session at once, cleanly
        code, out, err = await chat_process(env, "--store", store, stdin=asyncio.subprocess.DEVNULL)
        assert (code, "Traceback" in err) == (0, False), out + err
        assert f"on {running.url}" in out
        code, out, err = await chat_process(env, "--store", store, "--with", "nobody", stdin=asyncio.subprocess.DEVNULL)
        assert (code, "Traceback" in err) == (0, False), out + err
        other = ("register", "--server", running.url, "--store", str(tmp_path / "b.db"))
        code, out, err = await chat_process(env, *other, stdin=asyncio.subprocess.DEVNULL)
        assert code == 2 and "needs --username" in out and "Traceback" not in err
        code, out, err = await chat_process(env, *other, "--username", "bob", stdin=asyncio.subprocess.DEVNULL)
        assert code == 2 and "--password-stdin" in out and "Traceback" not in err
    finally:
        await running.stop()


async def test_a_closed_stdin_ends_cleanly(tmp_path: Path):
    """`sup chat <&-`: no standard input at all."""
    env = sup_env(tmp_path)
    running = await Running.start(env)
    try:
        store = str(tmp_path / "alice.db")
        code, _, err = await sup(
            "chat", "register", "--server", running.url, "--store", store, "--username", new_username(),
            "--password-stdin", env=env, stdin=f"{PASSWORD}\n".encode(),
        )  # fmt: skip
        assert code == 0, err
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", 'exec "$0" -m sup chat --store "$1" <&-', sys.executable, store, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0 and b"Traceback" not in err, (out + err).decode()
    finally:
        await running.stop()
