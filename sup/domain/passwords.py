"""argon2id password hashing, off the event loop, with bounded concurrency.

argon2-cffi releases the GIL while hashing, so a small thread pool computes hashes in
parallel while the event loop keeps serving. The pool size bounds both CPU and memory
(each hash holds `memory_kib`); requests beyond it wait in the pool's queue.

The hashing threads run at a lower scheduling priority (nice HASH_NICENESS, Linux sets it per
thread): during a burst of logins they would otherwise take the cores from the event loop as
equals, and every other request waited for a core (/health p99 13x its idle value at 50 logins
in parallel). Lowered, they use what the loop leaves; logins are no slower on an idle core.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def _give_hash_buffers_back() -> None:
    """Make glibc map every block of 16 MiB or more on its own, and unmap it when freed.

    By default glibc raises its mmap threshold after the first big free, and from then on each
    argon2 buffer (memory_kib, at least 19 MiB) lives in a per-thread arena that keeps it:
    RSS stayed ~40 MiB higher after the first logins, for good. A fixed threshold returns the
    memory after every hash. The price is fresh pages per hash: ~8 ms more CPU per login
    (measured 27.5 -> 35.4 ms); logins are rare, memory on a small server is not.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 16 << 20)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
HASH_NICENESS = 10  # CFS gives a nice-0 thread ~9x the CPU of a nice-10 one when they compete


def _lower_priority() -> None:
    """Run in each hashing thread as it starts: only that thread is lowered (its Linux thread id)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: hash at normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


def default_hash_workers() -> int:
    """One hashing thread per core but one (at least one): a burst of logins leaves a core to the event
    loop and the database, which a lower priority alone does not (the database is another process).
    Measured on 2 cores, 50 logins in parallel: message sends' p99 on Postgres x2.7-3.0 of idle with
    two threads, x1.3-1.8 with one, at about the same logins per second (`bench/logins.py`)."""
    return max(1, (os.cpu_count() or 1) - 1)


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int, workers: int = 0) -> None:
        _give_hash_buffers_back()
        self._argon2 = _Argon2(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)
        self._pool = ThreadPoolExecutor(
            max_workers=workers or default_hash_workers(), thread_name_prefix="argon2", initializer=_lower_priority
        )
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
