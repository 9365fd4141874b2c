"""The tables of a SUP database as operations see them: found in the database itself (so a
migration added later is covered), ordered parents first, and rows made comparable across
SQLite and Postgres for counting and checksums.

Also what operations need to know about a database besides its tables: whether a SQLite
file is open in another process, and how to hand a Postgres URL to libpq tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

# Kept by each side itself (the migrations record what they applied): never copied or compared as data.
SCHEMA_TABLE = "schema_migrations"


class OpsError(Exception):
    """An operation cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns, in key order
    parents: frozenset[str]  # tables its foreign keys name


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def in_dependency_order(tables: Iterable[Table]) -> list[Table]:
    """Parents before children (by name among equals, so the order is stable); OpsError on a cycle."""
    pending = {table.name: table for table in tables}
    ordered: list[Table] = []
    while pending:
        ready = sorted(n for n, t in pending.items() if not ((t.parents - {n}) & pending.keys()))
        if not ready:
            raise OpsError(f"foreign keys form a cycle between tables {sorted(pending)}")
        for name in ready:
            ordered.append(pending.pop(name))
    return ordered


def sqlite_tables(conn: sqlite3.Connection) -> list[Table]:
    """Every table of a SQLite database that holds data (the schema table included), parents first.

    Full-text indexes (FTS5 virtual tables and the shadow tables behind them) are left out: they are
    derived from the messages, users and chats, and each database keeps its own (Postgres: GIN indexes).
    """
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    ).fetchall()
    virtual = [name for name, sql in rows if (sql or "").upper().startswith("CREATE VIRTUAL TABLE")]
    names = [name for name, _ in rows if name not in virtual and not any(name.startswith(v + "_") for v in virtual)]
    tables = []
    for name in names:
        info = conn.execute(f"PRAGMA table_info({quoted(name)})").fetchall()
        columns = tuple(row[1] for row in info)
        key = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        parents = frozenset(row[2] for row in conn.execute(f"PRAGMA foreign_key_list({quoted(name)})"))
        tables.append(Table(name, columns, key, parents))
    return in_dependency_order(tables)


def sqlite_counts(conn: sqlite3.Connection, tables: Sequence[Table]) -> dict[str, int]:
    return {t.name: conn.execute(f"SELECT count(*) FROM {quoted(t.name)}").fetchone()[0] for t in tables}


def sqlite_versions(conn: sqlite3.Connection) -> list[int]:
    try:
        return [row[0] for row in conn.execute(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version")]
    except sqlite3.OperationalError:
        return []


_PG_TABLES = """
SELECT c.relname AS name,
       array(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY a.attnum) AS columns,
       array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, position)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum ORDER BY u.position) AS key,
       array(SELECT DISTINCT f.confrelid::regclass::text FROM pg_constraint f
             WHERE f.conrelid = c.oid AND f.contype = 'f') AS parents
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
WHERE c.relkind = 'r'
"""


async def postgres_tables(conn: Any) -> list[Table]:
    """Every table in the connection's current schema, parents first (conn: an asyncpg connection)."""
    tables = [
        Table(
            row["name"],
            tuple(row["columns"]),
            tuple(row["key"] or ()),
            frozenset(p.strip('"') for p in row["parents"]),
        )
        for row in await conn.fetch(_PG_TABLES)
    ]
    return in_dependency_order(tables)


async def postgres_counts(conn: Any, tables: Sequence[Table]) -> dict[str, int]:
    return {t.name: await conn.fetchval(f"SELECT count(*) FROM {quoted(t.name)}") for t in tables}


async def postgres_versions(conn: Any) -> list[int]:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_TABLE)
    if not exists:
        return []
    return [row[0] for row in await conn.fetch(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version")]


def normal(value: Any) -> Any:
    """One spelling for a value read from either database: booleans as 0/1, UUIDs as text, bytes as bytes."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def normal_row(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(normal(value) for value in row)


class Checksum:
    """SHA-256 over a table's rows in key order, the same for equal contents in either database."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.rows = 0

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            self._hash.update(msgspec.msgpack.encode(rows))
            self.rows += len(rows)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# SQLite (unix VFS) holds a shared lock on this byte of the -shm file for as long as a
# connection has a WAL database open: another process holding it means the database is in use.
_SHM_DMS_BYTE = 128


def sqlite_in_use(path: Path) -> bool:
    """Whether another process has this (WAL-mode) SQLite database open, e.g. a running `sup run`."""
    shm = Path(f"{path}-shm")
    try:
        fd = os.open(shm, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        probe = struct.pack("hhllhh", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        return struct.unpack("hhllhh", answer)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def sqlite_connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


@dataclass(frozen=True)
class LibpqTarget:
    """A Postgres URL split for libpq tools: the password goes in the environment, not on a command line."""

    url: str  # without the password
    env: dict[str, str]


def libpq_target(url: str) -> LibpqTarget:
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.netloc.rsplit("@", 1)[1]
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{host}")
    return LibpqTarget(urlunsplit(parts._replace(scheme="postgresql")), env)


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
