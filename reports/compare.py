"""Baseline comparison for CI: match two runs cell by cell and flag what crossed a threshold.

Memory and time regressions are relative (0.05 = 5 %); the accuracy drop is in percentage points. Memory
regresses when the headline peak and, beside an RSS one, the cgroup's peak both grew past the limit.
A cell that finished in the baseline but not now (ok -> oom, timeout, error, or no record) is a
regression whatever the thresholds.

Seeds are noise, not regressions: when both runs finished at least MIN_SEEDS seeds of a cell (cells that
differ only in their seed), its memory, time and accuracy are judged over the seeds. A figure regresses only
when its mean moved past the threshold *and* a one-sided Mann-Whitney U test finds the shift significant
(p <= ALPHA; with 3 seeds against 3 the smallest p is 0.05). Fewer seeds fall back to the per-cell thresholds.

Accuracy is paired when both runs kept per-example predictions (reports.paired): a cell's (or a group's) final
test accuracy regresses only when it dropped past the limit *and* the paired 95 % interval of current minus
baseline, over the same test examples (and seeds, each cell paired with itself), lies below zero with p < 0.05. The limit says how large a
drop matters, the interval whether the drop is real: a 1.5-point drop on 200 examples is mostly noise, the same
drop on 1,066 examples with every flipped example going one way is not. Cells without predictions in either
run are judged as before.

Only valid records are compared (harness.records.judge): a shared cell whose record is invalid in either run is a
regression naming the checks it failed, its figures not compared, and invalid records join no group of seeds. An
invalid current record measured something other than the device's figure; an invalid baseline leaves nothing to
hold the cell to, so the gate cannot pass it either (re-record the baseline).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from scipy.stats import mannwhitneyu

from harness.record.errors import UserError
from harness.record.records import CellRecord
from harness.record.thresholds import Thresholds
from reports.paired import PairedDifference
from reports.pairs import Pairing, pair
from reports.rundata import RunData, RunPredictions, cell_label, load_run
from reports.selection import describe, seedless_key, varying_axes
from reports.spread import Spread, spread
from reports.style import MIB
from reports.validity import failed_checks

MIN_SEEDS = 3
ALPHA = 0.05
PEAK, CGROUP_PEAK = "peak memory", "cgroup peak memory"  # the memory figures compare reads, see `_memory`
LABEL_AXES = ("model", "method", "tuning", "batch", "seed")  # what a cell label already says


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
    memory: BeforeAfter  # the headline peak; compare_cell also weighs the cgroup's (see `_memory`)
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


def _memory(record: CellRecord, other: CellRecord) -> list[tuple[str, int | None, int | None]]:
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


def _accuracy(record: CellRecord | None) -> float | None:
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
        accuracy=BeforeAfter(_accuracy(base), _accuracy(cur)),
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
    elif growth := _memory_growth(_memory(base, cur), limits.max_memory_regression):
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


@dataclass(frozen=True)
class SeedTest:
    """One figure of one group of seeds, baseline against current."""

    metric: str
    before: Spread
    after: Spread
    change: float  # relative growth for memory and time, the drop in points for accuracy
    limit: float
    p_value: float
    regressed: bool
    verdict: str
    paired: PairedDifference | None = None  # accuracy when both runs kept predictions: current - baseline


@dataclass
class GroupChange:
    """Cells that differ only in their seed, judged together."""

    label: str  # the cells' label with its seed replaced by the seeds
    cell_ids: list[str]
    tests: list[SeedTest]
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        return [t.verdict for t in self.tests if t.regressed]

    def near_limit(self, share: float = 0.5) -> bool:
        """Worth a line in CI logs: a figure's mean moved past `share` of its limit, either way."""
        return bool(self.notes) or any(abs(t.change) > share * t.limit for t in self.tests)


@dataclass(frozen=True)
class Figure:
    """A compared figure: how to read it, its limit, and whether it regresses by growing (relative) or by
    dropping (in points)."""

    metric: str
    read: Callable[[CellRecord], float | None]
    limit: float
    grows: bool


def describe_figure(metric: str, value: Spread) -> str:
    """A group's figure as mean ± std (n): memory in MiB, accuracy to 0.1 point, times to 3 decimals."""
    if metric in (PEAK, CGROUP_PEAK):
        return value.scaled(MIB).describe(unit=" MiB")
    return value.describe(digits=1 if metric == "final accuracy" else 3)


def seed_test(figure: Figure, before: list[float], after: list[float]) -> SeedTest:
    """Past the limit on the means and significant by a one-sided Mann-Whitney U test: both, or no regression."""
    b, a = spread(before), spread(after)
    if figure.grows:
        change = a.mean / b.mean - 1 if b.mean else 0.0
        text = f"{figure.metric} {change:+.1%} (limit {figure.limit:.1%})"
    else:
        change = b.mean - a.mean
        text = f"{figure.metric} {0.0 - change:+.2f} points (limit {figure.limit:g})"  # no "-0.00"
    p_value = float(mannwhitneyu(before, after, alternative="less" if figure.grows else "greater").pvalue)
    regressed = change > figure.limit and p_value <= ALPHA
    judged = "significant" if p_value <= ALPHA else "not significant"
    verdict = f"{text} on the means of {b.n} vs {a.n} seeds, Mann-Whitney p={p_value:.3f} ({judged})"
    return SeedTest(figure.metric, b, a, change, figure.limit, p_value, regressed, verdict)


def paired_accuracy_test(
    figure: Figure, before: list[float], after: list[float], paired: PairedDifference
) -> SeedTest:
    """Past the limit on the means and a drop the paired interval (over seeds and examples) finds real: both, or
    no regression."""
    b, a = spread(before), spread(after)
    change = b.mean - a.mean
    text = f"{figure.metric} {0.0 - change:+.2f} points (limit {figure.limit:g})"
    dropped = paired.decisive and paired.difference < 0
    regressed = change > figure.limit and dropped
    judged = "a real drop" if dropped else ("a real gain" if paired.decisive else "not significant")
    verdict = f"{text} on the means of {b.n} vs {a.n} seeds, {paired.figures()} ({judged})"
    return SeedTest(figure.metric, b, a, change, figure.limit, paired.p_value, regressed, verdict, paired)


def _figures(
    base: list[CellRecord], cur: list[CellRecord], limits: Thresholds
) -> tuple[list[Figure], list[str]]:
    """What a group compares: memory when every seed read it from one source, with the cgroup's peak beside an
    RSS one (see `_memory`); time in the figure every seed has (step time, else device seconds, else
    host seconds); the final test accuracy."""
    records = base + cur
    figures, notes = [], []
    sources = {r.peak_memory_source for r in records}
    if len(sources) == 1:
        figures.append(Figure(PEAK, lambda r: r.peak_memory_bytes, limits.max_memory_regression, True))
        if sources == {"rss"} and all(r.memory.cgroup_peak_bytes is not None for r in records):
            figures.append(
                Figure(CGROUP_PEAK, lambda r: r.memory.cgroup_peak_bytes, limits.max_memory_regression, True)
            )
    else:
        notes.append("memory sources differ between seeds or runs: not compared")
    if all(r.metrics.timing.step_time_s is not None for r in records):
        figures.append(
            Figure(
                "step_time_s",
                lambda r: r.metrics.timing.step_time_s,
                limits.max_time_regression,
                True,
            )
        )
    elif all(r.device_seconds is not None for r in records):
        figures.append(Figure("device_seconds", lambda r: r.device_seconds, limits.max_time_regression, True))
    else:
        figures.append(Figure("host_seconds", lambda r: r.host_seconds, limits.max_time_regression, True))
    figures.append(Figure("final accuracy", _accuracy, limits.max_accuracy_drop, False))
    return figures, notes


def _values(records: list[CellRecord], read: Callable[[CellRecord], float | None]) -> list[float]:
    return [v for r in records if (v := read(r)) is not None]


def _memory_agrees(tests: list[SeedTest]) -> list[SeedTest]:
    """Memory regresses only when every memory figure regressed (see `_memory`): a lone one is cleared, saying so."""
    memory = [t for t in tests if t.metric in (PEAK, CGROUP_PEAK)]
    if all(t.regressed for t in memory):
        return tests
    return [
        replace(t, regressed=False, verdict=f"{t.verdict}; not a regression: the other memory figure held")
        if t in memory and t.regressed
        else t
        for t in tests
    ]


def compare_group(
    base: list[CellRecord],
    cur: list[CellRecord],
    limits: Thresholds,
    detail: str = "",
    paired: Pairing | None = None,
) -> GroupChange:
    """`base` and `cur` are the finished seeds (at least MIN_SEEDS each) of one cell in the two runs; `detail`
    names what tells it from cells of the same label (e.g. `lr 1e-3`); `paired`: the current seeds' final test
    accuracy minus the baseline's over the same examples, which then judges accuracy instead of Mann-Whitney."""
    figures, notes = _figures(base, cur, limits)
    tests = []
    for figure in figures:
        before, after = _values(base, figure.read), _values(cur, figure.read)
        if min(len(before), len(after)) < MIN_SEEDS:
            if before or after:
                notes.append(f"{figure.metric}: fewer than {MIN_SEEDS} seeds recorded it: not compared")
        elif figure.read is _accuracy and isinstance(paired, PairedDifference):
            tests.append(paired_accuracy_test(figure, before, after, paired))
        else:
            tests.append(seed_test(figure, before, after))
    tests = _memory_agrees(tests)
    seeds = ",".join(str(s) for s in sorted({r.params.seed for r in base + cur}))
    label = f"{cell_label(base[0]).rpartition('/s')[0]}/s{{{seeds}}}" + (f" ({detail})" if detail else "")
    return GroupChange(label, sorted({r.cell_id for r in base + cur}), tests, notes)


def _details(groups: dict[str, list[CellRecord]]) -> dict[str, str]:
    """Per group, the axes the cell label leaves out (lr, schedule, ...) whose values differ between groups."""
    params = {key: records[0].params.model_dump(exclude=set(LABEL_AXES)) for key, records in groups.items()}
    axes = varying_axes(params.values())
    return {key: describe(p, axes) for key, p in params.items()}


def _seed_groups(records: list[CellRecord]) -> dict[str, list[CellRecord]]:
    """Finished valid records by the cell they repeat (everything but the seed)."""
    groups: dict[str, list[CellRecord]] = defaultdict(list)
    for record in records:
        if record.status == "ok" and record.validity.valid:
            groups[seedless_key(record)].append(record)
    return groups


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


def _judges_accuracy(base: CellRecord, cur: CellRecord | None, limits: Thresholds) -> bool:
    """Whether a cell's accuracy drop is past its limit, the only case a paired test can change."""
    before, after = _accuracy(base), _accuracy(cur)
    ok = cur is not None and base.status == cur.status == "ok"
    return ok and before is not None and after is not None and before - after > limits.max_accuracy_drop


def compare_runs(
    baseline: Path,
    current: Path,
    memory: str | float | None = None,
    time: str | float | None = None,
    accuracy: str | float | None = None,
) -> Comparison:
    """Thresholds given here override the baseline spec's (never the current run's: a change must not relax its
    own gate); both runs must share cells (the same spec)."""
    base_run, cur_run = load_run(baseline), load_run(current)
    limits = base_run.info.spec.thresholds
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
    base_groups, cur_groups = _seed_groups(shared), _seed_groups(list(current_records.values()))
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
            if cur is not None and not over_seeds and _judges_accuracy(record, cur, limits)
            else None
        )
        changes.append(compare_cell(record, cur, limits, over_seeds, paired))
    details = _details({key: base_groups[key] for key in judged})
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
