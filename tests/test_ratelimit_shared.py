"""Rate limits on their backend interface: one behavioural suite for the memory and the Redis
limiter, two app instances spending one budget through Redis, and what happens when Redis is down.

The Redis limiter is tested against the running Redis (skipped without one, failed with CI=true),
each test under its own key prefix; the outage tests start a redis-server of their own.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sup.bus.ratelimit import RETRY_SECONDS, MemoryRateLimiter, RedisRateLimiter, open_rate_limiter
from sup.domain.limits import Family
from sup.http.routes import ROUTES
from tests.conftest import Server, new_username, plain_group, require_redis, say


class Shared:
    """Makes limiters that count together: one memory limiter, or Redis clients under one prefix
    (each client stands for one process)."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind, self.url = kind, url
        self.prefix = f"sup-test-{uuid.uuid4().hex[:8]}:"
        self.memory = MemoryRateLimiter()
        self.opened: list[RedisRateLimiter] = []

    async def new(self) -> MemoryRateLimiter | RedisRateLimiter:
        if self.kind == "memory":
            return self.memory
        limiter = RedisRateLimiter(self.url or "", self.prefix)
        await limiter.start()
        self.opened.append(limiter)
        return limiter


@pytest.fixture(params=["memory", "redis"])
async def shared(request):
    url = await require_redis() if request.param == "redis" else None
    made = Shared(request.param, url)
    yield made
    for limiter in made.opened:
        await limiter.close()


async def test_a_burst_of_limit_then_a_wait(shared):
    limiter = await shared.new()
    assert [await limiter.hit("k", 3, 60) for _ in range(3)] == [0, 0, 0]
    wait = await limiter.hit("k", 3, 60)
    assert 19 < wait <= 20  # one request back every period / limit
    assert 0 < await limiter.hit("k", 3, 60) <= wait  # a refusal spends nothing
    assert await limiter.hit("other", 3, 60) == 0


async def test_the_rate_refills(shared):
    limiter = await shared.new()
    assert [await limiter.hit("k", 2, 0.4) for _ in range(2)] == [0, 0]
    wait = await limiter.hit("k", 2, 0.4)
    assert 0 < wait <= 0.2
    await asyncio.sleep(wait + 0.02)
    assert await limiter.hit("k", 2, 0.4) == 0


async def test_peek_counts_nothing(shared):
    limiter = await shared.new()
    for _ in range(5):
        assert await limiter.peek("k", 2, 60) == 0
    assert [await limiter.hit("k", 2, 60) for _ in range(2)] == [0, 0]
    assert 29 < await limiter.peek("k", 2, 60) <= 30
    assert 29 < await limiter.hit("k", 2, 60) <= 30


async def test_reset_gives_the_whole_burst_back(shared):
    limiter = await shared.new()
    assert [await limiter.hit("k", 2, 60) for _ in range(3)][2] > 0
    await limiter.reset("k")
    assert [await limiter.hit("k", 2, 60) for _ in range(2)] == [0, 0]
    await limiter.reset("never-seen")  # nothing to forget is fine


async def test_concurrent_hits_from_several_processes_spend_one_budget(shared):
    processes = [await shared.new() for _ in range(4)]
    waits = await asyncio.gather(*[processes[i % 4].hit("k", 10, 60) for i in range(60)])
    assert sum(1 for w in waits if w == 0) == 10  # atomic: never an eleventh through a race


async def test_a_burst_of_requests_at_once_still_counts_in_redis():
    url = await require_redis()
    limiter = RedisRateLimiter(url, f"sup-test-{uuid.uuid4().hex[:8]}:")
    await limiter.start()
    try:
        # More at once than a process has Redis connections: they wait their turn, none is counted locally.
        waits = await asyncio.gather(*[limiter.hit("k", 10, 60) for _ in range(150)])
        assert limiter.shared
        assert sum(1 for w in waits if w == 0) == 10
    finally:
        await limiter.close()


async def test_redis_keys_are_namespaced_and_expire():
    url = await require_redis()
    import redis.asyncio as aioredis

    prefix = f"sup-test-{uuid.uuid4().hex[:8]}:"
    limiter = RedisRateLimiter(url, prefix)
    await limiter.start()
    client = aioredis.from_url(url)
    try:
        await limiter.hit("user:1", 4, 60)
        assert await client.keys(f"{prefix}*") == [f"{prefix}ratelimit:user:1".encode()]
        # Back to a full burst after one interval (60 / 4 s): the key is gone by then.
        assert 0 < await client.pttl(f"{prefix}ratelimit:user:1") <= 15_000
        # Another install's prefix: the same key is another budget.
        other = RedisRateLimiter(url, f"{prefix}other:")
        await other.start()
        assert await limiter.hit("user:1", 1, 60) > 0
        assert await other.hit("user:1", 1, 60) == 0
        await other.close()
    finally:
        await client.delete(*await client.keys(f"{prefix}*"))
        await client.aclose()
        await limiter.close()


def test_the_bus_url_picks_the_limiter():
    assert isinstance(open_rate_limiter("memory://"), MemoryRateLimiter)
    assert isinstance(open_rate_limiter("redis://127.0.0.1:6379/0"), RedisRateLimiter)
    with pytest.raises(ValueError, match="memory:// or redis://"):
        open_rate_limiter("kafka://x")


# -- Redis down: fail soft ---------------------------------------------------------------------


async def test_with_redis_down_each_process_counts_by_itself_until_redis_is_back(redis_server):
    now = [1000.0]
    limiter = RedisRateLimiter(redis_server.url, "sup-test:", timeout=0.5, monotonic=lambda: now[0])
    await limiter.start()
    try:
        assert [await limiter.hit("k", 3, 60) for _ in range(2)] == [0, 0]
        await redis_server.stop()
        # Not refused for Redis being down (fail closed), nor let through without limit (fail open):
        # the budget, counted in this process.
        assert [await limiter.hit("k", 3, 60) for _ in range(3)] == [0, 0, 0]
        assert await limiter.hit("k", 3, 60) > 0
        assert not limiter.shared
        await redis_server.start()
        assert not limiter.shared  # not asked again before RETRY_SECONDS: one failure per interval
        now[0] += RETRY_SECONDS
        assert limiter.shared
        # A fresh redis-server (no persistence) forgot the two hits: the whole burst again.
        assert [await limiter.hit("k", 3, 60) for _ in range(3)] == [0, 0, 0]
        assert await limiter.hit("k", 3, 60) > 0
        assert limiter.shared
    finally:
        await limiter.close()


async def test_a_redis_that_hangs_is_treated_as_down_not_waited_on():
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the commands, never answers

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", "sup-test:", timeout=0.3)
    await limiter.start()
    try:
        # Each request would otherwise wait for ever; the first waits one timeout, the rest count locally.
        waits = await asyncio.wait_for(asyncio.gather(*[limiter.hit("k", 3, 60) for _ in range(4)]), 10)
        assert sorted(waits)[:3] == [0, 0, 0] and sorted(waits)[3] > 0
        assert not limiter.shared
    finally:
        await limiter.close()
        silent.close()


# -- the app: every route has a budget, and processes share them ----------------------------------


def test_every_route_spends_a_budget_and_the_costly_ones_their_own():
    families = {(route.method, route.path): route.family for route in ROUTES}
    assert families[("POST", "/api/v1/messages")] is Family.SENDS
    assert families[("POST", "/api/v1/messages/{message_id}/forward")] is Family.SENDS
    assert families[("GET", "/api/v1/search/messages")] is Family.SEARCH
    assert families[("POST", "/api/v1/chat-invites/preview")] is Family.JOINS
    assert families[("GET", "/api/v1/crypto/prekeys/{user_id}/all")] is Family.PREKEY_FETCHES
    assert families[("PUT", "/api/v1/media/uploads/{upload_id}/chunks/{index}")] is Family.UPLOADS
    assert families[("GET", "/api/v1/ws")] is Family.ANONYMOUS
    assert families[("GET", "/api/v1/users/{user_id}")] is Family.REQUESTS
    for route in ROUTES:
        if route.family is Family.ANONYMOUS:
            assert not route.auth, f"{route.method} {route.path} has a user to count against"


SEND_LIMIT = "4"


def _limited(bus: str) -> dict[str, str]:
    return {
        "SUP_RATELIMIT_ENABLED": "true",
        "SUP_RATELIMIT_SENDS_PER_USER": SEND_LIMIT,
        "SUP_RATELIMIT_SEARCH_PER_USER": "2",
        "SUP_RATELIMIT_REQUESTS_PER_USER": "1000",
        "SUP_RATELIMIT_REQUESTS_PER_IP": "1000",
        "SUP_BUS_URL": bus,
        # Tokens from one instance work on the other, as with N processes of one install.
        "SUP_SECRET_KEY": "ratelimit-tests-shared-secret-0123456789",
    }


async def _sends_until_refused(servers: list[Server], token_owner, chat: str, tries: int = 10) -> list[int]:
    statuses = []
    for i in range(tries):
        statuses.append((await say(servers[i % len(servers)].api, token_owner, chat, f"m{i}")).status)
    return statuses


async def test_two_instances_on_one_redis_spend_one_send_budget(server_factory):
    url = await require_redis()
    a, b = await server_factory(**_limited(url)), await server_factory(**_limited(url))
    alice, bob = await a.api.register(), await a.api.register()
    chat = await plain_group(a.api, alice, bob)
    statuses = await _sends_until_refused([a, b], alice, chat)
    assert statuses[:4] == [201] * 4 and statuses[4:] == [429] * 6, statuses
    refused = await say(b.api, alice, chat, "one more")
    assert refused.code == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    # Per user: bob's budget is his own.
    assert (await say(b.api, bob, chat, "mine")).status == 201


async def test_with_a_memory_bus_each_instance_counts_by_itself(server_factory):
    a, b = await server_factory(**_limited("memory://")), await server_factory(**_limited("memory://"))
    alice, bob = await a.api.register(), await a.api.register()
    chat = await plain_group(a.api, alice, bob)
    statuses = await _sends_until_refused([a, b], alice, chat)
    assert statuses[:8] == [201] * 8 and statuses[8:] == [429] * 2, statuses


async def test_an_app_whose_redis_is_down_still_answers_and_still_limits(server_factory, redis_server):
    server = await server_factory(**_limited(redis_server.url))
    alice, bob = await server.api.register(), await server.api.register()
    chat = await plain_group(server.api, alice, bob)
    assert (await say(server.api, alice, chat, "before")).status == 201
    await redis_server.stop()
    statuses = await _sends_until_refused([server], alice, chat, tries=6)
    assert statuses == [201] * 4 + [429] * 2, statuses  # this process's own count of the budget


async def test_search_has_its_own_budget_and_other_routes_are_not_spent_by_it(server_factory):
    server = await server_factory(**_limited("memory://"))
    api = server.api
    alice = await api.register()
    search = [
        (await api.get("/api/v1/search/users", params={"q": new_username()}, token=alice.access_token)).status
        for _ in range(3)
    ]
    assert search == [200, 200, 429], search
    assert (await api.get("/api/v1/users/me", token=alice.access_token)).status == 200


async def test_every_other_route_has_a_budget_per_user_and_per_address(server_factory):
    server = await server_factory(
        SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_REQUESTS_PER_USER="3", SUP_RATELIMIT_REQUESTS_PER_IP="30"
    )
    api = server.api
    alice = await api.register()
    statuses = [(await api.get("/api/v1/users/me", token=alice.access_token)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses
    health = [(await api.get("/health")).status for _ in range(40)]  # anonymous: per address
    assert 429 in health and health[0] == 200
    upgrade = await api.get("/api/v1/ws")  # the WebSocket upgrade, before its handler
    assert upgrade.status == 429 and upgrade.code == "rate_limited"
