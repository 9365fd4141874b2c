"""Password hashing yields the cores to the event loop (issue 15): its threads run at a lower priority, and
by default there is one fewer of them than there are cores."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from sup.domain.passwords import HASH_NICENESS, PasswordHasher, default_hash_workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are set per thread on Linux")
async def test_hashing_threads_run_below_the_event_loop_and_still_hash():
    hasher = PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1, workers=2)
    try:
        stored = await hasher.hash("correct horse")
        assert await hasher.verify(stored, "correct horse")
        assert not await hasher.verify(stored, "wrong horse")
        loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        hashing_nice = hasher._pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
        assert hashing_nice == min(19, loop_nice + HASH_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice  # the loop's own is kept
    finally:
        hasher.close()


@pytest.mark.parametrize(("cores", "workers"), [(None, 1), (1, 1), (2, 1), (4, 3), (16, 15)])
def test_a_burst_of_logins_leaves_a_core_to_everything_else(monkeypatch, cores, workers):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_hash_workers() == workers
    hasher = PasswordHasher(memory_kib=19456, time_cost=2, parallelism=1)
    try:
        assert hasher._pool._max_workers == workers
    finally:
        hasher.close()
