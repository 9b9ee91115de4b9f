"""A cell's warm-up against its time budget, checked at plan time, where each cell's device and clock are known."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from devices.profile import DeviceProfile
from devices.speed import CellClock
from harness.plan.resolve import FitSearch
from harness.record.cells import Cell
from harness.record.errors import UserError
from workloads.flops import step_flops, step_seconds
from workloads.params import WorkloadParams


def warmup_problem(
    device: DeviceProfile, clock: CellClock, params: WorkloadParams, models: Sequence[str]
) -> str | None:
    """Why the warm-up cannot end within `max_seconds` on the device (one line), or None when it may. A step takes
    at least its FLOPs at the device's throughput (workloads.flops); `models` are those the cell may train (an
    search's candidates), so only a warm-up too long for the fastest is refused. A host clock's seconds are the
    host's, which a spec on it never calibrates: there only `max_steps` bounds a warm-up (WorkloadParams)."""
    gflops = clock.device_gflops  # None on a host clock
    if params.max_seconds is None or gflops is None:
        return None
    bounds = [step_seconds(step_flops(params.model_copy(update={"model": m})), gflops) for m in models]
    if None in bounds:  # a model of unknown shape may be fast enough
        return None
    step, fastest = min(zip(bounds, models, strict=True))
    needed = params.warmup_steps * step
    if needed <= params.max_seconds:
        return None
    return (
        f"warm-up of {params.warmup_steps} steps needs at least {needed:.3g} device seconds on {device.name} "
        f"(step-time lower bound {step:.3g} s for {fastest}) but max_seconds is {params.max_seconds:g}; "
        "lower warmup_steps or raise max_seconds"
    )


def check_warmups(cells: list[Cell], searches: list[FitSearch], origin: Path) -> None:
    """Refuse, at plan time (where each cell's device and clock are known), a warm-up its budget cannot hold."""
    planned = [(c.device, c.clock, c.params, [c.params.model]) for c in cells]
    planned += [(a.device, a.clock, a.params, list(a.candidates)) for a in searches]
    for device, clock, params, models in planned:
        problem = warmup_problem(device, clock, params, models)
        if problem:
            raise UserError(f"{origin}: {problem}")
