"""Rate limits on authentication: per IP and per account, 429 with Retry-After."""

from __future__ import annotations

import time

import pyotp
import pytest

from sup.bus.ratelimit import MemoryRateLimiter
from tests.conftest import new_username


@pytest.fixture(scope="module")
async def limited(server_factory):
    return await server_factory(
        SUP_RATELIMIT_ENABLED="true",
        SUP_RATELIMIT_AUTH_PER_IP="8",
        SUP_RATELIMIT_AUTH_PER_ACCOUNT="3",
        SUP_RATELIMIT_AUTH_FAILURES_PER_ACCOUNT_IP="3",
    )


async def test_failed_logins_from_one_address_are_refused_for_that_address(limited):
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


LOGIN = "/api/v1/auth/login"


@pytest.fixture(scope="module")
async def behind_proxy(server_factory):
    """Clients at many addresses (the test client is a trusted proxy naming them), default login limits."""
    return await server_factory(
        SUP_RATELIMIT_ENABLED="true", SUP_SERVER_TRUSTED_PROXIES="127.0.0.1", SUP_RATELIMIT_AUTH_PER_IP="1000"
    )


async def _login(api, username: str, password: str, address: str, **extra):
    started = time.monotonic()
    reply = await api.post(
        LOGIN, json={"username": username, "password": password, **extra}, headers={"X-Forwarded-For": address}
    )
    return reply, time.monotonic() - started


async def test_guessing_from_anywhere_never_locks_the_owner_out(behind_proxy):
    api = behind_proxy.api
    owner, other = await api.register(), await api.register()
    home, attacker = "203.0.113.7", "198.51.100.1"
    assert (await _login(api, owner.username, owner.password, home))[0].status == 200
    # Eleven wrong passwords: the attacker's address is stopped for this account...
    statuses = [(await _login(api, owner.username, "wrong pw!", attacker))[0].status for _ in range(11)]
    assert statuses == [401] * 10 + [429], statuses
    # ...but the owner gets in from home,
    reply, _ = await _login(api, owner.username, owner.password, home)
    assert reply.status == 200, reply.body
    # from the attacker's address with a refresh token of one of the account's devices (not another's),
    stranger, _ = await _login(api, owner.username, owner.password, attacker, refresh_token=other.refresh_token)
    assert stranger.status == 429
    mine, _ = await _login(api, owner.username, owner.password, attacker, refresh_token=owner.refresh_token)
    assert mine.status == 200, mine.body
    # and from a new address, slowed down but not refused.
    reply, took = await _login(api, owner.username, owner.password, "192.0.2.50")
    assert reply.status == 200, reply.body
    assert took >= 0.5  # auth_max_delay (3 s) at most, while the account is being guessed at


async def test_a_known_address_is_let_through_even_when_others_there_guess(behind_proxy):
    api = behind_proxy.api
    owner = await api.register()
    shared = "203.0.113.80"  # a household or office behind one address
    assert (await _login(api, owner.username, owner.password, shared))[0].status == 200
    for _ in range(12):
        reply, _ = await _login(api, owner.username, "wrong pw!", shared)
        assert reply.status == 401  # verified, not refused: the right password would get in
    assert (await _login(api, owner.username, owner.password, shared))[0].status == 200


async def test_successful_logins_are_not_counted(behind_proxy):
    api = behind_proxy.api
    owner = await api.register()
    for _ in range(25):  # more than every failure limit
        reply, _ = await _login(api, owner.username, owner.password, "192.0.2.77")
        assert reply.status == 200, reply.body


async def test_failed_logins_from_one_address_against_many_accounts_are_limited(behind_proxy):
    api = behind_proxy.api
    statuses = [(await _login(api, new_username(), "wrong pw!", "198.51.100.200"))[0].status for _ in range(24)]
    # 20 a minute: the budget refills one every 3 s, which a slow run of 20 hashed logins can earn back once
    assert statuses[:20] == [401] * 20 and statuses[20:].count(429) >= 3, statuses


async def test_wrong_second_factors_count_as_failures(behind_proxy):
    api = behind_proxy.api
    owner = await api.register()
    enable = await api.post("/api/v1/auth/2fa/enable", json={"password": owner.password}, token=owner.access_token)
    code = pyotp.TOTP(enable.body["secret"]).now()
    assert (await api.post("/api/v1/auth/2fa/verify", json={"code": code}, token=owner.access_token)).status == 200
    statuses = [
        (await _login(api, owner.username, owner.password, "198.51.100.99", totp_code="000000"))[0].status
        for _ in range(11)
    ]
    assert statuses == [401] * 10 + [429]


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
