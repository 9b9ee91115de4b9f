"""cgroup v2: memory.max with memory.swap.max=0, cpu.max, peak from memory.peak, OOM from memory.events."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.caps.base import (
    CGROUP_PREFIX,
    CapBackend,
    CapReading,
    CapUnavailable,
    cell_cgroup_name,
    excludes_swap,
    kill_and_remove,
    sweep_stale,
)
from devices.child_env import ENV_JOIN

MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
# v2 forbids processes in an inner cgroup that delegates controllers, so the harness
# moves the processes of its own cgroup into this leaf before enabling memory below it.
HARNESS_LEAF = "edgebench-harness"


def own_path(proc_cgroup: str | None = None) -> str | None:
    text = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def find_base(mounts: tuple[Path, ...] = MOUNTS, proc_cgroup: str | None = None) -> Path | None:
    """The v2 cgroup this process lives in, if a v2 hierarchy with a memory controller holds it."""
    path = own_path(proc_cgroup)
    if path is None:
        return None
    for mount in mounts:
        if not (mount / "cgroup.controllers").exists():
            continue
        base = mount / path.lstrip("/")
        if base.name == HARNESS_LEAF:
            base = base.parent
        if (base / "cgroup.controllers").exists() and "memory" in (
            base / "cgroup.controllers"
        ).read_text().split():
            return base
    return None


@dataclass(frozen=True)
class Delegation:
    """What delegate() changed under `base`, for undelegate() to put back."""

    base: Path
    enabled: frozenset[str]  # the controllers it enabled for base's children
    made_leaf: bool


def _words(path: Path) -> set[str]:
    return set(path.read_text().split())


def _wanted(base: Path) -> set[str]:
    return {"memory"} | ({"cpu", "pids"} & _words(base / "cgroup.controllers"))


def delegation_problem(base: Path) -> str | None:
    """Why delegate(base) could not work, found by reading only: probing must leave the host as it was."""
    if _wanted(base) <= _words(base / "cgroup.subtree_control"):
        return None
    if not (os.access(base / "cgroup.subtree_control", os.W_OK) and os.access(base, os.W_OK)):
        return f"cannot delegate the memory controller under {base} (not writable); run as root"
    return None


def delegate(base: Path) -> Delegation:
    """Enable memory (and cpu when offered) for children of `base`, moving its processes into a leaf."""
    wanted, enabled = _wanted(base), _words(base / "cgroup.subtree_control")
    leaf = base / HARNESS_LEAF
    if wanted <= enabled:
        return Delegation(base, frozenset(), made_leaf=False)
    made_leaf = not leaf.exists()
    leaf.mkdir(exist_ok=True)
    _move_processes(base, leaf)
    (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted - enabled)))
    return Delegation(base, frozenset(wanted - enabled), made_leaf)


def undelegate(delegation: Delegation) -> None:
    """Put back what delegate() changed, unless cells of another run are still below (they need it)."""
    base, leaf = delegation.base, delegation.base / HARNESS_LEAF
    others = [p for p in base.iterdir() if p.name.startswith(CGROUP_PREFIX) and p != leaf and p.is_dir()]
    if not delegation.enabled or others:
        return
    (base / "cgroup.subtree_control").write_text(" ".join(f"-{c}" for c in sorted(delegation.enabled)))
    _move_processes(leaf, base)
    if delegation.made_leaf:
        leaf.rmdir()


def _move_processes(source: Path, target: Path) -> None:
    for pid in (source / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):  # the process exited meanwhile, or is a kernel thread
            (target / "cgroup.procs").write_text(pid)


class CgroupV2(CapBackend):
    name = "cgroup-v2"

    def __init__(
        self, profile, label, clock=None, mounts: tuple[Path, ...] = MOUNTS, proc_cgroup: str | None = None
    ) -> None:
        super().__init__(profile, label, clock)
        self.period_us = 0  # the CFS period of cpu.max, once create() has set it
        self.mounts = mounts
        self.proc_cgroup = proc_cgroup
        self.directory: Path | None = None
        self.swap_guarded = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        base = find_base()
        if base is None:
            return "no cgroup v2 hierarchy with a memory controller holds this process"
        return delegation_problem(base)

    @classmethod
    def can_throttle(cls) -> bool:
        base = find_base()
        return base is not None and "cpu" in (base / "cgroup.controllers").read_text().split()

    @classmethod
    def can_govern(cls) -> bool:
        return cls.can_throttle()  # cpu.stat's usage_usec comes with the cpu controller

    @classmethod
    def prepare_host(cls) -> Callable[[], None]:
        """Delegate the controllers for the run's cells and sweep dead harnesses' cells; undone at the run's end."""
        base = find_base()
        if base is None:
            raise CapUnavailable("cgroup v2 memory controller not found")
        try:
            delegation = delegate(base)
        except OSError as exc:
            reason = f"cannot delegate the memory controller under {base} ({exc.strerror}); run as root"
            raise CapUnavailable(reason) from None
        sweep_stale(base)
        return functools.partial(undelegate, delegation)

    def create(self) -> None:
        base = find_base(self.mounts, self.proc_cgroup)
        if base is None:
            raise CapUnavailable("cgroup v2 memory controller not found")
        delegate(base)  # only reads once the run's prepare_host has delegated
        sweep_stale(base)
        self.directory = base / cell_cgroup_name(self.label)
        self.directory.mkdir()
        (self.directory / "memory.max").write_text(str(self.profile.memory_bytes))
        swap_max = self.directory / "memory.swap.max"
        if swap_max.exists():  # absent when the kernel does not account swap (swapaccount=0)
            swap_max.write_text("0")
            self.swap_guarded = True
        pids_max = self.directory / "pids.max"
        if not pids_max.exists():
            raise CapUnavailable("the cgroup v2 pids controller is not delegated here: a cell could fork without limit")
        pids_max.write_text(str(self.profile.pids_limit))
        if (self.directory / "cpu.max").exists():
            self.period_us, quota = self.clock.cfs()
            self.write_quota(quota)
        elif self.clock.throttled:
            raise CapUnavailable("the device-throttled clock needs the cpu controller, which is not delegated here")

    def cpu_usage_seconds(self) -> float:
        assert self.directory is not None
        return int(_keyed(self.directory / "cpu.stat")["usage_usec"]) / 1e6

    def write_quota(self, quota_us: int) -> None:
        assert self.directory is not None
        (self.directory / "cpu.max").write_text(f"{quota_us} {self.period_us}")

    def child_env(self) -> dict[str, str]:
        assert self.directory is not None
        return {**self.common_env(), ENV_JOIN: str(self.directory / "cgroup.procs")}

    def reading(self) -> CapReading:
        assert self.directory is not None
        peak_file = self.directory / "memory.peak"
        peak = int(peak_file.read_text()) if peak_file.exists() else None
        events = _keyed(self.directory / "memory.events")
        killed = int(events.get("oom_kill", 0)) > 0
        return CapReading(peak, killed, self.name, excludes_swap(self.swap_guarded))

    def destroy(self) -> None:
        if self.directory is not None:
            kill_and_remove(self.directory)


def _keyed(path: Path) -> dict[str, str]:
    """A flat-keyed cgroup file (`key value` lines: memory.events, cpu.stat)."""
    return dict(line.split() for line in path.read_text().splitlines())
