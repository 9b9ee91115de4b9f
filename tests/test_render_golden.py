"""Every committed reference run, and records of older schemas, load and render the report's tables as they did
when the goldens were written (tests/report_tables.py regenerates them): a change to the record contract must
not change what a report says."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.report_tables import GOLDEN, RUNS, report_tables


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_renders_the_tables_it_rendered_before(name):
    assert report_tables(RUNS[name]) == (GOLDEN / f"{name}.txt").read_text(), (
        f"{name}'s report tables changed; if that is meant, regenerate: python -m tests.report_tables"
    )


def test_the_golden_comparison_sees_one_changed_value(tmp_path):
    """One record's peak changed by one byte in a copy of a reference run changes its tables."""
    run_dir = tmp_path / "ci"
    shutil.copytree(RUNS["ci"], run_dir, ignore=shutil.ignore_patterns("*.png", "report.html"))
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    record["peak_memory_bytes"] += 1 << 20
    (run_dir / "results.jsonl").write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
    assert report_tables(run_dir) != (GOLDEN / "ci.txt").read_text()
