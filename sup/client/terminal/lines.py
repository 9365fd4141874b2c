"""Where `sup chat` reads its input lines from: a terminal, a pipe, a file, or nothing.

- A terminal: prompt_toolkit, so that messages printed while the user types appear above the prompt
  instead of inside the half-typed line (`console()` patches stdout for the session).
- A pipe or a socket: an asyncio stream on the file descriptor.
- Anything else (a regular file, /dev/null, a device the event loop cannot watch): a daemon thread reads
  it, so a read that never returns cannot keep the program from exiting.
- No standard input at all (closed): the end of input at once.

Every source returns None at the end of input (Ctrl-D, end of file, closed pipe), and never raises for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol


class Lines(Protocol):
    interactive: bool  # a person at a terminal: ask for what is missing rather than fail

    async def read(self, prompt: str = "", *, secret: bool = False) -> str | None:
        """The next line without its line ending; None at the end of input."""
        ...

    def console(self) -> contextlib.AbstractContextManager[Any]:
        """Wrap the session: output written to sys.stdout inside it does not break the input line."""
        ...


class StreamLines:
    """Lines from an asyncio stream (a pipe, or what a test feeds in)."""

    interactive = False

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def read(self, prompt: str = "", *, secret: bool = False) -> str | None:
        raw = await self.reader.readline()
        return _decode(raw) if raw else None

    def console(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class ThreadLines:
    """Lines read by a daemon thread, for sources the event loop cannot watch."""

    interactive = False

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        # A daemon thread, not asyncio.to_thread: the default executor is joined at exit, and a read
        # that never returns would keep `sup chat` from ending.
        threading.Thread(target=self._pump, args=(fd,), name="sup-chat-stdin", daemon=True).start()

    def _pump(self, fd: int) -> None:
        # os.read on the descriptor, never sys.stdin's buffered reader: a daemon thread blocked inside
        # that reader holds its lock, and Python aborts at exit when it finds the lock taken.
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    self._put(line + b"\n")
            if pending:
                self._put(pending)
        except (OSError, ValueError):
            pass  # closed or unreadable: the end of input
        finally:
            self._put(None)

    def _put(self, raw: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody reads any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, raw)

    async def read(self, prompt: str = "", *, secret: bool = False) -> str | None:
        raw = await self._queue.get()
        if raw is None:
            self._queue.put_nowait(None)  # every later read ends too
            return None
        return _decode(raw)

    def console(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class NoLines:
    """No standard input: the end of input at once."""

    interactive = False

    async def read(self, prompt: str = "", *, secret: bool = False) -> str | None:
        return None

    def console(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class PromptLines:
    """A terminal, through prompt_toolkit: a prompt that stays below whatever is printed meanwhile."""

    interactive = True

    def __init__(self, **session: Any) -> None:
        from prompt_toolkit import PromptSession

        self.session: Any = PromptSession(**session)

    async def read(self, prompt: str = "", *, secret: bool = False) -> str | None:
        try:
            return await self.session.prompt_async(prompt, is_password=secret)
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C: the user is done
            return None

    @contextlib.contextmanager
    def console(self) -> Iterator[None]:
        from prompt_toolkit.patch_stdout import patch_stdout

        with patch_stdout():
            yield


async def stdin_lines() -> Lines:
    """The right reader for this process's standard input."""
    stdin = sys.stdin
    try:
        fd = stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # no stdin (closed, or None)
        return NoLines()
    if os.isatty(fd):
        try:
            return PromptLines()
        except ImportError:  # the client extra without prompt_toolkit: plain lines still work
            return ThreadLines(fd)
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
        except (OSError, ValueError):
            return ThreadLines(fd)
        return StreamLines(reader)
    # Regular files and devices such as /dev/null: epoll refuses them (and asyncio then waits forever).
    return ThreadLines(fd)


def _decode(raw: bytes) -> str:
    return raw.decode(errors="replace").rstrip("\r\n")
