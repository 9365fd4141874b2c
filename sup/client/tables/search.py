"""The full-text index of the messages the client store keeps (store.py), since the server cannot search
encrypted chats: FTS5 where SQLite has it, else a scan of every kept message.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from sup.client.tables import Reads
from sup.client.tables.messages import MESSAGE_KEYS, message_from_row
from sup.searchtext import SNIPPET_CHARS, Terms, snippet, text_words

# The text of messages shown or sent here ("ok", "sent"), kept in step by triggers in the same
# transaction as the message: an edit re-indexes it, a deletion (content gone) takes it out. A plain
# FTS5 table (it keeps its own copy of the text), so taking out a row it never had is harmless.
_SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE message_text USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER message_text_insert AFTER INSERT ON messages
WHEN new.status IN ('ok', 'sent') AND json_extract(new.content, '$.text') IS NOT NULL BEGIN
    INSERT INTO message_text (rowid, text) VALUES (new.rowid, json_extract(new.content, '$.text'));
END;
CREATE TRIGGER message_text_update AFTER UPDATE OF status, content ON messages BEGIN
    DELETE FROM message_text WHERE rowid = old.rowid;
    INSERT INTO message_text (rowid, text) SELECT new.rowid, json_extract(new.content, '$.text')
        WHERE new.status IN ('ok', 'sent') AND json_extract(new.content, '$.text') IS NOT NULL;
END;
CREATE TRIGGER message_text_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_text WHERE rowid = old.rowid;
END;
INSERT INTO message_text (rowid, text) SELECT rowid, json_extract(content, '$.text') FROM messages
    WHERE status IN ('ok', 'sent') AND json_extract(content, '$.text') IS NOT NULL;
"""


class SearchReads(Reads):
    """Search through the messages kept."""

    _searchable: bool  # whether this SQLite has FTS5 (nearly all do; else search scans)

    async def search(self, terms: Terms, *, chat_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Messages kept here whose text has every term, newest first, each with a `snippet`:
        (text, is a match) segments around the first match."""
        where, params = "", []
        if chat_id is not None:
            where, params = " AND m.chat_id = ?", [chat_id]
        columns = ", ".join(f"m.{key}" for key in MESSAGE_KEYS)
        if self._searchable:
            rows = await self._query(
                f"SELECT {columns} FROM message_text t JOIN messages m ON m.rowid = t.rowid"  # noqa: S608
                f" WHERE message_text MATCH ?{where} ORDER BY m.created_at DESC, m.seq DESC LIMIT ?",
                (terms.fts5(), *params, limit),
            )
        else:
            rows = await self._run(lambda conn: _scan(conn, columns, where, params, terms, limit))
        found = []
        for row in rows:
            item = message_from_row(row)
            text = (item["content"] or {}).get("text") or ""
            item["snippet"] = snippet(text, terms, SNIPPET_CHARS)
            found.append(item)
        return found


def add_search_index(conn: sqlite3.Connection) -> bool:
    """Create the full-text index if it is not there, filled from the messages kept (in the caller's
    transaction); False when this SQLite has no FTS5."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'message_text'").fetchone():
        return True
    conn.execute("SAVEPOINT search_index")
    try:
        statement = ""
        for line in _SEARCH_SCHEMA.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):  # a trigger's own `;` does not end it
                conn.execute(statement)
                statement = ""
    except sqlite3.OperationalError as exc:
        conn.execute("ROLLBACK TO search_index")
        conn.execute("RELEASE search_index")
        if "fts5" not in str(exc):
            raise
        return False
    conn.execute("RELEASE search_index")
    return True


def _scan(
    conn: sqlite3.Connection, columns: str, where: str, params: list[Any], terms: Terms, limit: int
) -> list[tuple[Any, ...]]:
    """Search without FTS5: every kept message, newest first, its words compared here."""
    cursor = conn.execute(
        f"SELECT {columns} FROM messages m WHERE m.status IN ('ok', 'sent'){where}"  # noqa: S608
        " ORDER BY m.created_at DESC, m.seq DESC",
        params,
    )
    found = []
    for row in cursor:
        content = msgspec.json.decode(row[MESSAGE_KEYS.index("content")] or b"null") or {}
        text = content.get("text")
        if isinstance(text, str) and terms.found_in(set(text_words(text))):
            found.append(row)
            if len(found) >= limit:
                break
    return found
