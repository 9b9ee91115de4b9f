"""Compare a run with a baseline run of the same spec, cell by cell, for CI.

Prints a table of changes (peak memory, step time, final accuracy, status) and exits 1 when a
cell crossed a threshold (naming it), 0 when none did, 2 on bad input. Thresholds default to the
baseline run's spec (`thresholds:`), so that a change cannot relax its own gate; the options override them. Cells with at least 3 finished seeds
in both runs are judged over their seeds (threshold on the means and a Mann-Whitney U test), so seed
noise alone is not a regression. When both runs kept per-example predictions, an accuracy drop past its limit is
a regression only when its paired 95 % interval (reports.paired) lies below zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devices.profile import format_bytes
from reports.compare.cells import CellChange
from reports.compare.runs import Comparison, compare_runs
from reports.compare.seeds import ALPHA, MIN_SEEDS, GroupChange, describe_figure

HELP = "compare a run with a baseline run; exit 1 on regression"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", type=Path, metavar="BASELINE", help="run directory of the baseline")
    parser.add_argument("current", type=Path, metavar="CURRENT", help="run directory to check")
    parser.add_argument(
        "--max-memory-regression", metavar="PCT", help="peak memory growth allowed, e.g. 5%% or 0.05"
    )
    parser.add_argument("--max-time-regression", metavar="PCT", help="step time growth allowed, e.g. 20%%")
    parser.add_argument(
        "--max-accuracy-drop", metavar="POINTS", help="final accuracy drop allowed, percentage points"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="list every shared cell, not only those that moved by over half a limit",
    )
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _change(before: float | None, after: float | None, relative: float | None, fmt) -> str:
    if before is None and after is None:
        return ""
    text = f"{fmt(before) if before is not None else '-'} -> {fmt(after) if after is not None else '-'}"
    return text + (f" ({relative:+.1%})" if relative is not None else "")


def _row(change: CellChange) -> list[str]:
    status = (
        f"{change.status_before} -> {change.status_after or 'missing'}"
        if change.status_changed
        else str(change.status_after)
    )
    accuracy = _change(change.accuracy.before, change.accuracy.after, None, lambda v: f"{v:.1f}%")
    if change.accuracy_drop_points is not None:
        accuracy += f" ({-change.accuracy_drop_points:+.2f} pts)"
    verdict = escape("; ".join(change.regressions) or "; ".join(change.notes) or "ok")
    return [
        escape(change.label),
        escape(status),
        _change(change.memory.before, change.memory.after, change.memory.relative, format_bytes),
        _change(change.time.before, change.time.after, change.time.relative, lambda v: f"{v:.3g}s"),
        accuracy,
        f"[red]{verdict}[/]" if change.regressions else verdict,
    ]


def _group_rows(group: GroupChange) -> list[list[str]]:
    rows = [
        [
            escape(group.label),
            escape(test.metric),
            f"{describe_figure(test.metric, test.before)} -> {describe_figure(test.metric, test.after)}",
            f"{test.p_value:.3f}",
            f"[red]{escape(test.verdict)}[/]" if test.regressed else escape("ok: " + test.verdict),
        ]
        for test in group.tests
    ]
    return rows + [[escape(group.label), "", "", "", escape(note)] for note in group.notes]


def _print_groups(console: Console, groups: list[GroupChange]) -> None:
    table = Table(
        title=f"cells with seeds, judged over them (mean past the limit and Mann-Whitney p <= {ALPHA:g})",
        title_justify="left",
    )
    for column in ("cell (seeds)", "figure", "baseline -> current", "p", "verdict"):
        table.add_column(column, overflow="fold")
    for group in sorted(groups, key=lambda g: (not g.regressions, g.label)):
        for row in _group_rows(group):
            table.add_row(*row)
    console.print(table)


def _print_table(comparison: Comparison, show_all: bool) -> None:
    console = Console(width=None if sys.stdout.isatty() else 200)
    limits = comparison.thresholds
    groups = [g for g in comparison.groups if show_all or g.regressions or g.near_limit()]
    if groups:
        _print_groups(console, groups)
    shown = [c for c in comparison.changes if show_all or c.near_limit(limits)]
    table = Table(
        title=escape(f"edgebench compare: {comparison.current} vs baseline {comparison.baseline}"),
        title_justify="left",
    )
    for column in ("cell", "status", "peak memory", "time", "final accuracy", "verdict"):
        table.add_column(column, overflow="fold")
    for change in sorted(shown, key=lambda c: (not c.regressions, c.label)):
        table.add_row(*_row(change))
    if shown:
        console.print(table)
    console.print(
        f"limits: peak memory +{limits.max_memory_regression:.1%}, time +{limits.max_time_regression:.1%}, "
        f"final accuracy -{limits.max_accuracy_drop:g} points. {len(comparison.changes)} shared cells: "
        f"{len(comparison.regressions)} regressed, {len(shown)} listed"
        + ("" if show_all else " (changed by more than half a limit)")
        + (
            f"; {len(comparison.groups)} cells with {MIN_SEEDS}+ seeds in both runs judged over them: "
            f"{len(comparison.group_regressions)} regressed, {len(groups)} listed"
            if comparison.groups
            else ""
        )
        + (
            f"; {len(comparison.only_in_baseline)} only in the baseline"
            if comparison.only_in_baseline
            else ""
        )
        + (f"; {len(comparison.only_in_current)} new" if comparison.only_in_current else "")
    )
    if comparison.context:
        console.print("setup changed since the baseline: " + ", ".join(comparison.context), markup=False)
    for warning in comparison.warnings:
        console.print(f"predictions left out of the paired tests: {warning}", markup=False)


def handle(args: argparse.Namespace) -> int:
    comparison = compare_runs(
        args.baseline,
        args.current,
        memory=args.max_memory_regression,
        time=args.max_time_regression,
        accuracy=args.max_accuracy_drop,
    )
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        _print_table(comparison, args.all)
    for change in comparison.regressions:
        print(
            f"edgebench compare: REGRESSION {change.label} ({change.cell_id}): {'; '.join(change.regressions)}",
            file=sys.stderr,
        )
    for group in comparison.group_regressions:
        print(f"edgebench compare: REGRESSION {group.label}: {'; '.join(group.regressions)}", file=sys.stderr)
    return 1 if comparison.regression_count else 0
