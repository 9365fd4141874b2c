"""The tables of the client store (store.py), one module per thing it keeps.

Each module owns its tables: their schema, what a `Batch` writes to them (a `*Writes` part of Batch)
and what `ClientStore` reads from them (a `*Reads` part). store.py keeps the connection, the lock,
the state table (tokens, cursor, crypto state) and the transaction that applies a batch.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Writes:
    """Statements a batch collects, applied together in one transaction."""

    statements: list[tuple[str, tuple[Any, ...]]]


class Reads(abc.ABC):
    """Queries on the open store, each run in a worker thread."""

    @abc.abstractmethod
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in a worker thread, one at a time."""

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda conn: conn.execute(sql, params).fetchall())
