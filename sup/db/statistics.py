"""Postgres: statistics for tables that outgrew theirs, taken before autovacuum would.

asyncpg prepares every statement, and after five runs Postgres may keep a generic plan for it
until the statistics of a table it reads change. A new database's statistics describe empty
tables (the migrations end with an ANALYZE of `messages` while it has no rows), so such a plan
can be a sequential scan costed at nothing: the send check's lookup of a retried message was
one, and on a new install it scanned the whole of `messages` on every send until autovacuum
analysed it again, a minute or more later (docs/performance.md, "a generic plan made on an
empty table"). So for its first minutes a server looks every few seconds for tables with more
rows written since their last statistics than they held then, and analyses them; the plans
that read them are then made again from real figures. A restore into a new database is the
same case.
"""

from __future__ import annotations

import asyncio
import logging

from sup.db.database import Database

log = logging.getLogger("sup.db")

# Tables this many rows past their statistics are worth it. Not many: a plan that walks a table of
# 200 users on every send is cheap on its own and was still 42 % of Postgres' time in the send path.
FILLED_ROWS = 100
# How often to look, and for how long after the start: by then autovacuum has taken over.
INTERVAL_SECONDS = 2.0
WATCH_SECONDS = 600.0

# reltuples is what the last ANALYZE counted (-1: never analysed).
_OUTGROWN = """
SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = ANY(current_schemas(false)) AND s.n_mod_since_analyze >= $1
  AND s.n_mod_since_analyze > c.reltuples
ORDER BY s.relname
"""


async def analyse_filled_tables(db: Database, min_rows: int = FILLED_ROWS) -> list[str]:
    """Analyse the tables with `min_rows` or more rows written since their statistics, and more than they
    counted then; return their names."""
    tables = [row["relname"] for row in await db.fetch(_OUTGROWN, min_rows)]
    for table in tables:
        # The name comes from the catalogue, quoted as an identifier; SKIP_LOCKED: another process
        # analysing it already is as good.
        await db.execute('ANALYZE (SKIP_LOCKED) "{}"'.format(table.replace('"', '""')))
    if tables:
        log.info("analysed %s: they outgrew their statistics", ", ".join(tables))
    return tables


async def watch_first_statistics(
    db: Database, *, interval: float = INTERVAL_SECONDS, for_seconds: float = WATCH_SECONDS
) -> None:
    """Run `analyse_filled_tables` every `interval` seconds for `for_seconds` (a task of the server's)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + for_seconds
    while loop.time() < until:
        await asyncio.sleep(interval)
        try:
            await analyse_filled_tables(db)
        except Exception:  # statistics are an optimisation: a failed look waits for the next
            log.warning("could not analyse new tables", exc_info=True)
