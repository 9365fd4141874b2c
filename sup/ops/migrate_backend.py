"""`sup migrate-backend`: move a running install from SQLite to Postgres, and from disk to S3.

Two passes, so that the server is stopped only for the short second one:

1. **Copy** (`--to URL`, SUP running). Database: the target gets the schema by the migrations,
   its foreign keys are set aside (so tables can be filled in any order, from any moment, and a
   copy can resume), then every table is copied in rowid order, in batches; each batch commits
   together with the table's high-water mark in `sup_backend_copy`, so an interrupted copy
   resumes after its last batch. Blobs: every blob file not yet in the bucket is uploaded (the
   bucket's listing is the resume state); the upload hashes the bytes and must find the name.
2. **Final** (`--to URL --final`, SUP stopped). The copy's catch-up, then every table is
   compared with the source row by row in key order; rows added, changed or deleted since
   the copy are put right, and each table's row count and checksum are compared on both sides.
   The foreign keys come back (Postgres checks them all), the state table goes, and the
   target is ready: one setting and a restart switch SUP to it.

Nothing is written to the source, so until the switch the old install is untouched.
"""

from __future__ import annotations

import asyncio
import operator
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from sup.blobs.disk import DiskBlobStore
from sup.blobs.store import BlobSettings, file_chunks, open_blob_store
from sup.config import Config
from sup.db import migrations
from sup.db.database import in_list, open_database
from sup.db.sqlite import path_from_url
from sup.ops.progress import Progress
from sup.ops.tables import (
    SCHEMA_TABLE,
    Checksum,
    OpsError,
    Table,
    normal_row,
    postgres_tables,
    quoted,
    sqlite_connect,
    sqlite_in_use,
    sqlite_tables,
    sqlite_versions,
)

STATE = migrations.COPY_STATE_TABLE
BATCH_ROWS = 5000
_CREATE_STATE = f"""
CREATE TABLE IF NOT EXISTS {STATE} (
    kind TEXT NOT NULL,        -- 'source', 'table' (position: its high-water rowid), 'fk' (detail: table, definition)
    name TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    position BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, name)
)
"""


@dataclass
class TableReport:
    name: str
    rows: int = 0
    copied: int = 0
    inserted: int = 0  # by the final pass
    updated: int = 0
    deleted: int = 0
    source_checksum: str = ""
    target_checksum: str = ""
    bytes: int = 0


@dataclass
class MoveReport:
    """What a pass did; `lines` for the admin, `problems` fail the command."""

    tables: list[TableReport] = field(default_factory=list)
    blobs_copied: int = 0
    blobs_present: int = 0
    blob_bytes: int = 0
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rows_copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def bytes_copied(self) -> int:
        return sum(t.bytes for t in self.tables)


# -- the source -------------------------------------------------------------------------------


def _source_path(config: Config) -> Path:
    if not config.database_url.startswith("sqlite:"):
        raise OpsError("the configured database is not SQLite: there is nothing to move to Postgres")
    path = Path(os.path.abspath(path_from_url(config.database_url)))
    if not path.exists():
        raise OpsError(f"no SQLite database at {path}")
    return path


def _check_source_schema(conn: sqlite3.Connection) -> list[int]:
    versions = sqlite_versions(conn)
    known = [m.version for m in migrations.discover()]
    if versions != known:
        raise OpsError(
            f"the SQLite database has migrations {versions}, this SUP has {known}: run `sup migrate up` (or the SUP "
            "that upgraded it) so that both sides get the same schema"
        )
    return versions


def _row_size(row: Sequence[Any]) -> int:
    return sum(len(v) if isinstance(v, str | bytes) else 8 for v in row if v is not None)


# -- the target -------------------------------------------------------------------------------


async def _pg_connect(url: str) -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise OpsError(f"cannot connect to the target Postgres: {exc}") from None


async def _column_types(conn: Any, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a"
        " WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        quoted(table),
    )
    return {row["attname"]: row["type"] for row in rows}


@dataclass
class _Plan:
    """How one table travels: its columns in order, which need converting, how its key sorts on both sides."""

    table: Table
    booleans: tuple[int, ...]
    pg_key_order: str  # ORDER BY on Postgres, byte order like SQLite's
    pg_key_row: str  # the key as a row value, in that order

    def to_target(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if not self.booleans:
            return tuple(row)
        values = list(row)
        for index in self.booleans:
            if values[index] is not None:
                values[index] = bool(values[index])
        return tuple(values)


async def _plans(conn: Any, source_tables: list[Table]) -> list[_Plan]:
    target = {t.name: t for t in await postgres_tables(conn)}
    plans = []
    for table in source_tables:
        if table.name == SCHEMA_TABLE:
            continue
        other = target.get(table.name)
        if other is None or set(other.columns) != set(table.columns):
            raise OpsError(f"table {table.name} differs between SQLite and the target: both must have the same schema")
        if not table.key:
            raise OpsError(f"table {table.name} has no primary key: it cannot be compared row by row")
        types = await _column_types(conn, table.name)
        # Text sorts by bytes in SQLite; "C" makes Postgres agree. UUIDs and bytea already sort by bytes.
        keyed = [
            f'{quoted(c)} COLLATE "C"' if types[c].startswith(("text", "character")) else quoted(c) for c in table.key
        ]
        plans.append(
            _Plan(
                table,
                tuple(i for i, c in enumerate(table.columns) if types[c] == "boolean"),
                ", ".join(keyed),
                f"({', '.join(keyed)})",
            )
        )
    return plans


async def _state(conn: Any) -> dict[tuple[str, str], tuple[str, int]]:
    rows = await conn.fetch(f"SELECT kind, name, detail, position FROM {STATE}")
    return {(row["kind"], row["name"]): (row["detail"], row["position"]) for row in rows}


async def _prepare_target(url: str, source: str, progress: Progress) -> dict[tuple[str, str], tuple[str, int]]:
    """A target ready to copy into: the schema migrated and foreign keys set aside, or a copy to resume."""
    conn = await _pg_connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", STATE):
            state = await _state(conn)
            previous = next((name for kind, name in state if kind == "source"), None)
            if previous != source:
                raise OpsError(f"the target holds an unfinished copy of another database ({previous})")
            progress.note(f"resuming the copy into {_shown(url)}")
            return state
        tables = await postgres_tables(conn)
        if tables:
            raise OpsError(
                f"the target database already has {len(tables)} tables: move into an empty database "
                "(CREATE DATABASE ... OWNER ...)"
            )
    finally:
        await conn.close()
    db = await open_database(url, pool_min=1, pool_max=1)
    try:
        await migrations.migrate_up(db, int(time.time() * 1000))
    finally:
        await db.close()
    conn = await _pg_connect(url)
    try:
        async with conn.transaction():
            await conn.execute(_CREATE_STATE)
            await conn.execute(f"INSERT INTO {STATE} (kind, name) VALUES ('source', $1)", source)
            keys = await conn.fetch(
                "SELECT c.conname, c.conrelid::regclass::text AS tbl, pg_get_constraintdef(c.oid) AS definition"
                " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
                " WHERE c.contype = 'f' AND n.nspname = current_schema() ORDER BY c.conname"
            )
            for key in keys:
                await conn.execute(
                    f"INSERT INTO {STATE} (kind, name, detail) VALUES ('fk', $1, $2)",
                    key["conname"],
                    f"{key['tbl']}\t{key['definition']}",
                )
                await conn.execute(f"ALTER TABLE {key['tbl']} DROP CONSTRAINT {quoted(key['conname'])}")
        return await _state(conn)
    finally:
        await conn.close()


def _shown(url: str) -> str:
    from sup.preflight import shown

    return shown(url)


# -- pass 1: copy by rowid --------------------------------------------------------------------


def _read_batch(conn: sqlite3.Connection, table: Table, after: int, limit: int) -> list[tuple[Any, ...]]:
    columns = ", ".join(quoted(c) for c in table.columns)
    sql = f"SELECT rowid, {columns} FROM {quoted(table.name)} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    return conn.execute(sql, (after, limit)).fetchall()


async def _copy_batch(conn: Any, plan: _Plan, rows: list[tuple[Any, ...]], high: int) -> None:
    import asyncpg

    name = plan.table.name
    records = [plan.to_target(row[1:]) for row in rows]
    async with conn.transaction():
        try:
            async with conn.transaction():  # a savepoint: a clash falls back below without losing the batch
                await conn.copy_records_to_table(name, records=records, columns=list(plan.table.columns))
        except asyncpg.UniqueViolationError:
            # A key deleted and inserted again since an earlier batch: keep what is there; the final pass compares.
            columns = ", ".join(quoted(c) for c in plan.table.columns)
            marks = in_list(len(plan.table.columns))
            await conn.executemany(
                f"INSERT INTO {quoted(name)} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", records
            )
        await conn.execute(f"UPDATE {STATE} SET position = $2 WHERE kind = 'table' AND name = $1", name, high)


async def _copy_tables(
    source: sqlite3.Connection, conn: Any, plans: list[_Plan], state: dict, batch: int, report: MoveReport, progress
) -> None:
    totals = {}
    for plan in plans:
        high = state.get(("table", plan.table.name), ("", 0))[1]
        if ("table", plan.table.name) not in state:
            await conn.execute(f"INSERT INTO {STATE} (kind, name) VALUES ('table', $1)", plan.table.name)
        remaining = await asyncio.to_thread(
            lambda p=plan, h=high: source.execute(
                f"SELECT count(*) FROM {quoted(p.table.name)} WHERE rowid > ?", (h,)
            ).fetchone()[0]
        )
        totals[plan.table.name] = (high, remaining)
    with progress.task("copying rows", total=sum(r for _, r in totals.values()), unit="rows") as task:
        for plan in plans:
            high, _ = totals[plan.table.name]
            entry = TableReport(plan.table.name)
            report.tables.append(entry)
            pending = asyncio.ensure_future(asyncio.to_thread(_read_batch, source, plan.table, high, batch))
            while True:
                rows = await pending
                if not rows:
                    break
                high = rows[-1][0]
                # Read the next batch while this one is written.
                pending = asyncio.ensure_future(asyncio.to_thread(_read_batch, source, plan.table, high, batch))
                await _copy_batch(conn, plan, rows, high)
                entry.copied += len(rows)
                entry.bytes += sum(_row_size(row[1:]) for row in rows)
                task.advance(len(rows))


async def _copy_database(
    config: Config, url: str, *, final: bool, batch: int, progress: Progress, report: MoveReport
) -> None:
    path = _source_path(config)
    if final and sqlite_in_use(path):
        raise OpsError(f"{path} is open in another process (is SUP running?): stop SUP before the final pass")
    source = await asyncio.to_thread(sqlite_connect, path, read_only=True)
    try:
        versions = await asyncio.to_thread(_check_source_schema, source)
        source_tables = await asyncio.to_thread(sqlite_tables, source)
        state = await _prepare_target(url, str(path), progress)
        conn = await _pg_connect(url)
        try:
            target_versions = [r[0] for r in await conn.fetch(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY 1")]
            if target_versions != versions:
                raise OpsError(f"the target has migrations {target_versions}, the source {versions}")
            plans = await _plans(conn, source_tables)
            await _copy_tables(source, conn, plans, state, batch, report, progress)
            if final:
                await _final_pass(source, conn, plans, report, progress)
                await _restore_foreign_keys(conn, progress)
                await _reset_sequences(conn)
                await conn.execute(f"DROP TABLE {STATE}")
        finally:
            await conn.close()
    finally:
        source.close()


# -- pass 2: compare everything, put right what changed ---------------------------------------


def _source_page(conn: sqlite3.Connection, table: Table, after: tuple | None, limit: int) -> list[tuple]:
    columns = ", ".join(quoted(c) for c in table.columns)
    key = ", ".join(quoted(c) for c in table.key)
    where = ""
    args: tuple = ()
    if after is not None:
        where = f"WHERE ({key}) > ({', '.join('?' for _ in table.key)})"
        args = after
    sql = f"SELECT {columns} FROM {quoted(table.name)} {where} ORDER BY {key} LIMIT ?"
    return [normal_row(row) for row in conn.execute(sql, (*args, limit)).fetchall()]


async def _target_page(conn: Any, plan: _Plan, after: tuple | None, upto: tuple | None) -> list[tuple]:
    table = plan.table
    columns = ", ".join(quoted(c) for c in table.columns)
    conditions, args = [], []
    n = len(table.key)
    if after is not None:
        conditions.append(f"{plan.pg_key_row} > ({', '.join(f'${i + 1}' for i in range(n))})")
        args.extend(after)
    if upto is not None:
        base = len(args)
        conditions.append(f"{plan.pg_key_row} <= ({', '.join(f'${base + i + 1}' for i in range(n))})")
        args.extend(upto)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await conn.fetch(f"SELECT {columns} FROM {quoted(table.name)} {where} ORDER BY {plan.pg_key_order}", *args)
    return [normal_row(tuple(row)) for row in rows]


async def _put_right(conn: Any, plan: _Plan, wrong: list[tuple], missing: list[tuple]) -> None:
    table = plan.table
    key_at = [table.columns.index(c) for c in table.key]
    match = " AND ".join(f"{quoted(c)} = ${i + 1}" for i, c in enumerate(table.key))
    columns = ", ".join(quoted(c) for c in table.columns)
    marks = in_list(len(table.columns))
    async with conn.transaction():
        if wrong:
            await conn.executemany(
                f"DELETE FROM {quoted(table.name)} WHERE {match}", [tuple(row[i] for i in key_at) for row in wrong]
            )
        if missing:
            await conn.executemany(
                f"INSERT INTO {quoted(table.name)} ({columns}) VALUES ({marks})",
                [plan.to_target(row) for row in missing],
            )


async def _final_pass(source: sqlite3.Connection, conn: Any, plans: list[_Plan], report: MoveReport, progress) -> None:
    entries = {entry.name: entry for entry in report.tables}
    counts = {
        p.table.name: await asyncio.to_thread(
            lambda p=p: source.execute(f"SELECT count(*) FROM {quoted(p.table.name)}").fetchone()[0]
        )
        for p in plans
    }
    with progress.task("comparing every row", total=sum(counts.values()), unit="rows") as task:
        for plan in plans:
            entry = entries[plan.table.name]
            key_at = [plan.table.columns.index(c) for c in plan.table.key]
            by_key = operator.itemgetter(*key_at) if len(key_at) > 1 else (lambda row, i=key_at[0]: (row[i],))
            source_sum, target_sum = Checksum(), Checksum()
            after: tuple | None = None
            while True:
                page = await asyncio.to_thread(_source_page, source, plan.table, after, BATCH_ROWS)
                last = len(page) < BATCH_ROWS
                upto = None if last else tuple(page[-1][i] for i in key_at)
                page.sort(key=by_key)  # Python's order is byte order, as both databases were asked to sort
                theirs = sorted(await _target_page(conn, plan, after, upto), key=by_key)
                if theirs != page:
                    mine = {tuple(row[i] for i in key_at): row for row in page}
                    other = {tuple(row[i] for i in key_at): row for row in theirs}
                    wrong = [row for k, row in other.items() if mine.get(k) != row]
                    missing = [row for k, row in mine.items() if other.get(k) != row]
                    entry.deleted += sum(1 for k in other if k not in mine)
                    entry.inserted += sum(1 for k in mine if k not in other)
                    entry.updated += sum(1 for k in mine if k in other and other[k] != mine[k])
                    await _put_right(conn, plan, wrong, missing)
                    theirs = sorted(await _target_page(conn, plan, after, upto), key=by_key)
                source_sum.add(page)
                target_sum.add(theirs)
                task.advance(len(page))
                if last:
                    break
                after = upto
            entry.rows = source_sum.rows
            entry.source_checksum = source_sum.hexdigest()
            entry.target_checksum = target_sum.hexdigest()
            if (source_sum.rows, entry.source_checksum) != (target_sum.rows, entry.target_checksum):
                report.problems.append(
                    f"table {plan.table.name}: {source_sum.rows} rows in SQLite, {target_sum.rows} in Postgres, "
                    "checksums differ"
                )


async def _restore_foreign_keys(conn: Any, progress: Progress) -> None:
    state = await _state(conn)
    keys = sorted((name, detail) for (kind, name), (detail, _) in state.items() if kind == "fk")
    with progress.task("restoring foreign keys (Postgres checks every row)", total=len(keys), unit="keys") as task:
        for name, detail in keys:
            table, definition = detail.split("\t", 1)
            await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {quoted(name)} {definition}")
            task.advance()


async def _reset_sequences(conn: Any) -> None:
    """Serial and identity columns continue after the copied values (none today; a later migration may add one)."""
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name, pg_get_serial_sequence(quote_ident(c.table_name), c.column_name) AS seq"
        " FROM information_schema.columns c WHERE c.table_schema = current_schema()"
        " AND pg_get_serial_sequence(quote_ident(c.table_name), c.column_name) IS NOT NULL"
    )
    for row in rows:
        top = await conn.fetchval(f"SELECT max({quoted(row['column_name'])}) FROM {quoted(row['table_name'])}")
        await conn.execute("SELECT setval($1, $2, $3)", row["seq"], top or 1, top is not None)


# -- blobs ------------------------------------------------------------------------------------


async def _copy_blobs(config: Config, url: str, *, final: bool, progress: Progress, report: MoveReport) -> None:
    if config.blobs.url.startswith("s3:"):
        raise OpsError("the configured blob store is S3 already: there is nothing to move")
    if final:
        await _refuse_running_server(config)
    source = await open_blob_store(BlobSettings(**msgspec.structs.asdict(config.blobs)), data_dir=config.data_dir)
    settings = BlobSettings(**{**msgspec.structs.asdict(config.blobs), "url": url})
    target = await open_blob_store(settings, data_dir=config.data_dir)
    try:
        if not isinstance(source, DiskBlobStore):
            raise OpsError("the configured blob store is not on disk: there is nothing to move")
        keys = await asyncio.to_thread(lambda: list(source.stored_keys()))
        present = await target.stored_sizes()  # type: ignore[attr-defined]
        sizes = {key: (await asyncio.to_thread(source.path_of(key).stat)).st_size for key in keys}
        todo = [key for key in keys if present.get(key) != sizes[key]]
        report.blobs_present = len(keys) - len(todo)
        with progress.task("copying blobs", total=sum(sizes[k] for k in todo), unit="bytes") as task:
            queue = iter(todo)

            async def worker() -> None:
                for key in queue:
                    stored = await target.put_stream(file_chunks(source.path_of(key)))
                    if stored.key != key:  # the file is not the blob its name says: never under that name in S3
                        await target.delete(stored.key)
                        report.problems.append(f"blob {key}: the file's content does not hash to its name")
                        continue
                    report.blobs_copied += 1
                    report.blob_bytes += stored.size
                    task.advance(stored.size)

            await asyncio.gather(*(worker() for _ in range(4)))
        if final:
            after = await target.stored_sizes()  # type: ignore[attr-defined]
            absent = [key for key in keys if after.get(key) != sizes[key]]
            if absent:
                report.problems.append(f"{len(absent)} blob(s) are not in the bucket after the copy, e.g. {absent[0]}")
            report.lines.append(f"blobs: all {len(keys)} on disk are in {url}, each stored under its SHA-256")
    finally:
        await source.close()
        await target.close()


async def _refuse_running_server(config: Config) -> None:
    if config.database_url.startswith("sqlite:"):
        path = path_from_url(config.database_url)
        if sqlite_in_use(path):
            raise OpsError(f"{path} is open in another process (is SUP running?): stop SUP before the final pass")
        return
    conn = await _pg_connect(config.database_url)
    try:
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    if others:
        raise OpsError(
            f"{others} other connection(s) to the database (is SUP running?): stop SUP before the final pass"
        )


# -- the command ------------------------------------------------------------------------------


async def migrate_backend(
    config: Config, to: str, *, final: bool = False, batch: int = BATCH_ROWS, progress: Progress | None = None
) -> MoveReport:
    progress = progress or Progress.silent()
    report = MoveReport()
    started = time.monotonic()
    if to.startswith(("postgresql://", "postgres://")):
        await _copy_database(config, to, final=final, batch=batch, progress=progress, report=report)
        report.lines.append(f"rows copied now: {report.rows_copied} ({report.bytes_copied} bytes of values)")
        if final:
            fixed = sum(t.inserted + t.updated + t.deleted for t in report.tables)
            report.lines.append(f"final pass: {fixed} row(s) added, changed or deleted since the copy were put right")
            for table in report.tables:
                report.lines.append(f"  {table.name}: {table.rows} rows, checksum {table.target_checksum[:16]} on both")
            report.lines.append("foreign keys restored and checked by Postgres")
            report.lines.append(
                f'Switch: set [database] url = "{_shown(to)}" in sup.toml (or SUP_DATABASE_URL), then start SUP. '
                "The SQLite file is left as it was."
            )
        else:
            report.lines.append(
                f"To switch: stop SUP, run `sup migrate-backend --to {_shown(to)} --final` (it copies what changed "
                "meanwhile and checks every row), then set database.url and start SUP."
            )
    elif to.startswith("s3://"):
        await _copy_blobs(config, to, final=final, progress=progress, report=report)
        report.lines.append(
            f"blobs copied now: {report.blobs_copied} ({report.blob_bytes} bytes); {report.blobs_present} were there"
        )
        if final:
            report.lines.append(
                f'Switch: set [blobs] url = "{to}" in sup.toml (or SUP_BLOBS_URL), keeping the s3_* settings used '
                "here, then start SUP. The files on disk are left as they were."
            )
        else:
            report.lines.append(
                f"To switch: stop SUP, run `sup migrate-backend --to {to} --final` (it copies blobs written "
                "meanwhile and checks that every one is there), then set blobs.url and start SUP."
            )
    else:
        raise OpsError(f"--to: expected postgresql://... or s3://bucket/prefix, got {to.split(':', 1)[0]!r}")
    report.seconds = time.monotonic() - started
    return report
