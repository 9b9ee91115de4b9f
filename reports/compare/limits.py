"""The CI gate's limits: the baseline spec's `thresholds:`, overridden by the command line's.

Memory and time regressions are relative (0.05 = 5 %); the accuracy drop is in percentage points.
"""

from __future__ import annotations

from harness.record.errors import UserError
from harness.record.thresholds import Thresholds
from reports.rundata import RunData


def parse_fraction(text: str | float, option: str) -> float:
    """`5%` or `0.05` -> 0.05; a bare number above 1 is ambiguous and refused."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UserError(f"{option} {text!r} is not a number; write e.g. 5% or 0.05") from None
    if value < 0:
        raise UserError(f"{option} {text!r} is negative; give a limit of 0 or more")
    if not raw.endswith("%") and value > 1:
        raise UserError(
            f"{option} {text!r} is ambiguous; write {raw}% for a percentage or a fraction like 0.05"
        )
    return value


def parse_points(text: str | float, option: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise UserError(f"{option} {text!r} is not a number; give percentage points, e.g. 1.0") from None
    if value < 0:
        raise UserError(f"{option} {text!r} is negative; give a limit of 0 or more points")
    return value


def gate_limits(
    baseline: RunData, memory: str | float | None, time: str | float | None, accuracy: str | float | None
) -> Thresholds:
    """The baseline spec's limits with the given ones in their place (never the current run's: a change must not
    relax its own gate)."""
    overrides = {
        "max_memory_regression": None
        if memory is None
        else parse_fraction(memory, "--max-memory-regression"),
        "max_time_regression": None if time is None else parse_fraction(time, "--max-time-regression"),
        "max_accuracy_drop": None if accuracy is None else parse_points(accuracy, "--max-accuracy-drop"),
    }
    return baseline.info.spec.thresholds.model_copy(update={k: v for k, v in overrides.items() if v is not None})
