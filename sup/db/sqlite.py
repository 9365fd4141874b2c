"""SQLite backend (aiosqlite): one writer connection, a few readers, WAL.

WAL lets readers run while the single writer commits; serialising writes in-process with
a lock (instead of letting connections fight over SQLite's file lock) keeps latency flat
and makes `BEGIN IMMEDIATE` never wait on busy_timeout in a single process.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from sup.db.database import (
    AfterCommitQueue,
    AwaitedOutsideTransaction,
    DatabaseError,
    IntegrityError,
    Row,
    TransactionWork,
)

T = TypeVar("T")
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
    """Split at each `;` that ends a statement (not one inside a string, comment or trigger)."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if _has_code(current):
                statements.append(current.strip())
            current = ""
    if _has_code(current.removesuffix(";")):
        statements.append(current.removesuffix(";").strip())
    return statements


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.replace(";", "\n").splitlines())


def _execute_sync(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    cursor = conn.execute(sql, args)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _fetch_sync(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
    cursor = conn.execute(sql, args)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


class _Derived(ABC):
    """What every SQLite queryable derives from its own `execute` and `fetch`."""

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> int: ...

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute_script(self, script: str) -> None:
        for statement in split_script(script):
            await self.execute(statement)


class _Conn(_Derived):
    """Runs SQL on one aiosqlite connection, one thread hop per statement.

    aiosqlite's public cursor API costs two or three hops to its thread per statement
    (execute, fetch, close); at a dozen statements per message send that was most of the
    send's time. Its `_execute` runs one function in the connection's thread, which does
    all three at once.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return await self._conn._execute(_execute_sync, self._conn._conn, _adapt(sql), args)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            return await self._conn._execute(_fetch_sync, self._conn._conn, _adapt(sql), args)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


class _Tx(_Conn, AfterCommitQueue):
    """A write transaction on the writer connection, from the event loop."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        _Conn.__init__(self, conn)
        AfterCommitQueue.__init__(self)


class _InThread(_Derived, AfterCommitQueue):
    """The Transaction for work that runs inside the writer's thread: plain sqlite3 calls.

    Its methods are coroutines that never suspend, so a coroutine awaiting only them runs
    to completion in one `send` (see `_run_to_completion`).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        AfterCommitQueue.__init__(self)
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return _execute_sync(self._conn, _adapt(sql), args)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            return _fetch_sync(self._conn, _adapt(sql), args)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


def _run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AwaitedOutsideTransaction("work run in SQLite's writer thread awaited something other than its transaction")


def _transact_in_thread(conn: sqlite3.Connection, work: TransactionWork[T]) -> tuple[T, _InThread]:
    tx = _InThread(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = _run_to_completion(work(tx))  # type: ignore[arg-type]
        _run_to_completion(tx.run_deferred(tx))  # type: ignore[arg-type]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result, tx


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
    async def transaction(self) -> AsyncIterator[_Tx]:
        tx = _Tx(self._writer)
        async with self._write_lock:
            try:
                await _to_completion(self._writer.execute("BEGIN IMMEDIATE"))
            except asyncio.CancelledError:
                # BEGIN ran anyway (in SQLite's thread): end it before the lock is released.
                await _to_completion(self._writer.execute("ROLLBACK"))
                raise
            try:
                yield tx
                await tx.run_deferred(tx)
            except BaseException:
                await _to_completion(self._writer.execute("ROLLBACK"))
                raise
            try:
                await _to_completion(self._writer.execute("COMMIT"))
            except sqlite3.Error:
                await _to_completion(self._writer.execute("ROLLBACK"))
                raise
        await tx.run_after_commit()

    async def run_in_transaction(self, work: TransactionWork[T]) -> T:
        # The whole transaction is one hop to the writer's thread: a group-committed batch of
        # sends costs one wake-up of the event loop instead of a dozen per send.
        async with self._write_lock:
            result, tx = await _to_completion(self._writer._execute(_transact_in_thread, self._writer._conn, work))
        await tx.run_after_commit()
        return result

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

    def pool_usage(self) -> dict[str, int]:
        # The readers, and the one writer (busy while a write transaction holds it).
        idle_readers = self._readers.qsize()
        writing = 1 if self._write_lock.locked() else 0
        busy = len(self._all_readers) - idle_readers + writing
        return {"busy": busy, "idle": idle_readers + 1 - writing, "max": len(self._all_readers) + 1}


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
