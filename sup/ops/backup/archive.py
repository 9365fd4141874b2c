"""The backup format: its layout and manifest, the files in it, and reading one back (directory or .tar)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sup.keys import SECRETS_FILE
from sup.ops.progress import Progress
from sup.ops.tables import (
    OpsError,
)

FORMAT = "sup-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BLOB_LIST = "blobs.json"
SQLITE_FILE = "database/sup.db"
POSTGRES_FILE = "database/sup.pgdump"
SECRETS_IN_BACKUP = f"secrets/{SECRETS_FILE}"
CONFIG_IN_BACKUP = "config/sup.toml"
# The columns that name blobs. A table added later that names blobs must be listed here too,


COPY_WORKERS = 4
CHUNK = 1024 * 1024


@dataclass
class Outcome:
    """What a backup command did: where, what it found, and what went wrong (problems fail the command)."""

    path: Path
    manifest: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # one line each, for the summary


def fingerprint(master: bytes) -> str:
    """A short value that tells whether two master secrets are the same, and nothing else about them."""
    return hmac.new(master, b"sup backup fingerprint v1", hashlib.sha256).hexdigest()[:16]


def blob_path(key: str) -> str:
    return f"blobs/{key[0:2]}/{key[2:4]}/{key}"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown_url(url: str) -> str:
    from sup.preflight import shown

    return shown(url)


def private_file(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)


def copy_hashing(source: Path, dest: Path) -> tuple[int, str]:
    """Copy a file, hashing what was read; (size, sha256). Blocking."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as reader, os.fdopen(private_file(dest), "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def write_json(path: Path, value: Any) -> tuple[int, str]:
    data = json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"
    with os.fdopen(private_file(path), "wb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())
    return len(data), hashlib.sha256(data).hexdigest()


async def each(items: Iterable[Any], work: Callable[[Any], Awaitable[None]], workers: int = COPY_WORKERS) -> None:
    """Run `work` on every item, `workers` at a time (a pool, not one task per item)."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(workers)))


def target_free(target: Path) -> None:
    if target.is_dir():
        if any(target.iterdir()):
            raise OpsError(f"{target} exists and is not empty: name a new directory")
    elif target.exists():
        raise OpsError(f"{target} exists: name a new file or directory")


def write_tar(work: Path, tar_path: Path) -> None:
    partial = tar_path.with_name(f".{tar_path.name}.partial")
    fd = _private_file_replacing(partial)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(work.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(work)), recursive=False)
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, tar_path)


def _private_file_replacing(path: Path) -> int:
    path.unlink(missing_ok=True)
    return private_file(path)


def describe(outcome: Outcome) -> None:
    manifest = outcome.manifest
    database = manifest["database"]
    rows = sum(database["tables"].values())
    versions = database["schema_versions"]
    outcome.facts.append(
        f"database: {database['dialect']}, {len(database['tables'])} tables, {rows} rows, "
        f"schema {versions[-1] if versions else 'empty'}"
    )
    blobs = manifest["blobs"]
    kept = "copied" if blobs["included"] else "listed (objects stay in S3)"
    outcome.facts.append(f"blobs: {blobs['count']} {kept}, {blobs['bytes']} bytes")
    source = manifest["secrets"].get("source")
    outcome.facts.append(f"secrets: {source or 'none'}")


@contextlib.contextmanager
def opened(source: Path) -> Iterator[Path]:
    """The backup's directory: itself, or a .tar unpacked next to it (removed afterwards)."""
    source = Path(source)
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise OpsError(f"{source}: no such backup")
    if not tarfile.is_tarfile(source):
        raise OpsError(f"{source} is neither a backup directory nor a .tar archive of one")
    unpacked = Path(tempfile.mkdtemp(prefix=f".{source.name}.", dir=source.parent))
    try:
        with tarfile.open(source) as tar:
            tar.extractall(unpacked, filter="data")
        yield unpacked
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise OpsError(f"{root} has no {MANIFEST}: not a SUP backup, or an unfinished one") from None
    except ValueError as exc:
        raise OpsError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise OpsError(f"{path} is not a SUP backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise OpsError(
            f"{path}: backup format {manifest.get('format_version')} is not known to this SUP ({FORMAT_VERSION})"
        )
    return manifest


async def check_files(root: Path, manifest: dict[str, Any], problems: list[str], progress: Progress) -> None:
    """Every file the manifest lists is there, with its size and SHA-256."""
    files: dict[str, Any] = manifest["files"]
    total = sum(entry["size"] for entry in files.values())
    with progress.task("checking files", total=total, unit="bytes") as task:

        async def one(rel: str) -> None:
            expected = files[rel]
            path = root / rel
            try:
                size, digest = await asyncio.to_thread(hash_file, path)
            except FileNotFoundError:
                problems.append(f"{rel}: missing")
                return
            finally:
                task.advance(expected["size"])
            if (size, digest) != (expected["size"], expected["sha256"]):
                problems.append(f"{rel}: damaged (size or SHA-256 differs from the manifest)")

        await each(sorted(files), one)
    extra = await asyncio.to_thread(_unlisted, root, set(files) | {MANIFEST})
    if extra:
        problems.append(f"{len(extra)} file(s) not in the manifest, e.g. {sorted(extra)[0]}")


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    found = (str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    return [rel for rel in found if rel not in listed]


def check_blob_names(root: Path, manifest: dict[str, Any], problems: list[str]) -> list[dict[str, Any]]:
    entries = json.loads((root / BLOB_LIST).read_text())
    files = manifest["files"]
    for entry in entries:
        rel = blob_path(entry["key"])
        if manifest["blobs"]["included"]:
            listed = files.get(rel)
            if listed is None:
                problems.append(f"blob {entry['key']}: not in the backup")
            elif listed["sha256"] != entry["key"] or listed["size"] != entry["size"]:
                problems.append(f"blob {entry['key']}: its content does not hash to its name")
    return entries
