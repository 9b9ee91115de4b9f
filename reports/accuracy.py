"""The accuracy summary: per setting, the recipe chosen on validation and its test accuracy over seeds.

Test figures are read here, after `reports.selection` has chosen without them, and always beside the
majority-class accuracy of the test split: 70 % means little on a task where one label is 70 % of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.record.records import CellRecord
from reports.paired import Interval
from reports.pairs import Pairing, Unpaired, final_interval, gain
from reports.plateau import Plateau, arm_plateau
from reports.rundata import TEST, VALIDATION, RunData, RunPredictions, accuracy_curve
from reports.selection import RECIPE_AXES, SEED_AXIS, GroupChoice, choose_recipes, describe, varying_axes
from reports.spread import Spread, spread
from reports.style import METHODS, arm_label

#: Axes the summary shows in their own columns; any other that differs between settings is spelled out.
SHOWN_AXES = ("model", "method", "tuning", "task", "batch", "max_steps", "max_seconds")


def majority_test_accuracy(record: CellRecord) -> float | None:
    """Accuracy (%) of always answering the test split's most common label, when the workload recorded it."""
    return (record.metrics.accuracy.majority or {}).get(TEST)


def budget(record: CellRecord) -> str:
    """The training budget as the spec gave it, in the cell clock's seconds."""
    p = record.params
    parts = ([f"{p.max_steps} steps"] if p.max_steps else []) + (
        [f"{p.max_seconds:g} s"] if p.max_seconds else []
    )
    flat = f", stopping once it gains under {p.stop_when_flat:g} points over each of two doublings" if p.stop_when_flat else ""
    return " or ".join(parts) + flat


@dataclass(frozen=True)
class AccuracyRow:
    choice: GroupChoice
    device: str
    model: str
    method: str
    tuning: str
    arm: str
    task: str
    batch: int
    budget: str
    setting: str  # what else tells this row from the others, e.g. "seq len 128"
    test: Spread | None  # final test accuracy of the chosen recipe's seeds
    final: Interval | Unpaired  # the same with its 95 % interval over seeds and test examples
    start: Spread | None  # their test accuracy at step 0, before any training (a pretrained head's own)
    gain: Pairing  # final test accuracy over step 0, paired seed by seed over the test examples
    val: Spread | None
    majority: float | None
    plateau: Plateau  # the chosen recipe's mean validation curve over its last doubling of device time
    val_gains: list[Pairing]  # per recipe of choice.ranked, its validation accuracy over its step 0 (the learning check)

    @property
    def several_recipes(self) -> bool:
        return len(self.choice.ranked) > 1

    def line(self) -> str:
        """One line for a terminal: where, what, the test figure with its spread, and how the recipe was chosen."""
        where = f"{self.device} {self.model} {self.arm} {self.task} b{self.batch} {self.budget}"
        where += f" ({self.setting})" if self.setting else ""
        test = f"final test accuracy {self.test.describe()}" if self.test else "no test accuracy"
        majority = f", majority class {self.majority:.1f}" if self.majority is not None else ""
        return f"{where}: {test}{majority}; {self.choice.sentence}"


def _others(choices: list[GroupChoice]) -> list[str]:
    """Setting axes that differ between the groups but have no column of their own."""
    hidden = (*SHOWN_AXES, *RECIPE_AXES, SEED_AXIS)
    settings = [{k: v for k, v in c.sample.params.model_dump().items() if k not in hidden} for c in choices]
    return varying_axes(settings)


def _row(choice: GroupChoice, others: list[str], predictions: RunPredictions) -> AccuracyRow:
    record = choice.sample
    p = record.params
    return AccuracyRow(
        choice=choice,
        device=record.device.name,
        model=p.model,
        method=p.method,
        tuning=p.tuning,
        arm=arm_label(p.method, p.tuning),
        task=p.task,
        batch=p.batch,
        budget=budget(record),
        setting=describe(p.model_dump(), others),
        test=spread(v for r in choice.shown if (v := r.metrics.accuracy.final) is not None),
        final=final_interval(predictions, choice.shown),
        start=spread(curve[0][1] for r in choice.shown if (curve := accuracy_curve(r, "step")) and curve[0][0] == 0),
        gain=gain(predictions, choice.shown),
        val=choice.chosen.val if choice.chosen else None,
        majority=next(
            (m for s in choice.ranked for r in s.records if (m := majority_test_accuracy(r)) is not None),
            None,
        ),
        plateau=arm_plateau(choice.shown),
        val_gains=[gain(predictions, score.records, VALIDATION) for score in choice.ranked],
    )


def accuracy_rows(run: RunData) -> list[AccuracyRow]:
    """One row per setting of valid cells, by device (run order), then task, method (MeZO first), tuning and
    model."""
    choices = choose_recipes(run.valid_records)
    others = _others(choices)
    devices = [d.name for d in run.devices]
    rows = [_row(c, others, run.predictions) for c in choices]
    method_rank = {m: i for i, m in enumerate(METHODS)}
    return sorted(
        rows,
        key=lambda r: (
            devices.index(r.device),
            r.task,
            method_rank.get(r.method, len(METHODS)),
            r.tuning,
            r.model,
        ),
    )
