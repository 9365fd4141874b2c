"""The child process in which Pillow decodes untrusted images.

Started by `sup.media.image_child.process_image_isolated` as
`python -B -s -P -m sup.media._image_worker '<json params>'` with the image as its stdin; it
writes one msgpack `WorkerAnswer` on stdout and exits 0, also when the image is refused.
Resource limits are set first thing, before Pillow is imported.
"""

from __future__ import annotations

import sys
from typing import Any

from sup.media.sandbox import enter_sandbox


def run(params: dict[str, Any]) -> bytes:
    import msgspec

    encoder = msgspec.msgpack.Encoder()
    try:
        from sup.media import MediaError
        from sup.media.image_child import WorkerAnswer
        from sup.media.images import process_image
    except (ImportError, MemoryError) as exc:
        reason = f"image processing could not load Pillow; is its memory limit too low? ({exc})"
        return encoder.encode({"error": reason})
    try:
        result = process_image(
            sys.stdin.buffer.read(),
            max_pixels=params["max_pixels"],
            sizes=params["sizes"],
            max_frames=params["max_frames"],
            max_animation_pixels=params["max_animation_pixels"],
        )
        return encoder.encode(WorkerAnswer(result=result))
    except MediaError as exc:
        return encoder.encode(WorkerAnswer(error=str(exc)))
    except MemoryError:
        return encoder.encode(WorkerAnswer(error="image processing ran out of memory (memory limit)"))
    except Exception as exc:
        return encoder.encode(WorkerAnswer(error=f"image processing failed ({type(exc).__name__}: {exc})"))


def main(argv: list[str]) -> int:
    params = enter_sandbox(argv)
    answer = run(params)
    sys.stdout.buffer.write(answer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
