"""What the web client costs: bytes on the first load (compressed), time from navigation to a usable chat
list, and the tab's JavaScript heap with 1,000 messages in one chat. The figures are printed (run with
`-s` to see them; docs/web.md quotes them) and held to budgets well above them, so a regression fails."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.web.conftest import AppServer, Browsers, sdk_user

FIRST_LOAD_BUDGET = 250_000  # bytes on the wire, compressed
INTERACTIVE_BUDGET = 5.0  # seconds, loaded 2-core machine included
HEAP_BUDGET = 40_000_000  # bytes of JS heap with 1,000 messages in a chat


async def test_first_load_and_time_to_chat_list(browsers: Browsers, sup_server: AppServer):
    user = await browsers.sign_up()
    # a fresh context: nothing cached (the signed-up one is only to have an account)
    fresh = await browsers.open(user.username)
    await fresh.page.goto(f"{sup_server.url}/login")
    await fresh.page.get_by_role("button", name="Log in").wait_for()
    entries = json.loads(
        await fresh.page.evaluate(
            "() => JSON.stringify([...performance.getEntriesByType('navigation'),"
            " ...performance.getEntriesByType('resource')].map(e => [e.name, e.transferSize, e.encodedBodySize]))"
        )
    )
    first_load = sum(size for _, size, _ in entries)
    files = len(entries)
    await fresh.log_in()
    await fresh.close()

    # a returning user: navigation to a chat list they can use (assets cached, session in IndexedDB)
    started = time.monotonic()
    await user.page.goto(f"{sup_server.url}/")
    await user.page.get_by_role("link", name="New chat").wait_for()
    await user.page.wait_for_function("() => window.supApp.get().connection === 'online'")
    interactive = time.monotonic() - started
    timing = json.loads(await user.page.evaluate("() => JSON.stringify(performance.getEntriesByType('navigation')[0])"))
    print(f"\nfirst load: {first_load} bytes on the wire in {files} responses")
    print(f"chat list usable and online after {interactive:.2f} s")
    print(f"navigation: DOMContentLoaded at {timing['domContentLoadedEventEnd']:.0f} ms")
    assert first_load < FIRST_LOAD_BUDGET
    assert interactive < INTERACTIVE_BUDGET


async def test_heap_with_a_thousand_messages(browsers: Browsers, sup_server: AppServer, tmp_path: Path):
    reader = await browsers.sign_up()
    writer = await sdk_user(sup_server, tmp_path / "w.db", start=False)
    try:
        chat = await writer.direct_chat_with(reader.username)
        await reader.page.get_by_role("navigation", name="Chats").get_by_role("link").first.wait_for()
        await reader.open_chat(writer.username or "")
        started = time.monotonic()
        for i in range(1000):
            await writer.send_text(chat["id"], f"message {i}: " + "lorem ipsum dolor sit amet " * 3)
        sent = time.monotonic() - started
        await reader.sees("message 999:", timeout=120_000)
        decrypted = time.monotonic() - started
        cdp = await reader.page.context.new_cdp_session(reader.page)
        await cdp.send("HeapProfiler.collectGarbage")
        heap = (await cdp.send("Runtime.getHeapUsage"))["usedSize"]
        shown = await reader.messages.locator("li.message").count()
    finally:
        await writer.close()
    print(f"\n1,000 messages: sent in {sent:.1f} s, all shown after {decrypted:.1f} s")
    print(f"{shown} messages in the DOM; JS heap {heap} bytes after a garbage collection")
    assert shown <= 200  # the list is windowed
    assert heap < HEAP_BUDGET
