"""Real `sup` processes for tests: started, signalled, killed, restarted."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from tests.conftest import Api

LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")


def sup_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUP_")}
    env.update({"SUP_DATA_DIR": str(data_dir), "SUP_RATELIMIT_ENABLED": "false", **extra})
    if database_url:
        env["SUP_DATABASE_URL"] = database_url
    return env


async def sup(*args: str, env: dict[str, str], stdin: bytes | None = None, cwd: Path | None = None):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sup",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    return proc.returncode, out.decode(), err.decode()


class Running:
    """A `sup run` process; its stderr (the log) is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log = ""
        self.url = ""

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> Running:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sup",
            "run",
            "--port",
            "0",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        running = cls(proc)
        while not running.url:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
            if not line:
                raise AssertionError(f"sup run exited early:\n{running.log}")
            running.log += line.decode()
            match = LISTENING.search(line.decode())
            if match:
                running.url = match.group(1)
        # Keep reading the log: a full pipe would block the server.
        running._reader = asyncio.create_task(running._drain())
        return running

    async def _drain(self) -> None:
        while line := await self.proc.stderr.readline():
            self.log += line.decode()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout=30)
        await asyncio.wait_for(self._reader, timeout=10)
        return code

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing."""
        await self.stop(signal.SIGKILL)


@asynccontextmanager
async def two_processes(tmp_path: Path, database_url: str, **env: str) -> AsyncIterator[tuple[Api, Api]]:
    """Two `sup run` processes on one database (data dirs a/ and b/), a client for each; stopped afterwards."""
    from tests.conftest import Api  # it imports this module

    first = await Running.start(sup_env(tmp_path / "a", database_url, **env))
    try:
        second = await Running.start(sup_env(tmp_path / "b", database_url, **env))
    except BaseException:
        await first.stop()
        raise
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(first.url, session), Api(second.url, session)
    finally:
        await first.stop()
        await second.stop()
