"""The migrations build the same schema on SQLite and on Postgres.

Most migrations are one file for both dialects (see sup/db/migrations.py), but a dialect
file, or a placeholder spelled differently, could still let the two drift apart. Each
database is read back from its own catalogue and brought to common terms: types as
families, constraint-backed indexes by their columns (their names are the engine's),
partial-index predicates as words. One blind spot is SQLite's: a boolean is an INTEGER
there, so from its side a boolean column and an integer column look alike.

Full-text search is where the dialects differ on purpose (migrations/0007_search.*): FTS5
virtual tables (and their shadow tables) on SQLite; GIN indexes, and the stored tsvector they
index, on Postgres. They are left out of the comparison, and checked by name instead.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sup.db import migrations
from sup.db.database import Database, DatabaseError, open_database

# What each dialect calls a type, as a family. A type missing here fails the test: decide
# what it should be on the other dialect, then add it.
_SQLITE_TYPES = {"INTEGER": "integer", "BIGINT": "bigint", "TEXT": "text", "BLOB": "bytes", "REAL": "real"}
_POSTGRES_TYPES = {
    "int4": "integer",
    "int8": "bigint",
    "text": "text",
    "uuid": "text",  # ids: TEXT on SQLite, read back as strings on both
    "bytea": "bytes",
    "bool": "boolean",
    "float8": "real",
}
# SQLite has no boolean type: {bool} columns are INTEGER there, holding 0 or 1.
_AS_SQLITE_STORES = {"boolean": "integer"}


@dataclass(frozen=True)
class Column:
    name: str
    family: str
    nullable: bool
    default: str | None


@dataclass(frozen=True)
class Index:
    columns: tuple[str, ...]
    unique: bool
    where: str | None


@dataclass
class Table:
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    # UNIQUE constraints: their index names are the engine's own, so only the columns count.
    unique: set[tuple[str, ...]] = field(default_factory=set)
    indexes: dict[str, Index] = field(default_factory=dict)  # CREATE INDEX, by name
    foreign_keys: set[tuple[Any, ...]] = field(default_factory=set)  # (columns, table, columns, on delete)


def _default(value: str | None) -> str | None:
    if value is None:
        return None
    value = re.sub(r"::[a-z ]+$", "", value)  # Postgres shows '' as ''::text
    return {"false": "0", "true": "1"}.get(value.lower(), value)


def _predicate(sql: str | None) -> str | None:
    """A partial index's WHERE as lower-case words, the same however each engine prints it."""
    if sql is None:
        return None
    # Postgres prints `state IN ('a', 'b')` back as `(state = ANY (ARRAY['a'::text, 'b'::text]))`.
    sql = re.sub(r"::[a-z]+", "", sql)
    sql = re.sub(r"(\w+) = ANY \(ARRAY\[(.*?)\]\)", r"\1 IN (\2)", sql)
    return " ".join(re.sub(r"[()]", " ", sql).lower().split())


# The search objects of each dialect (see the module docstring).
SEARCH_INDEXES = {"message_search": "messages", "user_search": "users", "chat_search": "chats"}
POSTGRES_SEARCH_COLUMNS = {("messages", "search_document")}


async def _sqlite_schema(db: Database) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    # Ordinary tables only: FTS5 tables are 'virtual', their storage 'shadow'.
    names = await db.fetch("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' ORDER BY name")
    for name in [row["name"] for row in names if not row["name"].startswith("sqlite_")]:
        table = tables[name] = Table()
        info = await db.fetch(f"PRAGMA table_info('{name}')")
        for col in info:
            # A PRIMARY KEY column is NOT NULL on Postgres; on SQLite only INTEGER ones are,
            # other types accept NULL for backwards compatibility. SUP never writes a NULL id,
            # so both are compared as meant: not nullable.
            table.columns.append(
                Column(
                    col["name"],
                    _SQLITE_TYPES[col["type"].upper()],
                    not (col["notnull"] or col["pk"]),
                    _default(col["dflt_value"]),
                )
            )
        table.primary_key = tuple(col["name"] for col in sorted(info, key=lambda c: c["pk"]) if col["pk"])
        for index in await db.fetch(f"PRAGMA index_list('{name}')"):
            columns = tuple(c["name"] for c in await db.fetch(f"PRAGMA index_info('{index['name']}')"))
            if index["origin"] == "pk":
                continue
            if index["origin"] == "u":
                table.unique.add(columns)
                continue
            sql = await db.fetchval("SELECT sql FROM sqlite_master WHERE name = $1", index["name"])
            where = re.split(r"\bWHERE\b", sql, maxsplit=1, flags=re.IGNORECASE)[1] if index["partial"] else None
            table.indexes[index["name"]] = Index(columns, bool(index["unique"]), _predicate(where))
        by_id: dict[int, list[Any]] = {}
        for fk in await db.fetch(f"PRAGMA foreign_key_list('{name}')"):
            by_id.setdefault(fk["id"], []).append(fk)
        for parts in by_id.values():
            parts.sort(key=lambda fk: fk["seq"])
            target = parts[0]["table"]
            to = tuple(fk["to"] for fk in parts)
            if None in to:  # `REFERENCES t` alone names t's primary key
                to = tuple(
                    c["name"]
                    for c in sorted(await db.fetch(f"PRAGMA table_info('{target}')"), key=lambda c: c["pk"])
                    if c["pk"]
                )
            table.foreign_keys.add((tuple(fk["from"] for fk in parts), target, to, parts[0]["on_delete"]))
    return tables


_PG_COLUMNS = """
SELECT table_name, column_name, udt_name, is_nullable, column_default
FROM information_schema.columns
WHERE table_schema = current_schema()
ORDER BY table_name, ordinal_position
"""

_PG_INDEXES = """
SELECT t.relname AS table_name, i.relname AS index_name, x.indisunique, x.indisprimary,
       c.contype, pg_get_expr(x.indpred, x.indrelid) AS predicate,
       ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnkeyatts) AS k) AS columns
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.contype IN ('p', 'u')
WHERE n.nspname = current_schema() AND am.amname = 'btree'
"""

_PG_FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text AS table_name, c.confrelid::regclass::text AS ref_table, c.confdeltype,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(num, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.i) AS columns,
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY AS k(num, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.i) AS ref_columns
FROM pg_constraint c
JOIN pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname = current_schema() AND c.contype = 'f'
"""

# pg_constraint.confdeltype, in the words SQLite's PRAGMA foreign_key_list uses.
_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


async def _postgres_schema(db: Database) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for col in await db.fetch(_PG_COLUMNS):
        if (col["table_name"], col["column_name"]) in POSTGRES_SEARCH_COLUMNS:
            continue
        family = _AS_SQLITE_STORES.get(_POSTGRES_TYPES[col["udt_name"]], _POSTGRES_TYPES[col["udt_name"]])
        tables.setdefault(col["table_name"], Table()).columns.append(
            Column(col["column_name"], family, col["is_nullable"] == "YES", _default(col["column_default"]))
        )
    for index in await db.fetch(_PG_INDEXES):
        table = tables[index["table_name"]]
        columns = tuple(column.strip('"') for column in index["columns"])
        if index["indisprimary"]:
            table.primary_key = columns
        elif index["contype"] == b"u":  # a "char": asyncpg returns bytes
            table.unique.add(columns)
        else:
            table.indexes[index["index_name"]] = Index(columns, index["indisunique"], _predicate(index["predicate"]))
    for fk in await db.fetch(_PG_FOREIGN_KEYS):
        tables[fk["table_name"]].foreign_keys.add(
            (tuple(fk["columns"]), fk["ref_table"], tuple(fk["ref_columns"]), _ON_DELETE[fk["confdeltype"].decode()])
        )
    return tables


async def schema_of(db: Database) -> dict[str, Table]:
    return await {"sqlite": _sqlite_schema, "postgres": _postgres_schema}[db.dialect](db)


@pytest.fixture
async def both(tmp_path: Path, fresh_postgres) -> AsyncIterator[list[Database]]:
    """A fresh SQLite database and a fresh Postgres database, not migrated yet."""
    opened = [
        await open_database(f"sqlite:///{tmp_path / 'schema.db'}"),
        await open_database(await fresh_postgres.create()),
    ]
    yield opened
    for db in opened:
        await db.close()


def _assert_same(sqlite: dict[str, Table], postgres: dict[str, Table]) -> None:
    # Table by table, so a failure names the table and the part that differs.
    assert sorted(sqlite) == sorted(postgres), "tables"
    for name in sqlite:
        a, b = sqlite[name], postgres[name]
        assert a.columns == b.columns, f"{name}: columns (SQLite, then Postgres)"
        assert a.primary_key == b.primary_key, f"{name}: primary key"
        assert a.unique == b.unique, f"{name}: unique constraints"
        assert a.indexes == b.indexes, f"{name}: indexes"
        assert a.foreign_keys == b.foreign_keys, f"{name}: foreign keys"


async def test_both_dialects_get_the_same_schema(both: list[Database]):
    sqlite, postgres = both
    for db in both:
        await migrations.migrate_up(db, 0)
    schema = await schema_of(sqlite)
    _assert_same(schema, await schema_of(postgres))
    # The comparison has something to compare: a partial unique index and a boolean.
    assert schema["jobs"].indexes["jobs_dedupe"] == Index(("dedupe_key",), True, "state in 'queued', 'running'")
    assert Column("is_admin", "integer", False, "0") in schema["users"].columns
    # What it leaves out is there on each side: FTS5 tables on SQLite, GIN indexes on Postgres.
    fts5 = await sqlite.fetch("SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE % USING fts5%'")
    assert {row["name"] for row in fts5} == set(SEARCH_INDEXES)
    gin = await postgres.fetch(
        "SELECT i.relname AS name, t.relname AS table_name FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_am am ON am.oid = i.relam WHERE am.amname = 'gin'"
    )
    assert {row["name"]: row["table_name"] for row in gin} == SEARCH_INDEXES
    documents = await postgres.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE udt_name = 'tsvector'"
    )
    assert {(row["table_name"], row["column_name"]) for row in documents} == POSTGRES_SEARCH_COLUMNS


async def test_each_migration_keeps_the_dialects_in_step(both: list[Database]):
    """Compared after every step, so a difference in one migration cannot hide behind a later one."""
    known = migrations.discover()
    for count in range(1, len(known) + 1):
        for db in both:
            await migrations.migrate_up(db, 0, known[:count])
        _assert_same(*[await schema_of(db) for db in both])


async def test_down_to_zero_and_up_again(both: list[Database]):
    known = migrations.discover()
    for db in both:
        await migrations.migrate_up(db, 0)
        state = await migrations.status(db)
        assert state.pending == [] and state.applied == [m.version for m in known], db.dialect
        migrated = await schema_of(db)
        reverted = await migrations.migrate_down(db, steps=len(known))
        assert [m.version for m in reverted] == [m.version for m in reversed(known)], db.dialect
        assert sorted(await schema_of(db)) == ["schema_migrations"], db.dialect
        assert (await migrations.status(db)).applied == []
        assert len(await migrations.migrate_up(db, 0)) == len(known)
        assert await schema_of(db) == migrated, db.dialect
        assert await migrations.migrate_up(db, 0) == []


async def test_a_column_in_one_dialect_only_is_caught(both: list[Database]):
    sqlite, postgres = both
    for db in both:
        await migrations.migrate_up(db, 0)
    await sqlite.execute("ALTER TABLE users ADD COLUMN nickname TEXT")
    await postgres.execute("CREATE INDEX users_created ON users (created_at)")
    sqlite_schema, postgres_schema = await schema_of(sqlite), await schema_of(postgres)
    with pytest.raises(AssertionError, match="users: columns"):
        _assert_same(sqlite_schema, postgres_schema)
    sqlite_schema["users"].columns.pop()
    with pytest.raises(AssertionError, match="users: indexes"):
        _assert_same(sqlite_schema, postgres_schema)


def test_placeholders_are_replaced_for_each_dialect():
    for migration in migrations.discover():
        for dialect in ("sqlite", "postgres"):
            for direction in ("up", "down"):
                script = migration.sql(direction, dialect)
                # Empty only where the migration is another dialect's alone.
                assert script.strip() or "" not in getattr(migration, direction), (migration.name, dialect)
                assert not re.search(r"\{[a-z_]+\}", script), (migration.name, dialect, direction)
    shared = "x {uuid}, y {bytes}, z {bool} DEFAULT {false}, w {bool} DEFAULT {true}"
    assert migrations.render(shared, "postgres") == "x UUID, y BYTEA, z BOOLEAN DEFAULT FALSE, w BOOLEAN DEFAULT TRUE"
    assert migrations.render(shared, "sqlite") == "x TEXT, y BLOB, z INTEGER DEFAULT 0, w INTEGER DEFAULT 1"


def test_an_unknown_placeholder_is_refused_when_read(tmp_path: Path):
    (tmp_path / "0001_first.up.sql").write_text("CREATE TABLE t (id {uuid} PRIMARY KEY, data {json});\n")
    (tmp_path / "0001_first.down.sql").write_text("DROP TABLE t;\n")
    with pytest.raises(DatabaseError, match=r"unknown placeholder \{json\} in migrations/0001_first.up.sql"):
        migrations.discover(tmp_path)


def test_a_dialect_file_runs_after_the_shared_one_going_up_and_before_it_going_down(tmp_path: Path):
    (tmp_path / "0001_first.up.sql").write_text("CREATE TABLE t (id {uuid} PRIMARY KEY);\n")
    (tmp_path / "0001_first.up.postgres.sql").write_text("CREATE INDEX t_gin ON t USING GIN (id);\n")
    (tmp_path / "0001_first.down.sql").write_text("DROP TABLE t;\n")
    (tmp_path / "0001_first.down.postgres.sql").write_text("DROP INDEX t_gin;\n")
    (migration,) = migrations.discover(tmp_path)
    assert [line for line in migration.sql("up", "postgres").splitlines() if line] == [
        "CREATE TABLE t (id UUID PRIMARY KEY);",
        "CREATE INDEX t_gin ON t USING GIN (id);",
    ]
    assert [line for line in migration.sql("down", "postgres").splitlines() if line] == [
        "DROP INDEX t_gin;",
        "DROP TABLE t;",
    ]
    assert migration.sql("up", "sqlite").strip() == "CREATE TABLE t (id TEXT PRIMARY KEY);"


async def test_a_long_migration_says_how_it_is_getting_on(both: list[Database], tmp_path: Path, monkeypatch):
    monkeypatch.setattr(migrations, "PROGRESS_EVERY_SECONDS", 0.2)
    (tmp_path / "0001_slow.up.sql").write_text("CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    # Something that takes a second on each: a sleep on Postgres, a long recursive count on SQLite.
    (tmp_path / "0001_slow.up.postgres.sql").write_text("SELECT pg_sleep(1);\n")
    (tmp_path / "0001_slow.up.sqlite.sql").write_text(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)"
        " INSERT INTO t SELECT i FROM n;\n"
    )
    (tmp_path / "0001_slow.down.sql").write_text("DROP TABLE t;\n")
    for db in both:
        heard: list[str] = []
        await migrations.migrate_up(db, 0, migrations.discover(tmp_path), progress=heard.append)
        assert heard and all(line.startswith("migration 0001_slow: still running after") for line in heard), heard
