"""A cell that two matrix blocks both produce is one cell: merged with a note, run once."""

from __future__ import annotations

import pytest

from harness.plan.spec import load_spec
from harness.record.store import load_records
from tests.helpers import edgebench, require_kernel_caps, write_spec

OVERLAP = """
name: overlap
clock: host
devices: [rpi-4-2gb]
timeout_s: 300
matrix:
  - model: opt-1m
    method: [mezo, inference]
    task: synthetic
    batch: 2
    seq_len: 16
    max_steps: 2
  - model: opt-1m
    method: mezo
    task: synthetic
    batch: [2, 2]
    seq_len: 16
    max_steps: 2
"""


def test_overlapping_blocks_are_merged_in_spec_order(tmp_path):
    loaded = load_spec(write_spec(tmp_path, OVERLAP))
    assert [c.params.method for c in loaded.cells] == ["mezo", "inference"]
    assert len({c.id for c in loaded.cells}) == 2
    assert loaded.duplicates == {loaded.cells[0].id: 3}


def test_a_spec_without_overlap_has_no_duplicates(tmp_path):
    distinct = OVERLAP.replace("method: mezo\n", "method: bp\n").replace("batch: [2, 2]", "batch: [2, 4]")
    loaded = load_spec(write_spec(tmp_path, distinct))
    assert len(loaded.cells) == 4 and loaded.duplicates == {}


@pytest.mark.integration
@pytest.mark.usefixtures("no_leftover_cgroups")
def test_twin_cells_run_once_with_a_note_under_two_jobs(tmp_path):
    require_kernel_caps()
    out = tmp_path / "run"
    proc = edgebench(
        "run", str(write_spec(tmp_path, OVERLAP)), "--out", str(out), "--no-report", "--jobs", "2", process=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("edgebench: note:")]
    assert notes == [
        "edgebench: note: the matrix lists a cell more than once; each runs once: rpi-4-2gb/opt-1m/mezo/b2/s0 (x3)"
    ], proc.stderr
    records = load_records(out)
    assert sorted(r.params.method for r in records) == ["inference", "mezo"]
    assert (out / "results.jsonl").read_text().count("\n") == 2
    assert all(r.status == "ok" for r in records), [r.error for r in records]
