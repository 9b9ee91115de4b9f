"""The report's tables as text: what a change to the record contract must leave as it is (tests/test_render_golden.py).

Regenerate the goldens (only when a change to the report is meant): `python -m tests.report_tables`.
"""

from __future__ import annotations

import re
from pathlib import Path

from reports.accuracy import accuracy_rows
from reports.html import render_html
from reports.rundata import load_run
from reports.summary import device_headlines
from reports.table import cell_rows, rows_csv

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
#: Every committed reference run, and a run of records written by older schemas.
RUNS = {
    **{p.name: p for p in sorted((ROOT / "results" / "reference").iterdir()) if (p / "results.jsonl").is_file()},
    "older-schema": Path(__file__).parent / "fixtures" / "older-schema",
}
TABLE = re.compile(r"<table\b.*?</table>", re.DOTALL)


def report_tables(run_dir: Path) -> str:
    """Every table of the run's HTML report (rendered without plots), then its cells.csv."""
    run = load_run(run_dir)
    headlines, accuracy = device_headlines(run), accuracy_rows(run)
    rows = cell_rows(run, [a.choice for a in accuracy])
    html = render_html(run, headlines, accuracy, rows, [], [], None)
    return "\n\n".join([*TABLE.findall(html), rows_csv(rows)])


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for name, run_dir in RUNS.items():
        (GOLDEN / f"{name}.txt").write_text(report_tables(run_dir))
