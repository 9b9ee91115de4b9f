"""Per-core throughput of this host at one thread and at every thread: the shape of both host calibrations.

A rate per CPU-second measured at 1 thread is what one device-scaled cell gets; the same rate measured with a
thread on each of the N cores is what each of N concurrent cells gets when they share the memory system. Both are
medians of a few short runs so that one preempted run does not move them."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PerCore:
    single: float
    parallel: float | None  # None on a one-core host
    cores: int

    def at(self, threads: int) -> float:
        """The rate per CPU-second of each of `threads` threads: interpolated between the two measured points."""
        if threads <= 1 or self.cores <= 1 or self.parallel is None:
            return self.single
        share = (min(threads, self.cores) - 1) / (self.cores - 1)
        return self.single + share * (self.parallel - self.single)


def per_core_medians(measure: Callable[[], float], runs: int, digits: int) -> PerCore:
    """Median of `runs` calls of `measure` (a rate per CPU-second) at 1 torch thread and at one per core."""
    import torch

    cores = os.cpu_count() or 1

    def median(threads: int) -> float:
        torch.set_num_threads(threads)
        return round(statistics.median(measure() for _ in range(runs)), digits)

    return PerCore(single=median(1), parallel=median(cores) if cores > 1 else None, cores=cores)
