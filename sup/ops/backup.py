"""Backups: `sup backup create | verify | restore`, and what the scheduled backup runs.

A backup is one directory (or a .tar of it):

    manifest.json          versions, what is inside, and the size and SHA-256 of every other file
    database/sup.db        SQLite: an online snapshot (the backup API, one step: one read transaction)
    database/sup.pgdump    Postgres: pg_dump --format=custom, taken in an exported snapshot
    blobs.json             every blob the snapshot names: key, size, SHA-256 (the key is the hash)
    blobs/ab/cd/<key>      the blobs themselves (disk storage; S3 with --include-s3-objects)
    secrets/secrets.json   the master secret, unless it is set in the configuration
    config/sup.toml        the configuration file in use, for reference (restore never writes it)

Consistency while SUP serves: the database snapshot is taken first and the blobs it names are
copied after. Blobs are content-addressed and never change, so a copy made later is the same
blob. A blob written after the snapshot is not needed by it. A blob deleted after the snapshot
could be missed, but SUP deletes a blob only `RELEASE_DELAY_MS` (10 minutes) after the last row
naming it went (sup/domain/files.py), so a blob copy that ends within 10 minutes of the
snapshot finds every blob; a missing one is listed in the manifest and makes `create` fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from sup import __version__
from sup.blobs.disk import DiskBlobStore
from sup.blobs.store import BlobNotFound, BlobSettings, BlobStore, default_url, open_blob_store
from sup.config import Config
from sup.db import migrations
from sup.db.database import Database, open_database
from sup.db.media import BLOB_COLUMNS
from sup.db.sqlite import path_from_url
from sup.db.stores import Stores
from sup.delivery import Delivery
from sup.domain.events import EventWriter, encode
from sup.keys import SECRETS_FILE
from sup.ops.progress import Progress
from sup.ops.tables import (
    OpsError,
    libpq_target,
    postgres_counts,
    postgres_tables,
    postgres_versions,
    quoted,
    sqlite_connect,
    sqlite_counts,
    sqlite_in_use,
    sqlite_tables,
    sqlite_versions,
    with_database,
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
# or its blobs are left out of backups (tests/test_backup.py restores every blob of a server).
BLOB_REFERENCES: dict[str, tuple[str, ...]] = {"media": BLOB_COLUMNS, "account_exports": ("blob_key",)}
# Blob files copied at once: disk and S3 both gain from a few requests in flight.
COPY_WORKERS = 4
CHUNK = 1024 * 1024
# After a restore, new events and messages are numbered this far past the restored counters,
# so they never reuse a number a client saw from the time between the backup and the restore.
SEQUENCE_GAP = 1_000_000
PG_DUMP_MISSING = (
    "pg_dump is not on PATH: install the PostgreSQL client tools of the server's major version "
    "(Debian: apt-get install postgresql-client)"
)
PG_RESTORE_MISSING = (
    "pg_restore is not on PATH: install the PostgreSQL client tools of the server's major version "
    "(Debian: apt-get install postgresql-client)"
)


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


def _blob_path(key: str) -> str:
    return f"blobs/{key[0:2]}/{key[2:4]}/{key}"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown_url(url: str) -> str:
    from sup.preflight import shown

    return shown(url)


# -- files ------------------------------------------------------------------------------------


def _private_file(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)


def _copy_hashing(source: Path, dest: Path) -> tuple[int, str]:
    """Copy a file, hashing what was read; (size, sha256). Blocking."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as reader, os.fdopen(_private_file(dest), "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _write_json(path: Path, value: Any) -> tuple[int, str]:
    data = json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"
    with os.fdopen(_private_file(path), "wb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())
    return len(data), hashlib.sha256(data).hexdigest()


async def _each(items: Iterable[Any], work: Callable[[Any], Awaitable[None]], workers: int = COPY_WORKERS) -> None:
    """Run `work` on every item, `workers` at a time (a pool, not one task per item)."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    reader = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(reader.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(reader.close)


async def _open_blobs(config: Config) -> BlobStore:
    settings = BlobSettings(**msgspec.structs.asdict(config.blobs))
    return await open_blob_store(settings, data_dir=config.data_dir)


def blobs_url(config: Config) -> str:
    return config.blobs.url or default_url(config.data_dir)


# -- create -----------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    info: dict[str, Any]
    keys: set[str]


def _referenced_sqlite(conn: sqlite3.Connection) -> set[str]:
    keys: set[str] = set()
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in BLOB_REFERENCES.items():
        if table in present:
            for column in columns:
                sql = f"SELECT DISTINCT {quoted(column)} FROM {quoted(table)} WHERE {quoted(column)} IS NOT NULL"
                keys.update(row[0] for row in conn.execute(sql))
    return keys


async def _referenced_postgres(conn: Any) -> set[str]:
    keys: set[str] = set()
    for table, columns in BLOB_REFERENCES.items():
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            for column in columns:
                sql = f"SELECT DISTINCT {quoted(column)} FROM {quoted(table)} WHERE {quoted(column)} IS NOT NULL"
                keys.update(row[0] for row in await conn.fetch(sql))
    return keys


def _sqlite_snapshot(source: Path, dest: Path) -> _Snapshot:
    if not source.exists():
        raise OpsError(f"no SQLite database at {source}: nothing to back up")
    os.close(_private_file(dest))
    src = sqlite_connect(source, read_only=True)
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        # One step: the whole copy is one read transaction, so it is one consistent state even while
        # SUP's writer commits (WAL lets it). In several steps, every commit would restart the copy.
        src.backup(out)
    finally:
        src.close()
    try:
        out.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        tables = sqlite_tables(out)
        info = {
            "dialect": "sqlite",
            "file": SQLITE_FILE,
            "schema_versions": sqlite_versions(out),
            "tables": sqlite_counts(out, tables),
            "server_version": sqlite3.sqlite_version,
            "tool": "SQLite online backup API",
        }
        return _Snapshot(info, _referenced_sqlite(out))
    finally:
        out.close()


async def _postgres_snapshot(url: str, dest: Path) -> _Snapshot:
    import asyncpg

    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise OpsError(PG_DUMP_MISSING)
    version = await _tool_version(pg_dump)
    os.close(_private_file(dest))
    target = libpq_target(url)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # pg_dump reads the snapshot of this transaction, so the counts and blob keys below
            # describe exactly the rows it dumps.
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            proc = await asyncio.create_subprocess_exec(
                pg_dump,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--snapshot={snapshot}",
                f"--file={dest}",
                f"--dbname={target.url}",
                env=target.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                tables = await postgres_tables(conn)
                counts = await postgres_counts(conn, tables)
                versions = await postgres_versions(conn)
                keys = await _referenced_postgres(conn)
                server = await conn.fetchval("SHOW server_version")
            finally:
                _, err = await proc.communicate()
            if proc.returncode != 0:
                raise OpsError(f"pg_dump failed: {err.decode(errors='replace').strip()}")
    finally:
        await conn.close()
    info = {
        "dialect": "postgres",
        "file": POSTGRES_FILE,
        "schema_versions": versions,
        "tables": counts,
        "server_version": server,
        "tool": version,
    }
    return _Snapshot(info, keys)


async def _tool_version(path: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode().strip()


async def _copy_blobs(
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
                rel = _blob_path(key)
                digest: str | None = None
                try:
                    if isinstance(store, DiskBlobStore):
                        size, digest = await asyncio.to_thread(_copy_hashing, store.path_of(key), work / rel)
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

            await _each(sorted(keys), one)
    finally:
        await store.close()
    entries.sort(key=lambda entry: entry["key"])
    size, digest = await asyncio.to_thread(_write_json, work / BLOB_LIST, entries)
    files[BLOB_LIST] = {"size": size, "sha256": digest}
    return {
        "store": "file" if is_disk else "s3",
        "url": _shown_url(blobs_url(config)),
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
    writer = await asyncio.to_thread(lambda: os.fdopen(_private_file(dest), "wb"))
    try:
        async for chunk in store.read_range(key):
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(writer.write, chunk)
    finally:
        await asyncio.to_thread(writer.close)
    return size, digest.hexdigest()


def _copy_secrets(config: Config, work: Path, files: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    info: dict[str, Any]
    if config.security.secret_key:
        info = {"source": "configuration", "fingerprint": fingerprint(config.security.secret_key.encode())}
    else:
        path = config.data_dir / SECRETS_FILE
        if path.exists():
            size, digest = _copy_hashing(path, work / SECRETS_IN_BACKUP)
            files[SECRETS_IN_BACKUP] = {"size": size, "sha256": digest}
            master = json.loads(path.read_text())["master"].encode()
            info = {"source": SECRETS_FILE, "file": SECRETS_IN_BACKUP, "fingerprint": fingerprint(master)}
        else:
            info = {"source": None}
    if config_file is not None and config_file.is_file():
        size, digest = _copy_hashing(config_file, work / CONFIG_IN_BACKUP)
        files[CONFIG_IN_BACKUP] = {"size": size, "sha256": digest}
        info["config_file"] = CONFIG_IN_BACKUP
    return info


def _target_free(target: Path) -> None:
    if target.is_dir():
        if any(target.iterdir()):
            raise OpsError(f"{target} exists and is not empty: name a new directory")
    elif target.exists():
        raise OpsError(f"{target} exists: name a new file or directory")


def _archive(work: Path, tar_path: Path) -> None:
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
    return _private_file(path)


async def create_backup(
    config: Config,
    target: Path,
    *,
    archive: bool = False,
    include_s3_objects: bool = False,
    config_file: Path | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Take a consistent backup of the running (or stopped) install into `target`."""
    progress = progress or Progress.silent()
    target = Path(target)
    if archive and target.suffix != ".tar":
        target = target.with_name(target.name + ".tar")
    _target_free(target)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.work"
    if work.exists():  # left by a backup that was killed
        await asyncio.to_thread(shutil.rmtree, work)
    work.mkdir(mode=0o700)
    started = time.monotonic()
    created_at = _now_iso()
    files: dict[str, Any] = {}
    try:
        with progress.task("database snapshot", unit="steps") as task:
            if config.database_url.startswith("sqlite:"):
                source = path_from_url(config.database_url)
                snapshot = await asyncio.to_thread(_sqlite_snapshot, source, work / SQLITE_FILE)
            else:
                snapshot = await _postgres_snapshot(config.database_url, work / POSTGRES_FILE)
            task.advance()
        size, digest = await asyncio.to_thread(_hash_file, work / snapshot.info["file"])
        files[snapshot.info["file"]] = {"size": size, "sha256": digest}
        blobs = await _copy_blobs(config, work, snapshot.keys, include_s3_objects, files, progress)
        secrets_info = await asyncio.to_thread(_copy_secrets, config, work, files, config_file)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sup_version": __version__,
            "created_at": created_at,
            "took_seconds": 0.0,
            "database": snapshot.info,
            "blobs": blobs,
            "secrets": secrets_info,
            "files": files,
        }
        await asyncio.to_thread(os.sync)  # every copied file on disk before the manifest says it is there
        manifest["took_seconds"] = round(time.monotonic() - started, 3)
        await asyncio.to_thread(_write_json, work / MANIFEST, manifest)
        if archive:
            with progress.task("writing archive", unit="steps") as task:
                await asyncio.to_thread(_archive, work, target)
                task.advance()
            await asyncio.to_thread(shutil.rmtree, work)
        else:
            # rename(2) replaces an empty directory: a backup appears complete or not at all.
            await asyncio.to_thread(os.replace, work, target)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, work, True))
        raise
    outcome = Outcome(target, manifest)
    _describe(outcome)
    if blobs["missing"]:
        outcome.problems.append(
            f"{len(blobs['missing'])} blob(s) named by the database were not found in the blob store "
            f"(listed in {MANIFEST} under blobs.missing): files that cannot be restored"
        )
    if blobs["corrupt"]:
        outcome.problems.append(
            f"{len(blobs['corrupt'])} blob(s) in the blob store do not match their hash (blobs.corrupt): "
            "damaged on disk, left out"
        )
    if secrets_info["source"] == "configuration":
        outcome.warnings.append(
            "the master secret is set in the configuration (security.secret_key), so it is not in the backup: "
            "keep it with the backup"
        )
    elif secrets_info["source"] is None:
        outcome.warnings.append(f"no {SECRETS_FILE} in {config.data_dir}: the backup holds no master secret")
    return outcome


def _describe(outcome: Outcome) -> None:
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


# -- reading a backup -------------------------------------------------------------------------


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
                size, digest = await asyncio.to_thread(_hash_file, path)
            except FileNotFoundError:
                problems.append(f"{rel}: missing")
                return
            finally:
                task.advance(expected["size"])
            if (size, digest) != (expected["size"], expected["sha256"]):
                problems.append(f"{rel}: damaged (size or SHA-256 differs from the manifest)")

        await _each(sorted(files), one)
    extra = await asyncio.to_thread(_unlisted, root, set(files) | {MANIFEST})
    if extra:
        problems.append(f"{len(extra)} file(s) not in the manifest, e.g. {sorted(extra)[0]}")


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    found = (str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    return [rel for rel in found if rel not in listed]


def _check_blob_names(root: Path, manifest: dict[str, Any], problems: list[str]) -> list[dict[str, Any]]:
    entries = json.loads((root / BLOB_LIST).read_text())
    files = manifest["files"]
    for entry in entries:
        rel = _blob_path(entry["key"])
        if manifest["blobs"]["included"]:
            listed = files.get(rel)
            if listed is None:
                problems.append(f"blob {entry['key']}: not in the backup")
            elif listed["sha256"] != entry["key"] or listed["size"] != entry["size"]:
                problems.append(f"blob {entry['key']}: its content does not hash to its name")
    return entries


# -- verify -----------------------------------------------------------------------------------


def _verify_sqlite(file: Path, manifest: dict[str, Any], problems: list[str]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="sup-verify-"))
    try:
        restored = scratch / "sup.db"
        shutil.copyfile(file, restored)
        conn = sqlite_connect(restored)
        try:
            integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                problems.append(f"database: integrity_check says {'; '.join(integrity[:5])}")
                return
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                problems.append(f"database: {len(broken)} row(s) break a foreign key, e.g. in {broken[0][0]}")
            tables = sqlite_tables(conn)
            _compare_database(sqlite_versions(conn), sqlite_counts(conn, tables), manifest, problems)
        finally:
            conn.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _compare_database(versions: list[int], counts: dict[str, int], manifest: dict[str, Any], problems: list[str]):
    expected = manifest["database"]
    if versions != expected["schema_versions"]:
        problems.append(f"database: schema versions {versions}, the manifest says {expected['schema_versions']}")
    for table, count in sorted(expected["tables"].items()):
        if counts.get(table) != count:
            problems.append(f"database: table {table} has {counts.get(table)} rows, the manifest says {count}")
    for table in sorted(set(counts) - set(expected["tables"])):
        problems.append(f"database: table {table} is not in the manifest")


async def _pg_restore(dump: Path, url: str) -> None:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise OpsError(PG_RESTORE_MISSING)
    target = libpq_target(url)
    proc = await asyncio.create_subprocess_exec(
        pg_restore,
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
        f"--dbname={target.url}",
        str(dump),
        env=target.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise OpsError(f"pg_restore failed: {err.decode(errors='replace').strip()}")


async def _verify_postgres(dump: Path, server_url: str, manifest: dict[str, Any], problems: list[str]) -> str:
    import asyncpg

    name = f"sup_verify_{secrets.token_hex(6)}"
    try:
        admin = await asyncpg.connect(server_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise OpsError(f"cannot reach Postgres to restore the dump into a scratch database: {exc}") from None
    try:
        try:
            await admin.execute(f"CREATE DATABASE {quoted(name)}")
        except asyncpg.InsufficientPrivilegeError:
            raise OpsError(
                "verifying a Postgres backup restores it into a scratch database, and this role may not "
                "create one: grant CREATEDB, or name another server with --scratch-database-url"
            ) from None
        scratch = with_database(server_url, name)
        try:
            await _pg_restore(dump, scratch)
            conn = await asyncpg.connect(scratch)
            try:
                tables = await postgres_tables(conn)
                _compare_database(
                    await postgres_versions(conn), await postgres_counts(conn, tables), manifest, problems
                )
            finally:
                await conn.close()
        except OpsError as exc:
            problems.append(f"database: {exc}")
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
    finally:
        await admin.close()
    return name


async def verify_backup(
    source: Path, config: Config, *, scratch_database_url: str | None = None, progress: Progress | None = None
) -> Outcome:
    """Check a backup as far as can be without restoring it over anything: files, database, blobs, secrets."""
    progress = progress or Progress.silent()
    with opened(source) as root:
        manifest = read_manifest(root)
        outcome = Outcome(Path(source), manifest)
        problems = outcome.problems
        await check_files(root, manifest, problems, progress)
        database = manifest["database"]
        file = root / database["file"]
        with progress.task("restoring the database into a scratch copy", unit="steps") as task:
            if database["dialect"] == "sqlite":
                await asyncio.to_thread(_verify_sqlite, file, manifest, problems)
            else:
                server = scratch_database_url or config.database_url
                if not server.startswith(("postgresql:", "postgres:")):
                    raise OpsError("a Postgres backup: name a server to restore it into with --scratch-database-url")
                await _verify_postgres(file, server, manifest, problems)
            task.advance()
        unknown = sorted(set(database["schema_versions"]) - {m.version for m in migrations.discover()})
        if unknown:
            outcome.warnings.append(
                f"the backup has migrations this SUP does not know ({unknown}): restore it with that SUP"
            )
        entries = await asyncio.to_thread(_check_blob_names, root, manifest, problems)
        blobs = manifest["blobs"]
        for key in blobs["missing"]:
            problems.append(f"blob {key}: named by the database but missing when the backup was taken")
        if not blobs["included"]:
            await _check_objects_in_store(entries, blobs, config, outcome, progress)
        _check_secrets(root, manifest, problems)
        _describe(outcome)
        outcome.facts.append(f"files: {len(manifest['files'])} checked against their SHA-256")
    return outcome


async def _check_objects_in_store(
    entries: list[dict[str, Any]], blobs: dict[str, Any], config: Config, outcome: Outcome, progress: Progress
) -> None:
    """A backup that lists S3 objects is good while the bucket has them: checked when it is the configured store."""
    if _shown_url(blobs_url(config)) != blobs["url"]:
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

            await _each(entries, one)
    finally:
        await store.close()


def _check_secrets(root: Path, manifest: dict[str, Any], problems: list[str]) -> None:
    info = manifest["secrets"]
    if "file" not in info:
        return
    try:
        master = json.loads((root / info["file"]).read_text())["master"].encode()
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"secrets: {info['file']} cannot be read: {exc}")
        return
    if fingerprint(master) != info["fingerprint"]:
        problems.append("secrets: the master secret is not the one the manifest names")


# -- restore ----------------------------------------------------------------------------------


def _restore_sqlite_file(file: Path, target: Path, force: bool) -> None:
    if sqlite_in_use(target):
        raise OpsError(f"{target} is open in another process (is SUP running?): stop SUP before restoring")
    if target.exists() and target.stat().st_size > 0 and not force:
        raise OpsError(f"{target} exists and is not empty: restore into an empty data directory, or add --force")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.restoring")
    partial.unlink(missing_ok=True)
    _copy_hashing(file, partial)
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    for stale in (Path(f"{target}-wal"), Path(f"{target}-shm")):  # they belong to the database being replaced
        stale.unlink(missing_ok=True)
    os.replace(partial, target)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _restore_postgres(dump: Path, url: str, force: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        tables = await postgres_tables(conn)
        if others and not force:
            raise OpsError(
                f"{others} other connection(s) to the database (is SUP running?): stop SUP first, or add --force"
            )
        if tables and not force:
            raise OpsError(f"the database has {len(tables)} tables: restore into an empty database, or add --force")
        if tables:
            await conn.execute("DROP TABLE " + ", ".join(quoted(t.name) for t in tables) + " CASCADE")
    finally:
        await conn.close()
    await _pg_restore(dump, url)


class _Silent:
    """Nothing is connected during a restore: events are stored, and delivered when clients come."""

    async def announce(self, deliveries: Iterable[Delivery]) -> None:
        return None

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None:
        return None

    async def announce_revoked(self, device_ids: Sequence[str]) -> None:
        return None


async def after_restore(db: Database, gap: int, now_ms: int) -> int:
    """Make the restored state safe for clients that lived on after the backup was taken.

    - Event and message numbers move `gap` past the restored ones: clients may hold cursors and
      messages numbered after the backup (lost with the time after it), and must never see a
      number again for something else. A client resuming from such a cursor gets the new events.
    - One-time prekeys go: any of them may have been handed out after the backup, and a second
      hand-out would give a new sender a session its recipient cannot open. Every device with keys
      gets `prekeys.low` (count 0) and uploads new ones; meanwhile sessions start without one.

    Returns the number of devices told to upload prekeys.
    """
    stores = Stores.for_dialect(db.dialect)
    writer = EventWriter(stores.events, _Silent())
    async with db.transaction() as tx:
        await tx.execute("UPDATE user_devices SET last_event_seq = last_event_seq + $1", gap)
        await tx.execute("UPDATE chats SET last_seq = last_seq + $1", gap)
        await tx.execute("DELETE FROM one_time_prekeys")
        rows = await tx.fetch(
            "SELECT k.device_id FROM device_keys k JOIN user_devices d ON d.id = k.device_id"
            " WHERE d.revoked_at IS NULL ORDER BY k.device_id"
        )
        devices = [row["device_id"] for row in rows]
        await writer.append(tx, "prekeys.low", devices, encode({"count": 0}), now_ms)
    return len(devices)


async def _restore_blobs(
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
                    file = root / _blob_path(key)
                    if not manifest["blobs"]["included"] or not file.exists():
                        missing.append(key)
                        return
                    stored = await store.put_stream(_file_chunks(file))
                    if stored.key != key:
                        await store.delete(stored.key)
                        outcome.problems.append(f"blob {key}: its content does not hash to its name, not restored")
                        return
                    restored += 1
                finally:
                    task.advance()

            await _each(entries, one)
    finally:
        await store.close()
    outcome.facts.append(f"blobs: {restored} restored, {present} already in the store")
    if missing:
        outcome.problems.append(
            f"{len(missing)} blob(s) are neither in the backup nor in the blob store, e.g. {sorted(missing)[0]}"
        )


def _secrets_plan(root: Path, manifest: dict[str, Any], config: Config, force: bool, outcome: Outcome) -> bytes | None:
    """The secrets.json to write (None: nothing to write); refuses to replace a different one without --force."""
    info = manifest["secrets"]
    if config.security.secret_key:
        if info.get("fingerprint") and fingerprint(config.security.secret_key.encode()) != info["fingerprint"]:
            outcome.warnings.append(
                "the configured security.secret_key is not the secret this backup was taken with: access tokens end "
                "(clients log in again with their refresh tokens) and 2FA secrets cannot be read"
            )
        return None
    if "file" not in info:
        if info.get("source") == "configuration":
            outcome.warnings.append(
                "the backup was taken with security.secret_key set: set the same value in the configuration"
            )
        return None
    data = (root / info["file"]).read_bytes()
    existing = config.data_dir / SECRETS_FILE
    if existing.exists() and existing.read_bytes() != data and not force:
        raise OpsError(f"{existing} holds another master secret: add --force to replace it with the backup's")
    return data


def _write_secrets(config: Config, data: bytes) -> None:
    path = config.data_dir / SECRETS_FILE
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = config.data_dir / f".{SECRETS_FILE}.restoring"
    partial.unlink(missing_ok=True)
    with os.fdopen(_private_file(partial), "wb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(partial, path)


async def restore_backup(
    source: Path,
    config: Config,
    *,
    force: bool = False,
    gap: int = SEQUENCE_GAP,
    progress: Progress | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> Outcome:
    """Put a backup in place of the configured database, blob store and secret. SUP must be stopped."""
    progress = progress or Progress.silent()
    with opened(source) as root:
        manifest = read_manifest(root)
        outcome = Outcome(Path(source), manifest)
        damaged: list[str] = []
        await check_files(root, manifest, damaged, progress)
        entries = await asyncio.to_thread(_check_blob_names, root, manifest, damaged)
        if damaged:
            raise OpsError("the backup is damaged, nothing was restored: " + "; ".join(damaged[:5]))
        database = manifest["database"]
        unknown = sorted(set(database["schema_versions"]) - {m.version for m in migrations.discover()})
        if unknown:
            raise OpsError(f"the backup has migrations this SUP does not know ({unknown}): restore it with a newer SUP")
        configured = "sqlite" if config.database_url.startswith("sqlite:") else "postgres"
        if configured != database["dialect"]:
            raise OpsError(
                f"this is a {database['dialect']} backup and the configured database is {configured}: restore it into "
                f"a {database['dialect']} database, then move with `sup migrate-backend`"
            )
        secret = _secrets_plan(root, manifest, config, force, outcome)
        file = root / database["file"]
        with progress.task("restoring the database", unit="steps") as task:
            if configured == "sqlite":
                await asyncio.to_thread(_restore_sqlite_file, file, path_from_url(config.database_url), force)
            else:
                await _restore_postgres(file, config.database_url, force)
            task.advance()
        db = await open_database(config.database_url, readers=1, pool_min=1, pool_max=1)
        try:
            told = await after_restore(db, gap, now_ms())
        finally:
            await db.close()
        _describe(outcome)
        outcome.facts.append(
            f"after the restore: event and message numbers moved on by {gap}; one-time prekeys cleared, "
            f"{told} device(s) asked for new ones"
        )
        await _restore_blobs(root, manifest, entries, config, outcome, progress)
        if secret is not None:
            await asyncio.to_thread(_write_secrets, config, secret)
            outcome.facts.append(f"secrets: {SECRETS_FILE} restored")
    return outcome
