"""Inside a container whose memory limit is the device's cap: the container engine enforces it.

A container's cgroup is mounted read-only, so the harness cannot make a child cgroup per cell
there. Instead `edgebench compose` (and the Docker executor) give each container exactly its
device's `mem_limit` (swap included), and cells run one at a time as child processes of the
lean harness parent, which shares that cap. The kernel's OOM killer picks the largest process,
the cell; the harness sees it from the container cgroup's `oom_kill` counter and carries on.

The cgroup's peak is the container's high-water mark since it started, so a cell gets it only
when the mark rose during that cell (then it is that cell's peak, parent included).

Both also give every container the same hardening (`container_settings`): an unprivileged user, no
capabilities, no-new-privileges, a read-only root, no network. None of it stands in the way here:
the cgroup's files are world-readable, and reading them needs no capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devices.caps.base import CapBackend, CapReading, CapUnavailable, excludes_swap
from devices.speed import CellClock, cfs_quota

if TYPE_CHECKING:
    from devices.profile import DeviceProfile

MOUNT = Path("/sys/fs/cgroup")
UNLIMITED_V1 = 1 << 62  # v1 writes "no limit" as a huge page-rounded number


@dataclass(frozen=True)
class ContainerCgroup:
    """The files of the container's own memory cgroup, v1 or v2."""

    limit: Path
    peak: Path
    events: Path  # v1 memory.oom_control / v2 memory.events, both with an `oom_kill N` line
    swap: Path  # v1 memory.memsw.limit_in_bytes / v2 memory.swap.max
    swap_counts_memory: bool  # v1's memsw limit is memory + swap; v2's swap.max is swap alone

    def limit_bytes(self) -> int | None:
        text = self.limit.read_text().strip()
        if text == "max" or int(text) >= UNLIMITED_V1:
            return None
        return int(text)

    def peak_bytes(self) -> int | None:
        try:
            return int(self.peak.read_text())
        except OSError:  # v2 kernels before 5.19 have no memory.peak
            return None

    def limits_swap(self) -> bool:
        """Whether the engine's limit leaves no room for swap (memswap_limit = mem_limit): v1's memsw limit is
        the memory limit, v2's swap.max is 0. No file: the kernel does not account swap, nothing limits it."""
        try:
            text = self.swap.read_text().strip()
        except OSError:
            return False
        if text == "max":
            return False
        memory = (self.limit_bytes() or 0) if self.swap_counts_memory else 0
        return int(text) <= memory

    def oom_kills(self) -> int:
        for line in self.events.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


def find_container_cgroup(mount: Path = MOUNT) -> ContainerCgroup | None:
    v1, v2 = mount / "memory", mount
    if (v1 / "memory.limit_in_bytes").exists():
        return ContainerCgroup(
            v1 / "memory.limit_in_bytes",
            v1 / "memory.max_usage_in_bytes",
            v1 / "memory.oom_control",
            v1 / "memory.memsw.limit_in_bytes",
            swap_counts_memory=True,
        )
    if (v2 / "memory.max").exists():
        return ContainerCgroup(
            v2 / "memory.max",
            v2 / "memory.peak",
            v2 / "memory.events",
            v2 / "memory.swap.max",
            swap_counts_memory=False,
        )
    return None


class ContainerLimit(CapBackend):
    name = "container"

    def __init__(self, profile, label, clock=None, mount: Path = MOUNT) -> None:
        super().__init__(profile, label, clock)
        self.mount = mount
        self.cgroup = find_container_cgroup(mount)
        self.kills_before = 0
        self.peak_before: int | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        cgroup = find_container_cgroup()
        if cgroup is None or cgroup.limit_bytes() is None:
            return "not inside a container with a memory limit (run through `edgebench compose` or --executor docker)"
        return None

    @classmethod
    def can_throttle(cls) -> bool:
        """The engine sets the container's quota (compose and the Docker executor take it from the clock)."""
        return container_cpu_share() is not None

    @classmethod
    def probe_cap(cls, default: int) -> int:
        cgroup = find_container_cgroup()
        limit = cgroup.limit_bytes() if cgroup else None
        return limit or default

    def create(self) -> None:
        limit = self.cgroup.limit_bytes() if self.cgroup else None
        if limit is None or limit > self.profile.memory_bytes:
            raise CapUnavailable(
                f"the container's memory limit ({limit} bytes) is not device {self.profile.name}'s cap "
                f"({self.profile.memory_bytes} bytes); run one device per container with mem_limit set to "
                "its memory, as `edgebench compose` does"
            )
        if self.clock.throttled:
            self._check_throttle(container_cpu_share(self.mount))
        self.kills_before = self.cgroup.oom_kills()
        self.peak_before = self.cgroup.peak_bytes()

    def _check_throttle(self, share: float | None) -> None:
        if share is None or abs(share / self.clock.cpu_quota_cores - 1) > THROTTLE_MATCH:
            raise CapUnavailable(
                f"the container's CPU quota ({share} cores) is not device {self.profile.name}'s throttle "
                f"({self.clock.cpu_quota_cores:.4f} cores); set cpu_quota/cpu_period from the clock, as "
                "`edgebench compose` and the Docker executor do"
            )

    def child_env(self) -> dict[str, str]:
        return self.common_env()

    def reading(self) -> CapReading:
        assert self.cgroup is not None
        peak = self.cgroup.peak_bytes()
        rose = peak is not None and (self.peak_before is None or peak > self.peak_before)
        killed = self.cgroup.oom_kills() > self.kills_before
        return CapReading(peak if rose else None, killed, self.name, excludes_swap(self.cgroup.limits_swap()))

    def destroy(self) -> None:
        pass


#: How far the container's CPU share may be from a throttled clock's (the quota is rounded to microseconds).
THROTTLE_MATCH = 0.02


def container_cpu_share(mount: Path = MOUNT) -> float | None:
    """The container's CFS quota in cores (v1 cpu.cfs_quota_us / cfs_period_us, v2 cpu.max), None if unlimited."""
    v1, v2 = mount / "cpu" / "cpu.cfs_quota_us", mount / "cpu.max"
    if v1.exists():
        quota, period = int(v1.read_text()), int((mount / "cpu" / "cpu.cfs_period_us").read_text())
    elif v2.exists():
        text, _, period_text = v2.read_text().strip().partition(" ")
        if text == "max":
            return None
        quota, period = int(text), int(period_text)
    else:
        return None
    return None if quota <= 0 else quota / period


def memory_limits(memory_bytes: int) -> dict[str, int | bool]:
    """A memory limit without swap (memswap_limit = mem_limit, so no swap can hide an overrun) that the
    kernel enforces by OOM-killing; valid both as docker SDK arguments and compose keys."""
    return {"mem_limit": memory_bytes, "memswap_limit": memory_bytes, "oom_kill_disable": False}


def engine_limits(profile: DeviceProfile, clock: CellClock | None = None) -> dict[str, int | bool]:
    """A device's caps as container settings, valid both as docker SDK arguments and compose keys.

    No swap (memswap_limit = mem_limit). CPUs as a CFS quota rather than `cpus`/`nano_cpus`: the
    engine refuses more CPUs than the host has, which would make a 4-core profile unusable on a
    2-core machine; a quota is the same kernel mechanism and simply gives such a host all its cores.
    Under a device-throttled clock the quota is the device's speed. pids_limit: the container's processes and
    threads (the harness's supervisor and its cell together), so that a fork bomb stops at the device's limit.
    """
    period, quota = cfs_quota(clock.cpu_quota_cores if clock else profile.cpus)
    limits = {**memory_limits(profile.memory_bytes), "cpu_period": period, "cpu_quota": quota}
    return limits | {"pids_limit": profile.pids_limit}


#: The image's unprivileged user (the Dockerfile's `edgebench`), as numbers: the engine needs no passwd
#: lookup, and an image without that user still runs its processes unprivileged.
CONTAINER_USER = "1000:1000"
#: Caches (the host calibration, hub and matplotlib caches) are a named volume, not files under /tmp: a
#: tmpfs is memory charged to the container's cgroup, i.e. to the device's cap, and with no swap it stays
#: there. A new volume takes the ownership of the image's /cache (the Dockerfile gives it to CONTAINER_USER).
CACHE_VOLUME = "edgebench-cache"
CACHE_MOUNT = "/cache"


def container_settings(user: str = CONTAINER_USER) -> dict[str, Any]:
    """What every edgebench container gets besides its caps, valid both as docker SDK arguments and
    compose keys (one definition for the Docker executor and `edgebench compose`).

    Cells need no capability (PR_SET_PDEATHSIG, lowering rlimits and reading the cgroup's files need none): all
    are dropped, and no-new-privileges keeps a setuid binary from getting any back; compose adds back only what
    its helpers and device harnesses use (harness.run.harness_user). Only /tmp (a tmpfs) and the mounted
    volumes are writable. No network: cells run offline. `init`: the harness must not be PID 1, since the
    cell's launcher takes a parent of 1 for a dead harness.
    """
    return {
        "user": user,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "network_mode": "none",
        "tmpfs": ["/tmp"],
        "volumes": [f"{CACHE_VOLUME}:{CACHE_MOUNT}"],
        "init": True,
    }
