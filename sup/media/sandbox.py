"""The resource-limited child process in which untrusted media is parsed, both of its sides.

Parent side (`run_worker`, `failure_reason`): start `python -m <worker module>` in its own
session with the input as its stdin, read its answer from stdout up to a cap, kill the whole
process group on timeout, overflow or cancellation, and put a child's death into words.

Child side (`apply_limits`, `die_with_parent`): called first thing in the worker, before any
parser is imported. Limits are set by the child itself because `preexec_fn` in the parent is
unsafe in a threaded server.

The workers import this module too, so asyncio (80 ms to import) is imported only where the
parent side needs it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

# The package root, so the child imports this same `sup` whatever its working directory.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_STDERR_TAIL = 4096


# ---------------------------------------------------------------------------------------------- parent side


@dataclass(frozen=True, slots=True)
class Outcome:
    returncode: int | None
    stdout: bytes
    stderr_tail: bytes
    timed_out: bool = False
    too_much_output: bool = False


class _TooMuchOutput(Exception):
    pass


def child_limits(*, memory: int, timeout: float, max_files: int, max_write: int) -> dict[str, int]:
    """The limits a worker applies to itself (`enter_sandbox`), as parameters of its command line."""
    return {
        "memory_limit": memory,
        # A backstop for a child the parent can no longer kill; the wall clock normally wins.
        "cpu_seconds": max(1, math.ceil(timeout)) + 1,
        "max_files": max_files,
        "max_write": max_write,
        "parent": os.getpid(),
    }


def worker_argv(module: str, params: str) -> list[str]:
    """The command line of a worker: no bytecode written, no user site-packages, no cwd on the path."""
    return [sys.executable, "-B", "-s", "-P", "-m", module, params]


async def run_worker(
    argv: list[str],
    *,
    stdin: int | bytes,
    timeout: float,  # noqa: ASYNC109 (bounds a child process, not this coroutine)
    output_limit: int,
    pass_fds: tuple[int, ...] = (),
) -> Outcome:
    """Run a child in its own process group; kill the group on timeout, overflow or cancellation.

    `stdin` is a file descriptor the child reads directly, or bytes fed to it through a pipe.
    `pass_fds` are further descriptors the child inherits, under the same numbers.
    """
    import asyncio

    feed = stdin if isinstance(stdin, bytes) else None
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if feed is not None else stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_worker_env(),
        cwd="/",
        start_new_session=True,
        pass_fds=pass_fds,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr, _ = await asyncio.gather(
                _read_capped(proc.stdout, output_limit), _read_tail(proc.stderr, _STDERR_TAIL), _feed(proc, feed)
            )
            await proc.wait()
    except TimeoutError:
        return Outcome(None, b"", b"", timed_out=True)
    except _TooMuchOutput:
        return Outcome(None, b"", b"", too_much_output=True)
    finally:
        if proc.returncode is None:
            # Not yet reaped, so the group id cannot have been reused by another process.
            _kill_group(proc)
            await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
    return Outcome(proc.returncode, stdout, stderr)


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if data is None or proc.stdin is None:
        return
    view = memoryview(data)
    try:
        # In slices, so the transport's buffer never holds a second copy of a large input.
        for start in range(0, len(view), 1 << 20):
            proc.stdin.write(view[start : start + (1 << 20)])
            await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        # The child stopped reading (refused the input, or died): its exit status tells why.
        pass


def _worker_env() -> dict[str, str]:
    env = {"PYTHONPATH": _PACKAGE_ROOT, "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.defpath, "LC_ALL": "C"}
    if "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await stream.read(65536):
        data += chunk
        if len(data) > limit:
            raise _TooMuchOutput
    return bytes(data)


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail


def failure_reason(outcome: Outcome, what: str, timeout: float) -> str | None:
    """Why the worker gave no answer (timeout, overflow, a signal), or None if it exited by itself.

    `what` names the work in the message: "media probe", "image processing".
    """
    if outcome.timed_out:
        return f"{what} timed out after {timeout:g} s"
    if outcome.too_much_output:
        return f"{what} produced more output than allowed"
    code = outcome.returncode
    if code is None or code >= 0:
        return None
    sig = -code
    if sig == signal.SIGXCPU:
        return f"{what} was killed (CPU time limit)"
    if sig == signal.SIGKILL:
        return f"{what} was killed (memory or CPU limit)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"{what} crashed ({name})"


def ran_out_of_memory(outcome: Outcome) -> bool:
    """Whether the worker's last words say an allocation failed."""
    return b"MemoryError" in outcome.stderr_tail or b"Cannot allocate memory" in outcome.stderr_tail


# ---------------------------------------------------------------------------------------------- child side


def apply_limits(*, memory: int, cpu_seconds: int, max_files: int, max_write: int) -> None:
    """Limits for this process: address space, CPU time, open files, file writes, no core dumps."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # The soft limit sends SIGXCPU, the hard one a SIGKILL a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    # Python ignores SIGXFSZ, so an oversized write fails with EFBIG instead of killing us.
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_write, max_write))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))


def enter_sandbox(argv: list[str]) -> dict[str, Any]:
    """A worker's first step: its parameters (argv[1], JSON), under the limits they name (`child_limits`)."""
    params = json.loads(argv[1])
    apply_limits(
        memory=params["memory_limit"],
        cpu_seconds=params["cpu_seconds"],
        max_files=params["max_files"],
        max_write=params["max_write"],
    )
    die_with_parent(params["parent"])
    return params


def die_with_parent(parent: int) -> None:
    """Ask Linux to kill us if the server dies, so no worker outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig, sigkill = 1, 9
        libc.prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(1)
