"""Response headers every answer carries, and CORS for an allow-list of origins."""

from __future__ import annotations

from aiohttp import web

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The API serves data, never pages: nothing in a response may load or run anything.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-site",
}


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
