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
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sup.app import build_app
from sup.config import Config
from tests.conftest import make_config

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
    # A microphone that plays a tone, allowed without asking (voice messages in the app tests).
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
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


# -- the web client against a real server -----------------------------------------------------------------

PASSWORD = "correct horse battery"
SCREENSHOTS_ENV = "SUP_SCREENSHOTS"  # e.g. SUP_SCREENSHOTS=docs/screenshots writes them into the repo


@dataclass
class AppServer:
    """A real SUP server (build_app, exactly what `sup run` serves) on a loopback port."""

    url: str
    app: web.Application
    config: Config


@asynccontextmanager
async def running_server(data_dir: Path, clock: Any = None, **env: str) -> AsyncIterator[AppServer]:
    config = make_config(str(data_dir), f"sqlite:///{data_dir / 'sup.db'}", SUP_SECRET_KEY="k" * 40, **env)
    app = build_app(config, clock=clock)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield AppServer(str(server.make_url("")).rstrip("/"), app, config)
    finally:
        await server.close()


@pytest.fixture(scope="module")
async def sup_server(tmp_path_factory) -> AsyncIterator[AppServer]:
    """One server per test module, on SQLite in a temporary directory."""
    async with running_server(tmp_path_factory.mktemp("sup-web")) as server:
        yield server


class PageProblems:
    """Collects what must never happen in a page: uncaught errors and Content-Security-Policy violations."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Any, who: str) -> None:
        def console(message: Any) -> None:
            text = message.text
            if "Content Security Policy" in text or "Content-Security-Policy" in text:
                self.seen.append(f"[{who}] CSP: {text}")

        page.on("console", console)
        page.on("pageerror", lambda error: self.seen.append(f"[{who}] page error: {error}"))

    def check(self) -> None:
        assert not self.seen, "\n".join(self.seen)


@pytest.fixture
def problems() -> Iterator[PageProblems]:
    found = PageProblems()
    yield found
    found.check()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    chosen = os.environ.get(SCREENSHOTS_ENV)
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def image_shown(image: Any, timeout: float = 20_000) -> Any:
    """Wait until an <img> (a locator) is on the page, loaded, with pixels; the locator."""
    await image.wait_for(timeout=timeout)
    await image.page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=await image.element_handle(), timeout=timeout
    )
    return image


def short_id(device_id: str) -> str:
    """A device's short id as SUP shows it: the last 8 hex digits (UUIDv7 ids share their first digits)."""
    return device_id.replace("-", "")[-8:]


class WebUser:
    """One person using the web client in one browser context (a device), driven by role and label."""

    def __init__(self, page: Any, base_url: str, username: str) -> None:
        self.page = page
        self.base_url = base_url
        self.username = username
        self.name = username  # what others' chat lists call this person: the display name, once given

    @classmethod
    async def open(
        cls,
        browser: Any,
        server: AppServer,
        problems: PageProblems,
        username: str | None = None,
        *,
        viewport: tuple[int, int] = (1280, 800),
        dark: bool = False,
    ) -> WebUser:
        context = await browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, color_scheme="dark" if dark else "light"
        )
        page = await context.new_page()
        user = cls(page, server.url, username or f"w{uuid.uuid4().hex[:10]}")
        problems.watch(page, user.username)
        return user

    async def sign_up(self, display_name: str = "") -> WebUser:
        await self.page.goto(f"{self.base_url}/signup")
        await self.page.get_by_label("Username").fill(self.username)
        if display_name:
            await self.page.get_by_label("Display name").fill(display_name)
            self.name = display_name
        await self.page.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_role("button", name="Sign up").click()
        await self.ready()
        return self

    async def ready(self) -> None:
        """Signed in, keys published (others can encrypt to this device) and connected."""
        await self.page.get_by_role("navigation", name="Chats").wait_for(timeout=20_000)
        await self.page.wait_for_function("() => window.supApp.get().connection === 'online'", timeout=30_000)

    async def log_in(self) -> WebUser:
        await self.page.goto(f"{self.base_url}/login")
        try:
            await self.page.get_by_label("Username").wait_for(timeout=15_000)
        except Exception as error:
            raise AssertionError(await self.explain("has no login form")) from error
        await self.page.get_by_label("Username").fill(self.username)
        await self.page.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_role("button", name="Log in").click()
        await self.ready()
        return self

    async def start_direct(self, username: str) -> None:
        await self.page.get_by_role("link", name="New chat").click()
        await self.page.get_by_label("Their username").fill(username)
        await self.page.get_by_role("button", name="Start chat").click()
        await self.composer.wait_for()

    async def write_to(self, other: WebUser, text: str) -> None:
        """Start a direct chat with `other` and send `text`; `other` opens the chat and sees it."""
        await self.start_direct(other.username)
        await self.send(text)
        await other.open_chat(self.name)
        await other.sees(text)

    async def create_group(self, title: str, members: list[str], kind: str = "Group", encrypted: bool = True) -> None:
        await self.page.get_by_role("link", name="New chat").click()
        await self.page.get_by_role("link", name=kind, exact=True).click()
        await self.page.get_by_label(f"{kind} name").fill(title)
        await self.page.get_by_label("Members").fill(" ".join(members))
        if kind == "Group" and not encrypted:
            await self.page.get_by_label("End-to-end encrypted").uncheck()
        await self.page.get_by_role("button", name=f"Create {kind.lower()}").click()
        await self.page.get_by_role("heading", name=title).wait_for()

    async def open_chat(self, name: str) -> None:
        await self.page.get_by_role("navigation", name="Chats").get_by_role("link", name=name).first.click()
        await self.composer.wait_for()

    @property
    def composer(self) -> Any:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    @property
    def messages(self) -> Any:
        return self.page.locator(".message-list")

    def message(self, text: str) -> Any:
        return self.messages.locator("li.message", has_text=text)

    async def send(self, text: str, *, seen_by: WebUser | None = None) -> None:
        """Send `text` in the open chat; with `seen_by`, also wait until that reader (who has it open) sees it."""
        await self.composer.fill(text)
        await self.composer.press("Enter")
        await self.message(text).locator(".state-sent, .state-read").first.wait_for(timeout=20_000)
        if seen_by is not None:
            await seen_by.sees(text)

    async def sees(self, text: str, timeout: float = 30_000) -> Any:
        found = self.message(text)
        try:
            await found.first.wait_for(timeout=timeout)
        except Exception as error:
            raise AssertionError(await self.explain(f"does not see {text!r}")) from error
        return found

    async def explain(self, what: str) -> str:
        """What the page shows and the state says, for a failure message."""
        shown = await self.page.locator("body").inner_text()
        state = await self.page.evaluate(
            "() => { const s = window.supApp?.get(); return s && {phase: s.phase, leading: s.leading,"
            " connection: s.connection, active: s.activeChatId, messages: s.messages.length,"
            " chats: s.chats.length}; }"
        )
        return f"{self.username} {what} at {self.page.url}: {state}\n{shown}"

    async def message_action(self, text: str, action: str) -> None:
        message = self.message(text).first
        await message.hover()
        await message.get_by_role("button", name="Actions for the message").click()
        await self.page.get_by_role("menuitem", name=action, exact=True).click()

    async def edit(self, old_text: str, new_text: str) -> None:
        """Edit one of my messages: Edit puts its text in the composer, which is then replaced."""
        await self.message_action(old_text, "Edit")
        await self.page.wait_for_function(
            "text => document.getElementById('composer-input').value.includes(text)", arg=old_text
        )
        await self.composer.fill(new_text)
        await self.composer.press("Enter")

    async def this_device(self) -> str:
        """This device as a new-device notice names it: "<its name> (<last 8 hex digits of its id>)"."""
        device = await self.page.evaluate(
            "async () => (await window.supApp.api.devices()).devices.find(d => d.current)"
        )
        return f"{device['name']} ({short_id(device['id'])})"

    async def screenshot(self, directory: Path, name: str) -> None:
        await self.page.screenshot(path=str(directory / f"{name}.png"))

    async def close(self) -> None:
        await self.page.context.close()


class Browsers:
    """The browser contexts (devices) a test opens on `sup_server`: each watched for page problems, all closed
    after the test, whatever it did."""

    def __init__(self, browser: Any, server: AppServer, problems: PageProblems) -> None:
        self.browser, self.server, self.problems = browser, server, problems
        self.opened: list[WebUser] = []

    async def open(self, username: str | None = None, **options: Any) -> WebUser:
        """A fresh browser context for `username` (a new name unless given), not signed in."""
        user = await WebUser.open(self.browser, self.server, self.problems, username, **options)
        self.opened.append(user)
        return user

    async def sign_up(self, display_name: str = "", **options: Any) -> WebUser:
        """A new person, signed up in a browser context of their own."""
        return await (await self.open(**options)).sign_up(display_name)

    async def another_tab(self, user: WebUser) -> WebUser:
        """The same device in a second tab (same browser context), opened on the chat list."""
        page = await user.page.context.new_page()
        self.problems.watch(page, f"{user.username} tab 2")
        tab = WebUser(page, user.base_url, user.username)
        await page.goto(f"{user.base_url}/")
        await page.get_by_role("navigation", name="Chats").wait_for()
        return tab

    async def close(self) -> None:
        for user in self.opened:
            await user.close()


@pytest.fixture
async def browsers(browser: Any, sup_server: AppServer, problems: PageProblems) -> AsyncIterator[Browsers]:
    opened = Browsers(browser, sup_server, problems)
    yield opened
    await opened.close()


class SdkUsers:
    """The Python SDK users a test registers on `sup_server`, each with its store in the test's directory: all
    closed after the test, whatever it did."""

    def __init__(self, server: AppServer, directory: Path) -> None:
        self.server, self.directory = server, directory
        self.opened: list[Any] = []

    async def register(self, name: str) -> Any:
        """A new SDK user; `name` names its store."""
        client = await sdk_user(self.server, self.directory / f"{name}.db")
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in self.opened:
            await client.close()


@pytest.fixture
async def sdk_users(sup_server: AppServer, tmp_path: Path) -> AsyncIterator[SdkUsers]:
    registered = SdkUsers(sup_server, tmp_path)
    yield registered
    await registered.close()


async def sdk_user(server: AppServer, store: Path, *, start: bool = True) -> Any:
    """A Python SDK user (its first device), registered on the server with its store at `store`."""
    from sup.client import Client  # the client extra; imported here so the crypto tests do not need it

    client = await Client.register(server.url, str(store), f"py{uuid.uuid4().hex[:10]}", PASSWORD)
    if start:
        await client.start()
    return client
