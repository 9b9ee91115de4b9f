"""`edgebench run` end to end through the real CLI, real subprocess cells and real kernel caps."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from harness.record.store import RESULTS, load_records
from tests.helpers import OOM_AND_OK, SMALL, edgebench, require_kernel_caps, start_edgebench, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_cgroups")]

def test_over_cap_cell_is_oom_and_the_run_carries_on(tmp_path):
    backend = require_kernel_caps()
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, OOM_AND_OK)), "--out", str(out), "--no-report", timeout=600, process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r.device.name: r for r in load_records(out)}
    small, large = records["rpi-zero-2w"], records["rpi-4-2gb"]
    assert small.status == "oom", small
    assert small.enforcement == backend and small.memory.cgroup_peak_bytes >= 0.95 * small.device.memory_bytes
    assert large.status == "ok", large.error
    assert large.steps == 1 and large.validity.valid, large.validity
    assert large.peak_memory_source == "rss"
    assert 500e6 < large.peak_memory_bytes < large.device.memory_bytes
    assert large.predicted_peak_bytes and large.metrics.param_count > 100e6
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["enforcement"] == backend and run_info["versions"]["torch"]
    measured = {entry["threads"]: entry for entry in run_info["memory_model"]}  # the memory model's host terms
    assert set(measured) == {r.clock.threads for r in records.values()}
    assert all(m["runtime_synthetic_bytes"] > 100e6 and m["allocator"]["no_grad_retention"] > 0 for m in measured.values())


@pytest.mark.parametrize("clock", ["host", "device-scaled"])
def test_timeout_is_a_recorded_status_in_the_clocks_seconds(tmp_path, clock):
    require_kernel_caps()
    spec = SMALL.replace("timeout_s: 300", f"timeout_s: 4\nclock: {clock}")
    spec = spec.replace("max_steps: 2", "max_steps: null\n  max_seconds: 600")
    spec = spec.replace("[mezo, bp-checkpointed, bp, inference]", "mezo")
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report", process=True)
    assert proc.returncode == 3, proc.stderr[-3000:]  # a cell without a measurement: re-run with --retry-errors
    (record,) = load_records(out)
    assert record.status == "timeout" and "4 s timeout" in record.error
    if clock == "host":
        assert 4 <= record.host_seconds < 10
    else:  # a Pi 4 is about 8x slower than a host core: 4 device seconds pass in about half a host second
        assert 4 <= record.device_seconds < 8 and record.host_seconds < 3


def test_sigkill_mid_matrix_then_rerun_completes_without_duplicates(tmp_path):
    require_kernel_caps()
    spec, out = write_spec(tmp_path, SMALL), tmp_path / "run"
    argv = ["run", str(spec), "--out", str(out), "--no-report"]
    harness = start_edgebench(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / RESULTS).exists():
        time.sleep(0.1)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    before = (out / RESULTS).read_bytes()
    first = [json.loads(line) for line in before.splitlines()]
    assert 1 <= len(first) < 4, "the harness should have been killed mid-matrix"

    proc = edgebench("run", str(spec), "--out", str(out), "--no-report", process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"({len(first)} already done)" in proc.stderr
    after = (out / RESULTS).read_bytes()
    assert after.startswith(before), "finished records must be kept as they were"
    lines = [json.loads(line) for line in after.splitlines()]
    assert len(lines) == 4 and len({r["cell_id"] for r in lines}) == 4
    assert {r["params"]["method"]: r["status"] for r in lines} == dict.fromkeys(
        ("mezo", "bp-checkpointed", "bp", "inference"), "ok"
    )


BAD_SPECS = {
    "yaml": "devices: [rpi-4-2gb\nmatrix: {model: opt-1m}\n",
    "device": "devices: [rpi-99]\nmatrix: {model: opt-1m}\n",
    "negative": "devices: [{name: x, memory: -1GB}]\nmatrix: {model: opt-1m}\n",
    "zero": "devices: [{name: x, memory: 0}]\nmatrix: {model: opt-1m}\n",
    "axis": "devices: [rpi-4-2gb]\nmatrix: {model: opt-1m, colour: red}\n",
    "method": "devices: [rpi-4-2gb]\nmatrix: {model: opt-1m, method: adam}\n",
    "model": "devices: [rpi-4-2gb]\nmatrix: {model: opt-does-not-exist}\n",
    "batch": "devices: [rpi-4-2gb]\nmatrix: {model: opt-1m, batch: 0}\n",
    "lr": "devices: [rpi-4-2gb]\nmatrix: {model: opt-1m, lr: -1}\n",
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, case):
    out = tmp_path / "out"
    proc = edgebench("run", str(write_spec(tmp_path, BAD_SPECS[case])), "--out", str(out), process=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgebench: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "spec.yaml" in lines[0]
    assert not out.exists()


def test_unwritable_output_directory_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = edgebench("run", str(write_spec(tmp_path, SMALL)), "--out", str(blocker / "run"), process=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"edgebench: error: output path {blocker} is not a directory; pass --out with a directory"
    ]
