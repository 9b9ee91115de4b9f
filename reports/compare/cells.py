"""One cell of the baseline against the same cell now: what crossed a limit, and what is only a note.

Memory regresses when the headline peak and, beside an RSS one, the cgroup's peak both grew past the limit. A cell
that finished in the baseline but not now (ok -> oom, timeout, error, or no record) is a regression whatever the
limits.

Accuracy is paired when both runs kept per-example predictions (reports.paired): a cell's final test accuracy
regresses only when it dropped past the limit *and* the paired 95 % interval of current minus baseline, over the
same test examples, lies below zero with p < 0.05. The limit says how large a drop matters, the interval whether
the drop is real: a 1.5-point drop on 200 examples is mostly noise, the same drop on 1,066 examples with every
flipped example going one way is not. Cells without predictions in either run are judged on the limit alone.

Only valid records are compared (harness.record validity): a cell whose record is invalid in either run is a
regression naming the checks it failed, its figures not compared. An invalid current record measured something
other than the device's figure; an invalid baseline leaves nothing to hold the cell to, so the gate cannot pass it
either (re-record the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.record.records import CellRecord
from harness.record.thresholds import Thresholds
from reports.paired import PairedDifference
from reports.pairs import Pairing
from reports.rundata import cell_label
from reports.validity import failed_checks

PEAK, CGROUP_PEAK = (
    "peak memory",
    "cgroup peak memory",
)  # the memory figures the gate reads, see `memory_figures`


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
    memory: BeforeAfter  # the headline peak; compare_cell also weighs the cgroup's (see `memory_figures`)
    time: BeforeAfter
    time_metric: str
    accuracy: BeforeAfter  # percent (as the workload reports it)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paired: PairedDifference | None = None  # current minus baseline on the test examples, when judged

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


def _time(record: CellRecord, other: CellRecord | None) -> tuple[str, float | None, float | None]:
    """Step time when both runs measured it (startup noise excluded), else the cell's whole time: in device
    seconds when both records have them (the figure the run is about), else host wall-clock seconds."""
    before = record.metrics.timing.step_time_s
    after = other.metrics.timing.step_time_s if other else None
    if before is not None and after is not None:
        return "step_time_s", before, after
    if record.device_seconds is not None and (other is None or other.device_seconds is not None):
        return "device_seconds", record.device_seconds, other.device_seconds if other else None
    return "host_seconds", record.host_seconds, other.host_seconds if other else None


def memory_figures(record: CellRecord, other: CellRecord) -> list[tuple[str, int | None, int | None]]:
    """The peaks both runs read: the headline peak (when both read it from one source) and, beside an RSS
    headline, the cgroup's peak. A real regression grows anonymous memory, which both count; the page cache moves
    one at a time (the cgroup's charge goes to whichever cell reads a file first, RSS counts the cached pages a
    fault maps around the touched one), and docs/ci.md measured each alone move by up to 9 % and 15 % between
    runs of one build. So memory regresses only when every figure grew past the limit."""
    figures = []
    if record.peak_memory_source == other.peak_memory_source:
        figures.append((PEAK, record.peak_memory_bytes, other.peak_memory_bytes))
        if record.peak_memory_source == "rss":
            figures.append((CGROUP_PEAK, record.memory.cgroup_peak_bytes, other.memory.cgroup_peak_bytes))
    return [f for f in figures if f[1] is not None and f[2] is not None]


def _memory_growth(figures: list[tuple[str, int | None, int | None]], limit: float) -> str | None:
    """The regression's text when every memory figure grew past `limit`, else None."""
    growth = [(name, after / before - 1) for name, before, after in figures if before]
    if not growth or min(g for _, g in growth) <= limit:
        return None
    return " and ".join(f"{name} {g:+.1%}" for name, g in growth) + f" (limit {limit:.1%})"


def final_accuracy(record: CellRecord | None) -> float | None:
    """Workloads report accuracy in percent, so a drop is in percentage points. A probe's is not judged: it
    evaluates only to hold the cell's memory, after steps too few to be a result (harness.plan.resolve)."""
    return record.metrics.accuracy.final if record and record.role == "cell" else None


def compare_cell(
    base: CellRecord,
    cur: CellRecord | None,
    limits: Thresholds,
    over_seeds: bool = False,
    paired: Pairing | None = None,
) -> CellChange:
    """`over_seeds`: its group's seeds judge memory, time and accuracy, so a crossing here is only a note.
    `paired`: the current final test accuracy minus the baseline's over the same examples, when both runs kept
    predictions: an accuracy drop past the limit is then a regression only when the drop is decisive."""
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
        accuracy=BeforeAfter(final_accuracy(base), final_accuracy(cur)),
    )
    if cur is None:
        change.regressions.append("no record in the current run")
        return change
    if invalid := _invalid(base, cur):
        change.regressions += invalid
        return change
    if base.status == "ok" and cur.status != "ok":
        change.regressions.append(f"status ok -> {cur.status}" + (f" ({cur.error})" if cur.error else ""))
    elif base.status != "ok" and cur.status == "ok":
        change.notes.append(f"status {base.status} -> ok")
    if not both_ok:
        return change
    crossed = []
    if base.peak_memory_source != cur.peak_memory_source:
        change.notes.append(
            f"memory source {base.peak_memory_source} -> {cur.peak_memory_source}: not compared"
        )
    elif growth := _memory_growth(memory_figures(base, cur), limits.max_memory_regression):
        crossed.append(growth)
    if (rel := change.time.relative) is not None and rel > limits.max_time_regression:
        crossed.append(f"{metric} {rel:+.1%} (limit {limits.max_time_regression:.1%})")
    drop = change.accuracy_drop_points
    if drop is not None and drop > limits.max_accuracy_drop:
        text = f"final accuracy -{drop:.2f} points (limit {limits.max_accuracy_drop:g})"
        if isinstance(paired, PairedDifference):
            change.paired = paired
            if paired.decisive and paired.difference < 0:
                crossed.append(f"{text}, {paired.figures()}")
            else:
                change.notes.append(f"{text}, but {paired.figures()} includes no change: not a regression")
        else:
            crossed.append(text)
    if over_seeds:
        change.notes += [f"{text} in this seed; judged over the seeds" for text in crossed]
    else:
        change.regressions += crossed
    return change


def _invalid(base: CellRecord, cur: CellRecord) -> list[str]:
    """Why the two records cannot be compared: each invalid one, with the checks it failed."""
    fixes = {"baseline": "re-record the baseline", "current": "fix what failed and re-run"}
    return [
        f"{run} record invalid ({', '.join(failed_checks(record))}): not compared; {fixes[run]}"
        for run, record in (("baseline", base), ("current", cur))
        if not record.validity.valid
    ]


def judges_accuracy(base: CellRecord, cur: CellRecord | None, limits: Thresholds) -> bool:
    """Whether a cell's accuracy drop is past its limit, the only case a paired test can change."""
    before, after = final_accuracy(base), final_accuracy(cur)
    ok = cur is not None and base.status == cur.status == "ok"
    return ok and before is not None and after is not None and before - after > limits.max_accuracy_drop
