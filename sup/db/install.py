"""The install's identity, kept in its database: what every process of one install shares.

Names the install uses outside the database (its Redis keys and pub/sub channel) are made
from it, so that installs sharing one Redis stay apart with nothing to configure.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

from sup.db.database import Database

# Where the database is, as the database itself says: the same for every process of an install
# (whatever URL each was given), different for a copy (a restored backup) beside the original.
_WHERE = {
    "sqlite": "SELECT file FROM pragma_database_list WHERE name = 'main'",
    "postgres": "SELECT current_database()",
}


async def install_id(db: Database, now: int) -> str:
    """This database's install id; the first process to ask makes it, the others read it."""
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO install_identity (singleton, install_id, created_at) VALUES (1, $1, $2)"
            " ON CONFLICT (singleton) DO NOTHING",
            uuid.uuid4().hex,
            now,
        )
        return await tx.fetchval("SELECT install_id FROM install_identity WHERE singleton = 1")


async def install_namespace(db: Database, now: int) -> str:
    """A short name for this install: its install id and where its database is, hashed.

    The place counts too because a copy of the database (a backup restored for a test) has the
    same install id; on another file or in another Postgres database it gets a name of its own.
    A copy under the same name on another Postgres server needs `bus.namespace`.
    """
    where = await db.fetchval(_WHERE[db.dialect]) or ""
    if db.dialect == "sqlite" and where:
        where = await asyncio.to_thread(os.path.realpath, where)  # a symlink or a relative path: the same file
    return hashlib.sha256(f"{await install_id(db, now)}\0{where}".encode()).hexdigest()[:16]
