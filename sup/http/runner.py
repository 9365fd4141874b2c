"""The AppRunner SUP serves with: requests aiohttp refuses itself get problem+json too.

A request line over 8 KiB, too many or too long headers, or bytes that are no HTTP at all
are refused by aiohttp's parser before any route or middleware runs; its answer was a plain
text 400. aiohttp offers no hook there, so the connection handler is a subclass whose
`handle_error` answers like every other error of the API (and still logs, and still closes
the connection, as aiohttp's does).

The same handler times out slow request headers: aiohttp has no such timeout, so a client
trickling a header a byte at a time (or connecting and sending nothing) held a connection
for as long as it liked. Idle keep-alive connections close after server.keepalive_timeout_seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sup.config import ServerConfig
from sup.http.problems import code_for_status, problem_response

# The listener's settings (server.*), for the runner: set by build_app.
LISTENER = web.AppKey("listener", ServerConfig)


class _ProblemRequestHandler(RequestHandler):
    __slots__ = ("_header_timeout", "_header_timer")

    def __init__(self, manager: Any, *, header_timeout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    # -- slow headers: from connecting (or a request's first byte) to its last header ------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that sends nothing at all is closed too

    def data_received(self, data: bytes) -> None:
        idle = not self._request_in_progress and not self._messages and not self._upgraded
        super().data_received(data)
        if self._upgraded or self._messages or self._force_close:
            self._disarm_header_timer()  # the headers are complete (or the connection is done)
        elif idle and data:
            self._arm_header_timer()  # a new request has begun to arrive

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timeout > 0 and self._header_timer is None:
            self._header_timer = self._loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._upgraded or self._messages or self._request_in_progress:
            return  # the headers came; what follows has its own limits
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if an answer has begun
        code = code_for_status(status)
        detail = "Something went wrong on the server." if status >= 500 else _first_line(message or "Bad request.")
        response = problem_response(code, detail, instance=_path(request))
        response.force_close()
        return response


class _ProblemServer(web.Server):
    header_timeout = 0.0

    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner, with problem+json for requests the HTTP parser refuses, and the listener's timeouts."""

    async def _make_server(self) -> web.Server:
        listener = self.app.get(LISTENER)
        if listener is not None:
            self._kwargs["keepalive_timeout"] = listener.keepalive_timeout_seconds
        server = await super()._make_server()
        # The Server aiohttp built, with the connection handler swapped: same state, one method more.
        server.__class__ = _ProblemServer
        if listener is not None:
            server.header_timeout = listener.header_timeout_seconds
        return server


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:200] if message.strip() else "Bad request."


def _path(request: Any) -> str | None:
    try:  # the request line may be what could not be parsed
        return str(request.rel_url.path)[:200] or None
    except Exception:
        return None
