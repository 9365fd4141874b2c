"""Images in a child process: the server's side of `sup.media._image_worker`.

The server imports this, never Pillow: decoding happens only in the child, which
`sup.media.images` runs. The result types live here so both sides share them.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from sup.media import MediaError
from sup.media.limits import (
    IMAGE_MAX_FILE_WRITE,
    IMAGE_MAX_OPEN_FILES,
    IMAGE_MEMORY_LIMIT,
    IMAGE_TIMEOUT,
    MAX_ANIMATION_FRAMES,
    MAX_ANIMATION_PIXELS,
    THUMBNAIL_SIZES,
    MiB,
)
from sup.media.sandbox import Outcome, child_limits, failure_reason, ran_out_of_memory, run_worker, worker_argv

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Thumb:
    size_name: str
    width: int
    height: int
    mime: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What an image is, as displayed (EXIF orientation applied), and the derived files to serve.

    `mime` is the upload's type; `sanitized_mime` the type of `sanitized`, the copy without
    metadata served instead of it: the same type, or JPEG (WebP with transparency) for the HEIF
    and AVIF photos that browsers cannot all show.
    """

    width: int
    height: int
    mime: str
    animated: bool
    thumbnails: list[Thumb]
    placeholder: str
    sanitized: bytes | None
    sanitized_mime: str | None = None
    frames: int = 1  # more than one: an animation


@dataclass(frozen=True, slots=True)
class WorkerAnswer:
    """What `sup.media._image_worker` writes to stdout, as msgpack: a result, or why there is none."""

    result: ImageResult | None = None
    error: str | None = None


_WORKER_MODULE = "sup.media._image_worker"
_ANSWER_DECODER = msgspec.msgpack.Decoder(WorkerAnswer)


async def process_image_isolated(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int,
    sizes: Sequence[int] = THUMBNAIL_SIZES,
    timeout: float = IMAGE_TIMEOUT,  # noqa: ASYNC109 (bounds a child process, not this coroutine)
    memory_limit: int = IMAGE_MEMORY_LIMIT,
    max_frames: int = MAX_ANIMATION_FRAMES,
    max_animation_pixels: int = MAX_ANIMATION_PIXELS,
) -> ImageResult:
    """`process_image` in a child process limited in memory, CPU time and wall-clock time.

    The image reaches the child on its stdin (a file is passed as the descriptor itself, bytes
    through a pipe). Raises `MediaError` for a bad image, as `process_image` does, and also when
    the child times out, runs out of memory or dies.
    """
    params = {
        "max_pixels": max_pixels,
        "max_frames": max_frames,
        "max_animation_pixels": max_animation_pixels,
        "sizes": list(sizes),
        **child_limits(
            memory=memory_limit, timeout=timeout, max_files=IMAGE_MAX_OPEN_FILES, max_write=IMAGE_MAX_FILE_WRITE
        ),
    }
    argv = worker_argv(_WORKER_MODULE, json.dumps(params))
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise MediaError("the image file is empty")
        outcome = await run_worker(argv, stdin=data, timeout=timeout, output_limit=_output_limit(len(data), max_pixels))
    else:
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise MediaError(f"the image file cannot be read ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise MediaError("the image is not a regular file")
            if info.st_size == 0:
                raise MediaError("the image file is empty")
            outcome = await run_worker(
                argv, stdin=fd, timeout=timeout, output_limit=_output_limit(info.st_size, max_pixels)
            )
        finally:
            os.close(fd)
    return _interpret(outcome, timeout)


def _output_limit(input_size: int, max_pixels: int) -> int:
    # A re-encoded copy needs at most about 4 bytes a pixel (RGBA PNG or lossless WebP of noise);
    # an animated WebP comes back as the input minus its metadata; thumbnails are a few MB.
    return input_size + 5 * max_pixels + 16 * MiB


def _interpret(outcome: Outcome, timeout: float) -> ImageResult:
    reason = failure_reason(outcome, "image processing", timeout)
    if reason is not None:
        if outcome.returncode is not None:
            log.warning("%s: %r", reason, outcome.stderr_tail[-512:])
        raise MediaError(reason)
    try:
        answer = _ANSWER_DECODER.decode(outcome.stdout)
    except msgspec.DecodeError:
        log.warning(
            "image processing exited with %s without an answer: %r", outcome.returncode, outcome.stderr_tail[-512:]
        )
        if ran_out_of_memory(outcome):
            raise MediaError("image processing ran out of memory (memory limit)") from None
        if not outcome.stdout:
            raise MediaError(f"image processing failed (exit status {outcome.returncode})") from None
        raise MediaError("image processing returned a malformed answer") from None
    if answer.error is not None:
        raise MediaError(answer.error)
    if answer.result is None:
        raise MediaError("image processing returned a malformed answer")
    return answer.result
