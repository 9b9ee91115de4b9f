"""Seeds as a person should read them: a mean with its sample standard deviation and n, never one lucky seed.

A curve's band is drawn on a grid every seed covers, so the mean at each point averages all n seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (ddof=1; None for a single value) and count of some seeds' figures."""

    mean: float
    std: float | None
    n: int

    def describe(self, digits: int = 1, unit: str = "") -> str:
        """`70.3 ± 1.1 (n=3)`; `70.3 (n=1)` when one seed leaves no spread to show."""
        text = f"{self.mean:.{digits}f}"
        if self.std is not None:
            text += f" ± {self.std:.{digits}f}"
        return f"{text}{unit} (n={self.n})"

    def scaled(self, divisor: float) -> Spread:
        """The same figures in a larger unit (bytes -> MiB)."""
        return Spread(self.mean / divisor, None if self.std is None else self.std / divisor, self.n)


def spread(values: Iterable[float]) -> Spread | None:
    """None for no values: a missing figure is not a zero."""
    values = list(values)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Band:
    """Seeds' curves on one grid: the mean line, its ± std band (None for one seed) and the seeds behind it."""

    x: list[float]
    mean: list[float]
    std: list[float] | None
    n: int


def common_grid(curves: Sequence[Sequence[tuple[float, float]]]) -> list[float]:
    """Every seed's x within the range all seeds cover; the union when the ranges do not overlap (a seed that
    stopped early) so that something is still drawn."""
    xs = sorted({x for curve in curves for x, _ in curve})
    low, high = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    inside = [x for x in xs if low <= x <= high]
    return inside or xs


def mean_band(curves: Sequence[Sequence[tuple[float, float]]]) -> Band | None:
    """Each seed's (sorted, non-empty) curve interpolated linearly on the common grid, then averaged per point."""
    curves = [c for c in curves if c]
    if not curves:
        return None
    grid = common_grid(curves)
    ys = np.array([np.interp(grid, [x for x, _ in c], [y for _, y in c]) for c in curves])
    std = ys.std(axis=0, ddof=1).tolist() if len(curves) > 1 else None
    return Band(grid, ys.mean(axis=0).tolist(), std, len(curves))
