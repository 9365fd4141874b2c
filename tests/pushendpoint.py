"""A push service for tests: a small aiohttp server on loopback, playing the browser vendor's part.

Each device gets its own subscription here (a P-256 key pair and an auth secret, as a browser makes
them) and its own URL. A push that arrives is checked as a real push service and user agent would:
the VAPID JWT (RFC 8292: ES256 signature with the key in `k`, `aud` this origin, `exp` within 24
hours, a `sub`), then the body decrypted (RFC 8291, aes128gcm) with the subscription's private key.
What it holds is recorded for the test to inspect. A test may script the answers (503, 429, 410...).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Received:
    at: float  # time.time() on arrival
    headers: dict[str, str]
    claims: dict[str, Any]
    vapid_key: str  # the `k` of the Authorization header
    plaintext: bytes
    message: dict[str, Any]


@dataclass
class Device:
    """One browser's push subscription."""

    name: str
    url: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    received: list[Received] = field(default_factory=list)
    requests: int = 0  # every POST, whatever was answered
    answers: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)  # scripted, then 201
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)

    def subscription(self) -> dict[str, str]:
        return {"endpoint": self.url, "p256dh": self.p256dh, "auth": b64url(self.auth)}

    def answer(self, status: int, **headers: str) -> None:
        self.answers.append((status, headers))


class BadPush(Exception):
    pass


def verify_vapid(authorization: str, origin: str) -> tuple[dict[str, Any], str]:
    """The JWT's claims and the public key, once the signature and claims check out (RFC 8292 section 3)."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise BadPush(f"Authorization scheme {scheme!r}, not vapid")
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    token, key = fields["t"], fields["k"]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    head, body, signature = token.split(".")
    header = json.loads(unb64url(head))
    if header.get("alg") != "ES256":
        raise BadPush(f"JWT alg {header.get('alg')}")
    raw = unb64url(signature)
    if len(raw) != 64:
        raise BadPush("ES256 signature is not 64 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    claims = json.loads(unb64url(body))
    if claims.get("aud") != origin:
        raise BadPush(f"aud {claims.get('aud')!r}, expected {origin!r}")
    now = time.time()
    if not now < claims["exp"] <= now + 86400:
        raise BadPush(f"exp {claims['exp']} is not within 24 hours from now")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise BadPush(f"sub {claims.get('sub')!r}")
    return claims, key


class PushEndpoint:
    """The push service on 127.0.0.1; `device()` makes a subscription on it."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.errors: list[str] = []
        self._runner: web.AppRunner | None = None
        self.origin = ""

    async def start(self) -> PushEndpoint:
        app = web.Application()
        app.router.add_post("/push/{name}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> PushEndpoint:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def device(self, name: str | None = None) -> Device:
        name = name or secrets.token_hex(8)
        device = Device(name, f"{self.origin}/push/{name}")
        self.devices[name] = device
        return device

    async def _receive(self, request: web.Request) -> web.Response:
        device = self.devices.get(request.match_info["name"])
        if device is None:
            return web.Response(status=404)
        device.requests += 1
        body = await request.read()
        if device.answers:
            status, headers = device.answers.popleft()
            return web.Response(status=status, headers=headers)
        try:
            # aud is the origin the request went to (by name or by address).
            claims, key = verify_vapid(request.headers["Authorization"], f"http://{request.host}")
            if request.headers.get("Content-Encoding") != "aes128gcm":
                raise BadPush(f"Content-Encoding {request.headers.get('Content-Encoding')}")
            if "TTL" not in request.headers:
                raise BadPush("no TTL header (RFC 8030 requires one)")
            plaintext = http_ece.decrypt(body, private_key=device.private_key, auth_secret=device.auth)
            message = json.loads(plaintext)
        except Exception as exc:
            self.errors.append(f"{device.name}: {type(exc).__name__}: {exc}")
            return web.Response(status=400, text=str(exc))
        device.received.append(Received(time.time(), dict(request.headers), claims, key, plaintext, message))
        device.arrived.set()
        return web.Response(status=201)
