"""The database in a backup: its snapshot (SQLite backup API or pg_dump), its check in a scratch copy, its restore."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sup.db import migrations
from sup.db.database import Database
from sup.db.media import BLOB_COLUMNS
from sup.db.stores import Stores
from sup.domain.events import EventWriter, SilentAnnouncer, encode
from sup.ops.backup.archive import (
    POSTGRES_FILE,
    SQLITE_FILE,
    copy_hashing,
    private_file,
)
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

# or its blobs are left out of backups (tests/test_backup.py restores every blob of a server).
BLOB_REFERENCES: dict[str, tuple[str, ...]] = {"media": BLOB_COLUMNS, "account_exports": ("blob_key",)}


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
class Snapshot:
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


def sqlite_snapshot(source: Path, dest: Path) -> Snapshot:
    if not source.exists():
        raise OpsError(f"no SQLite database at {source}: nothing to back up")
    os.close(private_file(dest))
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
        return Snapshot(info, _referenced_sqlite(out))
    finally:
        out.close()


async def postgres_snapshot(url: str, dest: Path) -> Snapshot:
    import asyncpg

    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise OpsError(PG_DUMP_MISSING)
    version = await _tool_version(pg_dump)
    os.close(private_file(dest))
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
    return Snapshot(info, keys)


async def _tool_version(path: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode().strip()


def verify_sqlite(file: Path, manifest: dict[str, Any], problems: list[str]) -> None:
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


async def verify_postgres(dump: Path, server_url: str, manifest: dict[str, Any], problems: list[str]) -> str:
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


def restore_sqlite_file(file: Path, target: Path, force: bool) -> None:
    if sqlite_in_use(target):
        raise OpsError(f"{target} is open in another process (is SUP running?): stop SUP before restoring")
    if target.exists() and target.stat().st_size > 0 and not force:
        raise OpsError(f"{target} exists and is not empty: restore into an empty data directory, or add --force")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.restoring")
    partial.unlink(missing_ok=True)
    copy_hashing(file, partial)
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


async def restore_postgres(dump: Path, url: str, force: bool) -> None:
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


def unknown_migrations(database: dict[str, Any]) -> list[int]:
    """The migrations the backup's database has and this SUP does not know (a backup of a newer SUP)."""
    return sorted(set(database["schema_versions"]) - {m.version for m in migrations.discover()})


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
    writer = EventWriter(stores.events, SilentAnnouncer())
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
