"""Who is online: per process in memory, or across processes in Redis.

In Redis each user has a hash with one field per process holding that process's
connection count and an expiry; a process that dies stops refreshing, so its fields
lapse instead of leaving users online forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Protocol

from sup.bus.events import redis_name
from sup.bus.process import new_origin, stop_task

# A process refreshes its entries this often; an entry lives three times as long.
REFRESH_SECONDS = 10
TTL_SECONDS = 3 * REFRESH_SECONDS


class PresenceTracker(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def connected(self, user_id: str) -> bool:
        """Count a new connection; True if the user was offline everywhere until now."""

    async def disconnected(self, user_id: str) -> bool:
        """Count a closed connection; True if the user is now offline everywhere."""

    async def is_online(self, user_id: str) -> bool: ...


class MemoryPresence:
    def __init__(self) -> None:
        self._local: Counter[str] = Counter()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def connected(self, user_id: str) -> bool:
        self._local[user_id] += 1
        return self._local[user_id] == 1

    async def disconnected(self, user_id: str) -> bool:
        self._local[user_id] -= 1
        if self._local[user_id] <= 0:
            del self._local[user_id]
            return True
        return False

    async def is_online(self, user_id: str) -> bool:
        return self._local[user_id] > 0


class RedisPresence(MemoryPresence):
    def __init__(self, url: str, namespace: str) -> None:
        super().__init__()
        self._url = url
        self._namespace = namespace
        redis_name(namespace, "presence")  # refuse an empty namespace now, not at the first connection
        self._origin = new_origin()
        self._redis = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self._url, socket_timeout=5, socket_connect_timeout=5)
        self._refresher = asyncio.create_task(self._refresh(), name="presence-refresh")

    async def close(self) -> None:
        await stop_task(self._refresher)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                for user_id in list(self._local):
                    await self._redis.hdel(self._key(user_id), self._origin)
            await self._redis.aclose()

    def _key(self, user_id: str) -> str:
        return redis_name(self._namespace, "presence", user_id)

    async def _others_online(self, user_id: str) -> bool:
        entries = await self._redis.hgetall(self._key(user_id))
        now = time.time()
        return any(field.decode() != self._origin and float(expiry) > now for field, expiry in entries.items())

    async def connected(self, user_id: str) -> bool:
        first_here = await super().connected(user_id)
        if not first_here:
            return False
        try:
            elsewhere = await self._others_online(user_id)
            await self._mark(user_id)
        except Exception:  # Redis down: presence degrades to this process only
            return True
        return not elsewhere

    async def disconnected(self, user_id: str) -> bool:
        gone_here = await super().disconnected(user_id)
        if not gone_here:
            return False
        try:
            await self._redis.hdel(self._key(user_id), self._origin)
            return not await self._others_online(user_id)
        except Exception:
            return True

    async def is_online(self, user_id: str) -> bool:
        if await super().is_online(user_id):
            return True
        try:
            return await self._others_online(user_id)
        except Exception:
            return False

    async def _mark(self, user_id: str) -> None:
        key = self._key(user_id)
        await self._redis.hset(key, self._origin, time.time() + TTL_SECONDS)
        await self._redis.expire(key, TTL_SECONDS)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for user_id in list(self._local):
                with contextlib.suppress(Exception):
                    await self._mark(user_id)


def open_presence(url: str, namespace: str = "") -> PresenceTracker:
    return RedisPresence(url, namespace) if url.startswith(("redis://", "rediss://")) else MemoryPresence()
