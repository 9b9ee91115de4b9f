"""Step times of the same cells under `docker-compose up` (one capped container per device, one device after
another) and under the local executor (cgroups on the host): a container must not hide CPU contention or
overhead that the local run does not have (issue 15: within 20%).

Prints, per cell, both mean step times (device seconds, the cells' own clock) and their ratio, then the
worst ratio. Needs what the docker tests need (`make test-deps`, root or a running engine).

Run (a few minutes, alone on the machine; a first image build adds about 5):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_compose_vs_local.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from reports.rundata import load_run
from tests.docker_engine import Compose, engine_with_image
from tests.helpers import run_spec

SPEC = """
name: compose-vs-local
devices: [rpi-4-2gb, rpi-5-8gb]
timeout_s: 900
matrix:
  model: opt-8m
  method: [mezo, bp-checkpointed]
  task: synthetic
  batch: 8
  seq_len: 64
  max_steps: 12
"""


def step_times(records: list) -> dict[str, float]:
    """Mean step time (device seconds, the first step left out) per ok cell, keyed by device/method."""
    return {
        f"{r.device.name}/{r.params.method}": float(r.metrics.timing.step_time_s)
        for r in records
        if r.status == "ok"
    }


@pytest.mark.timeout(0)
def test_compose_step_times_match_the_local_executors(benchmark, tmp_path: Path, monkeypatch) -> None:
    def both() -> tuple[dict[str, float], dict[str, float]]:
        (tmp_path / "local").mkdir()
        local = run_spec(tmp_path / "local", SPEC)  # one cell at a time, as each device's container runs them
        with engine_with_image() as (engine, image):
            monkeypatch.setenv("EDGEBENCH_IMAGE", image)  # the compose file's image
            folder = tmp_path / "compose"
            folder.mkdir()
            compose = Compose(engine, folder, SPEC, "edgebench-bench")
            try:
                compose.up()
            finally:
                compose.down()
        return step_times(local), step_times(load_run(folder / "results" / "compose-vs-local").records)

    local, composed = benchmark.pedantic(both, rounds=1, iterations=1)
    assert set(local) == set(composed), (sorted(local), sorted(composed))
    print(f"\n{'cell':28} {'local s/step':>13} {'compose s/step':>15} {'compose / local':>16}")
    ratios = []
    for cell in sorted(local):
        ratios.append(composed[cell] / local[cell])
        print(f"{cell:28} {local[cell]:13.4f} {composed[cell]:15.4f} {ratios[-1]:16.3f}")
    worst = max(ratios, key=lambda r: abs(r - 1))
    print(f"worst compose / local: {worst:.3f} (geometric mean {statistics.geometric_mean(ratios):.3f})")
