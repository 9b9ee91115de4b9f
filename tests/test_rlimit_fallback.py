"""The rlimit fallback is a soft cap (issue 26, finding 6): what a cell leaves in its process group is killed at its
end, and choosing the fallback is said in the output, the record (its enforcement, a failed validity check) and
the report (a notice of its own)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from harness.record.records import cap_by_kernel
from harness.record.store import load_records
from harness.run.executors import local
from reports.html import write_report
from tests.helpers import edgebench, observed, one_cell_spec, write_spec

#: Its cell runs as the cell user, through the search ACLs test_cell_reach snapshots: not beside that test.
pytestmark = pytest.mark.alone

ONE_CELL = one_cell_spec("soft-cap", memory="2GiB", extra="clock: host\n")
#: The stand-in cell leaves a child behind in its process group and observes its pid.
LEAVE_A_CHILD = """
import json, subprocess, sys
child = subprocess.Popen(["sleep", "300"])
print("observed: " + json.dumps(child.pid), file=sys.stderr, flush=True)
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}))
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_rlimit_fallback_kills_what_a_cell_left_in_its_group_and_says_it_is_a_soft_cap(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", LEAVE_A_CHILD])
    out = tmp_path / "run"
    argv = ["run", str(write_spec(tmp_path, ONE_CELL)), "--out", str(out), "--no-report", "--enforcement", "rlimit"]
    result = edgebench(*argv)
    assert result.returncode == 0, result.stderr
    (record,) = load_records(out)
    child = observed(out, record)
    try:
        assert not alive(child), "the cell's child outlived it under the rlimit fallback"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
    assert f"edgebench: warning: {local.SOFT_CAP}" in result.stderr
    assert record.enforcement == "rlimit" and not cap_by_kernel(record) and "cap_by_kernel" in record.validity.failed
    assert 'id="soft-cap"' in write_report(out).read_text()
