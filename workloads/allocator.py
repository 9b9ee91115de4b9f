"""The C allocator's part in a process's peak: which tensors glibc serves from its heap, whose freed memory stays
resident, and which it maps on their own and returns when freed (docs/workloads.md, "The allocator").

Physics here: glibc's thresholds and how its tuning (GLIBC_TUNABLES, MALLOC_*_) sets them. Measured per host:
`Allocator`'s retention terms (workloads.host_memory).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

#: glibc's largest dynamic mmap threshold (64-bit): a larger tensor is always mapped on its own and returned when
#: freed; a smaller one may come from the heap, whose freed memory stays resident.
MMAP_CEILING = 32 << 20
#: glibc's initial mmap threshold, where it stays when tuning pins it (`mmap_ceiling`).
MMAP_THRESHOLD_DEFAULT = 128 << 10
#: glibc's tunables (GLIBC_TUNABLES) and their legacy MALLOC_*_ variables; setting any of the four turns the dynamic
#: threshold off.
PINNING_TUNABLES = {
    "glibc.malloc.mmap_threshold": "MALLOC_MMAP_THRESHOLD_",
    "glibc.malloc.trim_threshold": "MALLOC_TRIM_THRESHOLD_",
    "glibc.malloc.top_pad": "MALLOC_TOP_PAD_",
    "glibc.malloc.mmap_max": "MALLOC_MMAP_MAX_",
}


def mmap_ceiling(tuning: dict[str, str]) -> int:
    """The largest tensor glibc serves from its heap under `tuning` (devices.cache.allocator_environment): its
    dynamic threshold's ceiling by default; a pinned threshold (at most the ceiling: glibc ignores a larger one) or,
    where other tuning turns the dynamic threshold off, its initial one; no limit where mmap is off."""
    settings = dict(item.partition("=")[::2] for item in tuning.get("GLIBC_TUNABLES", "").split(":") if "=" in item)
    given = {name: settings.get(name, tuning.get(legacy)) for name, legacy in PINNING_TUNABLES.items()}
    pinned = {name: number for name, value in given.items() if (number := _glibc_number(value)) is not None}
    if pinned.get("glibc.malloc.mmap_max") == 0:
        return sys.maxsize
    if pinned.get("glibc.malloc.mmap_threshold", 0) > MMAP_CEILING:
        del pinned["glibc.malloc.mmap_threshold"]
    return pinned.get("glibc.malloc.mmap_threshold", MMAP_THRESHOLD_DEFAULT) if pinned else MMAP_CEILING


def _glibc_number(value: str | None) -> int | None:
    """A tunable's value as glibc parses it (decimal, 0x hex or 0 octal); None where it is unset or not a number."""
    try:
        return int(value, 0) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Allocator:
    """The allocator terms measured per host and thread count (`workloads.host_memory.host_allocator`). The defaults are the values fitted
    on the host the model was built on (the calibration sweep of benchmarks/bench_memory_model.py): a prediction
    uses them only where asked to."""

    #: a no-grad forward's high-water mark, in working sets.
    no_grad_retention: float = 1.5
    #: the largest tensor glibc may serve from its heap (derived from its tuning: `mmap_ceiling`).
    mmap_ceiling: int = MMAP_CEILING


FITTED = Allocator()
