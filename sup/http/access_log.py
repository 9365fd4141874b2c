"""One line per request, without query strings or headers: tokens never reach a log."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms", request.remote, request.method, request.path, response.status, time * 1000
        )
