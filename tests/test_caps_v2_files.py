"""cgroup v2 file logic on a fake cgroup tree (this host has no v2 memory controller to use for real)."""

from __future__ import annotations

import pytest

from devices.caps import cgroup_v2
from devices.caps.base import CapUnavailable
from devices.caps.cgroup_v2 import HARNESS_LEAF, CgroupV2, delegate, find_base
from devices.child_env import ENV_JOIN
from devices.profile import DEFAULT_PIDS_LIMIT, DeviceProfile

PROC = "0::/jobs/me\n"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    mount = tmp_path / "cg"
    base = mount / "jobs/me"
    base.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("cpu memory io pids\n")
    (base / "cgroup.controllers").write_text("cpu memory io pids\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text("101\n102\n")
    # A real cgroupfs creates interface files in a new directory and lets rmdir remove them.
    real_mkdir = type(base).mkdir

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        for name in ("cgroup.procs", "memory.max", "memory.swap.max", "cpu.max", "pids.max", "memory.peak", "memory.events"):
            if not (self / name).exists():
                (self / name).write_text("")

    monkeypatch.setattr(type(base), "mkdir", mkdir)
    monkeypatch.setattr(cgroup_v2, "kill_and_remove", lambda d: None)
    return mount, base


def test_find_base_uses_proc_self_cgroup(tree):
    mount, base = tree
    assert find_base((mount,), PROC) == base
    assert find_base((mount,), f"0::/jobs/me/{HARNESS_LEAF}\n") == base
    assert find_base((mount,), "4:memory:/x\n") is None


def test_delegate_moves_processes_to_a_leaf_then_enables_controllers(tree):
    _, base = tree
    delegate(base)
    assert (base / HARNESS_LEAF / "cgroup.procs").read_text() == "102"  # last pid written wins in a file
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_cell_cgroup_gets_memory_swap_and_cpu_caps(tree):
    mount, base = tree
    profile = DeviceProfile(name="pi", memory="512MiB", cpus=1.5)
    backend = CgroupV2(profile, "cell1", mounts=(mount,), proc_cgroup=PROC)
    backend.create()
    directory = backend.directory
    assert directory.parent == base and directory.name.startswith("edgebench-")
    assert (directory / "memory.max").read_text() == str(512 * 1024**2)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "cpu.max").read_text() == "150000 100000"
    assert (directory / "pids.max").read_text() == str(DEFAULT_PIDS_LIMIT)
    assert backend.child_env()[ENV_JOIN] == str(directory / "cgroup.procs")


def test_a_cell_cgroup_gets_its_devices_pids_limit_and_refuses_without_the_controller(tree, monkeypatch):
    mount, base = tree
    backend = CgroupV2(DeviceProfile(name="pi", memory="1GB", pids=64), "c", mounts=(mount,), proc_cgroup=PROC)
    backend.create()
    assert (backend.directory / "pids.max").read_text() == "64"
    with_files = type(base).mkdir

    def mkdir_without_pids(self, *args, **kwargs):  # a host whose v2 tree does not offer pids
        with_files(self, *args, **kwargs)
        (self / "pids.max").unlink(missing_ok=True)

    monkeypatch.setattr(type(base), "mkdir", mkdir_without_pids)
    with pytest.raises(CapUnavailable, match="pids controller"):
        CgroupV2(DeviceProfile(name="pi", memory="1GB"), "d", mounts=(mount,), proc_cgroup=PROC).create()


def test_reading_parses_peak_and_oom_events(tree):
    mount, _ = tree
    backend = CgroupV2(DeviceProfile(name="pi", memory="1GB"), "c", mounts=(mount,), proc_cgroup=PROC)
    backend.create()
    (backend.directory / "memory.peak").write_text("123456789\n")
    (backend.directory / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    reading = backend.reading()
    assert (reading.peak_bytes, reading.oom_killed, reading.source) == (123456789, True, "cgroup-v2")
    (backend.directory / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    assert backend.reading().oom_killed is False
