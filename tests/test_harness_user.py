"""harness.run.harness_user on the real kernel: a process started as root becomes another user and keeps exactly the
capabilities it had permitted, and a program it starts as a third uid has none of them (no ambient set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.run.executors.cell_user import SECOND_UID
from tests.helpers import edgebench

CHECKOUT = Path(__file__).resolve().parents[1]

#: Becomes 4242:4242 (the harness's user), says its uids and effective capabilities, then those of a child it starts as
#: the cells' uid through subprocess, as the local executor starts a SecondUid's cell.
BECOME = f"""
import os, subprocess, sys
from harness.run import harness_user
from harness.run.executors.cell_user import cell_user
os.environ[harness_user.ENV_HARNESS_USER] = "4242:4242"
harness_user.become_from_env()
print(os.getresuid(), os.getresgid(), os.getgroups(), harness_user.holds_cell_caps(), cell_user().name)
child = [sys.executable, "-c", "import os; from harness.run import harness_user as h; print(os.getresuid(), h.effective_caps())"]
sys.stdout.flush()
subprocess.run(child, user={SECOND_UID}, group={SECOND_UID}, extra_groups=[], check=True)
"""


def test_the_harness_keeps_its_cell_capabilities_and_its_cells_get_none():
    if os.geteuid() != 0:
        pytest.skip("becoming another user takes root")
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}  # this checkout's harness, from a safe working directory
    proc = subprocess.run([sys.executable, "-c", BECOME], capture_output=True, text=True, timeout=60, cwd="/", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    harness, cell = proc.stdout.splitlines()
    assert harness == "(4242, 4242, 4242) (4242, 4242, 4242) [] True edgebench-cell"
    assert cell == f"({SECOND_UID}, {SECOND_UID}, {SECOND_UID}) 0"


def test_a_harness_user_that_is_not_uid_gid_is_one_line_and_exit_2():
    proc = edgebench("devices", process=True, env={"EDGEBENCH_HARNESS_USER": "edgebench"}, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "edgebench: error: EDGEBENCH_USER 'edgebench' is not uid:gid in numbers; set e.g. EDGEBENCH_USER=$(id -u):$(id -g)"
    ], proc.stderr
