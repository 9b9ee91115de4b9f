"""Signals, to the harness and in its cells: SIGTERM and SIGINT stop the cells in flight, clean them up and exit
143 / 130; a cell that crashes on a signal is an `error` naming it; a cell that hangs is a `timeout`.

The cells here are stand-ins (`python -c CODE` through the real launcher, caps and executor) so that each test
takes about a second; tests/test_run_local.py runs real workloads.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.record.store import load_records
from harness.run.executors import local
from tests.helpers import edgebench, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_cgroups")]

#: Replaces each cell's workload with `python -c argv[1]` (the cell's method its argv[1]), then runs MAIN on argv[2:].
FAKE_CELL = """
import sys
from harness.run.executors import local
local.runner_argv = lambda cell: [sys.executable, "-c", sys.argv[1], cell.params.method]
from MAIN import main
sys.exit(main(sys.argv[2:]))
"""
#: The real CLI in a subprocess, each cell's workload replaced by `python -c argv[1]`.
FAKE_CELL_HARNESS = FAKE_CELL.replace("MAIN", "harness.cli.main")
#: Says its pid on stderr (the cell's log), then hangs without using CPU.
HANG = "import os, sys, time; print('cell pid', os.getpid(), file=sys.stderr, flush=True); time.sleep(600)"
SEGFAULT = "import ctypes; ctypes.string_at(0)"
#: One-core devices, so that two cells fit a two-core host at once.
TWO_CELLS = """
name: signals
clock: {clock}
timeout_s: {timeout}
devices: [{{name: one-core, memory: 512MiB, cpus: 1}}]
matrix:
  model: opt-1m
  method: [mezo, inference]
  max_steps: 1
"""


def two_cells(clock: str = "host", timeout: float = 300) -> str:
    return TWO_CELLS.format(clock=clock, timeout=timeout)


def fake_cell_harness(cell_code: str, *args: str, **popen) -> subprocess.Popen:
    """`edgebench ARGS` as a subprocess whose cells run `cell_code` (with the cell's method as argv[1])."""
    return subprocess.Popen([sys.executable, "-c", FAKE_CELL_HARNESS, cell_code, *args], **popen)


#: The real CLI in a subprocess with the Docker executor's supervisor replaced by FAKE_CELL's: the containers run
#: `python -c FAKE_CELL CELL_CODE JOB`, so that each cell's workload there is `python -c CELL_CODE`.
FAKE_DOCKER_HARNESS = """
import sys
from harness.run.executors import docker
docker.SUPERVISOR = ["python", "-c", sys.argv[1], sys.argv[2]]
from harness.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def fake_docker_harness(cell_code: str, *args: str, **popen) -> subprocess.Popen:
    """`edgebench ARGS` (with --executor docker) as a subprocess whose cells run `cell_code` in their containers."""
    supervisor = FAKE_CELL.replace("MAIN", "harness.run.executors.in_container")
    return subprocess.Popen([sys.executable, "-c", FAKE_DOCKER_HARNESS, supervisor, cell_code, *args], **popen)


def cell_pids(out: Path, count: int, timeout: float = 60) -> list[int]:
    """The pids `count` hanging cells wrote to their logs, once all have started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [p.read_text() for p in (out / "logs").glob("*.log")] if (out / "logs").is_dir() else []
        pids = [int(m.group(1)) for text in logs for m in re.finditer(r"cell pid (\d+)", text)]
        if len(pids) == count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"{count} cells did not start within {timeout} s")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_and_cleans_up_the_cells_in_flight_then_exits_128_plus_its_number(tmp_path, signum, code):
    out = tmp_path / "run"
    spec = write_spec(tmp_path, two_cells())
    argv = ["run", str(spec), "--out", str(out), "--no-report", "--jobs", "2"]
    harness = fake_cell_harness(HANG, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        pids = cell_pids(out, 2)
        harness.send_signal(signum)
        assert harness.wait(timeout=30) == code
    finally:
        harness.kill()
    stderr = harness.stderr.read()
    assert "edgebench: interrupted; re-run the same command to resume" in stderr and "Traceback" not in stderr
    assert all(gone(pid) for pid in pids), "a cell outlived the harness"
    assert load_records(out) == []  # an interrupted cell is not a result; a resume redoes it


@pytest.fixture
def cells_run(monkeypatch):
    """Runs the CLI in this process, each cell running `python -c code`."""

    def run(code: str, tmp_path: Path, spec: str) -> tuple[int, list]:
        monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", code])
        out = tmp_path / "run"
        code = edgebench("run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report").returncode
        return code, load_records(out)

    return run


def test_a_cell_that_segfaults_is_an_error_naming_its_signal(tmp_path, cells_run):
    code, records = cells_run(SEGFAULT, tmp_path, two_cells())
    assert code == 3 and len(records) == 2
    for record in records:
        assert record.status == "error"
        assert record.error.startswith("killed by SIGSEGV (Segmentation fault)"), record.error


@pytest.mark.parametrize("clock", ["host", "device-scaled"])
def test_a_hanging_cell_is_a_timeout_on_every_clock(tmp_path, cells_run, clock):
    """A hung cell burns no CPU, so on the scaled clock its device time stands still: the host's wall clock
    must still end it."""
    # A device ten times faster than a host core: its scaled seconds pass slower than the wall clock's.
    spec = two_cells(clock, timeout=1).replace("cpus: 1}", "cpus: 1, gflops: 2000}")
    code, records = cells_run(HANG, tmp_path, spec)
    assert code == 3 and [r.status for r in records] == ["timeout", "timeout"]
    assert [r.clock.kind for r in records] == [clock, clock]
    for record in records:
        assert "1 s timeout" in record.error and 1 <= record.host_seconds < 5
