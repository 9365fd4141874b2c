"""HTTP side of observability: request ids, request metrics, and `GET /metrics`.

The middleware is the outermost one, so it sees the status every other middleware settled on
(a problem+json error included). Each request gets an id: a sane `X-Request-Id` from a
trusted proxy (nginx's `$request_id`), else a new one. It is on the answer's `X-Request-Id`
header, on every log record written while the request is handled, and in the access log.

`GET /metrics` answers Prometheus from the addresses in `metrics.allow` (loopback by default),
judged by the real client address behind a trusted proxy, or to anyone with `metrics.token`.
A request that came through a proxy SUP does not trust (it has `X-Forwarded-For` or
`Forwarded`) is never allowed by address: nginx on the same host would otherwise make every
visitor look like loopback.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import ipaddress
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sup.errors import Code
from sup.http.api import client_ip
from sup.http.problems import CLIENT_CLOSED_REQUEST, problem_response
from sup.observe.logs import REQUEST_ID
from sup.observe.metrics import CONTENT_TYPE, Metrics

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METRICS = web.AppKey("metrics", Metrics)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the access log says of a request besides what aiohttp knows."""

    request_id: str
    client_ip: str
    route: str


# aiohttp runs each request in a task of its own, which copies the context: what the middleware
# sets here is seen by the handler, the tasks it starts, on_response_prepare and the access log of
# that request only, and goes away with the task.
FACTS: contextvars.ContextVar[RequestFacts | None] = contextvars.ContextVar("sup_request", default=None)

HEADER = "X-Request-Id"
# nginx's $request_id is 32 hex digits; other proxies send UUIDs. Anything else is replaced.
_SANE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route: a 404, or a request the router refused


def route_of(request: web.Request) -> str:
    """The template of the route that matched (`/api/v1/chats/{chat_id}`), never the path that was sent."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def request_id(request: web.Request, trusted: tuple[Network, ...]) -> str:
    offered = request.headers.get(HEADER)
    if offered and trusted and _SANE_ID.match(offered) and _in(request.remote or "", trusted):
        return offered
    return os.urandom(16).hex()


def observe_middleware(
    metrics: Metrics | None, trusted: tuple[Network, ...], upload_routes: frozenset[str]
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]]:
    # Children looked up once per (method, route, status): labels() costs more than the increment.
    counted: dict[tuple[str, str, str], tuple[object, object | None]] = {}

    def record(method: str, route: str, status: int, seconds: float) -> None:
        assert metrics is not None
        key = (method, route, str(status))
        children = counted.get(key)
        if children is None:
            timed = metrics.http_duration.labels(method, route) if status != 101 else None
            children = counted[key] = (metrics.http_requests.labels(*key), timed)
        children[0].inc()  # type: ignore[attr-defined]
        if children[1] is not None:  # a WebSocket session's length is not a latency
            children[1].observe(seconds)  # type: ignore[attr-defined]
        if status == 429:
            metrics.ratelimit_refusals.labels(route).inc()

    @web.middleware
    async def observe(request: web.Request, handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request, trusted)
        route = route_of(request)
        REQUEST_ID.set(rid)
        FACTS.set(RequestFacts(rid, client_ip(request, trusted), route))
        status = 500
        if metrics is not None:
            metrics.http_in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # redirects, and whatever a handler raised past problems_middleware
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            if metrics is not None:
                metrics.http_in_flight.dec()
                method = request.method if request.method in _METHODS else "other"
                record(method, route, status, time.perf_counter() - started)
                if route in upload_routes:
                    metrics.upload_bytes.inc(request.content.total_bytes)

    return observe


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: streamed answers and WebSocket upgrades carry the id too."""
    facts = FACTS.get()
    if facts is not None:
        response.headers[HEADER] = facts.request_id


@dataclass(frozen=True)
class MetricsAccess:
    enabled: bool
    allow: tuple[Network, ...]
    token: str
    trusted: tuple[Network, ...]

    def permits(self, request: web.Request) -> bool:
        if self.token:
            scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), self.token.encode()):
                return True
        if not self.allow:
            return False
        proxied = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
        if proxied and not _in(request.remote or "", self.trusted):
            return False
        facts = FACTS.get()
        return _in(facts.client_ip if facts is not None else client_ip(request, self.trusted), self.allow)


METRICS_ACCESS = web.AppKey("metrics_access", MetricsAccess)


async def get_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics: Prometheus metrics of this process, in its text format."""
    access = request.app[METRICS_ACCESS]
    metrics = request.app.get(METRICS)
    if not access.enabled or metrics is None:
        return problem_response(Code.NOT_FOUND, "There is nothing at this path.", instance=request.path)
    if not access.permits(request):
        return problem_response(
            Code.FORBIDDEN, "Metrics are served to metrics.allow and to holders of metrics.token.", instance="/metrics"
        )
    body = await metrics.expose()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers["Cache-Control"] = "no-store"
    return response
