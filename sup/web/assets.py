"""The web client's files as the server sends them: named by content hash, gzipped once, and the
index page that points at them.

At startup every file under `static/` (except `index.html`) is read once and given a URL with the
first 12 hex digits of its SHA-256 in its name: `js/main.js` becomes `/assets/js/main.1a2b3c4d5e6f.js`.
Such a URL never changes meaning, so browsers may cache it for a year. The index page is the one
document that is revalidated (ETag, `no-cache`); it carries

- the hashed URLs of its stylesheet and entry script (its `/assets/...` references, rewritten);
- an import map from every module's plain URL to its hashed one, so that the modules' relative
  imports (`import ... from "./api/http.js"`) resolve to hashed URLs without rewriting a byte of
  JavaScript, plus the bare names of the vendored libraries (`preact`, `htm`, ...);
- a `modulepreload` link for every module the entry script imports, directly or not, with a static
  `import`, so the browser fetches them all at once instead of one level of imports at a time. A module
  only ever loaded with `import()` (a screen opened rarely, such as the story viewer) is in the import map
  but not preloaded: it costs nothing until it is used;
- `<meta name="sup-registration">`: whether sign-up is open, by invite, or closed;
- `<meta name="sup-email">`: `on` when the server sends email (SMTP set up), so that the log-in screen
  offers "Forgot password?" only where it can work, `off` otherwise.

An inline import map is a script element for the Content-Security-Policy: it is allowed by its
SHA-256 (`script_hashes`), so no other inline script can run.

Nothing here imports aiohttp: `sup/http/handlers/web.py` serves what `build` returns.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/assets/"
HASH_DIGITS = 12
INDEX = "index.html"
HEAD_MARKER = "<!-- sup:head -->"

# Bare module names the code imports, and the vendored file each one is.
BARE_MODULES = {
    "preact": "vendor/preact/preact.module.js",
    "preact/hooks": "vendor/preact/hooks.module.js",
    "htm": "vendor/htm/htm.module.js",
    "uqr": "vendor/uqr/uqr.module.js",
}

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_COMPRESSIBLE = {".js", ".css", ".html", ".svg", ".json", ".webmanifest", ".txt"}
_ASSET_REFERENCE = re.compile(r"""(["'])/assets/([A-Za-z0-9_./-]+)\1""")
_ENTRY_SCRIPT = re.compile(r"""<script type="module" src="/assets/([A-Za-z0-9_./-]+)"></script>""")
# `import ... from "x"`, `import "x"`, `export ... from "x"` at the start of a line; not `import("x")`.
_STATIC_IMPORT = re.compile(r"""^[ \t]*(?:import|export)(?![ \t]*\()(?:[^"';]*?\bfrom)?[ \t]*(["'])([^"']+)\1""", re.M)
REGISTRATION_MODES = ("open", "invite", "closed")


@dataclass(frozen=True)
class Asset:
    """One file, ready to send."""

    path: str  # relative to static/, with forward slashes: "js/main.js"
    url: str  # the hashed URL: "/assets/js/main.1a2b3c4d5e6f.js"
    body: bytes
    gzipped: bytes | None  # None when compressing does not pay
    content_type: str
    etag: str


@dataclass(frozen=True)
class WebClient:
    """Everything the server needs to serve the web client."""

    by_url: dict[str, Asset]  # hashed URL and plain URL -> asset
    index: Asset
    script_hashes: tuple[str, ...]  # CSP sources ('sha256-...') of the index page's inline import map

    def asset(self, url: str) -> Asset | None:
        return self.by_url.get(url)

    def is_immutable(self, url: str) -> bool:
        """Whether `url` is a content-hashed name (cache it for ever) rather than a plain one."""
        found = self.by_url.get(url)
        return found is not None and found.url == url


def _hashed_name(path: str, digest: str) -> str:
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    hashed = f"{stem}.{digest}.{ext}" if dot else f"{name}.{digest}"
    return f"{folder}/{hashed}" if folder else hashed


def _asset(path: str, body: bytes, url: str) -> Asset:
    suffix = Path(path).suffix
    zipped = None
    if suffix in _COMPRESSIBLE:
        # mtime=0: the same file always compresses to the same bytes (stable ETags, reproducible).
        candidate = gzip.compress(body, compresslevel=9, mtime=0)
        if len(candidate) < len(body) * 0.9:
            zipped = candidate
    return Asset(
        path=path,
        url=url,
        body=body,
        gzipped=zipped,
        content_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
    )


def _files(static: Path) -> dict[str, bytes]:
    found = {}
    for file in sorted(static.rglob("*")):
        if not file.is_file() or file.name.startswith("."):
            continue
        path = file.relative_to(static).as_posix()
        if path != INDEX:
            found[path] = file.read_bytes()
    return found


def _statically_imported(entries: list[str], assets: dict[str, Asset]) -> set[str]:
    """Paths of the modules `entries` import with static imports, directly or not (entries included)."""
    bare = {name: path for name, path in BARE_MODULES.items()}
    found: set[str] = set()
    todo = [e for e in entries if e in assets]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        for _, spec in _STATIC_IMPORT.findall(assets[path].body.decode("utf-8")):
            if spec in bare:
                target = bare[spec]
            elif spec.startswith("."):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(path), spec))
            elif spec.startswith(PREFIX):
                target = spec[len(PREFIX) :]
            else:
                continue
            if target in assets and target not in found:
                todo.append(target)
    return found


def build(static: Path = STATIC, *, registration: str = "open", email: bool = False) -> WebClient:
    """Read, hash and compress the static files and make the index page (blocking: run it in a thread)."""
    if registration not in REGISTRATION_MODES:
        raise ValueError(f"registration must be one of {REGISTRATION_MODES}, not {registration!r}")
    assets: dict[str, Asset] = {}
    for path, body in _files(static).items():
        digest = hashlib.sha256(body).hexdigest()[:HASH_DIGITS]
        assets[path] = _asset(path, body, PREFIX + _hashed_name(path, digest))
    for name, path in BARE_MODULES.items():
        if path not in assets:
            raise FileNotFoundError(f"the vendored module {name!r} is missing: {static / path}")

    modules = sorted((a for a in assets.values() if a.path.endswith(".js")), key=lambda a: a.path)
    imports = {PREFIX + a.path: a.url for a in modules}
    imports.update({name: assets[path].url for name, path in BARE_MODULES.items()})
    import_map = json.dumps({"imports": imports}, indent=1, sort_keys=True)
    script_hash = "'sha256-" + base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode() + "'"

    template = (static / INDEX).read_text(encoding="utf-8")
    preloaded = _statically_imported(_ENTRY_SCRIPT.findall(template), assets)
    head = "\n".join(
        [
            f'<meta name="sup-registration" content="{html.escape(registration)}">',
            f'<meta name="sup-email" content="{"on" if email else "off"}">',
            f'<script type="importmap">{import_map}</script>',
            *(f'<link rel="modulepreload" href="{a.url}">' for a in modules if a.path in preloaded),
        ]
    )
    if HEAD_MARKER not in template:
        raise ValueError(f"{static / INDEX} has no {HEAD_MARKER} line")

    def hashed(match: re.Match[str]) -> str:
        found = assets.get(match.group(2))
        if found is None:
            raise FileNotFoundError(f"{INDEX} refers to /assets/{match.group(2)}, which does not exist")
        return f"{match.group(1)}{found.url}{match.group(1)}"

    page = _ASSET_REFERENCE.sub(hashed, template).replace(HEAD_MARKER, head)
    index = _asset(INDEX, page.encode(), "/")

    by_url: dict[str, Asset] = {}
    for asset in assets.values():
        by_url[asset.url] = asset
        by_url[PREFIX + asset.path] = asset  # the plain name works too, revalidated each time
    return WebClient(by_url=by_url, index=index, script_hashes=(script_hash,))
