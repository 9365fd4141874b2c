"""Fixtures for browser tests: the static web client on a loopback port, and headless Chromium.

`web_server` serves sup/web/static at / (as the app will) and the test pages of tests/web/pages at /test/,
with the strict Content-Security-Policy the app will have, so nothing here works only thanks to inline
scripts or eval. `browser` is one headless Chromium per session (Debian's /usr/bin/chromium, driven by
Playwright; never `playwright install`, which downloads browsers); `context` is a fresh browser context per
test (its own IndexedDB, cookies and Web Locks); `harness` opens the crypto test page in it.

Without /usr/bin/chromium the browser tests skip, except with CI=true, where they fail.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "sup" / "web" / "static"
PAGES = Path(__file__).resolve().parent / "pages"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# What the real app will send: scripts only from our own origin, no inline script, no eval.
CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def web_app() -> web.Application:
    """The static files of the web client at /, the test pages at /test/."""
    app = web.Application(middlewares=[_headers])
    app.router.add_static("/test/", PAGES)
    app.router.add_static("/js/", STATIC / "js")
    return app


@pytest.fixture(scope="session")
async def web_server() -> AsyncIterator[str]:
    """The base URL (http://127.0.0.1:<port>) of a loopback server for the web client's static files.

    Loopback http is a secure context, so crypto.subtle, IndexedDB and Web Locks are all available.
    """
    runner = web.AppRunner(web_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium, launched once per test session."""
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI=true requires the browser tests to run: {reason}")
        pytest.skip(reason)
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:  # the test extra has it; a bare environment may not
        if IN_CI:
            pytest.fail(f"CI=true requires Playwright: {exc}")
        pytest.skip(f"Playwright for Python is not installed: {exc}")
    async with async_playwright() as playwright:
        # launch() gives the browser a fresh temporary user-data dir of its own, removed on close.
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context for one test: its own storage, so tests cannot see each other's IndexedDB."""
    ctx = await browser.new_context()
    try:
        yield ctx
    finally:
        await ctx.close()


def b64(data: bytes) -> dict[str, str]:
    """Bytes as the harness takes them."""
    return {"b64": base64.b64encode(data).decode()}


def from_js(value: Any) -> Any:
    """The harness's answer with every {"b64": ...} turned back into bytes."""
    if isinstance(value, list):
        return [from_js(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        return {k: from_js(v) for k, v in value.items()}
    return value


def to_js(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return b64(bytes(value))
    if isinstance(value, list | tuple):
        return [to_js(v) for v in value]
    if isinstance(value, dict):
        return {k: to_js(v) for k, v in value.items()}
    return value


class JsError(Exception):
    """An exception thrown in the page, with the JavaScript class name (DecryptError, BadBundle, ...)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class Harness:
    """tests/web/pages/crypto.html in one page: calls into the crypto modules, bytes in and out."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url

    @classmethod
    async def open(cls, context: Any, base_url: str) -> Harness:
        page = await context.new_page()
        harness = cls(page, base_url)
        await harness.load()
        return harness

    async def load(self) -> None:
        """(Re)load the page and wait until the harness module has run."""
        await self.page.goto(f"{self.base_url}/test/crypto.html")
        await self.page.wait_for_function("window.harness !== undefined", timeout=15_000)

    async def call(self, target: str, path: str, *args: Any) -> Any:
        """harness.call in the page; raises JsError when the JavaScript threw."""
        answer = await self.page.evaluate(
            "([target, path, args]) => window.harness.call(target, path, args)", [target, path, to_js(list(args))]
        )
        if "error" in answer:
            raise JsError(answer["error"], answer["message"])
        return from_js(answer["ok"])

    async def module(self, path: str, *args: Any) -> Any:
        """A function of sup/web/static/js/crypto/<module>.js, as "module.function"."""
        return await self.call("module", path, *args)

    async def device(self, name: str, method: str, *args: Any) -> Any:
        """A method (or getter) of the DeviceCrypto held in the page under `name`."""
        return await self.call("device", f"{name}.{method}", *args)

    async def helper(self, name: str, *args: Any) -> Any:
        return await self.call("harness", name, *args)

    async def raises(self, name: str, target: str, path: str, *args: Any) -> JsError:
        """Call, and assert that it throws the JavaScript error class `name`."""
        with pytest.raises(JsError) as caught:
            await self.call(target, path, *args)
        assert caught.value.name == name, str(caught.value)
        return caught.value


@pytest.fixture
async def harness(context: Any, web_server: str) -> Harness:
    """The crypto test page, loaded in a fresh context."""
    return await Harness.open(context, web_server)
