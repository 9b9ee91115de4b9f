"""A device whose cap exceeds the host's memory cannot be simulated: its cap would never bind. `run` refuses it
before any cell runs (one line, exit 2, nothing written); `estimate` and `doctor` say so."""

from __future__ import annotations

import argparse

import pytest

from devices.profile import DeviceProfile
from harness.cli.commands import doctor, estimate
from harness.plan.host_capacity import check_host_capacity, host_capacity_problem
from harness.plan.spec import load_spec
from harness.record.errors import UserError
from tests.helpers import edgebench, write_spec

GB = 1000**3
HUGE = """
name: huge
clock: host
devices: [rpi-4-2gb, {name: mainframe, memory: 1000TB, cpus: 1}]
matrix:
  model: opt-1m
  method: mezo
  max_steps: 1
"""


def test_a_cap_above_the_hosts_memory_is_a_problem_that_names_device_cap_host_and_fix():
    problem = host_capacity_problem(DeviceProfile(name="big", memory="8GiB"), 4 * 1024**3)
    assert problem == (
        "device big caps memory at 8.0 GiB but this host has 4.0 GiB, so the cap could never bind; "
        "pick a smaller device or run on a host with more memory"
    )
    assert host_capacity_problem(DeviceProfile(name="fits", memory="4GiB"), 4 * 1024**3) is None


def test_the_check_refuses_the_first_device_too_large_for_the_host():
    devices = [DeviceProfile(name="small", memory="1GB"), DeviceProfile(name="big", memory="3GB")]
    check_host_capacity(devices[:1], host_bytes=2 * GB)
    with pytest.raises(UserError, match="^device big caps memory"):
        check_host_capacity(devices, host_bytes=2 * GB)


def test_run_refuses_a_device_larger_than_the_host_before_any_cell_runs(tmp_path, scripted):
    out = tmp_path / "out"
    result = edgebench(*run_args(tmp_path, HUGE, out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("edgebench: error: device mainframe caps memory at ")
    assert "pick a smaller device or run on a host with more memory" in lines[0]
    assert not out.exists() and scripted.RAN == []


def test_a_slice_of_devices_the_host_holds_runs(tmp_path, scripted):
    assert edgebench(*run_args(tmp_path, HUGE, tmp_path / "out", "--device", "rpi-4-2gb")).returncode == 0
    assert scripted.RAN == ["mezo"]


def test_a_ray_run_leaves_the_check_to_its_nodes(tmp_path, scripted):
    """Ray places a cell on a node of the cluster, whose memory its admission checks (placement_problem)."""
    assert edgebench(*run_args(tmp_path, HUGE, tmp_path / "out", "--executor", "ray")).returncode == 0


def test_a_largest_fitting_search_of_a_device_too_large_is_refused(tmp_path):
    spec = HUGE.replace("model: opt-1m", "model: {largest_fitting: [opt-1m, opt-8m]}")
    loaded = load_spec(write_spec(tmp_path, spec))
    assert not loaded.cells and "mainframe" in {d.name for d in loaded.devices_for(None)}
    with pytest.raises(UserError, match="device mainframe"):
        check_host_capacity(loaded.devices_for(None))


def test_estimate_says_when_run_would_refuse_the_device(monkeypatch):
    monkeypatch.setattr(estimate, "host_memory_bytes", lambda: 1 * GB)
    args = argparse.Namespace(
        device="rpi-4-2gb", model="opt-1m", method="mezo", task="synthetic", batch=1, seq=16, dtype="fp32",
        optimizer="adamw", tuning="full", json=True, file=[],
    )  # fmt: skip
    result = estimate.estimate(args)
    assert result["host_memory_bytes"] == GB
    assert result["host_problem"].startswith("device rpi-4-2gb caps memory at 1.9 GiB but this host has 953.7 MiB")


def test_doctor_lists_the_catalogue_devices_this_host_cannot_simulate(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no devices.yaml of the developer's
    monkeypatch.setattr(doctor, "host_memory_bytes", lambda: 1 * GB)
    problems = doctor.too_large_for_host()
    assert "rpi-4-2gb" in problems and "rpi-zero-2w" not in problems and "rpi-3b-plus" not in problems
    assert problems["rpi-4-2gb"].startswith("device rpi-4-2gb caps memory")


def run_args(tmp_path, spec: str, out, *extra: str) -> tuple[str, ...]:
    """`edgebench run` of `spec` into `out`, without a report."""
    return ("run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report", *extra)
