"""The paired comparisons reports state (reports.paired): an arm's final test accuracy against its own step 0,
one arm against another, a cell against its baseline. Each pairs the kept predictions of the records given
(`RunPredictions`); without any it is `Unpaired`, which a report prints instead of an interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.record.records import CellRecord
from reports.paired import (
    Interval,
    PairedDifference,
    PairingError,
    Scored,
    accuracy_interval,
    paired_difference,
)
from reports.rundata import TEST, RunPredictions

NO_PREDICTIONS = "no predictions"


@dataclass(frozen=True)
class Unpaired:
    """Why a difference has no paired interval (older records kept no predictions; the sides scored different
    examples)."""

    reason: str

    def figures(self) -> str:
        return f"no paired interval ({self.reason})"


Pairing = PairedDifference | Unpaired


def pair(a: Sequence[Scored | None], b: Sequence[Scored | None], same_seeds: bool = False) -> Pairing:
    """A's accuracy minus B's over the evaluations both kept (seed by seed when `same_seeds`)."""
    if same_seeds:
        kept = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        a, b = [x for x, _ in kept], [y for _, y in kept]
    else:
        a, b = [x for x in a if x is not None], [y for y in b if y is not None]
    if not a or not b:
        return Unpaired(NO_PREDICTIONS)
    try:
        return paired_difference(a, b, same_seeds=same_seeds)
    except PairingError as exc:
        return Unpaired(str(exc))


def gain(predictions: RunPredictions, records: Sequence[CellRecord], split: str = TEST) -> Pairing:
    """The seeds' final accuracy on `split` over their own step 0, seed by seed."""
    finals, starts = [predictions.final(r, split) for r in records], [predictions.start(r, split) for r in records]
    if any(finals) and not any(starts):
        return Unpaired("no evaluation at step 0 kept")
    return pair(finals, starts, same_seeds=True)


def final_interval(predictions: RunPredictions, records: Sequence[CellRecord]) -> Interval | Unpaired:
    """The seeds' final test accuracy with its 95 % interval over seeds and examples."""
    finals = [s for r in records if (s := predictions.final(r)) is not None]
    if not finals:
        return Unpaired(NO_PREDICTIONS)
    try:
        return accuracy_interval(finals)
    except PairingError as exc:
        return Unpaired(str(exc))


def gap(predictions: RunPredictions, a: Sequence[CellRecord], b: Sequence[CellRecord]) -> Pairing:
    """Arm A's final test accuracy minus arm B's, over their seeds (each arm's drawn on its own)."""
    return pair([predictions.final(r) for r in a], [predictions.final(r) for r in b])


def change_text(pairing: Pairing) -> str:
    """A difference as a table cell: `+1.5 (paired 95% CI -0.3 to +3.2, McNemar p=0.090, 1,066 examples)`, or
    `no paired interval (no predictions)`."""
    if isinstance(pairing, Unpaired):
        return pairing.figures()
    return pairing.describe().replace(" points", "", 1)
