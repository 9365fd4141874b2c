"""argon2id password hashing, off the event loop, with bounded concurrency.

argon2-cffi releases the GIL while hashing, so a small thread pool computes hashes in
parallel while the event loop keeps serving. The pool size bounds both CPU and memory
(each hash holds `memory_kib`); requests beyond it wait in the pool's queue.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int, workers: int = 0) -> None:
        self._argon2 = _Argon2(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="argon2")
        # Verified when a username is unknown, so that case costs what a wrong password costs.
        self._dummy_hash = self._argon2.hash(os.urandom(16).hex())

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._argon2.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when the password matches; a None hash is checked against a dummy (always False)."""
        target = stored_hash or self._dummy_hash
        ok = await asyncio.get_running_loop().run_in_executor(self._pool, self._verify, target, password)
        return ok and stored_hash is not None

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
