"""Learning-rate schedules, one definition for every method: a factor on the base lr at a step.

Torch-free and pure, so MeZO and backprop apply the same schedule and a test can read it off directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from workloads.params import WorkloadParams

#: The factor after warm-up, from the budget's progress p in [0, 1].
DECAY: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
}


def progress(params: WorkloadParams, step: int, seconds: float) -> float:
    """The spent share of the budget, in [0, 1]: the larger of the step and time shares, so a schedule over a
    wall-clock budget decays over that budget and one over both ends with whichever ends first."""
    shares = [
        step / params.max_steps if params.max_steps else 0.0,
        seconds / params.max_seconds if params.max_seconds else 0.0,
    ]
    return min(1.0, max(shares))


def lr_factor(params: WorkloadParams, step: int, seconds: float) -> float:
    """The lr of step `step` (0-based), after `seconds` of training, over the base lr: a linear warm-up from 0
    over warmup_steps (steps, whatever the budget: the time a step takes is not known in advance) times the
    schedule's decay over the budget."""
    warm = min(1.0, step / params.warmup_steps) if params.warmup_steps else 1.0
    return warm * DECAY[params.lr_schedule](progress(params, step, seconds))
