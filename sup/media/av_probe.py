"""Audio and video facts, a poster frame and a waveform, read by FFmpeg in a sandboxed child.

FFmpeg is a large C parser and these bytes come from strangers, so it never runs in the server
process: `probe_media` starts `sup.media._av_worker` with the file as its stdin, limits its
memory, CPU time, open files and file writes, kills its whole process group when the wall-clock
timeout passes, and turns every way the child can fail into a `ProbeResult` with a reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sup.media.limits import (
    POSTER_MAX,
    POSTER_MAX_PACKETS,
    PROBE_MAX_DIMENSION,
    PROBE_MAX_DURATION,
    PROBE_MAX_FILE_WRITE,
    PROBE_MAX_OPEN_FILES,
    PROBE_MAX_OUTPUT,
    PROBE_MEMORY_LIMIT,
    PROBE_TIMEOUT,
    WAVEFORM_POINTS,
)

log = logging.getLogger(__name__)

_WORKER_MODULE = "sup.media._av_worker"
# The package root, so the child imports this same `sup` whatever its working directory.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_STDERR_TAIL = 4096


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe found; `ok` is False with a `reason` when the media was refused or unreadable.

    `width`/`height` are as displayed (rotation applied); `rotation` is the clockwise turn
    (0, 90, 180, 270) the stored frames need. `poster` is a JPEG of the first decodable frame,
    upright, within `poster_max` on the long edge. `waveform` holds peak values 0-255 scaled to
    the loudest point; `waveform_complete` is False when decoding stopped at its time budget and
    the rest of the note shows as silence.
    """

    ok: bool
    reason: str | None = None
    kind: Literal["video", "audio"] | None = None
    container: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    video_codec: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    poster: bytes | None = None
    poster_mime: str | None = None
    poster_width: int | None = None
    poster_height: int | None = None
    waveform: tuple[int, ...] | None = None
    waveform_complete: bool = True

    @classmethod
    def failed(cls, reason: str) -> ProbeResult:
        return cls(ok=False, reason=reason)


@dataclass(frozen=True, slots=True)
class _Outcome:
    returncode: int | None
    stdout: bytes
    stderr_tail: bytes
    timed_out: bool = False
    too_much_output: bool = False


class _TooMuchOutput(Exception):
    pass


async def probe_media(
    path: str | os.PathLike[str],
    *,
    kind: Literal["video", "audio"],
    timeout: float = PROBE_TIMEOUT,  # noqa: ASYNC109 (bounds a child process, not this coroutine)
    memory_limit: int = PROBE_MEMORY_LIMIT,
    poster_max: int = POSTER_MAX,
    waveform_points: int = WAVEFORM_POINTS,
    max_duration: float = PROBE_MAX_DURATION,
    max_dimension: int = PROBE_MAX_DIMENSION,
) -> ProbeResult:
    """Probe a video (facts and poster) or an audio note (facts and waveform) in a limited child process.

    Never raises for bad media or a dying child: the result says why it failed.
    """
    if kind not in ("video", "audio"):
        raise ValueError(f"kind must be 'video' or 'audio', not {kind!r}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return ProbeResult.failed(f"the media file cannot be read ({exc.strerror})")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ProbeResult.failed("the media is not a regular file")
        if info.st_size == 0:
            return ProbeResult.failed("the media file is empty")
        params = {
            "kind": kind,
            "memory_limit": memory_limit,
            # A backstop for a child the parent can no longer kill; the wall clock normally wins.
            "cpu_seconds": max(1, math.ceil(timeout)) + 1,
            "max_files": PROBE_MAX_OPEN_FILES,
            "max_write": PROBE_MAX_FILE_WRITE,
            "poster_max": poster_max,
            "poster_max_packets": POSTER_MAX_PACKETS,
            "waveform_points": waveform_points,
            "max_duration": max_duration,
            "max_dimension": max_dimension,
            # Half the time for decoding audio: a waveform from the first part beats a timeout.
            "decode_budget": timeout / 2,
            "parent": os.getpid(),
        }
        argv = [sys.executable, "-B", "-s", "-P", "-m", _WORKER_MODULE, json.dumps(params)]
        outcome = await _run_worker(argv, stdin=fd, timeout=timeout)
    finally:
        os.close(fd)
    return _interpret(outcome, timeout)


async def _run_worker(
    argv: list[str],
    *,
    stdin: int,
    timeout: float,  # noqa: ASYNC109
    output_limit: int = PROBE_MAX_OUTPUT,
) -> _Outcome:
    """Run a child in its own process group; kill the group on timeout, overflow or cancellation."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_worker_env(),
        cwd="/",
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await asyncio.gather(
                _read_capped(proc.stdout, output_limit), _read_tail(proc.stderr, _STDERR_TAIL)
            )
            await proc.wait()
    except TimeoutError:
        return _Outcome(None, b"", b"", timed_out=True)
    except _TooMuchOutput:
        return _Outcome(None, b"", b"", too_much_output=True)
    finally:
        if proc.returncode is None:
            # Not yet reaped, so the group id cannot have been reused by another process.
            _kill_group(proc)
            await proc.wait()
    return _Outcome(proc.returncode, stdout, stderr)


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


def _interpret(outcome: _Outcome, timeout: float) -> ProbeResult:
    if outcome.timed_out:
        return ProbeResult.failed(f"media probe timed out after {timeout:g} s")
    if outcome.too_much_output:
        return ProbeResult.failed("media probe produced more output than allowed")
    code = outcome.returncode
    if code is not None and code < 0:
        sig = -code
        log.warning("media probe died from signal %s: %r", sig, outcome.stderr_tail[-512:])
        if sig == signal.SIGXCPU:
            return ProbeResult.failed("media probe was killed (CPU time limit)")
        if sig == signal.SIGKILL:
            return ProbeResult.failed("media probe was killed (memory or CPU limit)")
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return ProbeResult.failed(f"media probe crashed ({name})")
    try:
        answer = json.loads(outcome.stdout)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
    except ValueError:
        log.warning("media probe exited with %s without an answer: %r", code, outcome.stderr_tail[-512:])
        if b"MemoryError" in outcome.stderr_tail or b"Cannot allocate memory" in outcome.stderr_tail:
            return ProbeResult.failed("media probe ran out of memory (memory limit)")
        return ProbeResult.failed(f"media probe failed (exit status {code})")
    try:
        return _result_from(answer)
    except (TypeError, ValueError, binascii.Error):
        return ProbeResult.failed("media probe returned a malformed answer")


def _opt(answer: dict[str, Any], key: str, kind: type) -> Any:
    value = answer.get(key)
    if value is None:
        return None
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{key} is not a {kind.__name__}")
    return value


def _result_from(answer: dict[str, Any]) -> ProbeResult:
    if not answer.get("ok"):
        return ProbeResult.failed(str(answer.get("reason") or "the media could not be read"))
    poster = _opt(answer, "poster", str)
    waveform = answer.get("waveform")
    if waveform is not None and not (
        isinstance(waveform, list) and all(isinstance(v, int) and 0 <= v <= 255 for v in waveform)
    ):
        raise ValueError("waveform is not a list of bytes")
    kind = answer.get("kind")
    if kind not in ("video", "audio"):
        raise ValueError("unknown kind")
    return ProbeResult(
        ok=True,
        kind=kind,
        container=_opt(answer, "container", str),
        duration=_opt(answer, "duration", float),
        width=_opt(answer, "width", int),
        height=_opt(answer, "height", int),
        rotation=_opt(answer, "rotation", int) or 0,
        video_codec=_opt(answer, "video_codec", str),
        audio_codec=_opt(answer, "audio_codec", str),
        sample_rate=_opt(answer, "sample_rate", int),
        channels=_opt(answer, "channels", int),
        poster=base64.b64decode(poster, validate=True) if poster is not None else None,
        poster_mime=_opt(answer, "poster_mime", str),
        poster_width=_opt(answer, "poster_width", int),
        poster_height=_opt(answer, "poster_height", int),
        waveform=tuple(waveform) if waveform is not None else None,
        waveform_complete=bool(answer.get("waveform_complete", True)),
    )
