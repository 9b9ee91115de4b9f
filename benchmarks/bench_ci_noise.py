"""Run-to-run noise of the `ci` spec: what `edgebench compare`'s thresholds in harness/specs/ci.yaml stand on.

Runs the spec RUNS times (each `--fresh`, `--jobs 2`, as .ci/run does, each with a fresh host calibration) and prints, per cell and over all cells,
how far each run's peak memory and step time strayed from the cells' mean over the runs (relative), and the
spread of final test accuracy (points). A threshold must sit well above the largest of these, or CI fails on
noise; docs/ci.md has the figures of the run behind the shipped thresholds.

Run (about 3 minutes a run, alone on the machine; EDGEBENCH_NOISE_OUT=DIR keeps the runs in DIR/run0..):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_ci_noise.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from devices.cache import cache_dir
from reports.rundata import load_run

RUNS = int(os.environ.get("EDGEBENCH_NOISE_RUNS", "3"))
#: `compare` gates on the cgroup's peak where both runs read one; RSS is printed beside it to show why.
FIGURES = {
    "cgroup peak": lambda r: r.memory.cgroup_peak_bytes,
    "rss peak": lambda r: r.memory.rss_peak_bytes,
    "step time": lambda r: r.metrics.timing.step_time_s,
    "final accuracy": lambda r: r.metrics.accuracy.final,
}


def figure(record, name: str) -> float | None:
    value = FIGURES[name](record)
    return None if value is None else float(value)


def deviations(runs: list[list], name: str, relative: bool) -> dict[str, tuple[float, float]]:
    """Per cell or probe (ok in every run): the largest distance of a run's figure from its mean over the runs,
    and the largest between two runs (what `compare` meets: one run against another), both relative to the mean.
    Probes count: `compare` judges them too, and their 2 steps make their step time the noisier figure."""
    by_cell: dict[str, list[float]] = {}
    labels = {}
    for records in runs:
        for record in records:
            if record.status == "ok" and (value := figure(record, name)) is not None:
                by_cell.setdefault(record.cell_id, []).append(value)
                role = "" if record.role == "cell" else f" ({record.role})"
                labels[record.cell_id] = f"{record.device.name}/{record.params.model}/{record.params.method}{role}"
    out = {}
    for cell_id, values in by_cell.items():
        if len(values) == len(runs):
            mean = statistics.fmean(values)
            scale = mean if relative and mean else 1.0
            out[labels[cell_id]] = (max(abs(v - mean) for v in values) / scale, (max(values) - min(values)) / scale)
    return out


def forget_host_speed() -> None:
    """Each run calibrates the host afresh, as a CI machine with a new environment does: the calibration varies
    from one measurement to the next, and every device second of a run is scaled by it."""
    for path in cache_dir().glob("host-speed-*.json"):
        path.unlink()


def run_spec(out: Path) -> list:
    forget_host_speed()
    argv = [sys.executable, "-m", "harness.cli", "run", "ci", "--out", str(out), "--fresh", "--jobs", "2"]
    subprocess.run(argv, check=True)
    return load_run(out).records


@pytest.mark.timeout(0)  # several runs of minutes each: the suite's per-test limit does not apply
def test_ci_spec_run_to_run_noise(benchmark, tmp_path: Path) -> None:
    folder = Path(os.environ.get("EDGEBENCH_NOISE_OUT") or tmp_path)
    runs = benchmark.pedantic(lambda: [run_spec(folder / f"run{i}") for i in range(RUNS)], rounds=1, iterations=1)
    calibrations = [load_run(folder / f"run{i}").info.host_speed for i in range(RUNS)]
    speeds = [speed.gflops_per_core if speed else None for speed in calibrations]
    print(f"\n`ci` spec, {RUNS} runs; host calibrations (GFLOPS per core): {speeds}")
    print("largest deviation of a run from the cell's mean over the runs | largest between two runs")
    for title in FIGURES:
        relative = title != "final accuracy"
        show = (lambda v: f"{v:.2%}") if relative else (lambda v: f"{v:.2f} points")
        per_cell = deviations(runs, title, relative)
        for label, (from_mean, between) in sorted(per_cell.items()):
            print(f"  {title:15} {label:53} {show(from_mean)} | {show(between)}")
        worst = [max((v[i] for v in per_cell.values()), default=0.0) for i in (0, 1)]
        print(f"  {title:15} {'largest':53} {show(worst[0])} | {show(worst[1])}")
