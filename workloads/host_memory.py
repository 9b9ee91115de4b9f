"""The memory model on this host: its terms (workloads.memory_model) with the figures measured here, once per
environment and thread count (the runtime baseline, workloads.baseline; the allocator's retention,
workloads.calibration): the predictions the planner, `edgebench estimate` and run.json use.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from pydantic import BaseModel, ConfigDict

from devices.cache import allocator_environment, measured_once
from devices.environment import CELL_LIBRARIES
from workloads.allocator import FITTED, Allocator, mmap_ceiling
from workloads.baseline import default_threads, runtime_baseline_bytes
from workloads.calibration import REFERENCES
from workloads.memory_model import Breakdown, breakdown, param_count
from workloads.params import WorkloadParams
from workloads.registry import ladder_names, ladder_of, model_shape, resolve
from workloads.sources import SYNTHETIC


@functools.cache
def host_allocator(threads: int | None = None) -> Allocator | None:
    """This host's allocator on `threads` torch threads (default one per CPU): each of calibration.ALLOCATOR_TERMS
    the value that makes the model predict the difference of its reference cells' peaks, measured once per
    environment and thread count and cached; the other terms at their fitted values. The difference is linear in
    the term: solved from its values at 0 and 1. None when a peak cannot be measured here."""
    threads = threads or default_threads()
    alloc = replace(FITTED, mmap_ceiling=mmap_ceiling(allocator_environment()))
    for term, pair in REFERENCES.items():
        peaks = [reference_peak_bytes(term, index, threads) for index in range(len(pair))]
        if None in peaks:
            return None
        zero, one = (growth(pair, replace(alloc, **{term: value})) for value in (0.0, 1.0))
        alloc = replace(alloc, **{term: max(0.0, (peaks[1] - peaks[0] - zero) / (one - zero))})
    return alloc


def growth(pair: tuple[WorkloadParams, ...], alloc: Allocator) -> int:
    """How much more the model predicts for the large reference cell of `pair` than for the small one."""
    small, large = (breakdown(p, model_shape(p.model), 0, alloc=alloc).total for p in pair)
    return large - small


def reference_peak_bytes(term: str, index: int, threads: int) -> int | None:
    """The median peak of a calibration reference cell here (workloads.calibration), measured once and cached."""
    return measured_once(
        f"allocator-{term}-{index}-{threads}t",
        ["workloads.calibration", term, str(index), str(threads)],
        packages=CELL_LIBRARIES,
        valid=lambda value: isinstance(value, int) and value > 0,
        timeout_s=600,
    )


class HostMemoryFacts(BaseModel):
    """What the model measured on this host for one thread count (run.json records it per thread count); None
    where a figure cannot be measured here."""

    model_config = ConfigDict(extra="forbid")

    threads: int
    runtime_synthetic_bytes: int | None
    runtime_real_task_bytes: int | None
    allocator: Allocator | None


def host_memory_facts(threads: int | None = None) -> HostMemoryFacts:
    return HostMemoryFacts(
        threads=threads or default_threads(),
        runtime_synthetic_bytes=runtime_baseline_bytes(False, threads),
        runtime_real_task_bytes=runtime_baseline_bytes(True, threads),
        allocator=host_allocator(threads),
    )


def predict_breakdown(params: WorkloadParams, threads: int | None = None) -> Breakdown | None:
    """The prediction for a cell on `threads` torch threads (default one per CPU). None when the model's shape is
    unknown or the runtime baseline or allocator terms cannot be measured here."""
    entry = resolve(params.model)
    shape = entry.shape
    if shape is None:
        return None
    runtime = runtime_baseline_bytes(params.task != SYNTHETIC, threads)
    alloc = host_allocator(threads)
    if runtime is None or alloc is None:
        return None
    return breakdown(params, shape, runtime, pretrained=entry.pretrained, alloc=alloc)


def predict_peak_bytes(params: WorkloadParams, threads: int | None = None) -> int | None:
    """Predicted peak process memory (bytes) of the cell, or None for a model whose shape is unknown."""
    result = predict_breakdown(params, threads)
    return result.total if result else None


def largest_fitting(
    params: WorkloadParams, cap_bytes: int, ladder: str | None = None, threads: int | None = None
) -> str | None:
    """The largest rung of `ladder` (opt, bert, pretrained; default the params' model's own, see
    `registry.ladder_of`) predicted to fit under the cap."""
    ladder = ladder or ladder_of(resolve(params.model))
    best = None
    for name in ladder_names(ladder):
        total = predict_peak_bytes(params.model_copy(update={"model": name}), threads)
        if total is None:
            return None
        if total <= cap_bytes:
            best = name
    return best


def fit_ratio(
    params: WorkloadParams, cap_bytes: int, ladder: str | None = None, threads: int | None = None
) -> float | None:
    """Parameters (param_count) of the largest MeZO-trainable model / of the largest checkpointed-BP one under the
    cap."""
    mezo = largest_fitting(params.model_copy(update={"method": "mezo"}), cap_bytes, ladder, threads)
    bp = largest_fitting(params.model_copy(update={"method": "bp-checkpointed"}), cap_bytes, ladder, threads)
    if mezo is None or bp is None:
        return None
    mezo_shape, bp_shape = model_shape(mezo), model_shape(bp)
    assert mezo_shape and bp_shape
    return param_count(mezo_shape, params) / param_count(bp_shape, params)
