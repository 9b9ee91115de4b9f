"""Caps enforced by the real kernel on this host (root + cgroup v1 here), proven by over-cap allocations."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devices.caps.base import CGROUP_PREFIX
from devices.caps.cgroup_v1 import CgroupV1, controller_dir
from devices.caps.rlimit import RlimitAS
from devices.caps.select import choose_backend
from devices.profile import DeviceProfile
from devices.verify import prove
from tests.helpers import edgebench_json, require_kernel_caps

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_cgroups")]


@pytest.mark.timing
def test_doctor_proves_the_kernel_backend():
    expected = require_kernel_caps()
    report = edgebench_json("doctor")
    assert report["enforcement"] == expected
    assert report["verified"] is True
    assert report["proof"]["over_cap_returncode"] == -9
    assert report["backends"]["rlimit"]["available"] is True
    # The throttle, through the real kernel: the catalogue's slowest device and its fastest that leaves this host a
    # core to spare, within 15%.
    proofs = {p["device"]: p for p in report["throttle"]["proofs"]}
    assert "jetson-nano" in proofs and len(proofs) == 2, report["throttle"]
    cores = report["throttle"]["host"]["cores"]
    assert all(p["quota_cores"] <= max(1, cores - 1) for p in proofs.values()), report["throttle"]
    for proof in proofs.values():
        assert abs(proof["share"] - 1) <= 0.15, proof
        spread = proof["spread"]  # the parts of the loop, each a third of it: their shares are in the output
        assert spread["windows"] == 3 and spread["min"] <= proof["share"] <= spread["max"], proof
        assert proof["host_drift"] > 0 and proof["ratio"] > 0, proof


def test_rlimit_fallback_turns_overrun_into_memory_error():
    proof = prove(RlimitAS)
    assert proof.verified, proof.detail
    assert "MemoryError" in proof.detail


def test_cgroup_v1_sets_memory_swap_and_cpu_quota_and_cleans_up():
    if require_kernel_caps() != "cgroup-v1":
        pytest.skip("this host's kernel backend is cgroup v2 (covered by the fake-tree tests)")
    profile = DeviceProfile(name="pi", memory="300MiB", cpus=0.5)
    with CgroupV1(profile, "limits") as cap:
        memory_dir, cpu_dir = cap.memory_dir, cap.cpu_dir
        assert int((memory_dir / "memory.limit_in_bytes").read_text()) == 300 * 1024**2
        if (memory_dir / "memory.memsw.limit_in_bytes").exists():
            assert int((memory_dir / "memory.memsw.limit_in_bytes").read_text()) == 300 * 1024**2
        assert int((cpu_dir / "cpu.cfs_quota_us").read_text()) == 50_000
        code = "import os; print(open('/proc/self/cgroup').read())"
        env = {**os.environ, **cap.child_env()}
        out = subprocess.run(cap.command([sys.executable, "-c", code]), env=env, capture_output=True, text=True)
        assert memory_dir.name in out.stdout and cpu_dir.name in out.stdout
    assert not memory_dir.exists() and not cpu_dir.exists()


def test_stale_cgroups_of_a_dead_harness_are_swept():
    backend = choose_backend()
    if backend is not CgroupV1:
        pytest.skip("stale sweep is exercised here on cgroup v1")
    base = controller_dir("memory")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = base / f"{CGROUP_PREFIX}{dead.pid}-leftover"
    stale.mkdir()
    with CgroupV1(DeviceProfile(name="pi", memory="256MiB"), "fresh"):
        pass
    assert not stale.exists()
