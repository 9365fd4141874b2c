"""Benchmark-only: with BENCH_TRACEMALLOC=<path prefix> set, the first SIGUSR1 starts tracing this process's
Python allocations (tracemalloc) and each one dumps a snapshot to <prefix>.<n>: the second snapshot holds
what was allocated since the first and is still alive. bench/idle.py --tracemalloc puts this directory on
the server's PYTHONPATH; never otherwise: SUP itself knows nothing of it. Tracing starts late, not here,
because tracing the imports slows a start on a busy machine past the benchmark's patience."""

import os
import signal
import tracemalloc

_prefix = os.environ.get("BENCH_TRACEMALLOC")
if _prefix:
    _dumps = [0]

    def _dump(signum, frame):
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
        _dumps[0] += 1
        tracemalloc.take_snapshot().dump(f"{_prefix}.{_dumps[0]}")

    signal.signal(signal.SIGUSR1, _dump)
