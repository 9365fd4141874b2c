"""Liveness, readiness and the API description."""

from __future__ import annotations

from aiohttp import web

from sup import __version__
from sup.errors import Code
from sup.http import schemas as s
from sup.http.api import Call
from sup.http.problems import problem_response


async def health(call: Call) -> s.HealthStatus:
    """GET /health: the process is up (liveness)."""
    return s.HealthStatus(status="ok", version=__version__)


async def ready(call: Call) -> web.StreamResponse | s.HealthStatus:
    """GET /health/ready: the database answers (readiness)."""
    if problem := await call.services.health.problem():
        return problem_response(Code.UNAVAILABLE, problem)
    return s.HealthStatus(status="ready", version=__version__)
