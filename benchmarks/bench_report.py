"""How long the report and the baseline comparison take on a 500-cell run (issue: under 15 s here).

Run with `make bench` (or `python -m pytest benchmarks -o python_files='bench_*.py' --benchmark-only`
from the repository root, so that `tests` is importable for its synthetic-run builders).
"""

from __future__ import annotations

import resource

import pytest

from reports.compare.runs import compare_runs
from reports.html import write_report
from tests.test_reports_fixtures import sweep, write_run

SEEDS = tuple(range(14))  # 3 devices x 4 models x 3 methods x 14 seeds = 504 cells


@pytest.fixture(scope="module")
def run_500(tmp_path_factory):
    records = sweep(seeds=SEEDS)
    assert len(records) >= 500
    return write_run(tmp_path_factory.mktemp("run500"), records), len(records)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_render_report_500_cells(benchmark, run_500):
    run_dir, cells = run_500
    out = benchmark.pedantic(write_report, args=(run_dir,), rounds=3, iterations=1)
    benchmark.extra_info.update(
        cells=cells,
        report_bytes=out.stat().st_size,
        peak_rss_bytes=_peak_rss_bytes(),
    )
    assert out.exists()


def test_compare_500_cells(benchmark, run_500):
    run_dir, cells = run_500
    comparison = benchmark.pedantic(
        compare_runs, args=(run_dir, run_dir), rounds=30, iterations=1, warmup_rounds=3
    )
    benchmark.extra_info.update(cells=cells, peak_rss_bytes=_peak_rss_bytes())
    assert len(comparison.changes) == cells and not comparison.regressions
