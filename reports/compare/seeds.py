"""Cells that differ only in their seed, judged together: seeds are noise, not regressions.

When both runs finished at least MIN_SEEDS seeds of a cell, its memory, time and accuracy are judged over the
seeds. A figure regresses only when its mean moved past the limit *and* a one-sided Mann-Whitney U test finds the
shift significant (p <= ALPHA; with 3 seeds against 3 the smallest p is 0.05). When both runs kept predictions,
accuracy is judged instead by the paired 95 % interval over the same test examples and seeds (reports.paired).
Invalid records join no group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from scipy.stats import mannwhitneyu

from harness.record.records import CellRecord
from harness.record.thresholds import Thresholds
from reports.compare.cells import CGROUP_PEAK, PEAK, final_accuracy
from reports.paired import PairedDifference
from reports.pairs import Pairing
from reports.rundata import cell_label
from reports.selection import describe, seedless_key, varying_axes
from reports.spread import Spread, spread
from reports.style import MIB

MIN_SEEDS = 3

ALPHA = 0.05

LABEL_AXES = ("model", "method", "tuning", "batch", "seed")  # what a cell label already says


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
    RSS one (reports.compare.cells.memory_figures); time in the figure every seed has (step time, else device seconds, else
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
    figures.append(Figure("final accuracy", final_accuracy, limits.max_accuracy_drop, False))
    return figures, notes


def _values(records: list[CellRecord], read: Callable[[CellRecord], float | None]) -> list[float]:
    return [v for r in records if (v := read(r)) is not None]


def _memory_agrees(tests: list[SeedTest]) -> list[SeedTest]:
    """Memory regresses only when every memory figure regressed (reports.compare.cells.memory_figures): a lone one is cleared, saying so."""
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
        elif figure.read is final_accuracy and isinstance(paired, PairedDifference):
            tests.append(paired_accuracy_test(figure, before, after, paired))
        else:
            tests.append(seed_test(figure, before, after))
    tests = _memory_agrees(tests)
    seeds = ",".join(str(s) for s in sorted({r.params.seed for r in base + cur}))
    label = f"{cell_label(base[0]).rpartition('/s')[0]}/s{{{seeds}}}" + (f" ({detail})" if detail else "")
    return GroupChange(label, sorted({r.cell_id for r in base + cur}), tests, notes)


def group_details(groups: dict[str, list[CellRecord]]) -> dict[str, str]:
    """Per group, the axes the cell label leaves out (lr, schedule, ...) whose values differ between groups."""
    params = {key: records[0].params.model_dump(exclude=set(LABEL_AXES)) for key, records in groups.items()}
    axes = varying_axes(params.values())
    return {key: describe(p, axes) for key, p in params.items()}


def seed_groups(records: list[CellRecord]) -> dict[str, list[CellRecord]]:
    """Finished valid records by the cell they repeat (everything but the seed)."""
    groups: dict[str, list[CellRecord]] = defaultdict(list)
    for record in records:
        if record.status == "ok" and record.validity.valid:
            groups[seedless_key(record)].append(record)
    return groups
