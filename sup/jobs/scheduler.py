"""The scheduler: runs queued jobs and periodic ones, in this process, from a `DatabaseJobQueue`.

Jobs are named functions with stored arguments (`kind` and `payload`), so they resume
after a restart. Delivery is at least once: handlers must be idempotent.

Jobs left `running` by a process that died are run again once their lease expires
(the handler's timeout plus a margin); they are not taken back sooner at startup, because
with several processes on one Postgres database a lease that looks stale may belong to a
live sibling on the same host. A graceful `stop()` hands unfinished jobs back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import random
import secrets
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sup.clock import Clock
from sup.db.database import Queryable
from sup.db.jobs import MAX_ERROR_CHARS, DatabaseJobQueue, Job
from sup.observe.metrics import Metrics

log = logging.getLogger("sup.jobs")

Handler = Callable[[bytes], Awaitable[None]]
PeriodicHandler = Callable[[], Awaitable[None]]

# Periodic jobs are job rows of this kind prefix, deduplicated by their kind: one row per
# name, moved forward after each run, so the period survives restarts and one process
# (not all) runs each occurrence.
PERIODIC = "periodic:"


class PermanentJobError(Exception):
    """Raised by a handler for a job that can never succeed: it fails at once, without retries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class JobSettings:
    workers: int = 2  # jobs run at once by this process
    poll_interval_seconds: float = 5.0  # how soon jobs queued by other processes are noticed
    timeout_seconds: float = 60.0  # default per-job timeout
    max_attempts: int = 5  # default attempts before a job is marked failed
    backoff_base_seconds: float = 2.0  # first retry after about this, doubling each attempt
    backoff_cap_seconds: float = 600.0
    lease_margin_seconds: float = 30.0  # added to the timeout: how long a dead worker's job waits
    shutdown_grace_seconds: float = 10.0  # running jobs may finish this long at stop()
    retention_days: int = 7  # finished jobs are kept this long; 0 keeps them forever
    prune_interval_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_attempts < 1:
            raise ValueError("jobs: workers and max_attempts must be at least 1")
        if min(self.poll_interval_seconds, self.timeout_seconds, self.backoff_base_seconds) <= 0:
            raise ValueError("jobs: poll interval, timeout and backoff base must be positive")


@dataclass(frozen=True)
class _Kind:
    handler: Handler
    timeout: float
    max_attempts: int
    every_ms: int | None = None  # set for periodic jobs


class Scheduler:
    """Claims due jobs and runs their handlers, at most `settings.workers` at once."""

    def __init__(
        self,
        queue: DatabaseJobQueue,
        clock: Clock,
        settings: JobSettings | None = None,
        *,
        worker_id: str | None = None,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._settings = settings or JobSettings()
        # Host and pid say where a stuck job's lease came from; the random part tells apart
        # two schedulers in one process (tests) and a pid reused after a restart.
        self.worker_id = worker_id or f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        self._kinds: dict[str, _Kind] = {}
        self._running: dict[asyncio.Task[None], Job] = {}
        self._wake = asyncio.Event()
        self._due: list[int] = []  # run_at (ms) of jobs this process queued for later: a heap
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lease_ms = 0
        self.metrics: Metrics | None = None  # set by the App
        if self._settings.retention_days > 0:
            self.every("prune-jobs", self._settings.prune_interval_seconds, self._prune)

    # -- registration ------------------------------------------------------------------

    def register(
        self, kind: str, handler: Handler, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> None:
        """Run `handler(payload)` for jobs of `kind`, cancelled after `timeout` seconds."""
        if kind.startswith(PERIODIC):
            raise ValueError(f"job kinds starting with {PERIODIC!r} are periodic jobs: use every()")
        self._add(kind, _Kind(handler, timeout or self._settings.timeout_seconds, self._attempts(max_attempts)))

    def every(
        self, name: str, interval_seconds: float, handler: PeriodicHandler, *, timeout: float | None = None
    ) -> None:
        """Run `handler()` every `interval_seconds`, in one process of all sharing the database.

        The next run is counted from the end of the last one; a failed run is logged and
        the job waits for its next period rather than retrying sooner.
        """
        if interval_seconds <= 0:
            raise ValueError("a periodic job needs a positive interval")

        async def run(_: bytes) -> None:
            await handler()

        timeout = timeout or self._settings.timeout_seconds
        self._add(PERIODIC + name, _Kind(run, timeout, self._settings.max_attempts, int(interval_seconds * 1000)))

    def _add(self, kind: str, spec: _Kind) -> None:
        if self._loop_task is not None:
            raise RuntimeError("register job kinds before the scheduler starts")
        if kind in self._kinds:
            raise ValueError(f"job kind {kind!r} is registered twice")
        self._kinds[kind] = spec

    def _attempts(self, max_attempts: int | None) -> int:
        attempts = self._settings.max_attempts if max_attempts is None else max_attempts
        if attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        return attempts

    # -- queueing ----------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: bytes = b"",
        *,
        run_at: int | None = None,
        max_attempts: int | None = None,
        dedupe_key: str | None = None,
        tx: Queryable | None = None,
    ) -> str:
        """Queue a job (see `DatabaseJobQueue.enqueue`); max_attempts defaults to the kind's.

        In a transaction (`tx`) the job is invisible until the commit: call `wake()` after
        it, or the job waits for the next poll.
        """
        spec = self._kinds.get(kind)
        if max_attempts is None and spec is not None:
            max_attempts = spec.max_attempts
        job_id = await self._queue.enqueue(
            kind,
            payload,
            run_at=run_at,
            max_attempts=self._attempts(max_attempts),
            dedupe_key=dedupe_key,
            tx=tx,
        )
        if tx is None:
            self._wake_at(run_at)
        return job_id

    @property
    def running(self) -> int:
        """Jobs this process runs now."""
        return len(self._running)

    async def waiting(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> jobs queued or running in the database, periodic ones left out."""
        return await self._queue.count_active()

    def wake(self) -> None:
        """Look for due jobs now instead of at the next poll."""
        self._wake.set()

    def _wake_at(self, run_at: int | None) -> None:
        # Remembered so the loop wakes right then, not at the next poll (other processes' jobs
        # do wait for a poll).
        if run_at is not None and run_at > self._clock.now_ms():
            heapq.heappush(self._due, run_at)
        self.wake()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Queue each periodic job unless it is already queued, then start claiming jobs."""
        if self._loop_task is not None:
            return
        self._stopping = False
        # One lease for every claim: long enough for the slowest kind to time out and be recorded.
        longest = max((s.timeout for s in self._kinds.values()), default=self._settings.timeout_seconds)
        self._lease_ms = int((longest + self._settings.lease_margin_seconds) * 1000)
        for kind, spec in self._kinds.items():
            if spec.every_ms is not None:
                await self._queue.enqueue(kind, b"", max_attempts=spec.max_attempts, dedupe_key=kind)
        self._loop_task = asyncio.create_task(self._loop(), name="jobs")

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish within the grace period, then cancel and hand them back."""
        if self._loop_task is None:
            return
        self._stopping = True
        self.wake()
        await self._loop_task
        self._loop_task = None
        tasks = list(self._running)
        if not tasks:
            return
        _, unfinished = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_seconds)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    # -- the loop ----------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wait = self._settings.poll_interval_seconds
            try:
                await self._claim_and_start()
            except Exception as exc:  # the database is away: try again at the next poll
                log.warning("claiming jobs failed: %s", _describe(exc))
            else:
                wait = self._until_next_due(wait)
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _claim_and_start(self) -> None:
        free = self._settings.workers - len(self._running)
        now = self._clock.now_ms()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        if free <= 0:
            return
        # Every kind, not only ours: a job no process can handle must end failed, not wait forever.
        jobs = await self._queue.claim(self.worker_id, None, free, self._lease_ms)
        for job in jobs:
            if self._stopping:  # claimed while stop() began: hand it straight back
                await self._queue.release(job.id, worker_id=self.worker_id)
                continue
            task = asyncio.create_task(self._run(job), name=f"job {job.kind} {job.id}")
            self._running[task] = job
            task.add_done_callback(self._finished)

    def _until_next_due(self, wait: float) -> float:
        if self._due:
            wait = min(wait, max(0.0, (self._due[0] - self._clock.now_ms()) / 1000))
        return wait

    def _finished(self, task: asyncio.Task[None]) -> None:
        job = self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None and job is not None:
            log.error("job %s (%s) crashed the scheduler's runner: %s", job.id, job.kind, _describe(task.exception()))
        self._wake.set()  # a worker is free

    # -- one job -----------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        spec = self._kinds.get(job.kind)
        error: str | None = None
        permanent = False
        started = time.perf_counter()
        try:
            if spec is None:
                # Retried like any failure: during a rolling upgrade a newer process may know the kind.
                error = f"no handler registered for job kind {job.kind!r}"
            else:
                error = await self._call(spec, job)
        except PermanentJobError as exc:
            error, permanent = exc.reason or "permanent failure", True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                await self._hand_back(job)
                raise
            error = "the handler was cancelled"  # it raised CancelledError itself
        except Exception as exc:
            error = _describe(exc)
        if self.metrics is not None:
            self.metrics.job_ran(job.kind, _outcome(job, spec, error, permanent), time.perf_counter() - started)
        try:
            await self._record(job, spec, error, permanent)
        except Exception as exc:  # the lease expires and the job runs again
            log.warning("job %s (%s): recording its outcome failed: %s", job.id, job.kind, _describe(exc))

    async def _call(self, spec: _Kind, job: Job) -> str | None:
        try:
            async with asyncio.timeout(spec.timeout) as deadline:
                await spec.handler(job.payload)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError
            return f"timed out after {spec.timeout:g} s"
        return None

    async def _record(self, job: Job, spec: _Kind | None, error: str | None, permanent: bool) -> None:
        now = self._clock.now_ms()
        me = self.worker_id
        if spec is not None and spec.every_ms is not None:
            next_at = now + spec.every_ms
            await self._queue.reschedule(job.id, next_at, worker_id=me, error=error)
            if error is not None:
                log.warning("periodic job %s failed, next run in %g s: %s", job.kind, spec.every_ms / 1000, error)
            self._wake_at(next_at)
        elif error is None:
            await self._queue.complete(job.id, worker_id=me)
        elif permanent or job.attempts >= job.max_attempts:
            await self._queue.fail(job.id, error, None, worker_id=me)
            log.error("job %s (%s) failed after %d attempt(s): %s", job.id, job.kind, job.attempts, error)
        else:
            delay = self._backoff(job.attempts)
            retry_at = now + int(delay * 1000)
            await self._queue.fail(job.id, error, retry_at, worker_id=me)
            log.warning(
                "job %s (%s) attempt %d/%d failed, retry in %.2f s: %s",
                job.id,
                job.kind,
                job.attempts,
                job.max_attempts,
                delay,
                error,
            )
            self._wake_at(retry_at)

    def _backoff(self, attempts: int) -> float:
        # Exponential with jitter, so jobs that failed together (a dependency was down) do
        # not all retry in the same instant.
        ceiling = min(self._settings.backoff_cap_seconds, self._settings.backoff_base_seconds * 2 ** (attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    async def _hand_back(self, job: Job) -> None:
        try:
            await self._queue.release(job.id, worker_id=self.worker_id)
            log.warning("job %s (%s) interrupted by shutdown; queued again", job.id, job.kind)
        except Exception as exc:
            log.warning("job %s (%s) interrupted; handing it back failed: %s", job.id, job.kind, _describe(exc))

    async def _prune(self) -> None:
        removed = await self._queue.prune(self._clock.now_ms() - self._settings.retention_days * 86_400_000)
        if removed:
            log.info("pruned %d finished jobs", removed)


def _outcome(job: Job, spec: _Kind | None, error: str | None, permanent: bool) -> str:
    """ok, retry (it runs again) or failed (it gave up; a periodic job's run failed), as _record decides."""
    if error is None:
        return "ok"
    if permanent or job.attempts >= job.max_attempts or (spec is not None and spec.every_ms is not None):
        return "failed"
    return "retry"


def _describe(exc: BaseException) -> str:
    """One line: the exception and where it was raised (a full traceback would be many lines)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"
    return text.replace("\n", " ")[:MAX_ERROR_CHARS]
