"""The blobs in a backup: copied (or listed, for S3) after the snapshot names them, checked, and put back."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import msgspec

from sup.blobs.disk import DiskBlobStore
from sup.blobs.store import BlobNotFound, BlobSettings, BlobStore, default_url, file_chunks, open_blob_store
from sup.config import Config
from sup.ops.backup.archive import (
    BLOB_LIST,
    Outcome,
    blob_path,
    copy_hashing,
    each,
    private_file,
    shown_url,
    write_json,
)
from sup.ops.progress import Progress


async def _open_blobs(config: Config) -> BlobStore:
    settings = BlobSettings(**msgspec.structs.asdict(config.blobs))
    return await open_blob_store(settings, data_dir=config.data_dir)


def blobs_url(config: Config) -> str:
    return config.blobs.url or default_url(config.data_dir)


async def copy_blobs(
    config: Config, work: Path, keys: set[str], include_s3_objects: bool, files: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    store = await _open_blobs(config)
    try:
        is_disk = isinstance(store, DiskBlobStore)
        copy = is_disk or include_s3_objects
        entries: list[dict[str, Any]] = []
        missing: list[str] = []
        corrupt: list[str] = []
        with progress.task("copying blobs" if copy else "listing blobs", total=len(keys), unit="blobs") as task:

            async def one(key: str) -> None:
                rel = blob_path(key)
                digest: str | None = None
                try:
                    if isinstance(store, DiskBlobStore):
                        size, digest = await asyncio.to_thread(copy_hashing, store.path_of(key), work / rel)
                    elif copy:
                        size, digest = await _download(store, key, work / rel)
                    else:
                        size = await store.size(key)
                except (FileNotFoundError, BlobNotFound):
                    missing.append(key)
                    return
                finally:
                    task.advance()
                if digest is not None:
                    if digest != key:  # the stored bytes are not the blob their name says
                        corrupt.append(key)
                        (work / rel).unlink()
                        return
                    files[rel] = {"size": size, "sha256": digest}
                entries.append({"key": key, "size": size, "sha256": key})

            await each(sorted(keys), one)
    finally:
        await store.close()
    entries.sort(key=lambda entry: entry["key"])
    size, digest = await asyncio.to_thread(write_json, work / BLOB_LIST, entries)
    files[BLOB_LIST] = {"size": size, "sha256": digest}
    return {
        "store": "file" if is_disk else "s3",
        "url": shown_url(blobs_url(config)),
        "referenced": len(keys),
        "count": len(entries),
        "bytes": sum(entry["size"] for entry in entries),
        "included": copy,
        "list": BLOB_LIST,
        "missing": sorted(missing),
        "corrupt": sorted(corrupt),
    }


async def _download(store: BlobStore, key: str, dest: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    writer = await asyncio.to_thread(lambda: os.fdopen(private_file(dest), "wb"))
    try:
        async for chunk in store.read_range(key):
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(writer.write, chunk)
    finally:
        await asyncio.to_thread(writer.close)
    return size, digest.hexdigest()


async def check_objects_in_store(
    entries: list[dict[str, Any]], blobs: dict[str, Any], config: Config, outcome: Outcome, progress: Progress
) -> None:
    """A backup that lists S3 objects is good while the bucket has them: checked when it is the configured store."""
    if shown_url(blobs_url(config)) != blobs["url"]:
        outcome.warnings.append(
            f"the blobs are listed, not copied, and {blobs['url']} is not the configured store: "
            "their objects were not checked"
        )
        return
    store = await _open_blobs(config)
    try:
        with progress.task("checking objects in the blob store", total=len(entries), unit="blobs") as task:

            async def one(entry: dict[str, Any]) -> None:
                try:
                    size = await store.size(entry["key"])
                except BlobNotFound:
                    outcome.problems.append(f"blob {entry['key']}: no longer in {blobs['url']}")
                else:
                    if size != entry["size"]:
                        outcome.problems.append(f"blob {entry['key']}: {size} bytes stored, {entry['size']} listed")
                finally:
                    task.advance()

            await each(entries, one)
    finally:
        await store.close()


async def restore_blobs(
    root: Path,
    manifest: dict[str, Any],
    entries: list[dict[str, Any]],
    config: Config,
    outcome: Outcome,
    progress: Progress,
) -> None:
    store = await _open_blobs(config)
    restored = present = 0
    missing: list[str] = []
    try:
        with progress.task("restoring blobs", total=len(entries), unit="blobs") as task:

            async def one(entry: dict[str, Any]) -> None:
                nonlocal restored, present
                key = entry["key"]
                try:
                    if await store.exists(key):
                        present += 1
                        return
                    file = root / blob_path(key)
                    if not manifest["blobs"]["included"] or not file.exists():
                        missing.append(key)
                        return
                    stored = await store.put_stream(file_chunks(file))
                    if stored.key != key:
                        await store.delete(stored.key)
                        outcome.problems.append(f"blob {key}: its content does not hash to its name, not restored")
                        return
                    restored += 1
                finally:
                    task.advance()

            await each(entries, one)
    finally:
        await store.close()
    outcome.facts.append(f"blobs: {restored} restored, {present} already in the store")
    if missing:
        outcome.problems.append(
            f"{len(missing)} blob(s) are neither in the backup nor in the blob store, e.g. {sorted(missing)[0]}"
        )
