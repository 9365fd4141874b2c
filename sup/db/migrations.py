"""Versioned SQL migrations.

Files in `migrations/`: `NNNN_name.up.sql` and `NNNN_name.down.sql`, shared by both
dialects; `NNNN_name.up.postgres.sql` (or `.sqlite.sql`) holds what only that dialect
runs, where the two really differ (full-text search): going up it runs after the shared
file, and its `.down.<dialect>.sql` runs before the shared one going down; a migration of one
dialect only (how SQLite fills its search index) has no shared files. Each migration
runs in its own transaction and is recorded in `schema_migrations`; a database that has
migrations this binary does not know is refused (an older binary must not write a newer
schema). A migration that runs long (building an index over every message) says so every
few seconds, with the database's own progress figures where it has them (Postgres
reports CREATE INDEX).

The few words the dialects spell differently are written as placeholders, replaced
before a script runs (in shared and dialect files alike):

    {uuid}   UUID      on Postgres, TEXT    on SQLite  (ids travel as strings either way)
    {bytes}  BYTEA     on Postgres, BLOB    on SQLite
    {bool}   BOOLEAN   on Postgres, INTEGER on SQLite  (SQLite has no boolean: 0 or 1)
    {false}  FALSE     on Postgres, 0       on SQLite  (defaults of {bool} columns)
    {true}   TRUE      on Postgres, 1       on SQLite

Everything else is written once, as both accept it: TEXT (JSON too), INTEGER, BIGINT,
REAL, CHECK, REFERENCES, partial indexes (`CREATE INDEX ... WHERE ...`). Any other
`{word}` is refused when the files are read, so a typo fails at start, not halfway
through an upgrade. Only the version is recorded, not the text: an applied file may be
reworded, but must go on creating the same schema, since databases that ran it will not
run it again. tests/test_schema.py checks that both dialects get the same schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sup.db.database import Database, DatabaseError

log = logging.getLogger("sup.db.migrations")

Progress = Callable[[str], None]
PROGRESS_EVERY_SECONDS = 10.0

# What the database can tell about a long statement while it runs, read on another connection.
_PROGRESS_SQL = {
    "postgres": (
        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total FROM pg_stat_progress_create_index"
        " WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ),
    "sqlite": None,  # its one writer connection is busy with the migration: nothing to ask
}

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)(?:\.(sqlite|postgres))?\.sql$")

DIALECT_WORDS: dict[str, dict[str, str]] = {
    "postgres": {"uuid": "UUID", "bytes": "BYTEA", "bool": "BOOLEAN", "false": "FALSE", "true": "TRUE"},
    "sqlite": {"uuid": "TEXT", "bytes": "BLOB", "bool": "INTEGER", "false": "0", "true": "1"},
}
_WORD = re.compile(r"\{([a-z_]+)\}")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)
"""


class SchemaTooNew(DatabaseError):
    """The database was migrated by a newer SUP."""


@dataclass
class Migration:
    version: int
    name: str
    up: dict[str, str] = field(default_factory=dict)  # dialect ("" = shared) -> SQL
    down: dict[str, str] = field(default_factory=dict)

    def sql(self, direction: str, dialect: str) -> str:
        """The shared script and the dialect's own, in the order they run (the dialect's last going up).

        A migration with only another dialect's scripts is nothing to run on this one ("")."""
        scripts = self.up if direction == "up" else self.down
        parts = [scripts[key] for key in ("", dialect) if key in scripts]
        if not parts and scripts:
            return ""
        if not parts:
            raise DatabaseError(f"migration {self.version:04d}_{self.name} has no {direction} script for {dialect}")
        if direction == "down":
            parts.reverse()
        return "\n".join(render(part, dialect) for part in parts)


def render(script: str, dialect: str) -> str:
    """The script with each `{word}` replaced by the dialect's spelling."""
    words = DIALECT_WORDS[dialect]
    return _WORD.sub(lambda match: words[match[1]], script)


def migrations_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "migrations"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise DatabaseError(f"unexpected file in migrations: {path.name}")
        version, name, direction, dialect = int(match[1]), match[2], match[3], match[4] or ""
        migration = found.setdefault(version, Migration(version, name))
        if migration.name != name:
            raise DatabaseError(f"two names for migration {version:04d}: {migration.name}, {name}")
        script = path.read_text()
        unknown = sorted({word for word in _WORD.findall(script) if word not in DIALECT_WORDS["sqlite"]})
        if unknown:
            raise DatabaseError(f"unknown placeholder {{{unknown[0]}}} in migrations/{path.name}")
        getattr(migration, direction)[dialect] = script
    return [found[v] for v in sorted(found)]


@dataclass
class Status:
    applied: list[int]
    pending: list[Migration]
    unknown: list[int]  # applied by a newer binary


async def applied_versions(db: Database) -> list[int]:
    exists = await db.fetchval(
        "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
        if db.dialect == "postgres"
        else "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    )
    if not exists:
        return []
    return [row["version"] for row in await db.fetch("SELECT version FROM schema_migrations ORDER BY version")]


async def status(db: Database, known: list[Migration] | None = None) -> Status:
    known = discover() if known is None else known
    applied = await applied_versions(db)
    known_versions = {m.version for m in known}
    return Status(
        applied=applied,
        pending=[m for m in known if m.version not in set(applied)],
        unknown=[v for v in applied if v not in known_versions],
    )


# Kept in a Postgres database while `sup migrate-backend` copies into it; gone once it is finished.
COPY_STATE_TABLE = "sup_backend_copy"


async def refuse_unfinished_copy(db: Database) -> None:
    """A database that `sup migrate-backend` is still filling is not ready to serve (its foreign keys are off)."""
    if db.dialect == "postgres" and await db.fetchval("SELECT to_regclass($1) IS NOT NULL", COPY_STATE_TABLE):
        raise DatabaseError(
            "this database is the target of an unfinished `sup migrate-backend`: stop SUP on the old database and "
            "run `sup migrate-backend --to <this database> --final` first"
        )


def refuse_newer(state: Status) -> None:
    if state.unknown:
        raise SchemaTooNew(
            f"the database has migrations this version of SUP does not know ({state.unknown}); "
            "it was upgraded by a newer SUP. Run that version, or restore a backup."
        )


async def migrate_up(
    db: Database, clock_ms: int, known: list[Migration] | None = None, *, progress: Progress | None = None
) -> list[Migration]:
    """Apply every pending migration in order; return the ones applied.

    `progress` hears how a long migration is getting on (default: the log, at INFO).
    """
    known = discover() if known is None else known
    refuse_newer(await status(db, known))
    applied_now = []
    for migration in known:
        async with db.transaction() as tx:
            await db.lock_for_migrations(tx)
            await tx.execute(_CREATE_TABLE)
            # Checked again under the lock: another process may have just applied it.
            if await tx.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", migration.version):
                continue
            if script := migration.sql("up", db.dialect):
                await _reporting(db, migration, tx.execute_script(script), progress or log.info)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                clock_ms,
            )
        applied_now.append(migration)
    return applied_now


async def _reporting(db: Database, migration: Migration, work: Awaitable[None], progress: Progress) -> None:
    """Run `work`; while it runs, say every few seconds that it still does, and how far it is."""
    task = asyncio.ensure_future(work)
    started = time.monotonic()
    while True:
        try:
            done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY_SECONDS)
        except asyncio.CancelledError:
            task.cancel()  # the transaction is rolled back next: the script must stop using it first
            with contextlib.suppress(BaseException):
                await task
            raise
        if done:
            task.result()
            return
        detail = await _database_progress(db)
        progress(
            f"migration {migration.version:04d}_{migration.name}: still running after"
            f" {time.monotonic() - started:.0f} s{detail}"
        )


async def _database_progress(db: Database) -> str:
    sql = _PROGRESS_SQL[db.dialect]
    if sql is None:
        return ""
    try:
        rows = await db.fetch(sql)
    except Exception:  # a progress line is not worth failing a migration for
        log.debug("no progress figures from the database", exc_info=True)
        return ""
    parts = []
    for row in rows:
        figures = [row["phase"]]
        if row["blocks_total"]:
            figures.append(f"{100 * row['blocks_done'] / row['blocks_total']:.0f}% of blocks")
        if row["tuples_total"]:
            figures.append(f"{row['tuples_done']:,} of {row['tuples_total']:,} rows")
        parts.append(", ".join(figures))
    return f" (CREATE INDEX: {'; '.join(parts)})" if parts else ""


async def migrate_down(db: Database, steps: int = 1, known: list[Migration] | None = None) -> list[Migration]:
    """Revert the newest `steps` applied migrations; return the ones reverted."""
    known = discover() if known is None else known
    state = await status(db, known)
    refuse_newer(state)
    by_version = {m.version: m for m in known}
    reverted = []
    for version in sorted(state.applied, reverse=True)[:steps]:
        migration = by_version[version]
        async with db.transaction() as tx:
            await db.lock_for_migrations(tx)
            if not await tx.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", version):
                continue
            if script := migration.sql("down", db.dialect):
                await tx.execute_script(script)
            await tx.execute("DELETE FROM schema_migrations WHERE version = $1", version)
        reverted.append(migration)
    return reverted
