"""cgroup v2: memory.max with memory.swap.max=0, cpu.max, peak from memory.peak, OOM from memory.events."""

from __future__ import annotations

import contextlib
from pathlib import Path

from devices.caps.base import (
    ENV_JOIN,
    CapBackend,
    CapReading,
    CapUnavailable,
    cell_cgroup_name,
    kill_and_remove,
    sweep_stale,
)
from devices.speed import cfs_quota

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


def delegate(base: Path) -> None:
    """Enable memory (and cpu when offered) for children of `base`, moving its processes into a leaf."""
    wanted = {"memory"} | ({"cpu"} & set((base / "cgroup.controllers").read_text().split()))
    enabled = set((base / "cgroup.subtree_control").read_text().split())
    if wanted <= enabled:
        return
    leaf = base / HARNESS_LEAF
    leaf.mkdir(exist_ok=True)
    for pid in (base / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):  # the process exited meanwhile, or is a kernel thread
            (leaf / "cgroup.procs").write_text(pid)
    (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted - enabled)))


class CgroupV2(CapBackend):
    name = "cgroup-v2"

    def __init__(
        self, profile, label, clock=None, mounts: tuple[Path, ...] = MOUNTS, proc_cgroup: str | None = None
    ) -> None:
        super().__init__(profile, label, clock)
        self.mounts = mounts
        self.proc_cgroup = proc_cgroup
        self.directory: Path | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        base = find_base()
        if base is None:
            return "no cgroup v2 hierarchy with a memory controller holds this process"
        try:
            delegate(base)
        except OSError as exc:
            return f"cannot delegate the memory controller under {base} ({exc.strerror}); run as root"
        return None

    @classmethod
    def can_throttle(cls) -> bool:
        base = find_base()
        return base is not None and "cpu" in (base / "cgroup.controllers").read_text().split()

    def create(self) -> None:
        base = find_base(self.mounts, self.proc_cgroup)
        if base is None:
            raise CapUnavailable("cgroup v2 memory controller not found")
        delegate(base)
        sweep_stale(base)
        self.directory = base / cell_cgroup_name(self.label)
        self.directory.mkdir()
        (self.directory / "memory.max").write_text(str(self.profile.memory_bytes))
        (self.directory / "memory.swap.max").write_text("0")
        if (self.directory / "cpu.max").exists():
            period, quota = cfs_quota(self.clock.cpu_quota_cores)
            (self.directory / "cpu.max").write_text(f"{quota} {period}")
        elif self.clock.throttled:
            raise CapUnavailable("the device-throttled clock needs the cpu controller, which is not delegated here")

    def child_env(self) -> dict[str, str]:
        assert self.directory is not None
        return {**self.common_env(), ENV_JOIN: str(self.directory / "cgroup.procs")}

    def reading(self) -> CapReading:
        assert self.directory is not None
        peak_file = self.directory / "memory.peak"
        peak = int(peak_file.read_text()) if peak_file.exists() else None
        events = dict(line.split() for line in (self.directory / "memory.events").read_text().splitlines())
        return CapReading(peak, int(events.get("oom_kill", 0)) > 0, self.name)

    def destroy(self) -> None:
        if self.directory is not None:
            kill_and_remove(self.directory)
