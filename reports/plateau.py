"""Whether an arm was trained to its plateau: the rule the accuracy experiment's budgets are held to.

An arm has flattened when its mean *validation* curve (over the chosen recipe's seeds) gained under
`PLATEAU_POINTS` over the last doubling of its device time: from the evaluation nearest half the final
evaluation's time to the final one. Log-spaced evaluations (`eval_at: log`) put a point at every halving of the
budget, so the doubling is measured, not interpolated. Validation decides, as it decides recipes: the test split
stays for the claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.record.records import CellRecord
from reports.rundata import accuracy_curve, seeds_mean
from workloads.doubling import doubling_gains

#: Points of validation accuracy gained over the last doubling of device time under which an arm has flattened.
PLATEAU_POINTS = 0.5


@dataclass(frozen=True)
class Plateau:
    """The mean validation curve's last doubling: from `since` to `until` device seconds it gained `gain` points."""

    gain: float | None  # None: no evaluation after step 0 near half the last one's time
    since: float | None
    until: float | None

    @property
    def flat(self) -> bool | None:
        return None if self.gain is None else self.gain < PLATEAU_POINTS

    def text(self) -> str:
        """`flat: +0.2 points from 3,600 to 7,200 device s`; `still rising: ...`; `falling: ...` (a loss past the
        threshold: flattened, and worse); or why it cannot be told."""
        if self.gain is None or self.since is None or self.until is None:
            return "not judged (no evaluation at half the budget)"
        verdict = "still rising" if not self.flat else "falling" if self.gain <= -PLATEAU_POINTS else "flat"
        return f"{verdict}: {self.gain:+.1f} points from {self.since:,.0f} to {self.until:,.0f} device s"


def plateau(curve: list[tuple[float, float]]) -> Plateau:
    """The gain over the curve's last doubling of time (`curve`: sorted (device seconds, accuracy) points;
    workloads.doubling decides which evaluations span it)."""
    gains = doubling_gains(curve, 1)
    if not gains:
        return Plateau(None, None, None)
    since, until, gain = gains[0]
    return Plateau(gain, since, until)


def arm_plateau(records: list[CellRecord]) -> Plateau:
    """The plateau rule applied to these seeds' mean validation curve."""
    return plateau(seeds_mean([accuracy_curve(r, "seconds", "val_accuracy") for r in records]))
