"""Faults: a harness SIGKILLed at random moments loses, tears and duplicates no record and leaves no cgroup or
cell process behind; probing cgroup v2 changes nothing while a run puts back what it changed; a dead harness's
containers are swept by the next run."""

from __future__ import annotations

import errno
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devices.caps import cgroup_v2
from devices.caps.cgroup_v2 import HARNESS_LEAF, CgroupV2
from devices.profile import DeviceProfile
from harness.plan.spec import load_spec
from harness.record.records import CellRecord
from harness.record.store import RESULTS
from harness.run.executors.docker import LABEL, OWNER_LABEL, harness_owner, sweep_stale_containers
from tests.helpers import write_spec
from tests.test_signals import fake_cell_harness

KILLS = 24
#: 24 cells of a one-core device (two fit the host at once under --jobs 2), each a fraction of a second.
MATRIX = """
name: faults
clock: host
timeout_s: 60
devices: [{name: one-core, memory: 512MiB, cpus: 1}]
matrix:
  model: opt-1m
  method: [mezo, bp-checkpointed, bp, inference]
  seed: [0, 1, 2, 3, 4, 5]
  max_steps: 1
"""
#: A cell that works a moment, then reports as the real runner does.
QUICK_CELL = """
import json, random, time
time.sleep(random.uniform(0.05, 0.25))
result = {"event": "result", "status": "ok", "steps": 1, "metrics": {"versions": {"torch": "stand-in"}}}
print(json.dumps(result))
"""


def complete_ids(results: Path) -> list[str]:
    """The cell ids of the complete lines (a partial last line is a writer's killed mid-line)."""
    data = results.read_bytes() if results.exists() else b""
    return [json.loads(line)["cell_id"] for line in data.split(b"\n")[:-1]]


def processes_naming(marker: str) -> list[psutil.Process]:
    """Live processes whose command line holds `marker` (zombies are dead, only not yet reaped)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.integration
@pytest.mark.usefixtures("no_leftover_cgroups")
def test_sigkilled_at_random_moments_then_rerun_loses_tears_and_duplicates_nothing(tmp_path):
    rng = random.Random(13)
    spec, out = write_spec(tmp_path, MATRIX), tmp_path / "run"
    cells = {c.id for c in load_spec(spec).cells}
    cell_code = f"{QUICK_CELL}# {tmp_path}"  # the marker that finds any cell process left behind

    def harness(*extra: str) -> subprocess.Popen:
        argv = ["run", str(spec), "--out", str(out), "--no-report", *extra]
        return fake_cell_harness(cell_code, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    seen: set[str] = set()  # every record ever complete in the file: none may go missing later
    mid_matrix = 0  # kills that left cells to do
    for _ in range(KILLS):
        victim = harness("--jobs", rng.choice(["1", "2"]))
        time.sleep(rng.uniform(0.0, 1.2))  # startup, prepare, a cell's launch, its run, an append, the exit
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        seen |= set(complete_ids(out / RESULTS))
        mid_matrix += len(seen) < len(cells)
    final = harness()
    assert final.wait(timeout=120) == 0

    data = (out / RESULTS).read_bytes()
    ids = [CellRecord.model_validate_json(line).cell_id for line in data.splitlines()]  # no torn line
    lost, duplicated = len(seen - set(ids)), len(ids) - len(set(ids))
    deadline = time.monotonic() + 5  # a killed harness's cells die with it (PR_SET_PDEATHSIG), promptly
    while processes_naming(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_naming(str(tmp_path))
    print(
        f"\n{KILLS} SIGKILLs ({mid_matrix} mid-matrix), {len(cells)} cells: {lost} records lost, {duplicated} "
        f"duplicated, 0 torn lines, {len(left)} cell processes left, {len(seen)} records complete before the rerun"
    )
    assert data.endswith(b"\n") and (lost, duplicated) == (0, 0)
    assert set(ids) == cells and left == []


PROC = "0::/jobs/me\n"


@pytest.fixture
def cgroupfs(tmp_path, monkeypatch):
    """A cgroup v2 tree in plain directories that answers what delegation writes as the kernel does: a new
    cgroup gets its interface files, +/- in cgroup.subtree_control switch controllers, a pid written to a
    cgroup.procs leaves its other cgroup, and rmdir removes an empty cgroup with its interface files."""
    mount = tmp_path / "cg"
    base = mount / "jobs" / "me"
    base.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("cpu memory io pids\n")
    (base / "cgroup.controllers").write_text("cpu memory io pids\n")
    (base / "cgroup.subtree_control").write_text("\n")
    (base / "cgroup.procs").write_text("101\n102\n")
    real_mkdir, real_write, real_rmdir = Path.mkdir, Path.write_text, Path.rmdir

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if mount in self.parents:
            controllers = (self.parent / "cgroup.subtree_control").read_text()
            for name, text in {"cgroup.controllers": controllers, "cgroup.subtree_control": "", "cgroup.procs": ""}.items():
                real_write(self / name, text)
            for name in ("memory.max", "memory.swap.max", "cpu.max", "memory.peak", "memory.events", "pids.max"):
                real_write(self / name, "")

    def write_text(self, data, *args, **kwargs):
        if mount not in self.parents:
            return real_write(self, data, *args, **kwargs)
        if self.name == "cgroup.subtree_control":
            enabled = set(self.read_text().split())
            for token in data.split():
                enabled = enabled | {token[1:]} if token[0] == "+" else enabled - {token[1:]}
            return real_write(self, "".join(f"{c}\n" for c in sorted(enabled)) or "\n")
        if self.name == "cgroup.procs":
            for procs in mount.rglob("cgroup.procs"):
                real_write(procs, "".join(f"{p}\n" for p in procs.read_text().split() if p != data.strip()))
            return real_write(self, self.read_text() + f"{data.strip()}\n")
        return real_write(self, data, *args, **kwargs)

    def rmdir(self):
        if mount in self.parents:
            if (self / "cgroup.procs").read_text().split():
                raise OSError(errno.EBUSY, "Device or resource busy", str(self))
            for interface in self.iterdir():
                interface.unlink()
        real_rmdir(self)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(Path, "rmdir", rmdir)
    monkeypatch.setattr(cgroup_v2, "find_base", lambda *args, **kwargs: base)
    return mount, base


def snapshot(root: Path) -> dict[str, str | None]:
    return {str(p.relative_to(root)): p.read_text() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_probing_cgroup_v2_changes_nothing_on_the_host(cgroupfs):
    mount, _ = cgroupfs
    before = snapshot(mount)
    assert CgroupV2.unavailable_reason() is None
    assert snapshot(mount) == before


def test_probing_says_when_the_controllers_could_not_be_delegated(cgroupfs, monkeypatch):
    mount, base = cgroupfs
    monkeypatch.setattr(cgroup_v2.os, "access", lambda path, mode: False)
    before = snapshot(mount)
    assert CgroupV2.unavailable_reason() == f"cannot delegate the memory controller under {base} (not writable); run as root"
    assert snapshot(mount) == before


def test_a_run_delegates_for_its_cells_then_puts_the_host_back(cgroupfs):
    mount, base = cgroupfs
    before = snapshot(mount)
    restore = CgroupV2.prepare_host()
    assert (base / "cgroup.subtree_control").read_text().split() == ["cpu", "memory", "pids"]
    assert (base / HARNESS_LEAF / "cgroup.procs").read_text().split() == ["101", "102"]
    with CgroupV2(DeviceProfile(name="pi", memory="512MiB"), "cell", mounts=(mount,), proc_cgroup=PROC) as cap:
        assert (cap.directory / "memory.max").read_text() == str(512 << 20)
    restore()
    assert snapshot(mount) == before


def test_the_delegation_stays_while_another_runs_cells_are_below(cgroupfs):
    _, base = cgroupfs
    restore = CgroupV2.prepare_host()
    (base / "edgebench-4242-other-run").mkdir()
    restore()
    assert (base / "cgroup.subtree_control").read_text().split() == ["cpu", "memory", "pids"]


class FakeContainer:
    def __init__(self, name: str, owner: str) -> None:
        self.name, self.labels, self.removed = name, {LABEL: name, OWNER_LABEL: owner}, False

    def remove(self, force: bool = False) -> None:
        assert force, "a stale container may still run: remove it by force"
        self.removed = True


class FakeEngine:
    """The one call the sweep makes of a docker client: list containers with a label."""

    def __init__(self, containers: list[FakeContainer]) -> None:
        self.all = containers
        self.containers = self

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:  # noqa: A002 - the SDK's name
        assert all, "exited containers are leftovers too"
        return [c for c in self.all if filters["label"] in c.labels]


def test_the_containers_of_dead_harnesses_are_swept_and_no_others():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    me = harness_owner()
    containers = [
        FakeContainer("dead-harness", f"{host}:{dead.pid}:0"),
        FakeContainer("pid-reused", f"{me.rsplit(':', 1)[0]}:1.00"),  # this pid, but a process started earlier
        FakeContainer("running-harness", me),
        FakeContainer("other-host", "elsewhere:1:0"),
    ]
    assert sweep_stale_containers(FakeEngine(containers)) == ["dead-harness", "pid-reused"]
    assert [c.removed for c in containers] == [True, True, False, False]
