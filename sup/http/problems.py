"""Errors as application/problem+json (RFC 9457), with the status of each code from sup/transport/statuses.py."""

from __future__ import annotations

import asyncio
import logging
import math
from http import HTTPStatus

import msgspec
from aiohttp import web

from sup.errors import Code, DomainError, RateLimited
from sup.transport.statuses import STATUS

log = logging.getLogger("sup.http")


# Codes for errors aiohttp raises itself (routing, body limits).
_FROM_HTTP_STATUS = {
    400: Code.INVALID_REQUEST,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.BODY_TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}

_TOKEN_CODES = {Code.UNAUTHENTICATED, Code.INVALID_TOKEN, Code.TOKEN_EXPIRED}


class Problem(msgspec.Struct, omit_defaults=True):
    """An error (RFC 9457). `code` is stable and meant for programs; `detail` for people."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    field: str | None = None


def problem_response(
    code: Code,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    field: str | None = None,
    extra: dict[str, object] | None = None,
) -> web.Response:
    status = STATUS[code]
    body = Problem(
        type=f"urn:sup:problem:{code.value}",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code.value,
        instance=instance,
        field=field,
    )
    encoded = msgspec.json.encode(body)
    if extra:
        # Extension members (RFC 9457 section 3.2), e.g. the device lists of a device mismatch.
        encoded = msgspec.json.encode({**msgspec.json.decode(encoded), **extra})
    return web.Response(
        body=encoded,
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


def from_domain_error(error: DomainError, path: str) -> web.Response:
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if error.code in _TOKEN_CODES:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if error.code != Code.UNAUTHENTICATED else "Bearer"
    extra = dict(error.extra)
    field = extra.pop("field", None)
    if error.code == Code.RANGE_NOT_SATISFIABLE and "content_range" in extra:
        headers["Content-Range"] = extra.pop("content_range")
    return problem_response(
        error.code,
        error.detail,
        instance=path,
        headers=headers,
        field=field if isinstance(field, str) else None,
        extra=extra,
    )


# Never sent (there is no one to send it to): what the access log shows for a request whose
# client closed its connection first, as nginx logs it.
CLIENT_CLOSED_REQUEST = 499


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def code_for_status(status: int) -> Code:
    """The code of an error aiohttp raised itself, by its status."""
    return _FROM_HTTP_STATUS.get(status) or (Code.INTERNAL if status >= 500 else Code.INVALID_REQUEST)


@web.middleware
async def problems_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        return from_domain_error(error, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = code_for_status(exc.status)
        detail = {
            Code.NOT_FOUND: "There is nothing at this path.",
            Code.METHOD_NOT_ALLOWED: f"{request.method} is not allowed here.",
            Code.BODY_TOO_LARGE: "The request body is too large.",
        }.get(code, exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem_response(code, detail, instance=request.path, headers=headers)
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        if _client_gone(request):
            # A closed tab, a cancelled download, a phone out of coverage: not an error of ours.
            log.debug("the client went away during %s %s", request.method, request.path)
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        # A reset from a backend SUP talks to (S3, Redis) is an error like any other.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(Code.INTERNAL, "Something went wrong on the server.", instance=request.path)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(Code.INTERNAL, "Something went wrong on the server.", instance=request.path)
