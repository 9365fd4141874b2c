"""The docs that are generated from the code, and the facts the docs state about the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sup.app import build_app
from sup.config import load_config
from sup.docgen import DOCS, GENERATED, render
from sup.http.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("page", sorted(GENERATED))
def test_generated_parts_are_current(page: str):
    text = (DOCS / page).read_text()
    assert text == render(page, text), f"docs/{page} is out of date: run `python -m sup.docgen`"


def test_the_endpoint_table_lists_what_the_server_serves():
    """Every route the app registers (ROUTES and what add_routes adds beside them), with its docstring."""
    text = (DOCS / "api.md").read_text()
    table = text[text.index("<!-- generated: endpoints -->") : text.index("<!-- end of generated: endpoints -->")]
    rows = dict(re.findall(r"^\| `([A-Z]+ /\S*)` \| [^|]+ \| (.*) \|$", table, re.MULTILINE))
    app = build_app(load_config(None, {}))
    served = {}
    for route in app.router.routes():
        if route.method != "HEAD":
            served[f"{route.method} {route.resource.canonical}"] = route.handler.__doc__.splitlines()[0]
    assert set(rows) == set(served)
    for key, doc in served.items():
        assert doc.startswith(f"{key}: "), f"the docstring of {key} does not start with its method and path"
        assert doc.removeprefix(f"{key}: ").removesuffix(".") == rows[key]
    assert any(route.raw and f"GET {route.path}" in rows for route in ROUTES)  # the WebSocket upgrade


def test_every_endpoint_the_api_page_names_in_a_table_exists():
    """The hand-written tables of api.md (per section, with more detail) name real routes only."""
    text = (DOCS / "api.md").read_text()
    named = set(re.findall(r"^\| `([A-Z]+ /[^`]*)`", text, re.MULTILINE))
    app = build_app(load_config(None, {}))
    served = {f"{route.method} {route.resource.canonical}" for route in app.router.routes()}
    assert named - served == set()


def test_the_error_table_lists_every_code_with_its_status():
    from sup.errors import Code
    from sup.transport.statuses import STATUS

    text = (DOCS / "api.md").read_text()
    documented = {code: int(status) for code, status in re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", text, re.M)}
    assert documented == {code.value: STATUS[code] for code in Code}


def test_the_nginx_example_passes_the_proxy_headers_in_every_location():
    """A location with its own proxy_set_header inherits none of the server's: each must repeat them."""
    conf = (ROOT / "packaging" / "nginx-sup.conf").read_text()
    server = conf[conf.index("listen 443") :]
    blocks = re.findall(r"location ([^{]+)\{(.*?)\n    \}", server, re.DOTALL)
    headers = {"Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id"}
    assert headers <= set(re.findall(r"^    proxy_set_header (\S+)", server, re.MULTILINE))
    for where, body in blocks:
        own = set(re.findall(r"proxy_set_header (\S+)", body))
        if own:
            assert headers <= own, f"location {where.strip()} drops {headers - own}"
    websocket = [where.split()[-1] for where, body in blocks if "Upgrade" in body]
    assert websocket == [route.path for route in ROUTES if route.raw]


def test_the_server_never_imports_pillow():
    """docs/dependencies.md and configuration.md: Pillow decodes images in a child process only."""
    probe = "import sys, sup.app, sup.server, sup.domain.processing; print('PIL' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"
