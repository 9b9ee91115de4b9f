"""The CI gate for real: a build that needs more memory than its baseline fails `edgebench compare` (exit 1).

The inflated build is injected from outside the product, as a regression would arrive: a `sitecustomize`
module on PYTHONPATH that every cell process imports at start-up and that keeps 96 MiB of touched ballast.
"""

from __future__ import annotations

import pytest

from tests.helpers import edgebench, readable_directory, write_spec

pytestmark = pytest.mark.integration

SPEC = """
name: gate
devices: [{name: board-2gib, memory: 2GiB, cpus: 1, gflops: 20}]
clock: host
matrix: {model: opt-1m, method: mezo, batch: 4, seq_len: 32, max_steps: 2}
"""
BALLAST = "BALLAST = bytearray(96 << 20)\nfor i in range(0, len(BALLAST), 4096):\n    BALLAST[i] = 1\n"


def test_a_memory_inflated_build_fails_the_gate_and_an_unchanged_one_passes(tmp_path, no_leftover_cgroups):
    spec = str(write_spec(tmp_path, SPEC))
    base, same, inflated = (str(tmp_path / name) for name in ("base", "same", "inflated"))
    edgebench("run", spec, "--out", base, "--no-report", check=True)
    edgebench("run", spec, "--out", same, "--no-report", check=True)
    with readable_directory() as inject:  # the cells, which may run as nobody, must import it
        (inject / "sitecustomize.py").write_text(BALLAST)
        edgebench("run", spec, "--out", inflated, "--no-report", check=True, env={"PYTHONPATH": str(inject)})
    # Step time is not what this test is about (a loaded CI machine may slow a 2-step cell); memory is.
    limits = ("--max-time-regression", "1000%")
    unchanged = edgebench("compare", base, same, *limits)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    regressed = edgebench("compare", base, inflated, *limits)
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    assert "peak memory" in regressed.stderr + regressed.stdout and "board-2gib/opt-1m/mezo" in regressed.stderr
