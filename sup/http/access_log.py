"""One line per request, without query strings or headers: tokens never reach a log.

The address is the client's (the first untrusted hop behind `server.trusted_proxies`), and the
line ends with the request id the answer carried in `X-Request-Id`. In JSON logs the same facts
are fields: method, route (the template), path, status, duration_ms, client_ip, request_id.
"""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from sup.http.observe import FACTS, UNMATCHED


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        facts = FACTS.get()
        address = facts.client_ip if facts is not None else request.remote
        rid = facts.request_id if facts is not None else None
        duration_ms = round(time * 1000, 1)
        self.logger.info(
            "%s %s %s %d %.1fms%s",
            address,
            request.method,
            request.path,
            response.status,
            duration_ms,
            f" {rid}" if rid else "",
            extra={
                "request_id": rid,
                "method": request.method,
                "route": facts.route if facts is not None else UNMATCHED,
                "path": request.path,
                "status": response.status,
                "duration_ms": duration_ms,
                "client_ip": address,
            },
        )
