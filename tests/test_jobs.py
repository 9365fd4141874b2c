"""The job queue and its scheduler, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from sup.clock import Clock
from sup.db import migrations
from sup.db.database import Database, open_database
from sup.db.jobs import MAX_ERROR_CHARS, DatabaseJobQueue, Job
from sup.jobs.scheduler import PERIODIC, JobSettings, PermanentJobError, Scheduler
from sup.observe.metrics import Metrics
from tests.conftest import MovableClock

# Short everything, so retries and polls take milliseconds.
FAST = JobSettings(
    poll_interval_seconds=0.05,
    timeout_seconds=5,
    backoff_base_seconds=0.02,
    backoff_cap_seconds=0.1,
    lease_margin_seconds=1,
    shutdown_grace_seconds=1,
)


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    await migrations.migrate_up(database, 0)
    yield database
    await database.close()


@pytest.fixture(autouse=True)
async def _no_jobs(db: Database) -> None:
    await db.execute("DELETE FROM jobs")


@pytest.fixture
async def schedulers() -> AsyncIterator[Callable[..., Scheduler]]:
    """Make schedulers (stopped again after the test)."""
    made: list[Scheduler] = []

    def make(db: Database, clock: Clock | None = None, **settings: object) -> Scheduler:
        clock = clock or Clock()
        scheduler = Scheduler(DatabaseJobQueue(db, clock), clock, replace(FAST, **settings))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        await scheduler.stop()


async def settled(queue: DatabaseJobQueue, job_id: str, timeout: float = 5.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await queue.get(job_id)
        assert job is not None
        if job.state in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job not finished: {job}"
        await asyncio.sleep(0.02)


def queue_of(scheduler: Scheduler) -> DatabaseJobQueue:
    return scheduler._queue  # type: ignore[return-value]


async def test_enqueue_and_run(db: Database, schedulers) -> None:
    # A long poll: only wake() can start the job this soon.
    scheduler = schedulers(db, poll_interval_seconds=30)
    seen: list[bytes] = []

    async def echo(payload: bytes) -> None:
        seen.append(payload)

    scheduler.register("echo", echo)
    await scheduler.start()
    started = time.monotonic()
    job_id = await scheduler.enqueue("echo", b"hello")
    job = await settled(queue_of(scheduler), job_id)
    assert time.monotonic() - started < 2
    assert (job.state, job.attempts, job.locked_by, job.kind) == ("done", 1, None, "echo")
    assert seen == [b"hello"]


async def test_enqueue_in_a_transaction(db: Database) -> None:
    queue = DatabaseJobQueue(db, Clock())
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            lost = await queue.enqueue("media", b"x", tx=tx)
            raise RuntimeError("the row that needed the job was not written")
    assert await queue.get(lost) is None

    async with db.transaction() as tx:
        kept = await queue.enqueue("media", b"y", tx=tx)
    # On SQLite this work runs in the writer's thread: enqueue must await only the transaction.
    also_kept = await db.run_in_transaction(lambda tx: queue.enqueue("media", b"z", tx=tx))
    assert [(await queue.get(i)).state for i in (kept, also_kept)] == ["queued", "queued"]


async def test_dedupe_key_holds_while_a_job_is_unfinished(db: Database) -> None:
    queue = DatabaseJobQueue(db, Clock())
    first = await queue.enqueue("media", b"1", dedupe_key="media:X")
    assert await queue.enqueue("media", b"2", dedupe_key="media:X") == first
    assert await queue.enqueue("media", b"3", dedupe_key="media:Y") != first
    [claimed] = await queue.claim("w", ["media"], 1, 10_000)
    assert claimed.id == first
    assert await queue.enqueue("media", b"4", dedupe_key="media:X") == first  # running still counts
    assert await queue.complete(first, worker_id="w")
    again = await queue.enqueue("media", b"5", dedupe_key="media:X")
    assert again != first
    assert await db.fetchval("SELECT COUNT(*) FROM jobs WHERE dedupe_key = $1", "media:X") == 2


async def test_retry_with_backoff_then_success(db: Database, schedulers) -> None:
    scheduler = schedulers(db, backoff_base_seconds=0.1, backoff_cap_seconds=1)
    runs: list[float] = []

    async def flaky(payload: bytes) -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise ConnectionError("upstream down")

    scheduler.register("flaky", flaky, max_attempts=5)
    await scheduler.start()
    job = await settled(queue_of(scheduler), await scheduler.enqueue("flaky"))
    assert (job.state, job.attempts) == ("done", 3)
    assert "ConnectionError: upstream down" in job.last_error
    # Jittered within [half, all] of 0.1 s, then of 0.2 s.
    assert runs[1] - runs[0] >= 0.05 - 0.01
    assert runs[2] - runs[1] >= 0.1 - 0.01


async def test_runs_are_counted_by_kind_and_outcome_and_the_queue_by_kind(db: Database, schedulers) -> None:
    scheduler = schedulers(db)
    scheduler.metrics = metrics = Metrics(process=False)
    attempts: list[bytes] = []

    async def flaky(payload: bytes) -> None:
        attempts.append(payload)
        if len(attempts) < 2:
            raise ConnectionError("upstream down")

    async def broken(payload: bytes) -> None:
        raise ValueError("nope")

    scheduler.register("flaky", flaky, max_attempts=3)
    scheduler.register("broken", broken, max_attempts=2)
    later = await scheduler.enqueue("flaky", b"later", run_at=int(time.time() * 1000) + 3_600_000)
    assert await scheduler.waiting() == {("flaky", "queued"): 1}  # periodic jobs are not counted
    await scheduler.start()
    queue = queue_of(scheduler)
    await settled(queue, await scheduler.enqueue("flaky"))
    await settled(queue, await scheduler.enqueue("broken"))
    runs = {
        (kind, outcome): metrics.registry.get_sample_value("sup_job_runs_total", {"kind": kind, "outcome": outcome})
        for kind, outcome in [("flaky", "retry"), ("flaky", "ok"), ("broken", "retry"), ("broken", "failed")]
    }
    assert runs == {("flaky", "retry"): 1, ("flaky", "ok"): 1, ("broken", "retry"): 1, ("broken", "failed"): 1}
    assert metrics.registry.get_sample_value("sup_job_duration_seconds_count", {"kind": "broken"}) == 2
    assert await scheduler.waiting() == {("flaky", "queued"): 1}
    assert (await queue.get(later)).state == "queued"


async def test_a_job_that_keeps_failing_ends_failed_with_its_reason(db: Database, schedulers, caplog) -> None:
    scheduler = schedulers(db)

    async def broken(payload: bytes) -> None:
        raise ValueError("nope " + "x" * 5000)

    scheduler.register("broken", broken, max_attempts=3)
    await scheduler.start()
    with caplog.at_level(logging.WARNING, logger="sup.jobs"):
        job = await settled(queue_of(scheduler), await scheduler.enqueue("broken"))
    assert (job.state, job.attempts) == ("failed", 3)
    assert job.last_error.startswith("ValueError: nope x")
    assert len(job.last_error) <= MAX_ERROR_CHARS
    for _ in range(50):  # the last line is logged just after the state is written
        lines = [r for r in caplog.records if job.id in r.getMessage()]
        if len(lines) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(lines) == 3 and all("\n" not in r.getMessage() for r in lines)
    assert lines[-1].levelno == logging.ERROR


async def test_permanent_error_fails_at_once(db: Database, schedulers) -> None:
    scheduler = schedulers(db)

    async def hopeless(payload: bytes) -> None:
        raise PermanentJobError("media X was deleted")

    scheduler.register("hopeless", hopeless, max_attempts=5)
    await scheduler.start()
    job = await settled(queue_of(scheduler), await scheduler.enqueue("hopeless"))
    assert (job.state, job.attempts, job.last_error) == ("failed", 1, "media X was deleted")


async def test_timeout_is_a_failure(db: Database, schedulers) -> None:
    scheduler = schedulers(db)

    async def slow(payload: bytes) -> None:
        await asyncio.sleep(10)

    scheduler.register("slow", slow, timeout=0.1, max_attempts=2)
    await scheduler.start()
    job = await settled(queue_of(scheduler), await scheduler.enqueue("slow"))
    assert (job.state, job.attempts) == ("failed", 2)
    assert "timed out" in job.last_error


async def test_unknown_kind_fails(db: Database, schedulers) -> None:
    scheduler = schedulers(db)
    await scheduler.start()
    job = await settled(queue_of(scheduler), await scheduler.enqueue("nobody.handles.this", max_attempts=2))
    assert (job.state, job.attempts) == ("failed", 2)
    assert "no handler" in job.last_error


async def test_a_dead_workers_job_runs_after_its_lease_expires(db: Database, schedulers) -> None:
    clock = MovableClock()
    queue = DatabaseJobQueue(db, clock)
    job_id = await queue.enqueue("work", b"1", max_attempts=3)
    last_chance = await queue.enqueue("work", b"2", max_attempts=1)
    # What a process that crashed mid-job leaves behind: running jobs under its lease.
    assert len(await queue.claim("crashed-process", ["work"], 10, 60_000)) == 2
    assert await queue.extend(job_id, "crashed-process", 60_000)

    scheduler = schedulers(db, clock)
    runs: list[bytes] = []

    async def work(payload: bytes) -> None:
        runs.append(payload)

    scheduler.register("work", work)
    await scheduler.start()
    await asyncio.sleep(0.2)
    assert runs == [] and (await queue.get(job_id)).state == "running"

    clock.advance(61)
    scheduler.wake()
    job = await settled(queue, job_id)
    assert (job.state, job.attempts, runs) == ("done", 2, [b"1"])
    # Its lease expired on its last allowed attempt: failed, not run again.
    dead = await settled(queue, last_chance)
    assert (dead.state, dead.attempts) == ("failed", 1)
    assert "lease expired" in dead.last_error
    # The old worker can no longer record an outcome over the new run's.
    assert not await queue.fail(job_id, "late", None, worker_id="crashed-process")


async def test_periodic_job_runs_repeatedly_and_survives_restart(db: Database, schedulers) -> None:
    runs: list[float] = []

    async def tick() -> None:
        runs.append(time.monotonic())

    first = schedulers(db)
    first.every("tick", 0.1, tick)
    await first.start()
    await asyncio.sleep(0.6)
    await first.stop()
    assert len(runs) >= 3

    second = schedulers(db)
    second.every("tick", 0.1, tick)
    await second.start()
    before = len(runs)
    await asyncio.sleep(0.3)
    assert len(runs) > before
    assert await db.fetchval("SELECT COUNT(*) FROM jobs WHERE kind = $1", PERIODIC + "tick") == 1


async def test_periodic_job_runs_once_across_schedulers(db: Database, database_url: str, schedulers) -> None:
    other_db = await open_database(database_url)  # another process's connections
    made: list[Scheduler] = []
    try:
        runs: list[float] = []

        async def tick() -> None:
            runs.append(time.monotonic())
            await asyncio.sleep(0.02)

        for database in (db, other_db):
            scheduler = schedulers(database)
            scheduler.every("shared-tick", 0.15, tick)
            made.append(scheduler)
        await asyncio.gather(*(s.start() for s in made))
        deadline = time.monotonic() + 5.0  # three periods and their polls: about a second, more on a busy host
        while len(runs) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(runs) >= 3
        gaps = [b - a for a, b in itertools.pairwise(runs)]
        # Never two at once: each run starts a full period after the last one ended.
        assert min(gaps) >= 0.15, gaps
        assert await db.fetchval("SELECT COUNT(*) FROM jobs WHERE kind = $1", PERIODIC + "shared-tick") == 1
    finally:
        for scheduler in made:  # before their database closes
            await scheduler.stop()
        await other_db.close()


async def test_two_schedulers_never_run_a_job_twice(db: Database, database_url: str, schedulers) -> None:
    other_db = await open_database(database_url)
    made: list[Scheduler] = []
    try:
        runs: collections.Counter[bytes] = collections.Counter()
        by: collections.Counter[str] = collections.Counter()

        def handler(name: str):
            async def count(payload: bytes) -> None:
                runs[payload] += 1
                by[name] += 1
                await asyncio.sleep(0.005)

            return count

        for name, database in (("a", db), ("b", other_db)):
            scheduler = schedulers(database)
            scheduler.register("count", handler(name))
            made.append(scheduler)
        queue = queue_of(made[0])
        ids = [await queue.enqueue("count", str(i).encode()) for i in range(50)]
        await asyncio.gather(*(s.start() for s in made))
        for job_id in ids:
            assert (await settled(queue, job_id)).state == "done"
        assert runs == collections.Counter(str(i).encode() for i in range(50))
        assert sum(by.values()) == 50
    finally:
        for scheduler in made:
            await scheduler.stop()
        await other_db.close()


async def test_a_crashing_handler_does_not_stop_later_jobs(db: Database, schedulers) -> None:
    scheduler = schedulers(db, workers=1)
    done: list[bytes] = []

    async def sometimes(payload: bytes) -> None:
        if payload == b"crash":
            raise RuntimeError("handler bug")
        if payload == b"cancel":
            raise asyncio.CancelledError  # a handler that leaks a cancellation of its own
        done.append(payload)

    scheduler.register("sometimes", sometimes, max_attempts=1)
    await scheduler.start()
    ids = [await scheduler.enqueue("sometimes", p) for p in (b"crash", b"cancel", b"ok1", b"ok2")]
    states = [(await settled(queue_of(scheduler), i)).state for i in ids]
    assert states == ["failed", "failed", "done", "done"]
    assert done == [b"ok1", b"ok2"]


async def test_stop_lets_running_jobs_finish(db: Database, schedulers) -> None:
    scheduler = schedulers(db, shutdown_grace_seconds=2)
    started, finished = asyncio.Event(), []

    async def careful(payload: bytes) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(payload)

    scheduler.register("careful", careful)
    await scheduler.start()
    job_id = await scheduler.enqueue("careful", b"1")
    await asyncio.wait_for(started.wait(), 5)
    await scheduler.stop()
    assert finished == [b"1"]
    assert (await queue_of(scheduler).get(job_id)).state == "done"


async def test_stop_hands_back_jobs_that_outlive_the_grace_period(db: Database, schedulers) -> None:
    scheduler = schedulers(db, shutdown_grace_seconds=0.1)
    started = asyncio.Event()

    async def stuck(payload: bytes) -> None:
        started.set()
        await asyncio.sleep(30)

    scheduler.register("work", stuck)
    await scheduler.start()
    job_id = await scheduler.enqueue("work", b"1")
    await asyncio.wait_for(started.wait(), 5)
    before = time.monotonic()
    await scheduler.stop()
    assert time.monotonic() - before < 2
    queue = queue_of(scheduler)
    job = await queue.get(job_id)
    assert (job.state, job.attempts, job.locked_by) == ("queued", 0, None)  # the interrupted run is not counted

    successor = schedulers(db)
    ran: list[bytes] = []

    async def work(payload: bytes) -> None:
        ran.append(payload)

    successor.register("work", work)
    await successor.start()
    job = await settled(queue, job_id)
    assert (job.state, job.attempts, ran) == ("done", 1, [b"1"])


async def test_prune_deletes_old_finished_jobs_only(db: Database, schedulers) -> None:
    clock = MovableClock()
    queue = DatabaseJobQueue(db, clock)
    clock.advance(-8 * 86_400)
    done, failed, waiting = [await queue.enqueue("k", b"") for _ in range(3)]
    assert len(await queue.claim("w", None, 2, 1000)) == 2
    await queue.complete(done)
    await queue.fail(failed, "no", None)
    clock.advance(8 * 86_400)
    recent = await queue.enqueue("k", b"")
    await queue.claim("w", None, 2, 1000)
    await queue.complete(recent)

    assert await queue.prune(clock.now_ms() - 7 * 86_400_000) == 2
    assert [await queue.get(i) is None for i in (done, failed, waiting, recent)] == [True, True, False, False]

    # The scheduler prunes by itself, as a periodic job.
    scheduler = schedulers(db, clock)
    await scheduler.start()
    assert await db.fetchval("SELECT state FROM jobs WHERE kind = $1", PERIODIC + "prune-jobs") in ("queued", "running")
