"""`edgebench run`'s exit code says whether every cell gave a measurement, and --retry-errors redoes the ones
that did not. A scripted executor stands in for real cells: these tests are about the command, not workloads."""

from __future__ import annotations

import json

import pytest

from harness.cli.commands import run as run_command
from harness.record.store import load_records
from tests.helpers import edgebench, write_spec

SPEC = """
name: exits
clock: host
devices: [rpi-4-2gb]
matrix:
  model: opt-1m
  method: [mezo, bp-checkpointed, inference]
  max_steps: 1
"""


def run_args(tmp_path, *extra: str) -> tuple[str, ...]:
    """`edgebench run` of SPEC into tmp_path/run, without a report."""
    return ("run", str(write_spec(tmp_path, SPEC)), "--out", str(tmp_path / "run"), "--no-report", *extra)


def test_all_measured_exits_0_and_oom_is_a_measurement(tmp_path, scripted):
    scripted.OUTCOMES = {"bp-checkpointed": "oom"}
    assert edgebench(*run_args(tmp_path)).returncode == 0


@pytest.mark.parametrize("failure", ["error", "timeout"])
def test_an_error_or_timeout_cell_exits_3_with_one_line_naming_it(tmp_path, scripted, failure):
    scripted.OUTCOMES = {"inference": failure}
    result = edgebench(*run_args(tmp_path))
    assert result.returncode == run_command.EXIT_CELLS_FAILED == 3
    lines = [ln for ln in result.stderr.splitlines() if "--retry-errors" in ln]
    assert lines == [
        f"edgebench: 1 of 3 cells gave no measurement ({failure}: rpi-4-2gb/opt-1m/inference/b8/s0); "
        "re-run with --retry-errors to redo them"
    ]


def test_a_resume_still_exits_3_while_a_failed_cell_is_not_redone(tmp_path, scripted):
    scripted.OUTCOMES = {"inference": "error"}
    assert edgebench(*run_args(tmp_path)).returncode == 3
    scripted.RAN.clear()
    scripted.OUTCOMES = {}
    assert edgebench(*run_args(tmp_path)).returncode == 3  # plain resume: every recorded cell is skipped, the error stands
    assert scripted.RAN == []


def test_retry_errors_redoes_only_error_and_timeout_cells(tmp_path, scripted):
    scripted.OUTCOMES = {"inference": "error", "bp-checkpointed": "timeout", "mezo": "oom"}
    assert edgebench(*run_args(tmp_path)).returncode == 3
    scripted.RAN.clear()
    scripted.OUTCOMES = {}
    assert edgebench(*run_args(tmp_path, "--retry-errors")).returncode == 0
    assert sorted(scripted.RAN) == ["bp-checkpointed", "inference"]
    latest = {r.params.method: r.status for r in load_records(tmp_path / "run")}
    assert latest == {"mezo": "oom", "bp-checkpointed": "ok", "inference": "ok"}


def test_run_json_records_jobs(tmp_path, scripted):
    assert edgebench(*run_args(tmp_path, "--jobs", "2")).returncode == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["jobs"] == 2
