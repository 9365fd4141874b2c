"""The transport under the REST client: one device's tokens, refreshes, retries and errors (docs/api.md).

`Transport` holds the tokens. It refreshes the access token itself when the server says `token_expired`
(once per request, one refresh at a time, the new refresh token handed to `on_tokens` before it is ever
used), retries idempotent requests after network errors, and turns every problem+json answer into an
`ApiError`. `SupHttp` (http.py) puts the API's endpoints (api/) on it.

Bytes travel as standard base64 in JSON (`b64e`, `b64d`); a message's `ciphertext` is decoded to bytes
by `decode_message`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack
from urllib.parse import quote

import aiohttp
import msgspec

log = logging.getLogger("sup.client")

API = "/api/v1"

# Refresh this long before the access token expires, so requests rarely meet token_expired.
REFRESH_MARGIN = 30.0
NETWORK_ATTEMPTS = 4
RETRY_STATUSES = {502, 503, 504}

_SESSION_ENDED = {"invalid_token", "refresh_token_reused", "invalid_refresh_token"}


class ApiError(Exception):
    """The server refused a request; `code` is the stable problem code (docs/api.md)."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body if body is not None else {}

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before trying again (429, 503), when the server said."""
        value = self.body.get("retry_after") if isinstance(self.body, dict) else None
        try:
            return float(value) if value is not None else None
        except ValueError:  # an HTTP date: not worth parsing for a hint
            return None


class SessionEnded(ApiError):
    """This device's session is over (logout, revocation, a reused refresh token): log in again."""


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str | bytes | None) -> bytes | None:
    if text is None or isinstance(text, bytes):
        return text
    return base64.b64decode(text, validate=True)


def decode_message(message: dict[str, Any]) -> dict[str, Any]:
    """A server message with its base64 `ciphertext` as bytes (in place, and returned)."""
    if isinstance(message.get("ciphertext"), str):
        message["ciphertext"] = b64d(message["ciphertext"])
    return message


class NewContent(TypedDict, total=False):
    """What a new message carries, as `POST /messages` and the `message.send` frame both take it
    (declared once for the REST and the socket `send_message`); None is the same as leaving it out.
    `recipients` maps device id to that device's ciphertext."""

    body: str | None
    ciphertext: bytes | None
    recipients: Mapping[str, bytes] | None
    media_id: str | None
    sticker_id: str | None
    reply_to: str | None


def message_content(**fields: Unpack[NewContent]) -> dict[str, Any]:
    """A new message's content as JSON: only the fields given, bytes in base64, `recipients` as a list."""
    content: dict[str, Any] = {}
    if (body := fields.get("body")) is not None:
        content["body"] = body
    if (ciphertext := fields.get("ciphertext")) is not None:
        content["ciphertext"] = b64e(ciphertext)
    if recipients := fields.get("recipients"):
        content["recipients"] = [{"device_id": d, "ciphertext": b64e(c)} for d, c in recipients.items()]
    references = {name: fields.get(name) for name in ("media_id", "sticker_id", "reply_to")}
    return {**content, **given(**references)}


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None: the optional parts of a request body, sent only when given."""
    return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float  # time.time() when the access token expires (client clock)


@dataclass(frozen=True)
class Session:
    """What register, login and refresh answer."""

    tokens: Tokens
    device_id: str
    user: dict[str, Any]

    @property
    def user_id(self) -> str:
        return self.user["id"]


TokenCallback = Callable[[Tokens], Awaitable[None]]


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def decoded(self) -> Any:
        """JSON answers decoded; other bodies as bytes; None for an empty one."""
        if self.raw and "json" in self.headers.get("Content-Type", ""):
            return msgspec.json.decode(self.raw)
        return self.raw or None


class Transport:
    """One device's authenticated access to the API: tokens, refresh, retries."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        tokens: Tokens | None = None,
        on_tokens: TokenCallback | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.tokens = tokens
        self.on_tokens = on_tokens
        self._refresh_lock = asyncio.Lock()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    @property
    def access_token(self) -> str | None:
        return self.tokens.access_token if self.tokens else None

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        idempotent: bool | None = None,
    ) -> Any:
        """Call the API; the decoded JSON answer, or None for 204.

        `path` is under /api/v1. Idempotent requests (GET, PUT, DELETE, PATCH by default, and
        sends carrying a client_id) are retried with backoff after network errors and 502-504.
        """
        body = msgspec.json.encode(json) if json is not None else None
        reply = await self.exchange(
            method, path, body=body, content_type="application/json", params=params, auth=auth, idempotent=idempotent
        )
        return reply.decoded

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Callable[[], AsyncIterable[bytes]] | None = None,
        content_type: str = "application/octet-stream",
        content_length: int | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        idempotent: bool | None = None,
    ) -> _Reply:
        """One API call with refresh and retries; the answer, or ApiError for a status >= 400.

        `body` is bytes, or a function making a fresh byte stream for each attempt (then give
        `content_length`, so the server can refuse an oversized upload before reading it).
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "PATCH")
        attempts = NETWORK_ATTEMPTS if idempotent else 1
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            sent_headers = {"Accept": "application/json", **(headers or {})}
            if body is not None:
                sent_headers["Content-Type"] = content_type
                if content_length is not None:
                    sent_headers["Content-Length"] = str(content_length)
            token_used = None
            if auth:
                token_used = await self.fresh_access_token()
                sent_headers["Authorization"] = f"Bearer {token_used}"
            data = body() if callable(body) else body
            try:
                async with self.session.request(
                    method, self.base_url + API + path, data=data, headers=sent_headers, params=query or None
                ) as response:
                    reply = _Reply(response.status, response.headers.copy(), await response.read())
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                if attempt >= attempts:
                    raise
                delay = backoff(attempt)
                log.info("%s %s failed (%s); retrying in %.1f s", method, path, exc, delay)
                await asyncio.sleep(delay)
                continue
            if reply.status < 400:
                return reply
            error = _api_error(reply.status, reply.decoded, reply.headers.get("Retry-After"))
            if auth and error.code == "token_expired" and not refreshed:
                refreshed = True
                await self.refresh_after(token_used)
                attempt -= 1  # a refresh is not a network failure
                continue
            if reply.status in RETRY_STATUSES and attempt < attempts:
                wait = error.retry_after
                await asyncio.sleep(min(wait, 30.0) if wait is not None else backoff(attempt))
                continue
            raise error

    async def fresh_access_token(self) -> str:
        """The access token, refreshed first if it expires within REFRESH_MARGIN seconds."""
        if self.tokens is None:
            raise SessionEnded(401, "unauthenticated", "Not logged in.")
        if self.tokens.expires_at - REFRESH_MARGIN < time.time():
            await self.refresh_after(self.tokens.access_token)
        return self.tokens.access_token

    async def refresh_after(self, stale_access: str | None) -> None:
        """Refresh unless someone already did since `stale_access` was used: one refresh at a time,
        because a refresh token presented twice ends the session."""
        async with self._refresh_lock:
            if self.tokens is not None and self.tokens.access_token != stale_access:
                return
            await self.refresh()

    async def refresh(self) -> Session:
        """POST /auth/refresh: new tokens for this device; the old refresh token is dead from now on.

        Never retried on a network error: if the server did receive it, the same token again
        would be taken for theft and end the session.
        """
        if self.tokens is None:
            raise SessionEnded(401, "unauthenticated", "Not logged in.")
        try:
            answer = await self.request(
                "POST", "/auth/refresh", json={"refresh_token": self.tokens.refresh_token}, auth=False
            )
        except ApiError as error:
            if error.code in _SESSION_ENDED:
                raise SessionEnded(error.status, error.code, error.detail, error.body) from None
            raise
        return await self._take_session(answer)

    async def _take_session(self, answer: dict[str, Any]) -> Session:
        tokens = Tokens(answer["access_token"], answer["refresh_token"], time.time() + answer["expires_in"])
        self.tokens = tokens
        if self.on_tokens is not None:
            await self.on_tokens(tokens)
        return Session(tokens, answer["device_id"], answer["user"])

    async def _paged(
        self, path: str, key: str = "items", cursor_param: str = "after", limit: int = 200
    ) -> AsyncIterator[dict[str, Any]]:
        cursor = None
        while True:
            page = await self.request("GET", path, params={"limit": limit, cursor_param: cursor})
            for item in page[key]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return


def segment(value: str) -> str:
    """A value placed in a URL path, quoted."""
    return quote(value, safe="")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def backoff(attempt: int) -> float:
    return min(5.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _api_error(status: int, body: Any, retry_after: str | None) -> ApiError:
    if isinstance(body, dict):
        code = str(body.get("code") or "unknown")
        detail = str(body.get("detail") or body.get("title") or "")
        if retry_after is not None:
            body = {**body, "retry_after": retry_after}
    else:
        code, detail = "unknown", (body.decode(errors="replace")[:200] if isinstance(body, bytes) else "")
        body = {"retry_after": retry_after} if retry_after is not None else {}
    cls = SessionEnded if code in _SESSION_ENDED else ApiError
    return cls(status, code, detail, body)
