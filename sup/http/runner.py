"""The AppRunner SUP serves with: requests aiohttp refuses itself get problem+json too.

A request line over 8 KiB, too many or too long headers, or bytes that are no HTTP at all
are refused by aiohttp's parser before any route or middleware runs; its answer was a plain
text 400. aiohttp offers no hook there, so the connection handler is a subclass whose
`handle_error` answers like every other error of the API (and still logs, and still closes
the connection, as aiohttp's does).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sup.http.problems import code_for_status, problem_response


class _ProblemRequestHandler(RequestHandler):
    __slots__ = ()

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
    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner, with problem+json for requests the HTTP parser refuses."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The Server aiohttp built, with the connection handler swapped: same state, one method more.
        server.__class__ = _ProblemServer
        return server


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:200] if message.strip() else "Bad request."


def _path(request: Any) -> str | None:
    try:  # the request line may be what could not be parsed
        return str(request.rel_url.path)[:200] or None
    except Exception:
        return None
