"""The CI gate for real: a build that needs more memory than its baseline fails `edgebench compare` (exit 1).

The inflated build is another build, as a regression would arrive: a copy of the code whose cell module
(workloads/cell.py, which the runner imports in every cell) keeps 96 MiB of touched ballast, run from its own
directory (cells start isolated, `python -I`, with the harness's own code first on their path: an environment
variable such as PYTHONPATH can no longer reach them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import edgebench, readable_directory, write_spec

pytestmark = pytest.mark.integration

SPEC = """
name: gate
devices: [{name: board-2gib, memory: 2GiB, cpus: 1, gflops: 20}]
clock: host
matrix: {model: opt-1m, method: mezo, batch: 4, seq_len: 32, max_steps: 2}
"""
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("devices", "harness", "workloads", "reports")
BALLAST = "BALLAST = bytearray(96 << 20)\nfor i in range(0, len(BALLAST), 4096):\n    BALLAST[i] = 1\n"


def test_a_memory_inflated_build_fails_the_gate_and_an_unchanged_one_passes(tmp_path, no_leftover_cgroups):
    spec = str(write_spec(tmp_path, SPEC))
    base, same, inflated = (str(tmp_path / name) for name in ("base", "same", "inflated"))
    edgebench("run", spec, "--out", base, "--no-report", check=True, process=True)
    edgebench("run", spec, "--out", same, "--no-report", check=True, process=True)
    with readable_directory() as build:  # the cells, which may run as nobody, must import it
        for package in PACKAGES:
            shutil.copytree(ROOT / package, build / package, ignore=shutil.ignore_patterns("__pycache__"))
        cell = build / "workloads" / "cell.py"
        cell.write_text(cell.read_text() + "\n" + BALLAST)
        os.chmod(build, 0o755)
        edgebench("run", spec, "--out", inflated, "--no-report", check=True, cwd=build, process=True)
    # Step time is not what this test is about (a loaded CI machine may slow a 2-step cell); memory is.
    limits = ("--max-time-regression", "1000%")
    unchanged = edgebench("compare", base, same, *limits, process=True)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    regressed = edgebench("compare", base, inflated, *limits, process=True)
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    assert "peak memory" in regressed.stderr + regressed.stdout and "board-2gib/opt-1m/mezo" in regressed.stderr
