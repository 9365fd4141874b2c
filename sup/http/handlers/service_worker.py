"""GET /sw.js: the web client's service worker (Web Push), at the root so that its scope is the whole client.

A service worker's scope can be no wider than the folder its script is served from, so this one file is
served outside /assets/, under a fixed name (browsers check it for updates at every navigation: no-cache).
Its own Content-Security-Policy is what the worker may load: nothing but this origin.
"""

from __future__ import annotations

from aiohttp import web

from sup.http.handlers.web_client import WEB_CLIENT

WORKER_POLICY = "default-src 'none'; img-src 'self'; connect-src 'self'"


async def service_worker(request: web.Request) -> web.StreamResponse:
    """GET /sw.js: the service worker that shows push notifications (docs/web.md)."""
    asset = request.app[WEB_CLIENT].asset("/assets/sw.js")
    if asset is None:
        raise web.HTTPNotFound()
    headers = {
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": "no-cache",
        "ETag": asset.etag,
        "Service-Worker-Allowed": "/",
        "Content-Security-Policy": WORKER_POLICY,
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers=headers)
