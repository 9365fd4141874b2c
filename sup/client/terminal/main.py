"""`sup chat`'s options and its session: sign in (or open the saved device), then read lines until the end.

The end of input (Ctrl-D, a closed pipe, `< /dev/null`) and `/quit` end the session cleanly: the outbox
stays in the store for next time, what was handled is acknowledged, the client is closed, and the exit
status is 0. A session the server ended (device revoked, logged out) exits with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any, TextIO

# aiohttp and the SDK are imported when a chat starts, not when the CLI builds its parser:
# `sup --help` should not pay for an HTTP client.

DEFAULT_STORE = "~/.local/share/sup/client.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `sup chat`, on the parser the CLI made for it."""
    parser.add_argument("action", nargs="?", choices=["open", "register", "login"], default="open")
    parser.add_argument("--server", help="the server's base URL (for register and login), e.g. https://sup.example")
    parser.add_argument(
        "--store",
        default=os.environ.get("SUP_CLIENT_STORE", DEFAULT_STORE),
        help=f"this device's state file (default $SUP_CLIENT_STORE, else {DEFAULT_STORE})",
    )
    parser.add_argument("--username", help="for register and login (asked if missing, at a terminal)")
    parser.add_argument("--device-name", default="", help="how this device is listed (register, login)")
    parser.add_argument("--invite", metavar="CODE", help="an invite code, to register on an invite-only server")
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


async def run_chat(args: argparse.Namespace, *, reader: Any = None, out: TextIO | None = None) -> int:
    """Run `sup chat` until /quit or the end of input; the exit status.

    `reader` is where lines come from: an asyncio.StreamReader, or any `Lines` (lines.py); by default
    standard input. `out` is where output goes (by default sys.stdout, as it is when printing).
    """
    from sup.client.terminal.commands import Terminal
    from sup.client.terminal.lines import Lines, StreamLines, stdin_lines

    if reader is None:
        lines: Lines = await stdin_lines()
    elif isinstance(reader, asyncio.StreamReader):
        lines = StreamLines(reader)
    else:
        lines = reader
    with lines.console():
        client = await _sign_in(args, lines, out)
        if isinstance(client, int):
            return client
        client.accept_identity_changes = not args.hold_key_changes
        return await _session(Terminal(client, out), lines, args.peer)


async def _sign_in(args: argparse.Namespace, lines: Any, out: TextIO | None) -> Any:
    """The client (opened, registered or logged in), or the exit status when that failed."""
    import aiohttp

    from sup.client.client import Client, ClientError
    from sup.client.http import ApiError

    def fail(message: str) -> int:
        stream = out or sys.stdout
        stream.write(f"sup chat: {message}\n")
        stream.flush()
        return 2

    store = _expand(args.store)
    try:
        if args.action == "open":
            return await Client.open(store)
        if not args.server:
            return fail(f"{args.action} needs --server URL")
        username = args.username
        if not username and lines.interactive:
            username = await lines.read("Username: ")
        if not username:
            return fail(f"{args.action} needs --username (there is no terminal to ask on)")
        if not (args.password_stdin or lines.interactive):
            return fail("no terminal to ask for the password on: give it as the first input line, --password-stdin")
        password = await lines.read("" if args.password_stdin else "Password: ", secret=True)
        if password is None:
            return fail("no password: the input ended first")
        if args.action == "register":
            return await Client.register(
                args.server, store, username, password, device_name=args.device_name, invite_code=args.invite
            )
        return await Client.login(
            args.server, store, username, password, totp_code=args.totp, device_name=args.device_name
        )
    except ApiError as error:
        return fail(f"{error.code}: {error.detail}")
    except ClientError as error:
        return fail(str(error))
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return fail(f"the server cannot be reached: {error}")


async def _session(terminal: Any, lines: Any, peer: str | None) -> int:
    from sup.client.http import SessionEnded

    client = terminal.client
    status = 0

    async def incoming() -> None:
        async for item in client.messages():
            try:
                await terminal.show(item)
            except SessionEnded:
                raise
            except Exception as error:  # a name or chat the server did not give: show what can be shown
                terminal.say(f"-- could not show a {type(item).__name__}: {error!r}")

    receiver = asyncio.create_task(incoming(), name="sup-chat-incoming")
    line_task: asyncio.Future[str | None] | None = None
    terminal.outgoing.start()
    try:
        terminal.say(f"-- {client.username} on {client.store.server_url}; /help for commands")
        await terminal.show_waiting()
        if peer:
            await terminal.command(f"/dm {peer}")
        while True:
            line_task = asyncio.ensure_future(lines.read(terminal.prompt()))
            done, _ = await asyncio.wait({line_task, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:  # the stream ended: revoked, or the session is over
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
        if line_task is not None and not line_task.done():
            line_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await line_task
        await terminal.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        await client.close()
    return status


def _expand(path: str) -> str:
    return os.path.expanduser(path)  # a string operation: nothing here waits on the disk
