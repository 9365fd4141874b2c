"""The built-in push provider: Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm (RFC 8291).

It is a plugin on the `send_push` hook like any other (registered by the App, without an entry
point), answering for providers "webpush" and "unifiedpush": a UnifiedPush distributor takes the
same encrypted request, so Android devices need no Google services. Requests go out through one
aiohttp session whose resolver refuses loopback, private, link-local and multicast addresses
(sup/domain/pushtargets.py) at the moment each connection is made, redirects are not followed and
no proxy from the environment is used: the endpoint a device chose cannot steer SUP into its own
network, even if its DNS changes after registration.
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import http_ece
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from sup.config import Config
from sup.domain.pushtargets import EndpointPolicy, EndpointRefused
from sup.plugins.hookspecs import PushDevice, PushPayload, PushResult, hookimpl

PROVIDERS = ("webpush", "unifiedpush")
PLAINTEXT_SIZE = 128  # every payload is padded to this: its length tells nothing
TOKEN_SECONDS = 12 * 3600  # a VAPID token lives this long (RFC 8292: at most 24 hours)
TOPIC = "sup-new"  # RFC 8030 Topic: a push service keeps only the newest undelivered one per device


class _Refused(OSError):
    """A connection the address policy refused (an OSError, so aiohttp reports it as a connect error)."""


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then refuses the whole name if any address it has is not allowed."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        try:
            self._policy.check_addresses(host, [ipaddress.ip_address(r["host"].split("%", 1)[0]) for r in found])
        except EndpointRefused as exc:
            raise _Refused(str(exc)) from None
        return found

    async def close(self) -> None:
        await self._inner.close()


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def plaintext(payload: PushPayload) -> bytes:
    """What the device decrypts: that something is new, and where. Never content, never a sender."""
    body: dict[str, Any] = {"type": "new", "kind": payload.kind}
    if payload.chat_id:
        body["chat_id"] = payload.chat_id
    data = json.dumps(body, separators=(",", ":")).encode()
    return data + b" " * max(0, PLAINTEXT_SIZE - len(data))


def encrypt(data: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291: ECDH with a fresh key pair of ours and the device's key, mixed with its auth secret."""
    return http_ece.encrypt(
        data,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=_b64url(p256dh),
        auth_secret=_b64url(auth),
        version="aes128gcm",
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def result_of(status: int, retry_after: str | None = None, detail: str = "") -> PushResult:
    """What a push service's status means for the subscription (RFC 8030 section 5, RFC 8292 section 4)."""
    if 200 <= status < 300:
        return PushResult("delivered", status)
    if status in (404, 410):
        return PushResult("gone", status, detail=detail)
    if status == 429 or status >= 500:
        return PushResult("retry", status, _retry_after(retry_after), detail)
    return PushResult("rejected", status, detail=detail)


def contact(config: Config) -> str:
    """The VAPID `sub`: whom a push service may write to about this server (RFC 8292 section 2.1)."""
    if config.push.contact:
        return config.push.contact
    public = config.server.public_url.rstrip("/")
    return public if public.startswith("https://") else "mailto:postmaster@localhost"


class WebPushSender:
    def __init__(self, vapid_key: ec.EllipticCurvePrivateKey, contact: str, policy: EndpointPolicy, timeout: float):
        self._vapid = Vapid02(private_key=vapid_key)
        self._contact = contact
        self._policy = policy
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, tuple[float, str]] = {}  # audience -> (expiry, Authorization header)

    @hookimpl
    async def startup(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), limit=256, limit_per_host=64)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            trust_env=False,  # no HTTP(S)_PROXY: the address check must see the real destination
        )

    @hookimpl
    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def authorization(self, endpoint: str) -> str:
        """`vapid t=<JWT>, k=<public key>` for the endpoint's origin, signed anew when it nears expiry."""
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and cached[0] - now > 3600:
            return cached[1]
        expiry = int(now) + TOKEN_SECONDS
        header = self._vapid.sign({"aud": audience, "exp": expiry, "sub": self._contact})["Authorization"]
        if len(self._tokens) > 10_000:  # push services are few; this only bounds memory
            self._tokens.clear()
        self._tokens[audience] = (expiry, header)
        return header

    @hookimpl(trylast=True)  # a plugin for another kind of push goes first
    async def send_push(self, device: PushDevice, payload: PushPayload) -> PushResult | None:
        if device.provider not in PROVIDERS:
            return None
        if self._session is None:
            return PushResult("retry", detail="the Web Push sender is not started")
        try:
            target = self._policy.parse(device.endpoint)
            if target.literal is not None:  # aiohttp connects to an address literal without resolving
                self._policy.check_addresses(target.host, [target.literal])
        except EndpointRefused as exc:
            return PushResult("rejected", detail=f"endpoint refused: {exc}")
        except Exception as exc:  # a DomainError from parse: the settings changed since it registered
            return PushResult("rejected", detail=f"endpoint refused: {exc}")
        body = encrypt(plaintext(payload), device.keys["p256dh"], device.keys["auth"])
        headers = {
            "Authorization": self.authorization(device.endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(payload.ttl_seconds),
            "Urgency": payload.urgency,
            "Topic": TOPIC,
        }
        try:
            async with self._session.post(device.endpoint, data=body, headers=headers, allow_redirects=False) as resp:
                detail = (await resp.content.read(512)).decode("utf-8", "replace") if resp.status >= 300 else ""
                return result_of(resp.status, resp.headers.get("Retry-After"), detail)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused) or isinstance(exc.__cause__, _Refused):
                return PushResult("rejected", detail=f"endpoint refused: {exc.os_error}")
            return PushResult("retry", detail=f"cannot connect: {exc}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return PushResult("retry", detail=f"{type(exc).__name__}: {exc}")
