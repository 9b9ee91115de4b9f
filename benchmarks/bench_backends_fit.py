"""The largest model that trains, per cap backend: the local executor (the host's cgroup) against the Docker
executor (a container's memory limit), on the same probes (paper-fit's decoder arms on the two smallest boards).

The two backends charge different memory to the cap: a cgroup made for a cell on the host is not charged for
file pages (torch's libraries, the data) that the harness had already read, while a container reads its own
files and is charged for them. This prints, per backend, each arm's largest trained model and the RSS and
cgroup peaks of its probe, so that the README's fit tables can say which backend they hold for.

Run (about 5 minutes, alone on the machine; needs what the docker tests need):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_backends_fit.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.profile import format_bytes
from harness.record.store import read_run_info
from tests.docker_engine import engine_with_image
from tests.helpers import edgebench, write_spec

SPEC = """
name: backends-fit
devices: [rpi-zero-2w, rpi-3b-plus]
clock: device-scaled
timeout_s: 3600
matrix:
  model: {largest_fitting: opt, probe_only: true}
  task: synthetic
  method: [mezo, bp-checkpointed]
  batch: 8
  seq_len: 64
  max_steps: 2
"""


def fits(run_dir: Path) -> dict[str, str]:
    """Per arm (device/method): the resolved model, or none, with its probe's RSS and cgroup peaks."""
    out = {}
    for entry in read_run_info(run_dir).resolutions:
        arm = f"{entry.device}/{entry.params.method}"
        probes = {p.model: p for p in entry.probes}
        if not entry.trained:
            out[arm] = "none"
            continue
        probe = probes[entry.model]
        cgroup = probe.cgroup_peak_bytes
        peaks = f"rss {format_bytes(probe.peak_memory_bytes)}, cgroup {format_bytes(cgroup) if cgroup else '-'}"
        out[arm] = f"{entry.model} ({peaks})"
    return out


def run(tmp_path: Path, executor: str) -> dict[str, str]:
    out = tmp_path / executor
    spec = write_spec(tmp_path, SPEC)
    edgebench("run", str(spec), "--executor", executor, "--out", str(out), "--no-report", timeout=3600, check=True)
    return fits(out)


@pytest.mark.timeout(0)
def test_the_largest_fit_per_cap_backend(benchmark, tmp_path: Path, monkeypatch) -> None:
    def both() -> tuple[dict[str, str], dict[str, str]]:
        local = run(tmp_path, "local")
        with engine_with_image() as (engine, image):
            monkeypatch.setenv("DOCKER_HOST", engine.host)
            monkeypatch.setenv("EDGEBENCH_IMAGE", image)
            return local, run(tmp_path, "docker")

    local, docker = benchmark.pedantic(both, rounds=1, iterations=1)
    print(f"\n{'arm':28} {'local executor (host cgroup)':48} docker executor (container limit)")
    for arm in sorted(local):
        print(f"{arm:28} {local[arm]:48} {docker.get(arm, '-')}")
