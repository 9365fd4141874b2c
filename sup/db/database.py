"""The database interface both backends implement.

SQL is written once, in Postgres style (`$1` placeholders, `ON CONFLICT`, `RETURNING`);
the SQLite backend rewrites placeholders. What truly differs between dialects lives in
the `Dialect` of each backend, not in `if postgres:` branches.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Row = Mapping[str, Any]
AfterCommit = Callable[[], Awaitable[None]]
# Where a transaction's queues stand: (after-commit work, deferred items).
Mark = tuple[int, int]
# Runs a transaction's deferred items of one kind, in the transaction, just before its commit.
Flush = Callable[["Transaction", list[Any]], Awaitable[None]]

log = logging.getLogger("sup.db")


def from_row(cls: type[T], row: Row, **converted: Any) -> T:
    """A msgspec Struct or dataclass from the row's columns of the same names as its fields; `converted`
    gives the fields whose value is not the column as stored (SQLite's 0/1 booleans, JSON, memoryview)."""
    return cls(**{name: row[name] for name in _field_names(cls) if name not in converted}, **converted)


def in_list(count: int, first: int = 1) -> str:
    """`$first, $first+1, ...`: the placeholders of `count` values, for an `IN (...)` list or a `VALUES` row."""
    return ", ".join(f"${first + i}" for i in range(count))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    struct_fields: tuple[str, ...] | None = getattr(cls, "__struct_fields__", None)
    return struct_fields if struct_fields is not None else tuple(f.name for f in dataclasses.fields(cls))


class DatabaseError(Exception):
    """The database could not be opened or used."""


class IntegrityError(DatabaseError):
    """A unique or foreign-key constraint refused a write."""


class Queryable(Protocol):
    """What runs SQL: the database itself (autocommit) or an open transaction."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        """Run a query; return every row."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """Run a query; return the first row or None."""

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query; return the first column of the first row, or None."""


class Transaction(Queryable, Protocol):
    async def execute_script(self, script: str) -> None:
        """Run several `;`-separated statements without arguments (migrations, savepoints)."""

    def after_commit(self, work: AfterCommit) -> None:
        """Run `work` once this transaction has committed, in the order queued; never if it rolls back."""

    def defer(self, flush: Flush, item: Any) -> None:
        """Hand `item` to `flush` just before this transaction commits, with every other item for the same
        `flush` (in the order deferred): one statement for a whole batch instead of one per operation."""

    def after_commit_mark(self) -> Mark:
        """Where the queues of deferred and after-commit work stand (for `drop_after_commit`)."""

    def drop_after_commit(self, mark: Mark) -> None:
        """Forget work deferred or queued since `mark`: what it writes or announces was rolled back to a savepoint."""


class AfterCommitQueue:
    """The deferred and after-commit halves of a Transaction, shared by both backends.

    Events are published only after the commit that makes them true (a client never hears
    of something a rollback undid), and outside the database's locks. Deferred writes (a
    batch's device events) run just before the commit, all of one kind in one call.
    """

    def __init__(self) -> None:
        self._after: list[AfterCommit] = []
        self._deferred: list[tuple[Flush, Any]] = []

    def after_commit(self, work: AfterCommit) -> None:
        self._after.append(work)

    def defer(self, flush: Flush, item: Any) -> None:
        self._deferred.append((flush, item))

    def after_commit_mark(self) -> Mark:
        return (len(self._after), len(self._deferred))

    def drop_after_commit(self, mark: Mark) -> None:
        del self._after[mark[0] :]
        del self._deferred[mark[1] :]

    async def run_deferred(self, tx: Transaction) -> None:
        """Flush what was deferred (the backend calls this inside the transaction, before COMMIT)."""
        while self._deferred:  # a flush may defer more (rare): run until nothing is left
            deferred, self._deferred = self._deferred, []
            grouped: dict[Flush, list[Any]] = {}
            for flush, item in deferred:
                grouped.setdefault(flush, []).append(item)
            for flush, items in grouped.items():
                await flush(tx, items)

    async def run_after_commit(self) -> None:
        work, self._after = self._after, []
        for item in work:
            try:
                await item()
            except Exception:  # what was committed stands; delivery catches up from the database
                log.exception("work after a commit failed")


class TransactionWork(Protocol[T_co]):
    """Work for `Database.run_in_transaction`: it awaits nothing but its transaction's methods.

    The rule exists for SQLite, where the whole function runs inside the writer's thread as one
    call: awaiting anything else (a lock, a sleep, another service) raises
    `AwaitedOutsideTransaction` there. Queue what must happen later with `tx.after_commit`.
    """

    def __call__(self, tx: Transaction, /) -> Awaitable[T_co]: ...


class AwaitedOutsideTransaction(RuntimeError):
    """Transaction work awaited something other than its transaction (see TransactionWork)."""


class Database(Queryable, Protocol):
    dialect: str  # "sqlite" or "postgres"

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction: committed when the block exits, rolled back on an exception."""

    async def run_in_transaction(self, work: TransactionWork[T]) -> T:
        """Run `work` in one write transaction and commit; roll back if it raises.

        On SQLite the whole of `work` is one hop to the writer's thread (see TransactionWork).
        Its after-commit work runs once the commit is done, before this returns.
        """

    async def lock_for_migrations(self, tx: Transaction) -> None:
        """Keep other processes from migrating at the same time (held until tx ends)."""

    async def close(self) -> None:
        """Close every connection."""

    def pool_usage(self) -> dict[str, int]:
        """Connections `busy` and `idle` now, and the `max` there may be (for metrics)."""


async def open_database(url: str, **options: Any) -> Database:
    """Open the backend named by the URL scheme."""
    if url.startswith("sqlite://"):
        from sup.db.sqlite import SQLiteDatabase

        return await SQLiteDatabase.open(url, **options)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from sup.db.postgres import PostgresDatabase
        except ImportError as exc:  # pragma: no cover - asyncpg is a core dependency
            raise DatabaseError("Postgres support needs asyncpg: pip install 'sup-messenger'") from exc
        return await PostgresDatabase.open(url, **options)
    raise DatabaseError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")


async def changed_one(db: Queryable, sql: str, *args: Any) -> bool:
    """Run a write aimed at one row; whether it changed that row.

    False is a write refused by its own SQL: an UPDATE whose condition no longer held, a DELETE
    of a row already gone, an INSERT ... ON CONFLICT DO NOTHING that met the row it would add.
    """
    return await db.execute(sql, *args) == 1


async def insert_row(db: Queryable, table: str, row: Mapping[str, Any], then: str = "") -> bool:
    """Add `row` (column -> value) to `table`; `then` follows the VALUES (an ON CONFLICT clause, say).

    False is a row not added: an ON CONFLICT DO NOTHING that met it. The column names go into the SQL
    as they are: callers pass only names they allow, never a client's.
    """
    sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({in_list(len(row))})"
    return await changed_one(db, f"{sql} {then}" if then else sql, *row.values())


async def update_row(db: Queryable, table: str, row_id: str, changes: Mapping[str, Any], now: int) -> bool:
    """Set these columns of the row with this id, and its `updated_at`; False if there is no such row.

    The column names go into the SQL as they are: callers pass only names they allow, never a client's.
    """
    sets = "".join(f"{column} = ${i + 2}, " for i, column in enumerate(changes))
    sql = f"UPDATE {table} SET {sets}updated_at = ${len(changes) + 2} WHERE id = $1"
    return await changed_one(db, sql, row_id, *changes.values(), now)


async def fetch_in(db: Queryable, sql: str, ids: Sequence[Any], *first: Any) -> list[Row]:
    """Rows of `sql`, whose `($ids)` becomes the placeholders of `ids`, numbered after the `first` arguments.

    No ids: no rows, and no query (`IN ()` is not SQL).
    """
    if not ids:
        return []
    placeholders = in_list(len(ids), len(first) + 1)
    return list(await db.fetch(sql.replace("($ids)", f"({placeholders})"), *first, *ids))


async def keyset_page(
    db: Queryable,
    select: str,
    key: str | tuple[str, ...],
    owner: Any,
    after: Any,
    limit: int,
    *,
    descending: bool = False,
) -> list[Row]:
    """Rows of `select` (filtered by `$1` = owner) ordered by `key`, after an optional cursor.

    Keyset, not OFFSET: stable while rows come and go, and it walks an index. A key of several
    columns (a time, then an id that breaks its ties) takes a cursor of as many values.
    `descending` walks the key downwards (newest first): the next page is what lies below the cursor.
    """
    columns = (key,) if isinstance(key, str) else key
    direction = " DESC" if descending else ""
    order = " ORDER BY " + ", ".join(column + direction for column in columns) + " LIMIT $2"
    if after is None:
        return list(await db.fetch(select + order, owner, limit))
    cursor = (after,) if isinstance(key, str) else tuple(after)
    past = _past(columns, "<" if descending else ">", 3)
    return list(await db.fetch(f"{select} AND {past}{order}", owner, limit, *cursor))


def _past(columns: Sequence[str], beyond: str, first: int) -> str:
    """`(a > $3 OR (a = $3 AND b > $4))`: the rows past the cursor `$first`, `$first + 1`, ... in key order."""
    column, *rest = columns
    if not rest:
        return f"{column} {beyond} ${first}"
    return f"({column} {beyond} ${first} OR ({column} = ${first} AND {_past(rest, beyond, first + 1)}))"
