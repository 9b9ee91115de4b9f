"""Render a run directory's self-contained HTML report (plots also as PNG, the cells table as CSV).

`edgebench run` writes it at the end of every run; use this to re-render, to write it elsewhere,
or to add a "vs baseline" section comparing with an earlier run of the same spec. Prints the report's
path on stdout (for scripts) and, on stderr, one line per setting: the final test accuracy of the recipe
chosen on validation, as mean ± std over its seeds, and how that recipe was chosen (first, a warning per
enforcement that was not the kernel's, e.g. the rlimit fallback, and one line per predictions file left out of
the paired intervals: missing, altered or not its record's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "render a run's HTML report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a directory written by `edgebench run`"
    )
    parser.add_argument(
        "--out", type=Path, help="report file (default: RUN_DIR/report.html); PNGs and CSV go beside it"
    )
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="add a comparison with this earlier run")


def handle(args: argparse.Namespace) -> int:
    from reports.accuracy import accuracy_rows  # matplotlib is imported only when a report is made
    from reports.findings import device_answers
    from reports.html import write_report
    from reports.rundata import load_run
    from reports.validity import soft_cap_cells

    out = write_report(args.run_dir, args.out, args.baseline)
    run = load_run(args.run_dir)
    rows = accuracy_rows(run)
    for group in soft_cap_cells(run):
        print(f"edgebench report: warning: memory not capped by the kernel: enforcement {group.line()}", file=sys.stderr)
    for problem in run.predictions.problems:
        print(f"edgebench report: predictions left out: {problem}", file=sys.stderr)
    for row in rows:
        print(f"edgebench report: {row.line()}", file=sys.stderr)
    for answer in device_answers(run, rows):
        print(f"edgebench report: answer: {answer.device}: {answer.sentence()}", file=sys.stderr)
    print(out)
    return 0
