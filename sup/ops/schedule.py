"""Scheduled backups in `sup run`: the [backup] settings at work.

A periodic job (`periodic:backup`, so one process of several takes each occurrence) starts a
backup as a task owned here and returns at once: a backup can take far longer than a job's
timeout, and the scheduler's lease covers its longest job kind, so a long kind would make every
job a crashed process held wait that long. One backup runs at a time; each is a directory
`<dir>/sup-backup-<UTC time>`, and after it only the newest `keep` complete ones stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from sup.config import Config
from sup.jobs.scheduler import Scheduler
from sup.ops.backup import MANIFEST, create_backup
from sup.ops.progress import Progress

log = logging.getLogger("sup.backup")

PREFIX = "sup-backup-"
# A `.sup-backup-*.work` directory this old is what a killed backup left behind.
ABANDONED_SECONDS = 3600


def backup_name(now: float) -> str:
    moment = datetime.fromtimestamp(now, UTC)
    return f"{PREFIX}{moment.strftime('%Y%m%dT%H%M%S')}.{moment.microsecond // 1000:03d}Z"


def prune(directory: Path, keep: int, now: float) -> list[Path]:
    """Delete complete scheduled backups beyond the newest `keep`, and old leftovers; the ones deleted."""
    complete = sorted(path for path in directory.glob(f"{PREFIX}*") if path.is_dir() and (path / MANIFEST).is_file())
    doomed = complete[: max(0, len(complete) - keep)]
    for leftover in directory.glob(f".{PREFIX}*.work"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < now - ABANDONED_SECONDS:
                doomed.append(leftover)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class BackupSchedule:
    """Starts scheduled backups and owns the one running; `close` cancels it (its partial directory goes)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._directory = Path(config.backup.dir)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config) -> BackupSchedule | None:
        return cls(config) if config.backup.dir else None

    def register(self, scheduler: Scheduler) -> None:
        scheduler.every("backup", self._config.backup.every_hours * 3600, self.tick)

    async def tick(self) -> None:
        if self._task is not None and not self._task.done():
            log.warning("the previous scheduled backup is still running: this one is skipped")
            return
        self._task = asyncio.create_task(self._run(), name="scheduled backup")

    async def _run(self) -> None:
        started = time.time()
        target = self._directory / backup_name(started)
        try:
            outcome = await create_backup(
                self._config,
                target,
                include_s3_objects=self._config.backup.include_s3_objects,
                progress=Progress(sink=log.debug),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("scheduled backup to %s failed: %s", target, exc)
            return
        for line in outcome.warnings:
            log.warning("scheduled backup %s: %s", target.name, line)
        for line in outcome.problems:
            log.error("scheduled backup %s: %s", target.name, line)
        log.info("scheduled backup written to %s in %.1f s", target, time.time() - started)
        removed = await asyncio.to_thread(prune, self._directory, self._config.backup.keep, time.time())
        for path in removed:
            log.info("removed old backup %s", path)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
