"""Hostile cells through the real launcher, kernel caps and executor (issue 26): a cell that floods its output or
forks without end is stopped and recorded `error` with the reason, the harness (which has no cap) stays small,
the other cell of the run and the records are untouched, and nothing is left behind.

The harness runs as a subprocess (the real CLI, each cell's workload replaced by `python -c CODE`); its own peak
RSS is its VmHWM, read until it exits. Not wait4's ru_maxrss: Linux keeps, across exec, the high-water mark of the
memory a vforked child shared with its parent, so under pytest-xdist a harness read the worker's 212 MiB."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.executors.base import MAX_EVENTS, MAX_LINE_BYTES, MAX_LOG_BYTES
from harness.store import load_records
from tests.helpers import require_kernel_caps, write_spec
from tests.test_signals import fake_cell_harness

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_cgroups")]

GIB = 1 << 30
#: Two one-core cells: the hostile one (method mezo) and a well-behaved one (method inference) beside it.
SPEC = """
name: hostile
timeout_s: 300
devices: [{name: one-core, memory: 512MiB, cpus: 1}]
matrix: {model: opt-1m, method: [mezo, inference], max_steps: 1}
"""
#: argv[1] is the cell's method: the inference cell behaves, the mezo cell runs HOSTILE.
CELL = """
import json, os, sys
if sys.argv[1] == "inference":
    print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}), flush=True)
    sys.exit(0)
HOSTILE
"""
ONE_LINE = f"""
chunk = b"x" * (1 << 20)
for _ in range({GIB} // len(chunk)):  # 1 GiB on one line, never held whole by the cell
    os.write(1, chunk)
"""
STDERR = f"""
chunk = b"e" * (1 << 20)
for _ in range({GIB} // len(chunk)):
    os.write(2, chunk)
"""
EVENTS = f"""
line = json.dumps({{"event": "note", "n": 1}}) + "\\n"
sys.stdout.write(line * ({MAX_EVENTS} * 3))
sys.stdout.flush()
"""
HARNESS_RSS_LIMIT = 200 << 20


def run_hostile(tmp_path: Path, hostile: str, jobs: int = 2, spec: str = SPEC) -> tuple[int, int, str, Path]:
    """The run's exit code, the harness's peak RSS (bytes), its stderr, and the run directory."""
    require_kernel_caps()
    out = tmp_path / "run"
    code = CELL.replace("HOSTILE", hostile)
    argv = ["run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report", "--jobs", str(jobs)]
    harness = fake_cell_harness(code, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    stderr = b""
    os.set_blocking(harness.stderr.fileno(), False)
    peak = 0
    while True:
        stderr += harness.stderr.read() or b""
        peak = max(peak, high_water_bytes(harness.pid))
        pid, status, _ = os.wait4(harness.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            harness.kill()
            raise AssertionError("the harness did not end within 300 s")
        time.sleep(0.05)
    harness.returncode = os.waitstatus_to_exitcode(status)
    stderr += harness.stderr.read() or b""
    return harness.returncode, peak, stderr.decode(errors="replace"), out


def high_water_bytes(pid: int) -> int:
    """The process's own peak RSS so far (VmHWM), 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def check_contained(out: Path, rss: int, reason: str) -> None:
    assert rss < HARNESS_RSS_LIMIT, f"the harness peaked at {rss / 2**20:.0f} MiB"
    records = {r.params.method: r for r in load_records(out)}
    assert set(records) == {"mezo", "inference"}
    assert records["inference"].status == "ok", records["inference"].error  # the other cell is untouched
    assert records["mezo"].status == "error" and reason in (records["mezo"].error or ""), records["mezo"].error


def test_a_gigabyte_on_one_line_stops_the_cell_not_the_harness(tmp_path):
    code, rss, stderr, out = run_hostile(tmp_path, ONE_LINE)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"a line of over {MAX_LINE_BYTES >> 20} MiB")
    print(f"harness peak RSS {rss / 2**20:.1f} MiB with a 1 GiB line")


def test_a_gigabyte_on_stderr_is_cut_at_the_log_bound(tmp_path):
    code, rss, stderr, out = run_hostile(tmp_path, STDERR)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"over {MAX_LOG_BYTES >> 20} MiB to stderr")
    logs = {p.name: p.stat().st_size for p in (out / "logs").iterdir()}
    assert max(logs.values()) <= MAX_LOG_BYTES + 4096, logs
    print(f"harness peak RSS {rss / 2**20:.1f} MiB with 1 GiB on stderr; largest log {max(logs.values())} bytes")


def test_a_flood_of_events_stops_the_cell(tmp_path):
    code, rss, stderr, out = run_hostile(tmp_path, EVENTS)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"over {MAX_EVENTS} events")


def test_the_harness_reads_a_legitimate_result_line_of_several_megabytes(tmp_path):
    """The result line carries base64 predictions: a long line under the bound is a result, not a violation."""
    big = """
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {"blob": "p" * (8 << 20)}}), flush=True)
"""
    code, rss, stderr, out = run_hostile(tmp_path, big, jobs=1)
    assert code == 0, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    assert records["mezo"].status == "ok" and len(records["mezo"].metrics["blob"]) == 8 << 20


if __name__ == "__main__":  # pragma: no cover - for measuring by hand
    sys.exit(pytest.main([__file__, "-q", "-s"]))


#: Forks sleeping children until the kernel refuses, then says how many it got (its cgroup reaps them after).
FORKS = """
import time
count = 0
for _ in range(400):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        break
    count += 1
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {"forks": count}}), flush=True)
"""
#: A fork bomb: every process forks for ever; the spec's timeout ends it.
BOMB = """
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
PIDS_SPEC = SPEC.replace("cpus: 1}", "cpus: 1, pids: 48}").replace("timeout_s: 300", "timeout_s: 4")


def cell_processes() -> int:
    """Processes of any user now running a `python -c` stand-in cell of this test module."""
    import psutil

    count = 0
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any("sys.argv[1] == \"inference\"" in part for part in proc.info["cmdline"] or []):
                count += 1
    return count


def test_a_cell_cannot_have_more_processes_than_its_devices_pids_limit(tmp_path):
    if not (os.path.isdir("/sys/fs/cgroup/pids") or os.path.exists("/sys/fs/cgroup/cgroup.controllers")):
        pytest.skip("no pids controller")
    code, rss, stderr, out = run_hostile(tmp_path, FORKS, jobs=1, spec=PIDS_SPEC.replace("timeout_s: 4", "timeout_s: 60"))
    assert code == 0, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    forks = records["mezo"].metrics["forks"]
    assert 0 < forks < 48, f"the cell forked {forks} children under a 48-pid limit"
    assert cell_processes() == 0, "a forked child outlived its cell"


def test_a_fork_bomb_is_contained_stopped_and_leaves_nothing(tmp_path):
    require_kernel_caps()
    out = tmp_path / "run"
    spec = tmp_path / "bomb.yaml"
    spec.write_text(PIDS_SPEC)
    code = CELL.replace("HOSTILE", BOMB)
    argv = ["run", str(spec), "--out", str(out), "--no-report", "--jobs", "2"]
    harness = fake_cell_harness(code, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = harness.communicate(timeout=120)
    assert harness.returncode == 3, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    assert records["inference"].status == "ok"
    assert records["mezo"].status == "timeout", records["mezo"].error
    assert cell_processes() == 0, "the bomb outlived its cell"
