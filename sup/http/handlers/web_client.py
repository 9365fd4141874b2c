"""The web client: its page at every path that is one of its screens, and its files under /assets/.

What is served is built once at startup by `sup.web.assets.build` (content-hashed names, gzip, the
import map); see docs/web.md. The API stays under /api/v1, where unknown paths are problem+json 404s.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from sup.http.middleware import app_page_policy
from sup.transport.services import SERVICES
from sup.web import assets
from sup.web.assets import Asset, WebClient

WEB_CLIENT = web.AppKey("web_client", WebClient)
# auth.registration, set by build_app: the sign-up screen asks for an invite code when it is "invite".
REGISTRATION = web.AppKey("registration", str)
# Where signed URLs of files point when the blob store serves them itself (an S3 bucket's origin), or "":
# the page's policy lets images and video come from there.
MEDIA_ORIGIN = web.AppKey("media_origin", str)

# First path segments the client routes itself (sup/web/static/js/ui/router.js): a reload there
# gets the page. Anything else outside /api/ is a 404, as before.
SCREENS = frozenset(
    {
        *("", "login", "signup", "chats", "new", "settings", "safety", "stickers", "stories"),
        # search, invite links, administration, and the links SUP's mail holds (docs/api.md "Email")
        *("search", "join", "admin", "verify-email", "reset-password", "register"),
    }
)
YEAR = 365 * 86400


async def load_web_client(app: web.Application) -> None:
    """Build the web client's files once, in a thread (reading and compressing them blocks); learn where
    signed URLs of files point (after the backends started: on_startup runs cleanup_ctx first)."""
    services = app.get(SERVICES)
    # Whether this server sends email: the log-in screen offers "Forgot password?" only then.
    email = services is not None and services.emails.available
    app[WEB_CLIENT] = await asyncio.to_thread(assets.build, registration=app.get(REGISTRATION, "open"), email=email)
    app[MEDIA_ORIGIN] = (await services.media.direct_origin() or "") if services is not None else ""


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _send(request: web.Request, asset: Asset, *, cache_control: str) -> web.StreamResponse:
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and _accepts_gzip(request):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


async def page(request: web.Request) -> web.StreamResponse:
    """GET /{path}: the web client's page, for its screens (client-side routing)."""
    screen = request.match_info.get("path", "").split("/", 1)[0]
    if screen not in SCREENS:
        raise web.HTTPNotFound()
    client = request.app[WEB_CLIENT]
    response = _send(request, client.index, cache_control="no-cache")
    response.headers["Content-Security-Policy"] = app_page_policy(
        client.script_hashes, request.host, request.app.get(MEDIA_ORIGIN)
    )
    return response


async def asset(request: web.Request) -> web.StreamResponse:
    """GET /assets/{path}: one file of the web client; hashed names are cached for a year."""
    client = request.app[WEB_CLIENT]
    found = client.asset(request.path)
    if found is None:
        raise web.HTTPNotFound()
    immutable = client.is_immutable(request.path)
    response = _send(request, found, cache_control=f"public, max-age={YEAR}, immutable" if immutable else "no-cache")
    # An SVG opened on its own is a document: it gets the pages' policy, never more.
    response.headers["Content-Security-Policy"] = app_page_policy((), None)
    return response
