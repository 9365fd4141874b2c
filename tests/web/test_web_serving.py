"""How the server serves the web client: the page at its screens, hashed assets cached for a year,
gzip, ETags, the strict Content-Security-Policy of the pages, and the API's 404s left as they were."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sup.web import assets
from tests.web.conftest import STATIC, AppServer, running_server


async def get(server: AppServer, path: str, **headers: str) -> tuple[int, Any, bytes]:
    headers.setdefault("Accept-Encoding", "identity")
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(server.url + path, headers=headers) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


def import_map(page: str) -> str:
    found = re.search(r'<script type="importmap">(.*?)</script>', page, re.S)
    assert found, page
    return found.group(1)


async def test_the_page_is_served_at_every_screen_with_the_strict_policy(sup_server: AppServer):
    screens = ("/", "/login", "/signup", "/chats/01a2", "/settings/devices", "/new/group", "/safety/x")
    later = ("/search", "/join/AbCd-_12", "/admin/audit", "/verify-email", "/reset-password", "/register")
    for path in (*screens, "/stories/new", "/stories/01a2/01a3", "/stickers/AbCd-_12", *later):
        status, headers, body = await get(sup_server, path)
        assert status == 200, path
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Cache-Control"] == "no-cache"
        policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
        page = body.decode()
        digest = base64.b64encode(hashlib.sha256(import_map(page).encode()).digest()).decode()
        assert policy["script-src"] == f"'self' 'sha256-{digest}'"  # the import map, and nothing else inline
        assert policy["default-src"] == "'none'"
        assert policy["style-src"] == "'self'"
        assert policy["img-src"] == "'self' blob: data:"
        assert policy["media-src"] == "'self' blob:"
        assert policy["connect-src"].startswith("'self'")
        assert policy["frame-ancestors"] == "'none'"
        assert policy["base-uri"] == "'none'"
        assert policy["form-action"] == "'self'"
        assert "unsafe" not in headers["Content-Security-Policy"]
        assert '<meta name="sup-registration" content="open">' in page
        assert '<meta name="sup-email" content="off">' in page  # no SMTP here: no "Forgot password?"


async def test_the_api_keeps_its_own_policy_and_problem_json_404s(sup_server: AppServer):
    status, headers, body = await get(sup_server, "/api/v1/no/such/thing")
    assert status == 404
    assert headers["Content-Type"] == "application/problem+json"
    assert b'"code":"not_found"' in body
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    status, headers, _ = await get(sup_server, "/health")
    assert status == 200 and headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    for path in ("/favicon.ico", "/wp-admin", "/api", "/assets/nothing.js"):
        status, headers, _ = await get(sup_server, path)
        assert status == 404, path
        assert headers["Content-Type"] == "application/problem+json"


async def test_assets_have_content_hashed_names_cached_for_a_year(sup_server: AppServer):
    _, _, body = await get(sup_server, "/")
    page = body.decode()
    urls = re.findall(r'"(/assets/[^"]+)"', page)
    entry = next(u for u in urls if re.fullmatch(r"/assets/js/main\.[0-9a-f]{12}\.js", u))
    status, headers, js = await get(sup_server, entry)
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert hashlib.sha256(js).hexdigest()[:12] in entry
    assert js == (STATIC / "js" / "main.js").read_bytes()
    # Every module the import map names, and every modulepreload, is a hashed URL that answers.
    mapped = re.findall(r'": "(/assets/[^"]+)"', import_map(page))
    assert any(u.endswith(".js") and "/vendor/preact/" in u for u in mapped)
    for url in set(mapped):
        status, headers, _ = await get(sup_server, url)
        assert status == 200 and "immutable" in headers["Cache-Control"], url
    # The plain name still answers, revalidated rather than cached for ever.
    status, headers, _ = await get(sup_server, "/assets/js/main.js")
    assert status == 200 and headers["Cache-Control"] == "no-cache"


async def test_gzip_and_etags(sup_server: AppServer):
    status, headers, body = await get(sup_server, "/assets/css/app.css", **{"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == (STATIC / "css" / "app.css").read_bytes()
    status, headers, body = await get(sup_server, "/assets/css/app.css", **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in headers and body == (STATIC / "css" / "app.css").read_bytes()
    status, headers, _ = await get(sup_server, "/", **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in headers
    status, _, _ = await get(sup_server, "/", **{"If-None-Match": headers["ETag"]})
    assert status == 304


async def test_index_references_only_files_that_exist():
    client = assets.build()
    page = client.index.body.decode()
    for url in re.findall(r'(?:src|href)="(/assets/[^"]+)"', page):
        assert client.asset(url) is not None, url
    assert client.is_immutable(re.search(r'src="(/assets/js/main\.[^"]+)"', page).group(1))


def test_only_statically_imported_modules_are_preloaded(tmp_path: Path):
    """A module loaded with import() is in the import map, not preloaded: it costs nothing until used."""
    for path in assets.BARE_MODULES.values():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("export default 1;\n")
    (tmp_path / "js" / "ui").mkdir(parents=True)
    (tmp_path / "index.html").write_text(
        '<head><!-- sup:head --><script type="module" src="/assets/js/main.js"></script></head>'
    )
    (tmp_path / "js" / "main.js").write_text(
        'import { a } from "./ui/a.js";\nimport "preact";\nconst later = () => import("./ui/lazy.js");\n'
    )
    (tmp_path / "js" / "ui" / "a.js").write_text(
        'import {\n  b,\n} from "../b.js";\nexport { c } from "./c.js";\n// import "./d.js" is a comment\n'
    )
    for name in ("b.js", "ui/c.js", "ui/d.js", "ui/lazy.js"):
        (tmp_path / "js" / name).write_text("export const x = 1;\n")
    client = assets.build(tmp_path)
    page = client.index.body.decode()
    preloaded = {client.asset(u).path for u in re.findall(r'rel="modulepreload" href="([^"]+)"', page)}
    assert preloaded == {"js/main.js", "js/ui/a.js", "js/b.js", "js/ui/c.js", "vendor/preact/preact.module.js"}
    assert client.asset("/assets/js/ui/lazy.js").url in import_map(page)


def test_a_missing_vendored_module_fails_the_build(tmp_path: Path):
    (tmp_path / "index.html").write_text("<head><!-- sup:head --></head>")
    with pytest.raises(FileNotFoundError, match="preact"):
        assets.build(tmp_path)


async def test_an_invite_only_server_says_so_to_the_sign_up_screen(tmp_path: Path):
    async with running_server(tmp_path, SUP_AUTH_REGISTRATION="invite") as server:
        _, _, body = await get(server, "/signup")
    assert b'<meta name="sup-registration" content="invite">' in body


async def test_a_server_that_sends_email_says_so_to_the_log_in_screen(tmp_path: Path):
    env = {
        "SUP_EMAIL_SMTP_HOST": "127.0.0.1",
        "SUP_EMAIL_SMTP_SECURITY": "none",
        "SUP_EMAIL_FROM_ADDRESS": "SUP <sup@example.test>",
    }
    async with running_server(tmp_path, **env) as server:
        _, _, body = await get(server, "/login")
    assert b'<meta name="sup-email" content="on">' in body
