"""Rate limits on authentication: per IP and per account, 429 with Retry-After."""

from __future__ import annotations

import pytest

from sup.bus.ratelimit import MemoryRateLimiter
from tests.conftest import new_username


@pytest.fixture(scope="module")
async def limited(server_factory):
    return await server_factory(
        SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_AUTH_PER_IP="8", SUP_RATELIMIT_AUTH_PER_ACCOUNT="3"
    )


async def test_per_account_limit_on_failed_logins(limited):
    api = limited.api
    account = await api.register()
    statuses = []
    for _ in range(4):
        reply = await api.post("/api/v1/auth/login", json={"username": account.username, "password": "wrong pw!"})
        statuses.append(reply.status)
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429
    assert reply.code == "rate_limited"
    assert int(reply.headers["Retry-After"]) >= 1
    # Even the right password waits now: the account is being guessed at.
    right = await api.login(account)
    assert right.status == 429


async def test_per_ip_limit(limited):
    api = limited.api
    seen = set()
    for _ in range(12):
        reply = await api.post("/api/v1/auth/login", json={"username": new_username(), "password": "wrong pw!"})
        seen.add(reply.status)
    assert 429 in seen


async def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(server_factory):
    # The test client connects from 127.0.0.1; with no trusted proxies a spoofed header changes nothing.
    server = await server_factory(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_AUTH_PER_IP="2")
    statuses = []
    for i in range(4):
        reply = await server.api.post(
            "/api/v1/auth/login",
            json={"username": new_username(), "password": "wrong pw!"},
            headers={"X-Forwarded-For": f"10.0.0.{i}"},
        )
        statuses.append(reply.status)
    assert 429 in statuses


async def test_trusted_proxy_forwards_the_client_ip(server_factory):
    server = await server_factory(
        SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_AUTH_PER_IP="2", SUP_SERVER_TRUSTED_PROXIES="127.0.0.1"
    )
    for i in range(6):
        reply = await server.api.post(
            "/api/v1/auth/login",
            json={"username": new_username(), "password": "wrong pw!"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        )
        assert reply.status == 401  # each client IP has its own budget


async def test_gcra_allows_a_burst_then_the_rate():
    now = [1000.0]
    limiter = MemoryRateLimiter(monotonic=lambda: now[0])
    assert [await limiter.hit("k", 3, 60) for _ in range(3)] == [0, 0, 0]
    wait = await limiter.hit("k", 3, 60)
    assert 19 < wait <= 20
    now[0] += 20
    assert await limiter.hit("k", 3, 60) == 0
    assert await limiter.hit("k", 3, 60) > 0
    assert await limiter.hit("other", 3, 60) == 0
    await limiter.reset("k")
    assert await limiter.hit("k", 3, 60) == 0


async def test_gcra_memory_is_bounded():
    now = [0.0]
    limiter = MemoryRateLimiter(monotonic=lambda: now[0], max_keys=100)
    for i in range(1000):
        await limiter.hit(f"k{i}", 5, 60)
        now[0] += 0.001
    assert len(limiter._tat) <= 101
