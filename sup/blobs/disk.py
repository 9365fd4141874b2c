"""Blobs as files under one root directory.

    <root>/ab/cd/abcd...      blobs, sharded by the first two bytes of the key
    <root>/parts/<upload>/    parts of resumable uploads, one file per index
    <root>/tmp/               streams being written; renamed into place when complete

A write goes to a temporary file in the same tree, is fsynced and renamed into place
(rename is atomic within one filesystem), and the directory is fsynced so the rename
itself survives a power cut. File work runs in threads: the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sup.blobs.store import (
    READ_CHUNK,
    BlobNotFound,
    BlobTooLarge,
    MiB,
    MissingParts,
    StoredBlob,
    check_id,
    check_index,
    check_range,
    one_chunk,
    part_name,
    part_sizes,
)

T = TypeVar("T")

# Small chunks from the network are gathered before a thread hop, so 40 MiB is ~40 hops, not ~2,500.
WRITE_BATCH = 1 * MiB
ABANDONED_TEMP_SECONDS = 3600


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking file work in a thread.

    If the caller is cancelled meanwhile, wait for the thread before re-raising: cleanup
    closes the file, and closing a descriptor under a running write could let the write
    land in whatever file reuses that descriptor number.
    """
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path, root: Path) -> None:
    """mkdir -p, fsyncing each parent that gained an entry, so a new shard survives a crash."""
    if path.is_dir():
        return
    if path != root:
        _make_dirs(path.parent, root)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


class _TempFile:
    """A file being written in <root>/tmp, hashed on the way; `discard` removes every trace."""

    def __init__(self, tmp_dir: Path, hashed: bool) -> None:
        self.path = tmp_dir / f"{uuid.uuid4().hex}.tmp"
        self.hasher = hashlib.sha256() if hashed else None
        self.size = 0
        self._file: BinaryIO | None = None

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> None:
        if self.hasher is not None:
            self.hasher.update(data)  # hashlib drops the GIL for large buffers: hashing here is parallel
        assert self._file is not None
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]

    def finish(self) -> None:
        assert self._file is not None
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class DiskBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._parts = root / "parts"

    @classmethod
    async def open(cls, root: Path) -> DiskBlobStore:
        store = cls(root)
        await _in_thread(store._prepare)
        return store

    def _prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (self._tmp, self._parts):
            path.mkdir(mode=0o700, exist_ok=True)
        # Leftovers of a crash mid-write. Only old ones: another process sharing this
        # directory may be writing right now, and every write refreshes a file's mtime.
        cutoff = time.time() - ABANDONED_TEMP_SECONDS
        for leftover in os.scandir(self._tmp):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    os.unlink(leftover.path)

    def _path(self, key: str) -> Path:
        check_id(key)
        return self.root / key[0:2] / key[2:4] / key

    def path_of(self, key: str) -> Path:
        """The blob's file, for operations that copy files whole (backups, the move to S3)."""
        return self._path(key)

    def stored_keys(self) -> Iterator[str]:
        """Every blob's key, shard by shard (blocking: run it in a thread)."""
        for first in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(first.name) != 2 or not first.is_dir():
                continue  # parts/, tmp/
            for second in sorted(os.scandir(first.path), key=lambda e: e.name):
                for entry in sorted(os.scandir(second.path), key=lambda e: e.name):
                    if entry.name.startswith(first.name + second.name) and entry.is_file():
                        yield entry.name

    def _part_dir(self, upload_id: str) -> Path:
        return self._parts / check_id(upload_id, "upload id")

    async def _write_temp(self, chunks: AsyncIterable[bytes], max_size: int | None, *, hashed: bool) -> _TempFile:
        """Stream into a fsynced temp file; the caller must rename or discard it."""
        temp = _TempFile(self._tmp, hashed)
        await _in_thread(temp.open)
        try:
            batch: list[bytes] = []
            pending = 0
            async for chunk in chunks:
                temp.size += len(chunk)
                if max_size is not None and temp.size > max_size:
                    raise BlobTooLarge(max_size)
                batch.append(chunk)
                pending += len(chunk)
                if pending >= WRITE_BATCH:
                    await _in_thread(temp.write, b"".join(batch))
                    batch, pending = [], 0
            if batch:
                await _in_thread(temp.write, b"".join(batch))
            await _in_thread(temp.finish)
        except BaseException:
            await asyncio.shield(_in_thread(temp.discard))
            raise
        return temp

    async def put_stream(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> StoredBlob:
        temp = await self._write_temp(chunks, max_size, hashed=True)
        assert temp.hasher is not None
        key = temp.hasher.hexdigest()
        try:
            await _in_thread(self._install, temp.path, self._path(key))
        except BaseException:
            await asyncio.shield(_in_thread(temp.discard))
            raise
        return StoredBlob(key=key, size=temp.size, sha256=key)

    def _install(self, temp: Path, dest: Path) -> None:
        if dest.exists():
            # Same key, same bytes: the earlier copy stands.
            temp.unlink()
            return
        _make_dirs(dest.parent, self.root)
        os.replace(temp, dest)
        _fsync_dir(dest.parent)

    async def put_bytes(self, data: bytes) -> StoredBlob:
        return await self.put_stream(one_chunk(data))

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            return (await _in_thread(path.stat)).st_size
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def exists(self, key: str) -> bool:
        return await _in_thread(self._path(key).is_file)

    async def read_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        path = self._path(key)
        try:
            file = await _in_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        try:
            await _in_thread(file.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await _in_thread(file.read, want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.shield(_in_thread(file.close))

    async def read_all(self, key: str) -> bytes:
        try:
            return await _in_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def delete(self, key: str) -> None:
        await _in_thread(self._path(key).unlink, True)

    async def put_part(self, upload_id: str, index: int, chunks: AsyncIterable[bytes], *, max_size: int) -> int:
        part_dir = self._part_dir(upload_id)
        check_index(index)
        temp = await self._write_temp(chunks, max_size, hashed=False)
        try:
            await _in_thread(self._install_part, temp.path, part_dir, index)
        except BaseException:
            await asyncio.shield(_in_thread(temp.discard))
            raise
        return temp.size

    def _install_part(self, temp: Path, part_dir: Path, index: int) -> None:
        _make_dirs(part_dir, self.root)
        os.replace(temp, part_dir / part_name(index))  # replaces an earlier copy of the part atomically
        _fsync_dir(part_dir)

    async def list_parts(self, upload_id: str) -> dict[int, int]:
        return await _in_thread(self._list_parts, self._part_dir(upload_id))

    @staticmethod
    def _list_parts(part_dir: Path) -> dict[int, int]:
        try:
            entries = list(os.scandir(part_dir))
        except FileNotFoundError:
            return {}
        parts = {}
        for entry in entries:
            if entry.name.isdigit():
                try:
                    parts[int(entry.name)] = entry.stat().st_size
                except FileNotFoundError:  # aborted meanwhile
                    continue
        return parts

    async def complete_parts(self, upload_id: str, count: int, *, max_size: int | None = None) -> StoredBlob:
        part_dir = self._part_dir(upload_id)
        await part_sizes(self, upload_id, count)
        blob = await self.put_stream(self._read_parts(part_dir, count), max_size=max_size)
        await self.abort_parts(upload_id)
        return blob

    async def _read_parts(self, part_dir: Path, count: int) -> AsyncIterator[bytes]:
        for index in range(count):
            try:
                file = await _in_thread(open, part_dir / part_name(index), "rb")
            except FileNotFoundError:
                raise MissingParts(part_dir.name, [index]) from None  # aborted while assembling
            try:
                while chunk := await _in_thread(file.read, WRITE_BATCH):
                    yield chunk
            finally:
                await asyncio.shield(_in_thread(file.close))

    async def abort_parts(self, upload_id: str) -> None:
        await _in_thread(functools.partial(shutil.rmtree, self._part_dir(upload_id), ignore_errors=True))

    async def stale_parts(self, older_than_epoch_seconds: float) -> list[str]:
        return await _in_thread(self._stale_parts, older_than_epoch_seconds)

    def _stale_parts(self, cutoff: float) -> list[str]:
        stale = []
        for upload in os.scandir(self._parts):
            try:
                # The directory's own mtime changes whenever a part is added or replaced.
                times = [upload.stat().st_mtime] + [part.stat().st_mtime for part in os.scandir(upload.path)]
            except FileNotFoundError:
                continue
            if max(times) < cutoff:
                stale.append(upload.name)
        return sorted(stale)

    async def signed_url(self, key: str, *, expires_in: int, filename: str, content_type: str) -> str | None:
        check_id(key)
        return None  # files on disk are served by the HTTP layer, under its own signed URL

    async def close(self) -> None:
        return None
