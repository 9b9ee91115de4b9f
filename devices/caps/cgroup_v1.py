"""cgroup v1: memory (+memsw so swap cannot hide an overrun) and the CFS CPU quota."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devices.caps.base import (
    CapBackend,
    CapReading,
    CapUnavailable,
    cell_cgroup_name,
    excludes_swap,
    freeze_and_kill,
    kill_and_remove,
    sweep_stale,
)
from devices.child_env import ENV_JOIN

MOUNT = Path("/sys/fs/cgroup")
#: The controllers a cell gets a cgroup under (cpuacct only on a governed clock), swept for dead harnesses' cells.
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")


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
        self.cpuacct_dir: Path | None = None  # a governed clock's reading of the cell's CPU time
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
    def can_govern(cls) -> bool:
        return cls.can_throttle() and controller_dir("cpuacct") is not None

    @classmethod
    def prepare_host(cls) -> Callable[[], None]:
        """A run first removes the cell cgroups (and processes) of harnesses that died, SIGKILLed say, even when
        it has no cell left to run; each cell's create() sweeps again for harnesses dying meanwhile."""
        for controller in CONTROLLERS:
            base = controller_dir(controller)
            if base is not None:
                sweep_stale(base)
        return super().prepare_host()

    def create(self) -> None:
        self.memory_dir = self._cell_dir("memory")
        if self.memory_dir is None:
            raise CapUnavailable("cgroup v1 memory controller not found")
        cap = str(self.profile.memory_bytes)
        (self.memory_dir / "memory.limit_in_bytes").write_text(cap)
        memsw = self.memory_dir / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # absent when the kernel does not account swap (no swapaccount=1)
            memsw.write_text(cap)
            self.swap_guarded = True
        else:
            (self.memory_dir / "memory.swappiness").write_text("0")
        self.cpu_dir = self._cell_dir("cpu")
        if self.cpu_dir is None and self.clock.throttled:
            raise CapUnavailable("the device-throttled clock needs the cgroup v1 cpu controller, which is not mounted")
        if self.cpu_dir is not None:
            period, quota = self.clock.cfs()
            (self.cpu_dir / "cpu.cfs_period_us").write_text(str(period))
            (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
        if self.clock.governed:
            self.cpuacct_dir = self._cell_dir("cpuacct")
            if self.cpuacct_dir is None:
                raise CapUnavailable(
                    "a throttled clock that follows a thermal curve reads the cell's CPU time from the cgroup v1 "
                    "cpuacct controller, which is not mounted; use cooling: fan or clock: device-scaled"
                )
        self.pids_dir = self._cell_dir("pids")
        if self.pids_dir is None:
            raise CapUnavailable("the cgroup v1 pids controller is not mounted: a cell could fork without limit")
        (self.pids_dir / "pids.max").write_text(str(self.profile.pids_limit))
        self.freezer_dir = self._cell_dir("freezer")

    def _cell_dir(self, controller: str) -> Path | None:
        """This cell's cgroup under a controller (dead harnesses' swept first); None where it is not mounted."""
        base = controller_dir(controller, self.mount, self.proc_cgroup)
        if base is None:
            return None
        sweep_stale(base)
        directory = base / cell_cgroup_name(self.label)
        directory.mkdir()
        return directory

    def cpu_usage_seconds(self) -> float:
        assert self.cpuacct_dir is not None
        return int((self.cpuacct_dir / "cpuacct.usage").read_text()) / 1e9

    def write_quota(self, quota_us: int) -> None:
        assert self.cpu_dir is not None
        (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota_us))

    def child_env(self) -> dict[str, str]:
        dirs = [d for d in self._dirs() if d is not None]
        return {**self.common_env(), ENV_JOIN: ":".join(str(d / "cgroup.procs") for d in dirs)}

    def _dirs(self) -> tuple[Path | None, ...]:
        return (self.memory_dir, self.cpu_dir, self.cpuacct_dir, self.pids_dir, self.freezer_dir)

    def reading(self) -> CapReading:
        assert self.memory_dir is not None
        peak = int((self.memory_dir / "memory.max_usage_in_bytes").read_text())
        swap_excluded = excludes_swap(self.swap_guarded)  # swappiness 0 only discourages swapping
        return CapReading(peak, _oom_kills_v1(self.memory_dir) > 0, self.name, swap_excluded)

    def destroy(self) -> None:
        if self.freezer_dir is not None:
            freeze_and_kill(self.freezer_dir)
        for directory in self._dirs():
            if directory is not None:
                kill_and_remove(directory)


def _oom_kills_v1(directory: Path) -> int:
    """`oom_kill N` from memory.oom_control (newer kernels); failcnt is not a reliable OOM signal."""
    for line in (directory / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0
