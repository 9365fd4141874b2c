"""Search benchmark: GET /api/v1/search/messages over a million channel messages, SQLite and Postgres.

Everything runs against a real `python -m sup run` subprocess on a free loopback port, with a fresh
temporary data directory (SQLite by default; with --database-url postgresql://... a fresh Postgres
database, dropped afterwards):

1. setup over HTTP: --users users and --channels public channels, each user subscribed to a random
   --member-share of them; the searching user is one of them;
2. load: the server is stopped, and --messages channel messages are written straight into the
   database in large transactions (SQLite executemany, Postgres COPY), through what a running server
   keeps the index with: the FTS5 triggers on SQLite, the GIN index on Postgres. Text: 3 to 25 words
   drawn from a --vocabulary word vocabulary with Zipf-like frequencies (a few words in most
   messages, most words in very few); channels get messages with Zipf-like sizes too;
3. the index's size on disk (SQLite: its FTS5 tables' pages, from dbstat; Postgres: the GIN index),
   next to the messages table's;
4. the server is started again, and one user searches, one request at a time (like one person
   typing), --queries requests of a mix of kinds (below), after --warmup unmeasured ones: latency
   as the client sees it, per kind and overall;
5. unless --no-rebuild: with the server stopped, migration 0007 (the search indexes) is reverted and
   applied again, timed: what upgrading a server with this many messages costs.

Query kinds: a rare word, a mid-frequency word, a very common word, two words, a prefix being typed
(3-4 letters), a word within one chat, two words by relevance, and the second page of a common word.

Usage (from the project root):

    .venv/bin/python bench/search.py [--database-url URL] [--messages N] [--queries N] [--json-out PATH]

A summary is printed; every figure is written as JSON to --json-out (default
bench/reports/search-<database>.json). Exit status: 0 when every search answered 200 and the server
stopped cleanly; 1 otherwise; 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from foundation import (
    OTHER_LOAD_WARN_PCT,
    PASSWORD,
    PROJECT_DIR,
    BenchError,
    CpuWatch,
    PostgresDatabases,
    ServerProcess,
    format_cpu,
    format_latency,
    log_problems,
    post,
    software_info,
    stop_server,
    summarize_ms,
    summary_end,
)
from harness import bench_parser, bench_run, config_of, database_of, parse_checked, run_main

sys.path.insert(0, str(PROJECT_DIR))  # the project's own modules, as the server runs them
from sup.db import migrations
from sup.db.database import open_database
from sup.ids import uuid7

TOTAL_BUDGET_S = 1800.0
BATCH = 20_000  # messages per load transaction
KINDS = {  # kind -> share of the queries
    "rare_word": 0.25,
    "mid_word": 0.20,
    "common_word": 0.10,
    "two_words": 0.15,
    "prefix": 0.10,
    "in_one_chat": 0.10,
    "relevance": 0.05,
    "next_page": 0.05,
}


# -- text ---------------------------------------------------------------------------------------


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """`size` distinct made-up words, 2 to 10 letters, pronounceable enough; the most frequent first."""
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(consonants)
        words[word] = None
    ordered = list(words)
    ordered.sort(key=len)  # the most frequent words are short, as in real languages
    return ordered


def zipf_weights(count: int, exponent: float) -> list[float]:
    return [1.0 / (rank**exponent) for rank in range(1, count + 1)]


def bodies(words: list[str], weights: list[float], count: int, rng: random.Random) -> Iterator[str]:
    cumulative = list(_accumulate(weights))
    for _ in range(count):
        yield " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(3, 25)))


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


# -- setup over HTTP ------------------------------------------------------------------------------


async def setup(session: aiohttp.ClientSession, base: str, args: argparse.Namespace, rng: random.Random) -> dict:
    users = []
    for i in range(args.users):
        answer = await post(
            session,
            f"{base}/api/v1/auth/register",
            {"username": f"bench_{i}_{uuid.uuid4().hex[:6]}", "password": PASSWORD},
        )
        users.append(
            {
                "id": answer["user"]["id"],
                "device": answer["device_id"],
                "token": answer["access_token"],
                "refresh": answer["refresh_token"],
            }
        )
    owner = users[0]
    channels = []
    for i in range(args.channels):
        members = [u["id"] for u in users[1:] if rng.random() < args.member_share]
        answer = await post(
            session,
            f"{base}/api/v1/chats",
            {"type": "channel", "title": f"channel {i}", "member_ids": members, "visibility": "public"},
            owner["token"],
        )
        channels.append({"id": answer["id"], "members": set(members) | {owner["id"]}})
    searcher = users[1]
    mine = [c["id"] for c in channels if searcher["id"] in c["members"]]
    if not mine:
        raise BenchError("the searching user is in no channel: raise --member-share or --channels")
    return {"owner": owner, "searcher": searcher, "channels": [c["id"] for c in channels], "mine": mine}


# -- loading straight into the database -----------------------------------------------------------


def message_rows(
    scene: dict, args: argparse.Namespace, words: list[str], rng: random.Random
) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of message rows (the columns of LOAD_COLUMNS), oldest first, seqs after the chats' own."""
    channels = scene["channels"]
    channel_weights = list(_accumulate(zipf_weights(len(channels), 0.8)))
    order = channels[:]
    rng.shuffle(order)  # which channel is big is random, not the order they were made
    seqs = dict.fromkeys(channels, 1)  # one message each was sent over HTTP
    owner = scene["owner"]
    start_ms = int(time.time() * 1000) - args.messages * 10  # 10 ms apart, ending about now
    word_weights = zipf_weights(len(words), 1.07)
    batch: list[tuple[Any, ...]] = []
    samples: list[tuple[str, str]] = scene.setdefault("samples", [])  # (chat, body): what people remember
    mine = set(scene["mine"])
    for i, body in enumerate(bodies(words, word_weights, args.messages, rng)):
        chat_id = rng.choices(order, cum_weights=channel_weights)[0]
        seqs[chat_id] += 1
        if chat_id in mine:  # a reservoir sample of the searcher's messages
            if len(samples) < 5000:
                samples.append((chat_id, body))
            elif (slot := rng.randrange(i + 1)) < 5000:
                samples[slot] = (chat_id, body)
        created_at = start_ms + i * 10
        client_id = f"bench-{i}"
        batch.append(
            (
                uuid7(created_at),
                chat_id,
                seqs[chat_id],
                owner["id"],
                owner["device"],
                client_id,
                hashlib.sha256(client_id.encode()).digest(),
                "text",
                body,
                created_at,
            )
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
    scene["last_seqs"] = seqs


LOAD_COLUMNS = (
    "id",
    "chat_id",
    "seq",
    "sender_id",
    "sender_device_id",
    "client_id",
    "content_hash",
    "kind",
    "body",
    "created_at",
)


def load_sqlite(path: Path, batches: Iterator[list[tuple[Any, ...]]], scene: dict) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    placeholders = ", ".join("?" for _ in LOAD_COLUMNS)
    loaded = 0
    try:
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"INSERT INTO messages ({', '.join(LOAD_COLUMNS)}) VALUES ({placeholders})", batch)
            conn.execute("COMMIT")
            loaded += len(batch)
            progress(loaded)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE chats SET last_seq = ?, last_message_at = ? WHERE id = ?",
            [(seq, int(time.time() * 1000), chat_id) for chat_id, seq in scene["last_seqs"].items()],
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return loaded


async def load_postgres(url: str, batches: Iterator[list[tuple[Any, ...]]], scene: dict) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    loaded = 0
    try:
        for batch in batches:
            await conn.copy_records_to_table("messages", records=batch, columns=list(LOAD_COLUMNS))
            loaded += len(batch)
            progress(loaded)
        await conn.executemany(
            "UPDATE chats SET last_seq = $1, last_message_at = $2 WHERE id = $3",
            [(seq, int(time.time() * 1000), chat_id) for chat_id, seq in scene["last_seqs"].items()],
        )
        # What autovacuum does on a server that has been running a while: every table's statistics
        # (the users and channels made over HTTP a moment ago have none yet).
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return loaded


def progress(loaded: int) -> None:
    if loaded % 200_000 == 0:
        print(f"  loaded {loaded:,} messages", flush=True)


# -- sizes ----------------------------------------------------------------------------------------


def sqlite_sizes(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        by_name = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    finally:
        conn.close()
    index = sum(size for name, size in by_name.items() if name.startswith("message_search"))
    messages = sum(
        size for name, size in by_name.items() if name == "messages" or name.startswith("sqlite_autoindex_messages")
    )
    return {
        "index_bytes": index,
        "index_parts": {name: size for name, size in by_name.items() if name.startswith("message_search")},
        "messages_table_bytes": by_name.get("messages", 0),
        "messages_with_own_indexes_bytes": messages
        + sum(size for name, size in by_name.items() if name.startswith("messages_")),
        "database_file_bytes": path.stat().st_size,
    }


async def postgres_sizes(url: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return {
            "index_bytes": await conn.fetchval("SELECT pg_relation_size('message_search')"),
            "messages_table_bytes": await conn.fetchval("SELECT pg_table_size('messages')"),
            "messages_with_own_indexes_bytes": await conn.fetchval("SELECT pg_total_relation_size('messages')"),
            "database_bytes": await conn.fetchval("SELECT pg_database_size(current_database())"),
        }
    finally:
        await conn.close()


# -- the queries ----------------------------------------------------------------------------------


def query_mix(
    count: int, words: list[str], samples: list[tuple[str, str]], rng: random.Random
) -> list[tuple[str, dict[str, str]]]:
    """(kind, query parameters) for `count` searches, kinds in the shares of KINDS, in a random order.

    Single words are drawn by frequency band; several words, and a word within one chat, come from a
    message the searcher can see (what someone remembers of a message), so most of them find it."""
    common, mid, rare = words[:50], words[100:2000], words[2000:]
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=count)
    queries = []
    for kind in kinds:
        chat_id, body = rng.choice(samples)
        remembered = body.split()
        start = rng.randrange(max(1, len(remembered) - 1))
        if kind == "rare_word":
            params = {"q": rng.choice(rare)}
        elif kind == "mid_word":
            params = {"q": rng.choice(mid)}
        elif kind in ("common_word", "next_page"):
            params = {"q": rng.choice(common)}
        elif kind == "two_words":
            params = {"q": " ".join(remembered[start : start + 2])}
        elif kind == "prefix":
            word = max(remembered, key=len)
            params = {"q": word[: rng.choice((3, 4))]}
        elif kind == "in_one_chat":
            params = {"q": rng.choice(remembered), "chat_id": chat_id}
        else:
            params = {"q": " ".join(rng.sample(remembered, min(2, len(remembered)))), "order": "relevance"}
        queries.append((kind, {**params, "limit": "20"}))
    return queries


class Searcher:
    """One user searching; an access token lasts 15 minutes, so it is refreshed when it runs out."""

    def __init__(self, session: aiohttp.ClientSession, base: str, user: dict[str, Any]) -> None:
        self.session, self.base, self.user = session, base, user

    async def search(self, params: dict[str, str]) -> tuple[int, float, dict]:
        for _ in range(2):
            headers = {"Authorization": f"Bearer {self.user['token']}"}
            started = time.perf_counter()
            async with self.session.get(f"{self.base}/api/v1/search/messages", params=params, headers=headers) as resp:
                body = await resp.json()
            elapsed = time.perf_counter() - started
            if resp.status != 401 or body.get("code") != "token_expired":
                return resp.status, elapsed, body
            refresh = {"refresh_token": self.user["refresh"]}
            answer = await post(self.session, f"{self.base}/api/v1/auth/refresh", refresh)
            self.user.update(token=answer["access_token"], refresh=answer["refresh_token"])
        return resp.status, elapsed, body


async def run_queries(searcher: Searcher, queries: list[tuple[str, dict[str, str]]], warmup: int) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    statuses: Counter[int] = Counter()
    results: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for index, (kind, params) in enumerate(queries):
        if kind == "next_page":  # the first page is not measured: the second is what is
            status, _, body = await searcher.search(params)
            if status == 200 and body.get("next_cursor"):
                params = {**params, "before": body["next_cursor"]}
        status, elapsed, body = await searcher.search(params)
        if index < warmup:
            continue
        statuses[status] += 1
        seconds[kind].append(elapsed)
        results[kind].append(len(body.get("items", [])) if status == 200 else -1)
    every = [s for values in seconds.values() for s in values]
    return {
        "overall": summarize_ms(every),
        "by_kind": {kind: summarize_ms(values) for kind, values in seconds.items()},
        "results_per_page_mean": {
            kind: round(sum(values) / len(values), 1) if values else None for kind, values in results.items()
        },
        "statuses": dict(statuses),
    }


# -- rebuilding the index as an upgrade does ---------------------------------------------------


async def rebuild(url: str) -> dict[str, Any]:
    db = await open_database(url)
    try:
        known = migrations.discover()
        search = next(m for m in known if m.name == "search")
        started = time.perf_counter()
        await migrations.migrate_down(db, 1, known)
        down_s = time.perf_counter() - started
        heard: list[str] = []
        started = time.perf_counter()
        await migrations.migrate_up(db, int(time.time() * 1000), known, progress=heard.append)
        return {
            "migration": f"{search.version:04d}_{search.name}",
            "down_s": round(down_s, 2),
            "up_s": round(time.perf_counter() - started, 2),
            "progress_lines": heard,
        }
    finally:
        await db.close()


# -- the benchmark --------------------------------------------------------------------------------


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    database = database_of(args)
    config = config_of(args, leave_out=("json_out", "database_url"))
    config["kinds"] = KINDS
    software = software_info(args.python)
    if args.database_url:
        software["postgres"] = await PostgresDatabases(args.database_url).server_version()
    software["sqlite"] = sqlite3.sqlite_version
    rng = random.Random(args.seed)
    async with bench_run("search", args, config, TOTAL_BUDGET_S, session_timeout_s=300, software=software) as bench:
        report, problems, warnings, session, pg = bench.report, bench.problems, bench.warnings, bench.session, bench.pg
        data_dir = bench.tmp / "data"
        if pg:
            bench.database_url = await pg.create()
        url = bench.database_url or f"sqlite:///{data_dir / 'sup.db'}"
        try:

            async def stop(server: ServerProcess, what: str) -> None:
                result = await stop_server(server)
                bench.servers.remove(server)  # its log is read here, per phase
                if not result["ok"]:
                    problems.append(f"{what}: the server did not stop cleanly: {result}")
                problems.extend(f"{what}: server log: {line}" for line in log_problems(server))

            print("setup over HTTP", flush=True)
            server = await bench.server()
            scene = await setup(session, server.base_url, args, rng)
            for channel_id in scene["channels"]:  # one real message each, sent as clients do
                await post(
                    session,
                    f"{server.base_url}/api/v1/messages",
                    {"chat_id": channel_id, "client_id": str(uuid.uuid4()), "body": "welcome"},
                    scene["owner"]["token"],
                )
            await stop(server, "setup")

            print(f"loading {args.messages:,} messages straight into {database}", flush=True)
            words = vocabulary(args.vocabulary, rng)
            batches = message_rows(scene, args, words, rng)
            load_started = time.perf_counter()
            if pg:
                loaded = await load_postgres(url, batches, scene)
            else:
                loaded = await asyncio.to_thread(load_sqlite, data_dir / "sup.db", batches, scene)
            load_s = time.perf_counter() - load_started
            report["load"] = {
                "messages": loaded,
                "seconds": round(load_s, 1),
                "messages_per_s": round(loaded / load_s),
                "channels": len(scene["channels"]),
                "searcher_in_channels": len(scene["mine"]),
                "vocabulary": len(words),
            }
            sizes = await postgres_sizes(url) if pg else await asyncio.to_thread(sqlite_sizes, data_dir / "sup.db")
            report["index_size"] = {
                **sizes,
                "index_mib": round(sizes["index_bytes"] / 2**20, 1),
                "index_bytes_per_message": round(sizes["index_bytes"] / loaded, 1),
            }

            print(f"searching: {args.queries} queries after {args.warmup} to warm up", flush=True)
            server = await bench.server()
            queries = query_mix(args.warmup + args.queries, words, scene["samples"], rng)
            searcher = Searcher(session, server.base_url, scene["searcher"])
            watch = CpuWatch(server.pid, {})
            report["search_messages"] = await run_queries(searcher, queries, args.warmup)
            cpu = report["search_messages"]["cpu"] = watch.result()
            if cpu["other_cpu_pct_of_host"] > OTHER_LOAD_WARN_PCT:
                warnings.append(
                    f"searching: {cpu['other_cpu_pct_of_host']}% of the host's CPU went to processes that are "
                    "not this benchmark; its latencies are higher than on a quiet host"
                )
            if set(report["search_messages"]["statuses"]) != {200}:
                problems.append(f"searches that did not answer 200: {report['search_messages']['statuses']}")
            await stop(server, "search")

            if not args.no_rebuild:
                print("rebuilding the search index as an upgrade would", flush=True)
                report["rebuild"] = await rebuild(url)
        finally:
            if pg and args.keep_database:
                print(f"kept the database: {url}")
                pg.created.clear()
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    m, sw = report["machine"], report["software"]
    load, size, found = report["load"], report["index_size"], report["search_messages"]
    lines = [
        f"SUP search benchmark, {report['database']} ({sw.get('postgres') or 'SQLite ' + sw['sqlite']}), "
        f"{m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}",
        f"sup @ {(sw['git_commit'] or '?')[:12]}",
        "",
        f"load: {load['messages']:,} messages in {load['channels']} channels, {load['seconds']} s "
        f"({load['messages_per_s']:,}/s, through the index); the searcher is in {load['searcher_in_channels']}",
        f"index on disk: {size['index_mib']} MiB ({size['index_bytes_per_message']} bytes/message); "
        f"messages table {round(size['messages_table_bytes'] / 2**20, 1)} MiB",
        "",
        f"GET /api/v1/search/messages, one at a time: {format_latency(found['overall'])}",
    ]
    for kind, figures in found["by_kind"].items():
        lines.append(f"  {kind:12} {format_latency(figures)}, {found['results_per_page_mean'][kind]} results/page")
    lines.append(f"  {format_cpu(found['cpu'], m['cpu_count'])}")
    if "rebuild" in report:
        rebuilt = report["rebuild"]
        lines += [
            "",
            f"migration {rebuilt['migration']} on this database: down {rebuilt['down_s']} s, up {rebuilt['up_s']} s",
        ]
        lines += [f"  {line}" for line in rebuilt["progress_lines"]]
    lines += summary_end(report)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__, "JSON report (default bench/reports/search-<database>.json)")
    p.add_argument("--messages", type=int, default=1_000_000, help="channel messages loaded (default 1,000,000)")
    p.add_argument("--channels", type=int, default=200, help="public channels (default 200)")
    p.add_argument("--users", type=int, default=20, help="users, each in some channels (default 20)")
    p.add_argument("--member-share", type=float, default=0.4, help="share of channels each user is in (default 0.4)")
    p.add_argument("--vocabulary", type=int, default=50_000, help="distinct words (default 50,000)")
    p.add_argument("--queries", type=int, default=1000, help="measured searches (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured searches first (default 50)")
    p.add_argument("--seed", type=int, default=7, help="random seed: the same seed loads the same text")
    p.add_argument("--no-rebuild", action="store_true", help="skip timing the migration on the loaded database")
    p.add_argument("--keep-database", action="store_true", help="Postgres: keep the loaded database (to study it)")
    args = parse_checked(p, argv)
    if min(args.messages, args.channels, args.queries) < 1 or args.users < 2:
        p.error("--messages, --channels and --queries must be positive, --users at least 2")
    return args


if __name__ == "__main__":
    sys.exit(run_main("search", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
