"""Backup benchmark: `sup backup create` and `verify` on a database of 1,000,000 messages, and the
throughput of `sup migrate-backend` into Postgres.

Setup: a fresh temporary data directory, the schema by `python -m sup migrate up`, then users,
group chats, members and --messages messages bulk-loaded straight into SQLite (the API would take
an hour for a million; what is measured is the commands, not the setup). Message bodies are
--body-bytes of text, and every tenth message carries a 200-byte group ciphertext as well, like an
encrypted group's. --blobs small random files are stored under <data_dir>/blobs as the disk store
lays them out, and named by media rows, so the backup copies and hashes them too.

Measured, each as the wall time of its own `python -m sup ...` process (SUP itself not running):

1. `sup backup create DIR`: time, the backup's size (and the database file's);
2. `sup backup verify DIR`: time (every file's SHA-256, the SQLite copy's integrity_check, row counts);
3. `sup migrate-backend --to postgresql://.../sup_bench_<random>`: the copy, in rows/s and MB/s of
   values (text and bytes at their length, numbers at 8 bytes), then `--final` (every row compared,
   foreign keys restored), unless --skip-postgres.

Usage (from the project root):

    .venv/bin/python bench/backup.py [--messages 1000000] [--database-url postgresql://127.0.0.1:5432/postgres]
                                     [--skip-postgres] [--json-out PATH]

A summary is printed; every figure goes as JSON to --json-out (default bench/reports/backup.json).
Exit status 0 when every command succeeded; 1 when one failed (see `problems`); 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from foundation import PROJECT_DIR, BenchError, PostgresDatabases, report_head, report_tail, software_info

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
USERS = 1000
CHATS = 500
MEMBERS_PER_CHAT = 10


def _sup(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sup", *args], env=env, capture_output=True, text=True, cwd=PROJECT_DIR, check=False
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"sup {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return took, done.stdout


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load(data_dir: Path, messages: int, body_bytes: int, blobs: int) -> dict[str, Any]:
    """Bulk-load users, chats, members, messages and blobs straight into the SQLite database."""
    started = time.perf_counter()
    conn = sqlite3.connect(data_dir / "sup.db", isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    now = int(time.time() * 1000)
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    conn.executemany(
        "INSERT INTO users (id, username, username_key, password_hash, created_at, updated_at)"
        " VALUES (?, ?, ?, 'x', ?, ?)",
        [(u, f"user{i}", f"user{i}", now, now) for i, u in enumerate(users)],
    )
    chats = [str(uuid.uuid4()) for _ in range(CHATS)]
    roles = [str(uuid.uuid4()) for _ in range(CHATS)]
    per_chat = messages // CHATS
    conn.executemany(
        "INSERT INTO chats (id, type, title, encrypted, created_by, last_seq, created_at, updated_at)"
        " VALUES (?, 'group', ?, 0, ?, ?, ?, ?)",
        [(c, f"chat {i}", users[i % USERS], per_chat, now, now) for i, c in enumerate(chats)],
    )
    conn.executemany(
        "INSERT INTO chat_roles (id, chat_id, kind, name, permissions, created_at) VALUES (?, ?, 'member', 'm', 1, ?)",
        [(r, c, now) for r, c in zip(roles, chats, strict=True)],
    )
    members = []
    for i, (chat, role) in enumerate(zip(chats, roles, strict=True)):
        for j in range(MEMBERS_PER_CHAT):
            members.append((chat, users[(i + j) % USERS], role, now))
    conn.executemany("INSERT INTO chat_members (chat_id, user_id, role_id, joined_at) VALUES (?, ?, ?, ?)", members)
    text = ("lorem ipsum dolor sit amet " * (body_bytes // 27 + 1))[:body_bytes]
    cipher = os.urandom(200)
    batch = []
    for n in range(per_chat * CHATS):
        chat_index, seq = n % CHATS, n // CHATS + 1
        sender = users[(chat_index + n % MEMBERS_PER_CHAT) % USERS]
        batch.append(
            (
                str(uuid.uuid4()),
                chats[chat_index],
                seq,
                sender,
                f"c{n}",
                b"h" * 32,
                f"{text[:-8]}{n:08d}",
                cipher if n % 10 == 0 else None,
                now + n,
            )
        )
        if len(batch) == 50_000:
            _insert_messages(conn, batch)
            batch = []
    _insert_messages(conn, batch)
    blob_dir = data_dir / "blobs"
    blob_bytes = 0
    for i in range(blobs):
        data = os.urandom(64 * 1024)
        key = hashlib.sha256(data).hexdigest()
        path = blob_dir / key[:2] / key[2:4] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        blob_bytes += len(data)
        conn.execute(
            "INSERT INTO media (id, owner_id, purpose, encrypted, kind, mime, filename, size, sha256, blob_key,"
            " status, created_at, updated_at) VALUES (?, ?, 'attachment', 1, 'file', 'application/octet-stream',"
            " 'f.bin', ?, ?, ?, 'ready', ?, ?)",
            (str(uuid.uuid4()), users[i % USERS], len(data), key, key, now, now),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "users": USERS,
        "chats": CHATS,
        "messages": per_chat * CHATS,
        "blobs": blobs,
        "blob_bytes": blob_bytes,
        "database_bytes": (data_dir / "sup.db").stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _insert_messages(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO messages (id, chat_id, seq, sender_id, client_id, content_hash, kind, body, ciphertext,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, 'text', ?, ?, ?)",
        rows,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    problems: list[str] = []
    report = report_head(
        "backup",
        "sqlite" if args.skip_postgres else "sqlite -> postgres",
        software_info(sys.executable),
        {"messages": args.messages, "body_bytes": args.body_bytes, "blobs": args.blobs},
    )
    scratch = Path(tempfile.mkdtemp(prefix="sup-bench-backup-"))
    pg = PostgresDatabases(args.database_url)
    try:
        data = scratch / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUP_")}
        env["SUP_DATA_DIR"] = str(data)
        _sup(["migrate", "up"], env)
        print(f"loading {args.messages} messages ...", flush=True)
        report["setup"] = load(data, args.messages, args.body_bytes, args.blobs)
        print(f"  {report['setup']}", flush=True)

        took, _ = _sup(["backup", "create", str(scratch / "backup")], env)
        size = _tree_bytes(scratch / "backup")
        report["backup_create"] = {"seconds": round(took, 2), "bytes": size}
        print(f"backup create: {took:.1f} s, {size / 1e6:.0f} MB", flush=True)

        took, _ = _sup(["backup", "verify", str(scratch / "backup")], env)
        report["backup_verify"] = {"seconds": round(took, 2)}
        print(f"backup verify: {took:.1f} s", flush=True)

        if not args.skip_postgres:
            target = await pg.create()
            took, out = _sup(["migrate-backend", "--to", target], env)
            match = re.search(r"rows copied now: (\d+) \((\d+) bytes of values\)", out)
            rows, value_bytes = (int(match[1]), int(match[2])) if match else (0, 0)
            report["migrate_copy"] = {
                "seconds": round(took, 2),
                "rows": rows,
                "value_bytes": value_bytes,
                "rows_per_s": round(rows / took),
                "mb_per_s": round(value_bytes / 1e6 / took, 1),
            }
            print(
                f"migrate-backend copy: {took:.1f} s, {rows} rows, {rows / took:,.0f} rows/s, "
                f"{value_bytes / 1e6 / took:.1f} MB/s of values",
                flush=True,
            )
            took, out = _sup(["migrate-backend", "--to", target, "--final"], env)
            report["migrate_final"] = {"seconds": round(took, 2), "rows_per_s": round(rows / took)}
            print(f"migrate-backend --final (compare every row, restore foreign keys): {took:.1f} s", flush=True)
            await pg.drop(target)
    except BenchError as exc:
        problems.append(str(exc))
    finally:
        await pg.drop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    return report_tail(report, problems, [], started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--body-bytes", type=int, default=100)
    parser.add_argument("--blobs", type=int, default=200)
    parser.add_argument("--database-url", default=DEFAULT_PG, help="a Postgres server where databases can be created")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--json-out", default=str(PROJECT_DIR / "bench" / "reports" / "backup.json"))
    args = parser.parse_args()
    try:
        report = asyncio.run(run(args))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    for problem in report["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
