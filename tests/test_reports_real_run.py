"""End to end: a real (tiny) `edgebench run` writes its report, and compares equal with itself."""

from __future__ import annotations

import csv

import pytest

from tests.helpers import edgebench, opt_1m_spec, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = opt_1m_spec("tiny-report", "[rpi-4-2gb]")


def test_run_writes_a_report_of_its_real_cells(tmp_path):
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, TINY)), "--out", str(out), timeout=600, process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report written to {out / 'report.html'}" in proc.stderr
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert sorted(r["method"] for r in rows) == ["bp-checkpointed", "mezo"]
    for row in rows:
        assert row["status"] == "ok", row
        assert int(row["param_count"]) > 500_000 and float(row["step_time_s"]) > 0
        assert int(row["peak_memory_bytes"]) > 0
    html = (out / "report.html").read_text()
    assert html.count('<tr class="r-ok"') == 2 and "2 of 2 cells recorded" in html
    assert (out / "plot-peak-memory.png").stat().st_size > 10_000
    assert edgebench("compare", str(out), str(out), timeout=120, process=True).returncode == 0
