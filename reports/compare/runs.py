"""Baseline comparison for CI: match two runs cell by cell and flag what crossed a limit.

Each shared cell is judged on its own (reports.compare.cells), or, when both runs finished enough of its seeds,
over its seeds (reports.compare.seeds); the limits are the baseline spec's (reports.compare.limits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.record.errors import UserError
from harness.record.records import CellRecord
from harness.record.thresholds import Thresholds
from reports.compare.cells import CellChange, compare_cell, judges_accuracy
from reports.compare.limits import gate_limits
from reports.compare.seeds import MIN_SEEDS, GroupChange, compare_group, group_details, seed_groups
from reports.pairs import Pairing, pair
from reports.rundata import RunData, RunPredictions, cell_label, load_run
from reports.selection import seedless_key


@dataclass(frozen=True)
class Comparison:
    baseline: Path
    current: Path
    thresholds: Thresholds
    changes: list[CellChange]
    only_in_baseline: list[str]  # labels of baseline cells the current run does not include at all
    only_in_current: list[str]
    context: list[str] = field(default_factory=list)  # how the two runs' setups differ (versions, backend)
    groups: list[GroupChange] = field(default_factory=list)  # cells with enough seeds, judged over them
    warnings: list[str] = field(default_factory=list)  # predictions files left out of the paired tests

    @property
    def regressions(self) -> list[CellChange]:
        return [c for c in self.changes if c.regressions]

    @property
    def group_regressions(self) -> list[GroupChange]:
        return [g for g in self.groups if g.regressions]

    @property
    def regression_count(self) -> int:
        return len(self.regressions) + len(self.group_regressions)

    def as_dict(self) -> dict:
        """JSON-ready, with the relative changes spelled out for scripts."""
        return {
            "baseline": str(self.baseline),
            "current": str(self.current),
            "thresholds": self.thresholds.model_dump(),
            "regressed": sorted(
                {c.cell_id for c in self.regressions}
                | {i for g in self.group_regressions for i in g.cell_ids}
            ),
            "changes": [
                asdict(c)
                | {
                    "memory_change": c.memory.relative,
                    "time_change": c.time.relative,
                    "accuracy_drop_points": c.accuracy_drop_points,
                }
                for c in self.changes
            ],
            "groups": [asdict(g) | {"regressions": g.regressions} for g in self.groups],
            "only_in_baseline": self.only_in_baseline,
            "only_in_current": self.only_in_current,
            "context": self.context,
            "warnings": self.warnings,
        }


def setup_differences(base: RunData, cur: RunData) -> list[str]:
    """What changed around the cells (enforcement, executor, clock, library versions): a reader weighs changes
    by it."""
    notes = []
    for key, before, after in (
        ("enforcement", base.info.enforcement, cur.info.enforcement),
        ("executor", base.info.executor, cur.info.executor),
        ("clock", base.info.clock, cur.info.clock),
    ):
        if before != after:
            notes.append(f"{key} {before} -> {after}")
    versions_before, versions_after = base.info.versions, cur.info.versions
    for name in sorted(set(versions_before) | set(versions_after)):
        if versions_before.get(name) != versions_after.get(name):
            notes.append(f"{name} {versions_before.get(name)} -> {versions_after.get(name)}")
    return notes


def _final_pairing(
    base: list[CellRecord], cur: list[CellRecord], base_kept: RunPredictions, cur_kept: RunPredictions
) -> Pairing:
    """Current final test accuracy minus the baseline's over the same examples, cell by cell: a cell is one seed
    of one configuration in both runs, so its two evaluations are paired (seeds are drawn once for both)."""
    current = {r.cell_id: r for r in cur}
    matched = [(current[r.cell_id], r) for r in base if r.cell_id in current]
    return pair(
        [cur_kept.final(c) for c, _ in matched], [base_kept.final(b) for _, b in matched], same_seeds=True
    )


def _shared_cells(base_run: RunData, cur_run: RunData, in_current_run: set[str]) -> list[CellRecord]:
    """The baseline's records of cells the current run includes; bad input when there are none."""
    if not base_run.records:
        raise UserError(f"baseline {base_run.run_dir} has no result records; pass a finished run as BASELINE")
    shared = [r for r in base_run.records if r.cell_id in in_current_run]
    if not shared:
        raise UserError(
            f"{base_run.run_dir} and {cur_run.run_dir} share no cell (different specs or devices); "
            "compare two runs of the same spec"
        )
    return shared


def compare_runs(
    baseline: Path,
    current: Path,
    memory: str | float | None = None,
    time: str | float | None = None,
    accuracy: str | float | None = None,
) -> Comparison:
    """Thresholds given here override the baseline spec's (reports.compare.limits); both runs must share cells
    (the same spec)."""
    base_run, cur_run = load_run(baseline), load_run(current)
    limits = gate_limits(base_run, memory, time, accuracy)
    current_records = {r.cell_id: r for r in cur_run.records}
    in_current_run = set(cur_run.expected) | set(current_records)
    shared = _shared_cells(base_run, cur_run, in_current_run)
    base_groups, cur_groups = seed_groups(shared), seed_groups(list(current_records.values()))
    judged = {
        key
        for key, records in base_groups.items()
        if min(len(records), len(cur_groups.get(key, []))) >= MIN_SEEDS
    }
    base_kept, cur_kept = base_run.predictions, cur_run.predictions
    changes = []
    for record in shared:
        cur = current_records.get(record.cell_id)
        over_seeds = seedless_key(record) in judged
        paired = (
            _final_pairing([record], [cur], base_kept, cur_kept)
            if cur is not None and not over_seeds and judges_accuracy(record, cur, limits)
            else None
        )
        changes.append(compare_cell(record, cur, limits, over_seeds, paired))
    details = group_details({key: base_groups[key] for key in judged})
    groups = [
        compare_group(
            base_groups[key],
            cur_groups[key],
            limits,
            details[key],
            _final_pairing(base_groups[key], cur_groups[key], base_kept, cur_kept),
        )
        for key in judged
    ]
    base_ids = {r.cell_id for r in base_run.records}
    return Comparison(
        baseline=Path(baseline),
        current=Path(current),
        thresholds=limits,
        changes=changes,
        only_in_baseline=[cell_label(r) for r in base_run.records if r.cell_id not in in_current_run],
        only_in_current=[cell_label(r) for r in cur_run.records if r.cell_id not in base_ids],
        context=setup_differences(base_run, cur_run),
        groups=sorted(groups, key=lambda g: g.label),
        warnings=[f"baseline: {p}" for p in base_kept.problems]
        + [f"current: {p}" for p in cur_kept.problems],
    )
