"""Baseline comparison for CI: match two runs cell by cell and flag what crossed a threshold.

Memory and time regressions are relative (0.05 = 5 %); the accuracy drop is in percentage points.
A cell that finished in the baseline but not now (ok -> oom, timeout, error, or no record) is a
regression whatever the thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness.errors import UserError
from harness.records import CellRecord
from harness.spec import Thresholds
from reports.rundata import RunData, cell_label, load_run
from reports.table import metric_number


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


def spec_thresholds(run: RunData) -> Thresholds:
    """The limits the current run's spec declares (`thresholds:`), defaults when it declares none."""
    try:
        return Thresholds.model_validate((run.info.get("spec") or {}).get("thresholds") or {})
    except ValidationError as exc:
        raise UserError(f"{run.run_dir / 'run.json'}: spec.thresholds: {exc.errors()[0]['msg']}") from None


@dataclass(frozen=True)
class BeforeAfter:
    """One compared quantity of one cell."""

    before: float | None
    after: float | None

    @property
    def relative(self) -> float | None:
        if self.before is None or self.after is None or self.before == 0:
            return None
        return self.after / self.before - 1


@dataclass
class CellChange:
    cell_id: str
    label: str
    status_before: str | None
    status_after: str | None
    memory: BeforeAfter
    time: BeforeAfter
    time_metric: str
    accuracy: BeforeAfter  # percent (as the workload reports it)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy_drop_points(self) -> float | None:
        if self.accuracy.before is None or self.accuracy.after is None:
            return None
        return self.accuracy.before - self.accuracy.after

    @property
    def status_changed(self) -> bool:
        return self.status_before != self.status_after

    def near_limit(self, limits: Thresholds, share: float = 0.5) -> bool:
        """Worth a line in CI logs: some figure moved past `share` of its limit (or it regressed)."""
        memory, time, drop = self.memory.relative, self.time.relative, self.accuracy_drop_points
        return bool(
            self.regressions
            or self.notes
            or self.status_changed
            or (memory is not None and abs(memory) > share * limits.max_memory_regression)
            or (time is not None and abs(time) > share * limits.max_time_regression)
            or (drop is not None and abs(drop) > share * limits.max_accuracy_drop)
        )


@dataclass(frozen=True)
class Comparison:
    baseline: Path
    current: Path
    thresholds: Thresholds
    changes: list[CellChange]
    only_in_baseline: list[str]  # labels of baseline cells the current run does not include at all
    only_in_current: list[str]
    context: list[str] = field(default_factory=list)  # how the two runs' setups differ (versions, backend)

    @property
    def regressions(self) -> list[CellChange]:
        return [c for c in self.changes if c.regressions]

    def as_dict(self) -> dict:
        """JSON-ready, with the relative changes spelled out for scripts."""
        return {
            "baseline": str(self.baseline),
            "current": str(self.current),
            "thresholds": self.thresholds.model_dump(),
            "regressed": [c.cell_id for c in self.regressions],
            "changes": [
                asdict(c)
                | {
                    "memory_change": c.memory.relative,
                    "time_change": c.time.relative,
                    "accuracy_drop_points": c.accuracy_drop_points,
                }
                for c in self.changes
            ],
            "only_in_baseline": self.only_in_baseline,
            "only_in_current": self.only_in_current,
            "context": self.context,
        }


def _time(record: CellRecord, other: CellRecord | None) -> tuple[str, float | None, float | None]:
    """Step time when both runs measured it (startup noise excluded), else the cell's whole time: in device
    seconds when both records have them (the figure the run is about), else host wall-clock seconds."""
    before = metric_number(record.metrics, "step_time_s")
    after = metric_number(other.metrics, "step_time_s") if other else None
    if before is not None and after is not None:
        return "step_time_s", before, after
    if record.device_seconds is not None and (other is None or other.device_seconds is not None):
        return "device_seconds", record.device_seconds, other.device_seconds if other else None
    return "host_seconds", record.host_seconds, other.host_seconds if other else None


def _accuracy(record: CellRecord | None) -> float | None:
    """Workloads report accuracy in percent, so a drop is in percentage points."""
    return metric_number(record.metrics, "final_accuracy") if record else None


def compare_cell(base: CellRecord, cur: CellRecord | None, limits: Thresholds) -> CellChange:
    both_ok = cur is not None and base.status == "ok" and cur.status == "ok"
    metric, t_before, t_after = _time(base, cur)
    change = CellChange(
        cell_id=base.cell_id,
        label=cell_label(base),
        status_before=base.status,
        status_after=cur.status if cur else None,
        memory=BeforeAfter(base.peak_memory_bytes, cur.peak_memory_bytes if cur else None),
        time=BeforeAfter(t_before, t_after),
        time_metric=metric,
        accuracy=BeforeAfter(_accuracy(base), _accuracy(cur)),
    )
    if cur is None:
        change.regressions.append("no record in the current run")
        return change
    if base.status == "ok" and cur.status != "ok":
        change.regressions.append(f"status ok -> {cur.status}" + (f" ({cur.error})" if cur.error else ""))
    elif base.status != "ok" and cur.status == "ok":
        change.notes.append(f"status {base.status} -> ok")
    if not both_ok:
        return change
    if base.peak_memory_source != cur.peak_memory_source:
        change.notes.append(
            f"memory source {base.peak_memory_source} -> {cur.peak_memory_source}: not compared"
        )
    elif (rel := change.memory.relative) is not None and rel > limits.max_memory_regression:
        change.regressions.append(f"peak memory {rel:+.1%} (limit {limits.max_memory_regression:.1%})")
    if (rel := change.time.relative) is not None and rel > limits.max_time_regression:
        change.regressions.append(f"{metric} {rel:+.1%} (limit {limits.max_time_regression:.1%})")
    drop = change.accuracy_drop_points
    if drop is not None and drop > limits.max_accuracy_drop:
        change.regressions.append(f"final accuracy -{drop:.2f} points (limit {limits.max_accuracy_drop:g})")
    return change


def setup_differences(base: RunData, cur: RunData) -> list[str]:
    """What changed around the cells (enforcement, executor, clock, library versions): a reader weighs changes
    by it."""
    notes = []
    for key in ("enforcement", "executor", "clock"):
        before, after = base.info.get(key), cur.info.get(key)
        if before != after:
            notes.append(f"{key} {before} -> {after}")
    versions_before, versions_after = base.info.get("versions") or {}, cur.info.get("versions") or {}
    for name in sorted(set(versions_before) | set(versions_after)):
        if versions_before.get(name) != versions_after.get(name):
            notes.append(f"{name} {versions_before.get(name)} -> {versions_after.get(name)}")
    return notes


def compare_runs(
    baseline: Path,
    current: Path,
    memory: str | float | None = None,
    time: str | float | None = None,
    accuracy: str | float | None = None,
) -> Comparison:
    """Thresholds given here override the current spec's; both runs must share cells (the same spec)."""
    base_run, cur_run = load_run(baseline), load_run(current)
    limits = spec_thresholds(cur_run)
    overrides = {
        "max_memory_regression": None
        if memory is None
        else parse_fraction(memory, "--max-memory-regression"),
        "max_time_regression": None if time is None else parse_fraction(time, "--max-time-regression"),
        "max_accuracy_drop": None if accuracy is None else parse_points(accuracy, "--max-accuracy-drop"),
    }
    limits = limits.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    current_records = {r.cell_id: r for r in cur_run.records}
    in_current_run = set(cur_run.expected) | set(current_records)
    if not base_run.records:
        raise UserError(f"baseline {baseline} has no result records; pass a finished run as BASELINE")
    shared = [r for r in base_run.records if r.cell_id in in_current_run]
    if not shared:
        raise UserError(
            f"{baseline} and {current} share no cell (different specs or devices); "
            "compare two runs of the same spec"
        )
    changes = [compare_cell(r, current_records.get(r.cell_id), limits) for r in shared]
    base_ids = {r.cell_id for r in base_run.records}
    return Comparison(
        baseline=Path(baseline),
        current=Path(current),
        thresholds=limits,
        changes=changes,
        only_in_baseline=[cell_label(r) for r in base_run.records if r.cell_id not in in_current_run],
        only_in_current=[cell_label(r) for r in cur_run.records if r.cell_id not in base_ids],
        context=setup_differences(base_run, cur_run),
    )
