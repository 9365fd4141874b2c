"""SQLite backend (aiosqlite): one writer connection, a few readers, WAL.

WAL lets readers run while the single writer commits; serialising writes in-process with
a lock (instead of letting connections fight over SQLite's file lock) keeps latency flat
and makes `BEGIN IMMEDIATE` never wait on busy_timeout in a single process.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosqlite

from sup.storage.database import DatabaseError, IntegrityError, Row

_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=1024)
def _adapt(sql: str) -> str:
    # `$1` (asyncpg) -> `?1` (SQLite numbered parameter): same numbers, same reuse rules.
    return _PLACEHOLDER.sub(r"?\1", sql)


def path_from_url(url: str) -> Path:
    """sqlite:///relative/path.db or sqlite:////absolute/path.db (SQLAlchemy's convention)."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or len(rest) < 2:
        raise DatabaseError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db")
    return Path(rest[1:])


def split_script(script: str) -> list[str]:
    statements, current = [], []
    for line in script.splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            if text.strip():
                statements.append(text.strip())
            current = []
    tail = "".join(current).strip()
    if tail and not all(line.strip().startswith("--") for line in tail.splitlines() if line.strip()):
        statements.append(tail)
    return statements


class _Conn:
    """Runs SQL on one aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            cursor = await self._conn.execute(_adapt(sql), args)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        count = cursor.rowcount
        await cursor.close()
        return count

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            async with self._conn.execute(_adapt(sql), args) as cursor:
                return await cursor.fetchall()  # type: ignore[return-value]
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute_script(self, script: str) -> None:
        for statement in split_script(script):
            await self.execute(statement)


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]) -> None:
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers = readers
        for reader in readers:
            self._readers.put_nowait(reader)

    @classmethod
    async def open(cls, url: str, *, synchronous: str = "full", readers: int = 2, **_: Any) -> SQLiteDatabase:
        path = path_from_url(url)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # Password hashes live here: readable by SUP's user only. SQLite gives its -wal and
            # -shm files the database file's permissions.
            path.touch(mode=0o600)
        try:
            writer = await _connect(path)
            await writer.execute("PRAGMA journal_mode = WAL")
            await writer.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
            reader_conns = []
            for _ in range(readers):
                reader = await _connect(path)
                await reader.execute("PRAGMA query_only = ON")
                reader_conns.append(reader)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from exc
        return cls(writer, reader_conns)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        async with self._write_lock:
            try:
                await _to_completion(self._writer.execute("BEGIN IMMEDIATE"))
            except asyncio.CancelledError:
                # BEGIN ran anyway (in SQLite's thread): end it before the lock is released.
                await _to_completion(self._writer.execute("ROLLBACK"))
                raise
            try:
                yield _Conn(self._writer)
            except BaseException:
                await _to_completion(self._writer.execute("ROLLBACK"))
                raise
            try:
                await _to_completion(self._writer.execute("COMMIT"))
            except sqlite3.Error:
                await _to_completion(self._writer.execute("ROLLBACK"))
                raise

    async def lock_for_migrations(self, tx: Any) -> None:
        # BEGIN IMMEDIATE already holds SQLite's write lock for the whole transaction.
        return None

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[_Conn]:
        conn = await self._readers.get()
        try:
            yield _Conn(conn)
        finally:
            self._readers.put_nowait(conn)

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with self._reader() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._reader() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._reader() as conn:
            return await conn.fetchval(sql, *args)

    async def close(self) -> None:
        for conn in [*self._all_readers, self._writer]:
            await conn.close()


async def _to_completion(operation: Awaitable[Any]) -> Any:
    """Await an operation that must finish even if the caller is cancelled meanwhile.

    aiosqlite runs statements in its own thread: a cancelled await does not stop BEGIN,
    COMMIT or ROLLBACK, it only stops us from knowing when they are done. Waiting for
    them keeps the writer's transaction state in step with the lock.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA foreign_keys = ON")
    await conn.execute("PRAGMA busy_timeout = 5000")
    return conn
