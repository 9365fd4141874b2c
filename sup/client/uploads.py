"""Moving files to the server: one streamed request, or resumable chunks (docs/api.md, "Media").

Used by `SupHttp.upload_media` and `upload_media_resumable`. A file is read from disk a piece at a time,
off the event loop, so a large upload neither blocks the loop nor sits in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from sup.client.transport import Transport, backoff, segment

log = logging.getLogger("sup.client")

# Larger uploads go in resumable chunks, so a dropped connection costs one chunk, not the file.
RESUMABLE_ABOVE = 8 * 1024 * 1024
RESUME_ROUNDS = 5  # times a resumable upload asks what arrived and carries on after a network error
READ_SIZE = 256 * 1024  # a streamed file is read from disk this much at a time

# What an upload reads from: the bytes themselves, or the path of a file (read a chunk at a time).
MediaSource = bytes | bytearray | memoryview | str | os.PathLike[str]


async def upload_whole(
    http: Transport, source: MediaSource, size: int, *, filename: str, purpose: str, encrypted: bool
) -> dict[str, Any]:
    """POST /media/upload with the file as the body; the media object."""
    params = {"purpose": purpose, "encrypted": encrypted, "filename": filename or None}
    body: bytes | Callable[[], AsyncIterable[bytes]]
    if isinstance(source, bytes | bytearray | memoryview):
        body = bytes(source)
    else:
        path = os.fspath(source)

        def body() -> AsyncIterable[bytes]:
            return _read_stream(path, 0, size)

    # Not retried: every attempt that reaches the server makes a file (an unused one is
    # removed by the server's cleanup, but a caller may prefer to know).
    reply = await http.exchange(
        "POST", "/media/upload", body=body, content_length=size, params=params, idempotent=False
    )
    return reply.decoded


async def upload_in_chunks(
    http: Transport,
    source: MediaSource,
    *,
    filename: str,
    purpose: str,
    encrypted: bool,
    upload_id: str | None,
    on_started: Callable[[str], Awaitable[None]] | None,
) -> dict[str, Any]:
    """POST /media/uploads, PUT each chunk not yet received, then complete; the media object."""
    size = await source_size(source)
    if upload_id is None:
        session = await http.request(
            "POST",
            "/media/uploads",
            json={"size": size, "filename": filename, "purpose": purpose, "encrypted": encrypted},
            idempotent=False,
        )
        if on_started is not None:
            await on_started(session["upload_id"])
    else:
        session = await status(http, upload_id)
        if session["size"] != size:
            raise ValueError(f"upload {upload_id} is for {session['size']} bytes, not {size}")
    upload_id = session["upload_id"]
    chunk_size, count = session["chunk_size"], session["chunk_count"]
    received = set(session["received"])
    failures = 0
    while missing := [i for i in range(count) if i not in received]:
        try:
            for index in missing:
                start = index * chunk_size
                chunk = await _read_range(source, start, min(start + chunk_size, size))
                answer = await http.exchange(
                    "PUT", f"/media/uploads/{segment(upload_id)}/chunks/{index}", body=chunk, content_length=len(chunk)
                )
                received.update(answer.decoded["received"])
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            failures += 1
            if failures >= RESUME_ROUNDS:
                raise
            delay = backoff(failures + 1)
            log.info("upload %s: %s; resuming in %.1f s", upload_id, exc, delay)
            await asyncio.sleep(delay)
            # A chunk whose answer was lost may have arrived: ask rather than send it again.
            received = set((await status(http, upload_id))["received"])
    return await http.request("POST", f"/media/uploads/{segment(upload_id)}/complete", idempotent=False)


async def status(http: Transport, upload_id: str) -> dict[str, Any]:
    return await http.request("GET", f"/media/uploads/{segment(upload_id)}")


async def source_size(source: MediaSource) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return memoryview(source).nbytes
    return (await asyncio.to_thread(os.stat, source)).st_size


async def _read_range(source: MediaSource, start: int, end: int) -> bytes:
    """Bytes [start, end) of the source; a file is read off the event loop."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(memoryview(source)[start:end])
    return await asyncio.to_thread(_read_file_range, os.fspath(source), start, end)


def _read_file_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read(end - start)
    if len(data) != end - start:
        raise ValueError(f"{path} changed during the upload (it is shorter now)")
    return data


async def _read_stream(path: str, start: int, end: int) -> AsyncIterator[bytes]:
    position = start
    while position < end:
        piece = await _read_range(path, position, min(position + READ_SIZE, end))
        position += len(piece)
        yield piece
