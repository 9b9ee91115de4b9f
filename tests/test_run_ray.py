"""Cells as tasks on a real local Ray cluster: the node's cgroups still enforce the caps."""

from __future__ import annotations

import pytest

from harness.store import load_records
from tests.helpers import OOM_AND_OK, edgebench, require_kernel_caps, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.usefixtures("no_leftover_cgroups")]


def test_ray_executor_runs_cells_under_kernel_caps(tmp_path, monkeypatch):
    backend = require_kernel_caps()
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgebench[ray]')")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, OOM_AND_OK)), "--out", str(out), "--executor", "ray", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r.device.name: r for r in load_records(out)}
    assert records["rpi-zero-2w"].status == "oom"
    assert records["rpi-4-2gb"].status == "ok", records["rpi-4-2gb"].error
    assert {r.executor for r in records.values()} == {"ray"}
    assert {r.enforcement for r in records.values()} == {backend}
    ok = records["rpi-4-2gb"]  # the default clock: CPU seconds converted at the device's ratio, on a Ray worker
    assert ok.clock.kind == "device-scaled" and ok.clock.device_gflops == ok.device.gflops
    assert ok.device_seconds == pytest.approx(ok.cpu_seconds * ok.clock.ratio, rel=1e-3)
