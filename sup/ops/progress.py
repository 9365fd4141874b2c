"""Progress of long steps: bars on a terminal (rich), plain lines for scripts and logs.

Progress goes to standard error, results to standard output, so `sup backup create DIR > out`
keeps only what a script wants. Without a terminal a step prints a line when it starts, one
every PLAIN_INTERVAL seconds while it runs, and one when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

PLAIN_INTERVAL = 10.0


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{int(value)} B"
    return f"{int(value)} {unit}"


class Task:
    """One step; `advance` as work is done."""

    def __init__(self, progress: Progress, description: str, total: float | None, unit: str) -> None:
        self._progress = progress
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.started = time.monotonic()
        self._last_line = self.started
        self._rich_id: Any = None

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        self._progress._advanced(self, amount)

    def add_total(self, amount: float) -> None:
        self.total = (self.total or 0) + amount
        self._progress._retotal(self)

    def status(self) -> str:
        shown = _amount(self.done, self.unit)
        if self.total:
            shown += f" of {_amount(self.total, self.unit)}"
        return shown


class Progress:
    """Where long steps report. `Progress.for_cli()` picks bars or lines; `Progress(sink=log.info)` logs."""

    def __init__(self, sink: Callable[[str], None] | None = None, *, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._sink = sink or self._print
        self._rich: Any = None

    @classmethod
    def for_cli(cls, stream: TextIO | None = None) -> Progress:
        stream = stream or sys.stderr
        progress = cls(stream=stream)
        if stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            progress._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=False,
            )
        return progress

    @classmethod
    def silent(cls) -> Progress:
        return cls(sink=lambda line: None)

    def _print(self, line: str) -> None:
        print(line, file=self._stream or sys.stderr, flush=True)

    def note(self, line: str) -> None:
        """A line of its own (a warning, a decision), between the bars."""
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False)
        else:
            self._sink(line)

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "items") -> Iterator[Task]:
        task = Task(self, description, total, unit)
        if self._rich is not None:
            if not self._rich.live.is_started:
                self._rich.start()
            task._rich_id = self._rich.add_task(description, total=total)
        else:
            self._sink(f"{description} ...")
        failed = True
        try:
            yield task
            failed = False
        finally:
            took = time.monotonic() - task.started
            if self._rich is not None:
                self._rich.update(task._rich_id, completed=task.done, total=task.total or task.done or 1)
                if failed or all(t.finished for t in self._rich.tasks):
                    self._rich.stop()
            elif failed:
                self._sink(f"{description}: stopped after {took:.1f} s")
            elif unit == "steps":
                self._sink(f"{description}: done in {took:.1f} s")
            else:
                self._sink(f"{description}: {task.status()} in {took:.1f} s")

    def _advanced(self, task: Task, amount: float) -> None:
        if self._rich is not None:
            self._rich.advance(task._rich_id, amount)
            return
        now = time.monotonic()
        if now - task._last_line >= PLAIN_INTERVAL:
            task._last_line = now
            self._sink(f"{task.description}: {task.status()}")

    def _retotal(self, task: Task) -> None:
        if self._rich is not None:
            self._rich.update(task._rich_id, total=task.total)
