"""Response headers every answer carries, and CORS for an allow-list of origins."""

from __future__ import annotations

import re

from aiohttp import web

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The API serves data, never pages: nothing in a response may load or run anything.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-site",
}


# The web client's pages (sup/http/handlers/web.py): scripts, styles and connections only from this
# origin; images and sound also from blob: (decrypted attachments) and data:, and from the blob store's
# origin when it serves files itself (S3's presigned URLs). No inline script except the import map,
# allowed by its hash; no eval; no framing; no <base>; forms post only here.
_APP_POLICY = (
    "default-src 'none'",
    "script-src 'self' {hashes}",
    "style-src 'self'",
    "img-src 'self' blob: data:{media}",
    "media-src 'self' blob:{media}",
    "font-src 'self'",
    "connect-src 'self'{sockets}",
    "manifest-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
)
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def app_page_policy(script_hashes: tuple[str, ...], host: str | None, media_origin: str | None = None) -> str:
    """The Content-Security-Policy of the web client's pages.

    `'self'` covers the same host's ws:/wss: in CSP Level 3 browsers; older ones need them spelt out,
    so they are added for the Host the page was asked for (when it looks like a host name).
    `media_origin`: where signed URLs of files point when that is not this server (an S3 bucket).
    """
    sockets = f" ws://{host} wss://{host}" if host and _HOST.match(host) else ""
    media = f" {media_origin}" if media_origin and _ORIGIN.match(media_origin) else ""
    return "; ".join(_APP_POLICY).format(hashes=" ".join(script_hashes), sockets=sockets, media=media)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "SUP"  # no version banner for scanners
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        # Tokens and private data must not sit in shared caches.
        response.headers.setdefault("Cache-Control", "no-store")


def cors_middleware(allowed_origins: list[str]):
    allowed = set(allowed_origins)
    wildcard = "*" in allowed

    @web.middleware
    async def cors(request: web.Request, handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        permitted = origin is not None and (wildcard or origin in allowed)
        if request.method == "OPTIONS" and permitted and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, PUT, DELETE"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if permitted:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return cors
