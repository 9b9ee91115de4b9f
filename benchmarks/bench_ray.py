"""Ray executor overhead (issue 14): what running a cell as a Ray task costs over running it locally.

1. Per cell: the six cells of tests/ray_cluster.py's SIX spec (4 OOM-killed, 2 ok), one at a time, through the
   local executor and through the Ray executor connected to a real two-node cluster (tests/ray_cluster.py), both
   in this process. A cell's harness overhead is the time `executor.run` took less the cell's own wall-clock
   (`host_seconds`), so the cells' own variance cancels; Ray's per-cell overhead is its overhead less the local
   executor's. Goal: under 1 s per cell.
2. Whole spec: `edgebench run` of the six cells with --jobs 1, end to end through the CLI: local; on the
   cluster (RAY_ADDRESS; includes connecting to it); and on a local Ray cluster that edgebench starts and stops.

Run (about 2 minutes, alone on the machine):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_ray.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.plan.spec import load_spec
from harness.run.executors.base import Executor
from harness.run.executors.local import LocalExecutor
from tests.helpers import require_kernel_caps, write_spec
from tests.ray_cluster import HEAD, SIX, WORKER, TwoNodeCluster, can_start_cluster, start_cluster

GOAL_S = 1.0


def overheads(executor: Executor, cells) -> dict[str, float]:
    """cell id -> seconds `executor.run` took beyond the cell's own wall-clock."""
    spent = {}
    for cell in cells:
        t0 = time.perf_counter()
        record = executor.run(cell, lambda *_: None)
        spent[cell.id] = time.perf_counter() - t0 - record.host_seconds
    return spent


def ray_overheads(
    cluster: TwoNodeCluster, run_dir: Path, cells, monkeypatch
) -> tuple[dict[str, float], float]:
    """Per-cell overheads on the cluster, and the seconds connecting to it took."""
    from harness.run.executors.ray import RayExecutor

    with monkeypatch.context() as patch:
        patch.setenv("RAY_ADDRESS", cluster.address)
        t0 = time.perf_counter()
        executor = RayExecutor(run_dir, 120)
        connect_s = time.perf_counter() - t0
        try:
            return overheads(executor, cells), connect_s
        finally:
            executor.close()


def cli_seconds(spec: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    argv = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--no-report", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - t0


def measure(tmp_path: Path, monkeypatch) -> dict:
    spec = write_spec(tmp_path, SIX)
    cells = load_spec(str(spec)).cells
    cluster = start_cluster(tmp_path, HEAD, WORKER)
    try:
        local = overheads(LocalExecutor(tmp_path / "local-cells", 120), cells)
        ray, connect_s = ray_overheads(cluster, tmp_path / "ray-cells", cells, monkeypatch)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        totals = {
            "local": cli_seconds(spec, tmp_path / "cli-local", env),
            "ray, two-node cluster": cli_seconds(
                spec, tmp_path / "cli-ray", cluster.driver_env(), "--executor", "ray"
            ),
            "ray, local cluster started by edgebench": cli_seconds(
                spec, tmp_path / "cli-ray-local", env, "--executor", "ray"
            ),
        }
    finally:
        cluster.stop()
    extra = {cell.id: ray[cell.id] - local[cell.id] for cell in cells}
    return {
        "cells": cells,
        "local": local,
        "ray": ray,
        "extra": extra,
        "connect_s": connect_s,
        "totals": totals,
    }


@pytest.mark.timeout(1200)
def test_ray_overhead_per_cell(benchmark, tmp_path, capsys, monkeypatch):
    require_kernel_caps()
    reason = can_start_cluster()
    if reason:
        pytest.skip(reason)
    got = benchmark.pedantic(measure, args=(tmp_path, monkeypatch), rounds=1, iterations=1)
    extra = got["extra"]
    lines = ["\nper-cell harness overhead (run time less the cell's own wall-clock), one cell at a time:"]
    for cell in got["cells"]:
        lines.append(
            f"  {cell.label:<40} local {got['local'][cell.id]:6.3f} s  ray {got['ray'][cell.id]:6.3f} s  "
            f"ray - local {extra[cell.id]:+.3f} s"
        )
    mean, worst = statistics.mean(extra.values()), max(extra.values())
    lines += [
        f"Ray over local per cell: mean {mean:.3f} s, max {worst:.3f} s (goal < {GOAL_S:g} s); "
        f"connecting to the cluster {got['connect_s']:.2f} s once per run",
        "6-cell spec end to end (edgebench run --jobs 1): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in got["totals"].items()),
    ]
    benchmark.extra_info.update(
        {"ray_overhead_mean_s": mean, "ray_overhead_max_s": worst, "connect_s": got["connect_s"]}
        | {f"total_{name}": seconds for name, seconds in got["totals"].items()}
    )
    with capsys.disabled():
        print("\n".join(lines))
    assert worst < GOAL_S, extra
