"""Where the time of a long command goes, and how many threads it should compute with.

    watch = Stopwatch()
    with watch.phase("evaluate"):
        ...
    watch.report()   # {"total": s, "evaluate": s, ..., "other": s}
"""
from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class Stopwatch:
    """Wall seconds per named phase, summed over every time the phase is entered, and the process's
    CPU seconds (their ratio to wall time x threads says whether other processes take the cores)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def cpu_share(self) -> float:
        """CPU seconds of this process per wall second and thread so far (1.0: every thread busy)."""
        wall = time.perf_counter() - self._wall
        return (time.process_time() - self._cpu) / max(1e-9, wall * torch.get_num_threads())

    def report(self) -> dict[str, float]:
        """Total wall seconds, each phase's, and "other": what no phase covered (bookkeeping)."""
        total = time.perf_counter() - self._wall
        phases = {k: round(v, 3) for k, v in self.seconds.items()}
        return {"total": round(total, 3), **phases, "other": round(total - sum(self.seconds.values()), 3),
                "threads": torch.get_num_threads(), "cpu_share": round(self.cpu_share(), 3)}


def other_busy_threads(samples: int = 9, interval: float = 0.01) -> int:
    """Threads of other processes running right now (median of a few reads of /proc/loadavg's
    runnable count, less this process's own); 0 where that file does not exist."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return 0
        time.sleep(interval)
    return max(0, int(statistics.median(counts)))


def choose_threads() -> str:
    """Set torch's intra-op threads for scoring and say why. OMP_NUM_THREADS, when set, decides; else
    the cores that other processes leave free, at least one: two torch processes that each take every
    core thrash (a 0.3 s step becomes 1-11 s on two cores), one that takes what is free does not."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("OMP_NUM_THREADS"):
        return f"{torch.get_num_threads()} thread(s), as OMP_NUM_THREADS says"
    busy = other_busy_threads()
    threads = max(1, cores - busy)
    torch.set_num_threads(threads)
    if not busy:
        return f"{threads} thread(s), one per core"
    return (f"{threads} thread(s): other processes keep {min(busy, cores)} of {cores} cores busy "
            "(set OMP_NUM_THREADS to choose)")
