"""The web client's own search index (sup/web/static/js/store/search.js): what indexing and searching the
end-to-end encrypted messages a browser decrypted cost, in a real headless Chromium.

A real `python -m sup run` on a fresh SQLite data dir; one user signs up in Chromium (Debian's
/usr/bin/chromium, driven by Playwright) and opens a direct chat (encrypted) with a second user. Then
--messages messages are written straight into the page's IndexedDB message store, as the client keeps
what it decrypted (3 to 25 words from a --vocabulary word list with Zipf-like frequencies, so a few words
are in most messages and most words in very few), and in the page:

1. the first search's indexing of them all (what a device does once with its history), timed;
2. --queries searches, one at a time, of a mix of kinds (a rare word, a common word, two words, a prefix
   being typed), timed as the page sees them (IndexedDB reads included, no network);
3. one new message, then the index brought up to date as before a search (the messenger names the
   messages it stored; only those are looked at), timed;
4. the index's size as IndexedDB reports it (navigator.storage.estimate before and after indexing).

Usage (from the project root):

    .venv/bin/python bench/web_search.py [--messages N] [--queries N] [--json-out PATH]

A summary is printed; every figure is written as JSON to --json-out (default
bench/reports/web-search.json). Exit status 0 when every search found what it should; 1 otherwise; 2
when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundation import BENCH_DIR, PASSWORD, BenchError, post, summarize_ms
from harness import bench_run, run_main

CHROMIUM = "/usr/bin/chromium"
BUDGET_S = 900.0

# Runs in the page: writes `count` message records of one chat into the app's store, as the client keeps
# them, in batches of 2,000 per transaction. Words: w0..w{vocabulary-1}, w_k drawn with weight 1/(k+1).
FILL = """
async ([chatId, count, vocabulary, seed]) => {
  let x = seed >>> 0;
  const rand = () => ((x = (x * 1664525 + 1013904223) >>> 0) / 4294967296);
  const weights = []; let total = 0;
  for (let k = 0; k < vocabulary; k++) { total += 1 / (k + 1); weights.push(total); }
  const word = () => {
    const r = rand() * total; let lo = 0, hi = vocabulary - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (weights[mid] < r) lo = mid + 1; else hi = mid; }
    return "w" + lo;
  };
  const db = window.supApp.local.db;
  const now = Date.now();
  for (let start = 0; start < count; start += 2000) {
    const tx = db.transaction("messages", "readwrite");
    const store = tx.objectStore("messages");
    for (let i = start; i < Math.min(count, start + 2000); i++) {
      const n = 3 + Math.floor(rand() * 23);
      const text = Array.from({ length: n }, word).join(" ");
      store.put({ id: "bench-" + String(i).padStart(8, "0"), chat_id: chatId, seq: 1000 + i, sender_id: null,
        kind: "text", status: "ok", text, attachments: [], created_at: now - (count - i) * 1000, edited_at: null,
        reactions: [], encrypted: true });
    }
    await new Promise((ok, fail) => { tx.oncomplete = ok; tx.onerror = () => fail(tx.error); });
  }
}
"""

SEARCH = """
async ([q]) => {
  const m = await import("/assets/js/client/search.js");
  const index = m.indexFor(window.supApp);
  const t0 = performance.now();
  const found = await index.search(m.parseQuery(q));
  return { ms: performance.now() - t0, found: found.length };
}
"""

INDEX_ALL = """
async ([chatId]) => {
  const m = await import("/assets/js/client/search.js");
  const index = m.indexFor(window.supApp);
  window.supApp.changedChats.add(chatId);
  const before = (await navigator.storage.estimate()).usage;
  const t0 = performance.now();
  const indexed = await index.refresh();
  const ms = performance.now() - t0;
  const after = (await navigator.storage.estimate()).usage;
  return { ms, indexed, usage_before: before, usage_after: after };
}
"""


ONE_CHAT = """
async ([chatId]) => {
  const m = await import("/assets/js/client/search.js");
  window.supApp.changedMessages.add("bench-new-00000000"); // as the messenger says which it stored
  const t0 = performance.now();
  const indexed = await m.indexFor(window.supApp).refresh();
  return { ms: performance.now() - t0, indexed };
}
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=10_000, help="messages in the device's store (default 10000)")
    p.add_argument("--vocabulary", type=int, default=5_000, help="distinct words (default 5000)")
    p.add_argument("--queries", type=int, default=40, help="searches of each kind (default 40)")
    p.add_argument("--json-out", type=Path, default=BENCH_DIR / "reports" / "web-search.json", help="JSON report")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs `-m sup run` (default: this)")
    return p.parse_args(argv)


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    config = {"messages": args.messages, "vocabulary": args.vocabulary, "queries_per_kind": args.queries}
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        raise BenchError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with bench_run("web-search", args, config, BUDGET_S) as bench:
        report, problems = bench.report, bench.problems
        server = await bench.server(log_per_port=False)
        base = server.base_url
        friend = f"b{uuid.uuid4().hex[:10]}"
        await post(bench.session, f"{base}/api/v1/auth/register", {"username": friend, "password": PASSWORD})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{base}/signup")
            await page.get_by_label("Username").fill(f"a{uuid.uuid4().hex[:10]}")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign up").click()
            await page.wait_for_function("() => window.supApp?.get().connection === 'online'", timeout=60_000)
            chat_id = await page.evaluate("async (u) => (await window.supApp.act('createDirect', u)).id", friend)
            t0 = time.perf_counter()
            await page.evaluate(FILL, [chat_id, args.messages, args.vocabulary, 42])
            report["fill_s"] = round(time.perf_counter() - t0, 2)
            report["index_all"] = await page.evaluate(INDEX_ALL, [chat_id])
            if report["index_all"]["indexed"] != args.messages:
                problems.append(f"indexed {report['index_all']['indexed']} of {args.messages} messages")
            kinds = {
                "rare word": [f"w{args.vocabulary - 1 - i}" for i in range(args.queries)],
                "common word": [f"w{i % 5}" for i in range(args.queries)],
                "two words": [f"w{i % 7} w{20 + i}" for i in range(args.queries)],
                "prefix": [f"w{10 + i % 90}" for i in range(args.queries)],  # w1x.. also finds w10x, ...
            }
            report["queries"] = {}
            for kind, queries in kinds.items():
                times, found = [], []
                for q in queries:
                    answer = await page.evaluate(SEARCH, [q])
                    times.append(answer["ms"] / 1000)
                    found.append(answer["found"])
                report["queries"][kind] = {**summarize_ms(times), "found_mean": round(sum(found) / len(found), 1)}
                if kind == "common word" and not all(found):
                    problems.append("a common word found nothing")
            one_more = FILL.replace('"bench-" + String(i)', '"bench-new-" + String(i)')
            await page.evaluate(one_more, [chat_id, 1, args.vocabulary, 7])
            report["one_new_message"] = await page.evaluate(ONE_CHAT, [chat_id])
            await browser.close()
        await bench.stop(server)
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    idx = report["index_all"]
    lines = [
        f"web client search index, {report['config']['messages']} messages in IndexedDB",
        f"  first indexing: {idx['ms']:.0f} ms for {idx['indexed']} messages"
        f" ({idx['indexed'] / max(idx['ms'], 1e-9) * 1000:.0f} messages/s);"
        f" storage {idx['usage_before']} -> {idx['usage_after']} bytes",
    ]
    for kind, q in report["queries"].items():
        lines.append(
            f"  {kind:12} p50 {q['p50_ms']:.1f} ms, p99 {q['p99_ms']:.1f} ms, max {q['max_ms']:.1f} ms;"
            f" {q['found_mean']} found on average"
        )
    one = report["one_new_message"]
    lines.append(f"  one new message: re-indexed in {one['ms']:.0f} ms ({one['indexed']} written)")
    verdict = "OK" if report["ok"] else f"PROBLEMS: {report['problems']}"
    lines.append(f"benchmark runtime {report['bench_runtime_s']} s; {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main("web-search", parse_args(), run_benchmark, format_summary, BUDGET_S))
