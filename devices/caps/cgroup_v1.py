"""cgroup v1: memory (+memsw so swap cannot hide an overrun) and the CFS CPU quota."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devices.caps.base import (
    ENV_JOIN,
    CapBackend,
    CapReading,
    CapUnavailable,
    cell_cgroup_name,
    excludes_swap,
    freeze_and_kill,
    kill_and_remove,
    sweep_stale,
)
from devices.speed import cfs_quota

MOUNT = Path("/sys/fs/cgroup")


def own_path(controller: str, proc_cgroup: str | None = None) -> str | None:
    """This process's cgroup for a v1 controller, from /proc/self/cgroup (e.g. `4:memory:/a/b`)."""
    text = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2]
    return None


def controller_dir(controller: str, mount: Path = MOUNT, proc_cgroup: str | None = None) -> Path | None:
    path = own_path(controller, proc_cgroup)
    if path is None:
        return None
    directory = mount / controller / path.lstrip("/")
    return directory if directory.is_dir() else None


class CgroupV1(CapBackend):
    name = "cgroup-v1"

    def __init__(
        self, profile, label, clock=None, mount: Path = MOUNT, proc_cgroup: str | None = None
    ) -> None:
        super().__init__(profile, label, clock)
        self.mount = mount
        self.proc_cgroup = proc_cgroup
        self.memory_dir: Path | None = None
        self.cpu_dir: Path | None = None
        self.pids_dir: Path | None = None  # pids.max: a fork bomb exhausts the cell's pids, not the host's
        self.freezer_dir: Path | None = None  # stops every process of the cell at once before they are killed
        self.swap_guarded = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        base = controller_dir("memory")
        if base is None:
            return "no cgroup v1 memory controller is mounted at /sys/fs/cgroup/memory"
        probe = base / cell_cgroup_name("probe")
        try:
            probe.mkdir()
            (probe / "memory.limit_in_bytes").write_text(str(64 << 20))
        except OSError as exc:
            return f"cannot create a child memory cgroup under {base} ({exc.strerror}); run as root"
        finally:
            kill_and_remove(probe)
        return None

    @classmethod
    def can_throttle(cls) -> bool:
        return controller_dir("cpu") is not None

    @classmethod
    def prepare_host(cls) -> Callable[[], None]:
        """A run first removes the cell cgroups (and processes) of harnesses that died, SIGKILLed say, even when
        it has no cell left to run; each cell's create() sweeps again for harnesses dying meanwhile."""
        for controller in ("memory", "cpu", "pids", "freezer"):
            base = controller_dir(controller)
            if base is not None:
                sweep_stale(base)
        return super().prepare_host()

    def create(self) -> None:
        base = controller_dir("memory", self.mount, self.proc_cgroup)
        if base is None:
            raise CapUnavailable("cgroup v1 memory controller not found")
        sweep_stale(base)
        cap = str(self.profile.memory_bytes)
        self.memory_dir = base / cell_cgroup_name(self.label)
        self.memory_dir.mkdir()
        (self.memory_dir / "memory.limit_in_bytes").write_text(cap)
        memsw = self.memory_dir / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # absent when the kernel does not account swap (no swapaccount=1)
            memsw.write_text(cap)
            self.swap_guarded = True
        else:
            (self.memory_dir / "memory.swappiness").write_text("0")
        cpu_base = controller_dir("cpu", self.mount, self.proc_cgroup)
        if cpu_base is None and self.clock.throttled:
            raise CapUnavailable("the device-throttled clock needs the cgroup v1 cpu controller, which is not mounted")
        if cpu_base is not None:
            sweep_stale(cpu_base)
            self.cpu_dir = cpu_base / cell_cgroup_name(self.label)
            self.cpu_dir.mkdir()
            period, quota = cfs_quota(self.clock.cpu_quota_cores)
            (self.cpu_dir / "cpu.cfs_period_us").write_text(str(period))
            (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
        pids_base = controller_dir("pids", self.mount, self.proc_cgroup)
        if pids_base is None:
            raise CapUnavailable("the cgroup v1 pids controller is not mounted: a cell could fork without limit")
        sweep_stale(pids_base)
        self.pids_dir = pids_base / cell_cgroup_name(self.label)
        self.pids_dir.mkdir()
        (self.pids_dir / "pids.max").write_text(str(self.profile.pids_limit))
        freezer_base = controller_dir("freezer", self.mount, self.proc_cgroup)
        if freezer_base is not None:
            sweep_stale(freezer_base)
            self.freezer_dir = freezer_base / cell_cgroup_name(self.label)
            self.freezer_dir.mkdir()

    def child_env(self) -> dict[str, str]:
        dirs = [d for d in (self.memory_dir, self.cpu_dir, self.pids_dir, self.freezer_dir) if d is not None]
        return {**self.common_env(), ENV_JOIN: ":".join(str(d / "cgroup.procs") for d in dirs)}

    def reading(self) -> CapReading:
        assert self.memory_dir is not None
        peak = int((self.memory_dir / "memory.max_usage_in_bytes").read_text())
        swap_excluded = excludes_swap(self.swap_guarded)  # swappiness 0 only discourages swapping
        return CapReading(peak, _oom_kills_v1(self.memory_dir) > 0, self.name, swap_excluded)

    def destroy(self) -> None:
        if self.freezer_dir is not None:
            freeze_and_kill(self.freezer_dir)
        for directory in (self.memory_dir, self.cpu_dir, self.pids_dir, self.freezer_dir):
            if directory is not None:
                kill_and_remove(directory)


def _oom_kills_v1(directory: Path) -> int:
    """`oom_kill N` from memory.oom_control (newer kernels); failcnt is not a reliable OOM signal."""
    for line in (directory / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0
