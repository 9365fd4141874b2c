"""The parts of docs/ that are generated from the code, so that they cannot drift from it.

Each generated part sits between two markers in its page:

    <!-- generated: endpoints -->
    ...
    <!-- end of generated: endpoints -->

`python -m sup.docgen` rewrites them in a checkout; tests/test_docs.py fails while a page
differs from what this module renders.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

# Added by add_routes beside ROUTES, since its handler serves the document built from them.
OPENAPI_ROW = ("GET", "/api/v1/openapi.json", "none", "this API, described in OpenAPI 3.1.")

# Who may read what the operator's routes serve (sup/http/routes.py OPS_ROUTES).
OPS_AUTH = {"/metrics": "loopback, `metrics.allow` or `metrics.token`"}

# A raw route answers by itself, so the table cannot read how it authenticates: say it here.
RAW_AUTH = {"/api/v1/ws": "first frame ([protocol](protocol.md))"}


def endpoint_table() -> str:
    """The endpoint table of docs/api.md, from the route table (sup/http/routes.py)."""
    from sup.http.routes import OPS_ROUTES, ROUTES, WEB_ROUTES
    from sup.http.schemas import SignedQuery

    rows = [
        "| Method and path | Auth | What it does |",
        "|---|---|---|",
    ]
    for route in ROUTES:
        if route.raw:
            if route.path not in RAW_AUTH:
                raise KeyError(f"{route.method} {route.path} is raw: say how it authenticates in RAW_AUTH")
            auth = RAW_AUTH[route.path]
        elif route.admin:
            auth = "admin's token"
        elif route.auth:
            auth = "token"
        elif route.query is not None and issubclass(route.query, SignedQuery):
            auth = "token or signed URL"
        else:
            auth = "none"
        rows.append(_row(route.method, route.path, auth, route.summary))
    rows.append(_row(*OPENAPI_ROW))
    for method, path, handler in OPS_ROUTES:
        summary = (handler.__doc__ or "").strip().splitlines()[0].removeprefix(f"{method} {path}: ")
        rows.append(_row(method, path, OPS_AUTH[path], summary))
    for method, path, handler in WEB_ROUTES:  # the web client: its page and its files
        plain = re.sub(r"{(\w+):[^}]*}", r"{\1}", path)
        summary = (handler.__doc__ or "").strip().splitlines()[0].removeprefix(f"{method} {plain}: ")
        rows.append(_row(method, plain, "none", summary))
    return "\n".join(rows) + "\n"


def _row(method: str, path: str, auth: str, summary: str) -> str:
    cells = [f"`{method} {path}`", auth, summary.removesuffix(".")]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def settings_tables() -> str:
    from sup.config import settings_reference

    return settings_reference()


def hook_table() -> str:
    """The hook table of docs/plugins.md, from the hook specification (sup/plugins/hookspecs.py)."""
    from sup.plugins.hookspecs import LIFECYCLE, OBSERVERS, PROVIDERS, hook_functions

    kinds = {**dict.fromkeys(PROVIDERS, "provider"), **dict.fromkeys(OBSERVERS, "observer")}
    kinds.update(dict.fromkeys(LIFECYCLE, "lifecycle"))
    rows = ["| Hook | Kind | What it is for |", "|---|---|---|"]
    for name, function in hook_functions().items():
        arguments = ", ".join(inspect.signature(function).parameters)
        doc = (function.__doc__ or "").strip()
        rows.append(_row_cells([f"`{name}({arguments})`", kinds[name], doc.removesuffix(".")]))
    return "\n".join(rows) + "\n"


def _row_cells(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


GENERATED: dict[str, dict[str, Callable[[], str]]] = {
    "api.md": {"endpoints": endpoint_table},
    "configuration.md": {"settings": settings_tables},
    "plugins.md": {"hooks": hook_table},
}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated: {name} -->\n)(.*?)(<!-- end of generated: {name} -->)",
        re.DOTALL,
    )


def render(page: str, text: str) -> str:
    """`text` (the page's contents) with each of its generated parts as the code renders it now."""
    for name, generate in GENERATED[page].items():
        block = _block(name)
        if len(block.findall(text)) != 1:
            raise ValueError(f"docs/{page}: expected one <!-- generated: {name} --> block")
        content = generate()
        text = block.sub(lambda match, content=content: f"{match[1]}\n{content}\n{match[3]}", text)
    return text


def main() -> int:
    for page in GENERATED:
        path = DOCS / page
        text = path.read_text()
        updated = render(page, text)
        if updated != text:
            path.write_text(updated)
            print(f"rewrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
