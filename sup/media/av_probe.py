"""Audio and video facts, a poster frame and a waveform, read by FFmpeg in a sandboxed child.

FFmpeg is a large C parser and these bytes come from strangers, so it never runs in the server
process: `probe_media` starts `sup.media._av_worker` with the file as its stdin, limits its
memory, CPU time, open files and file writes, kills its whole process group when the wall-clock
timeout passes, and turns every way the child can fail into a `ProbeResult` with a reason.

With `remux_to`, the same child also writes a copy without metadata (location, dates, device,
tags, chapters, cover art) for everyone but the uploader: the streams copied packet for packet,
never re-encoded. The parent creates that file and hands the child its descriptor, the one file
the child can write; FFmpeg itself still opens nothing. The file exists afterwards only if the
result is ok.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import stat
from dataclasses import dataclass
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
    REMUX_MAX_GROWTH,
    REMUX_OUTPUT_MARGIN,
    WAVEFORM_POINTS,
)
from sup.media.sandbox import Outcome, child_limits, failure_reason, ran_out_of_memory, run_worker, worker_argv

log = logging.getLogger(__name__)

_WORKER_MODULE = "sup.media._av_worker"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe found; `ok` is False with a `reason` when the media was refused or unreadable.

    `width`/`height` are as displayed (rotation applied); `rotation` is the clockwise turn
    (0, 90, 180, 270) the stored frames need. `poster` is a JPEG of the first decodable frame,
    upright, within `poster_max` on the long edge. `waveform` holds peak values 0-255 scaled to
    the loudest point; `waveform_complete` is False when decoding stopped at its time budget and
    the rest of the note shows as silence.

    `kind` and `mime` say what the file was found to be, which may differ from what its first
    bytes suggested: an MP4 or 3GP with sound and no picture is audio (`audio/mp4`, `audio/3gpp`).
    `remux_mime` and `remux_size` describe the copy written to `remux_to`, if one was asked for.
    """

    ok: bool
    reason: str | None = None
    kind: Literal["video", "audio"] | None = None
    mime: str | None = None
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
    remux_mime: str | None = None
    remux_size: int | None = None

    @classmethod
    def failed(cls, reason: str) -> ProbeResult:
        return cls(ok=False, reason=reason)


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
    remux_to: str | os.PathLike[str] | None = None,
) -> ProbeResult:
    """Probe a video (facts and poster) or an audio note (facts and waveform) in a limited child process.

    `kind` is the sniffed kind. A "video" that turns out to have no picture but sound is probed as
    the audio it is, and the result says so (`kind`, `mime`).

    With `remux_to` (a path that must not exist yet), also write there a copy of the media with
    all its metadata removed, in the same container family (`remux_mime` says which). The copy
    is part of the answer: if it cannot be made the result fails, and the file is gone.
    Never raises for bad media or a dying child: the result says why it failed. Raises OSError
    if `remux_to` cannot be created.
    """
    if kind not in ("video", "audio"):
        raise ValueError(f"kind must be 'video' or 'audio', not {kind!r}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return ProbeResult.failed(f"the media file cannot be read ({exc.strerror})")
    out_fd = None
    result = None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ProbeResult.failed("the media is not a regular file")
        if info.st_size == 0:
            return ProbeResult.failed("the media file is empty")
        if remux_to is not None:
            # Read-write: MP4 faststart reads the copy back to move its index to the front.
            out_fd = os.open(remux_to, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        params = {
            "kind": kind,
            **child_limits(
                memory=memory_limit,
                timeout=timeout,
                max_files=PROBE_MAX_OPEN_FILES,
                max_write=(
                    PROBE_MAX_FILE_WRITE if out_fd is None else info.st_size * REMUX_MAX_GROWTH + REMUX_OUTPUT_MARGIN
                ),
            ),
            "poster_max": poster_max,
            "poster_max_packets": POSTER_MAX_PACKETS,
            "waveform_points": waveform_points,
            "max_duration": max_duration,
            "max_dimension": max_dimension,
            # Half the time for decoding audio: a waveform from the first part beats a timeout.
            "decode_budget": timeout / 2,
            "output_fd": out_fd,
        }
        outcome = await run_worker(
            worker_argv(_WORKER_MODULE, json.dumps(params)),
            stdin=fd,
            timeout=timeout,
            output_limit=PROBE_MAX_OUTPUT,
            pass_fds=(out_fd,) if out_fd is not None else (),
        )
        result = _interpret(outcome, timeout)
        if out_fd is not None:
            result = _check_remux(result, out_fd)
        return result
    finally:
        os.close(fd)
        if out_fd is not None:
            os.close(out_fd)
            # Also on a timeout, a crash or cancellation: a half-written copy must never be served.
            if remux_to is not None and (result is None or not result.ok):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(remux_to)


def _check_remux(result: ProbeResult, out_fd: int) -> ProbeResult:
    if not result.ok:
        return result
    size = os.fstat(out_fd).st_size
    if result.remux_mime is None or result.remux_size != size or size == 0:
        return ProbeResult.failed("media probe returned a malformed answer")
    return result


def _interpret(outcome: Outcome, timeout: float) -> ProbeResult:
    reason = failure_reason(outcome, "media probe", timeout)
    if reason is not None:
        if outcome.returncode is not None:
            log.warning("%s: %r", reason, outcome.stderr_tail[-512:])
        return ProbeResult.failed(reason)
    code = outcome.returncode
    try:
        answer = json.loads(outcome.stdout)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
    except ValueError:
        log.warning("media probe exited with %s without an answer: %r", code, outcome.stderr_tail[-512:])
        if ran_out_of_memory(outcome):
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
        mime=_opt(answer, "mime", str),
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
        remux_mime=_opt(answer, "remux_mime", str),
        remux_size=_opt(answer, "remux_size", int),
    )
