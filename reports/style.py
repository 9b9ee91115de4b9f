"""One look for every plot and table: a fixed colour per method, units and scale choices."""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from workloads.params import Method, WorkloadParams

METHODS: tuple[str, ...] = get_args(Method)
TUNINGS: tuple[str, ...] = get_args(WorkloadParams.model_fields["tuning"].annotation)  # full first

# Okabe-Ito colours (colour-blind safe); a method keeps its colour in every plot.
METHOD_COLOURS = {"mezo": "#D55E00", "bp-checkpointed": "#0072B2", "bp": "#CC79A7", "inference": "#7A7A7A"}
METHOD_LABELS = {"mezo": "MeZO", "bp-checkpointed": "BP (checkpointed)", "bp": "BP", "inference": "inference"}
TRAINING_METHODS = ("mezo", "bp-checkpointed", "bp")
BACKPROP_METHODS = ("bp-checkpointed", "bp")  # the arms MeZO is measured against (zero-shot trains nothing)

# Matplotlib markers per cell status: a failed cell never looks like a measurement.
STATUS_MARKERS = {"ok": "o", "oom": "X", "timeout": "s", "error": "D"}

MIB = 1024**2


def method_colour(method: str) -> str:
    return METHOD_COLOURS.get(method, "#333333")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


#: An inference cell trains nothing: as an accuracy arm it is the model's zero-shot accuracy with its head.
ZERO_SHOT = "zero-shot (no training)"


def arm_label(method: str, tuning: str) -> str:
    """A method with what it tunes when that is not the whole model: BP on the head is not MeZO on the head."""
    if method == "inference":
        return ZERO_SHOT
    return method_label(method) if tuning == "full" else f"{method_label(method)} + {tuning}"


def method_order(methods: Iterable[str]) -> list[str]:
    """Methods in the canonical order (MeZO first), unknown ones last in name order."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def spans_decades(values: Iterable[float], factor: float = 20.0) -> bool:
    """Log scale pays off only when the positive values span more than `factor`."""
    positive = [v for v in values if v and v > 0]
    return bool(positive) and max(positive) / min(positive) > factor


def format_params(count: int | float | None) -> str:
    """Parameter counts as people write them: 8.4M, 1.3B."""
    if count is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count:.0f}"


def count_of(count: int, noun: str) -> str:
    """`1 cell`, `3 cells`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
