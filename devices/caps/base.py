"""The interface every enforcement backend implements."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from devices.caps.cuda import gpu_env
from devices.child_env import ENV_THREADS
from devices.governor import QuotaGovernor, governor_plan
from devices.pyexec import module_argv
from devices.speed import CellClock, unplanned_clock

if TYPE_CHECKING:
    from devices.profile import DeviceProfile

# Names of the per-cell cgroups: the harness pid lets a later run tell which ones are stale.
CGROUP_PREFIX = "edgebench-"
_STALE = re.compile(rf"^{CGROUP_PREFIX}(\d+)-")


class CapUnavailable(RuntimeError):
    """This host cannot impose the cap with the requested backend."""


@dataclass(frozen=True)
class CapReading:
    """What the backend saw of a finished cell: its peak, whether the kernel killed it for memory, and whether
    swap could hold none of its memory (else an overrun may page out instead of dying at the cap)."""

    peak_bytes: int | None
    oom_killed: bool
    source: str
    swap_excluded: bool


def excludes_swap(cap_limits_swap: bool, swaps: Path = Path("/proc/swaps")) -> bool:
    """Whether swap can hold none of a cell's memory: its cap limits swap too, or the host has no swap device
    (/proc/swaps: a header line, then one line each; unreadable counts as swap)."""
    if cap_limits_swap:
        return True
    try:
        return len(swaps.read_text().splitlines()) <= 1
    except OSError:
        return False


class CapBackend(ABC):
    """One way of imposing a device's memory and CPU caps on a child process."""

    name: ClassVar[str]
    #: True when going over the cap kills the process (cgroups); False when allocation fails (rlimit).
    kills_on_oom: ClassVar[bool] = True

    def __init__(self, profile: DeviceProfile, label: str, clock: CellClock | None = None) -> None:
        self.profile = profile
        self.label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        #: The CPU share and threads come from the cell's clock (a throttle for device-throttled cells).
        self.clock = clock or unplanned_clock(profile)
        self.governor: QuotaGovernor | None = None

    @classmethod
    @abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None when this host supports the backend, else why not (one line)."""

    @classmethod
    def can_throttle(cls) -> bool:
        """Whether this backend imposes a CPU quota (needed by the device-throttled clock)."""
        return False

    def cpu_usage_seconds(self) -> float:
        """CPU seconds the cell's group has used so far (backends that throttle read their accounting)."""
        raise CapUnavailable(f"the {self.name} backend cannot read a cell's CPU time")

    def write_quota(self, quota_us: int) -> None:
        """Set the cell's CFS quota (microseconds per the clock's period) while it runs."""
        raise CapUnavailable(f"the {self.name} backend cannot change a running cell's CPU quota")

    def heat(self) -> None:
        """The cell took its first step: a governed clock's quota starts to follow the device's thermal curve
        (devices.governor); nothing on any other clock. Called once or more; the board heats once."""
        plan = governor_plan(self.clock)
        if plan is None:
            return
        if self.governor is None:
            self.governor = QuotaGovernor(plan, self.cpu_usage_seconds, self.write_quota)
        self.governor.start()

    @classmethod
    def can_govern(cls) -> bool:
        """Whether this backend can lower a running cell's quota along a thermal curve (devices.governor)."""
        return False

    @classmethod
    def prepare_host(cls) -> Callable[[], None]:
        """Ready the host for a run's cells, before the first (probing never changes the host; a run may), and
        return what puts it back at the run's end. Nothing to do by default."""
        return lambda: None

    @classmethod
    def probe_cap(cls, default: int) -> int:
        """The cap `edgebench doctor` proves this backend at; a container can only prove its own limit."""
        return default

    @abstractmethod
    def create(self) -> None:
        """Make the cap ready for one child."""

    @abstractmethod
    def child_env(self) -> dict[str, str]:
        """Variables that tell `devices.launch` what to apply in the child before exec."""

    @abstractmethod
    def reading(self) -> CapReading:
        """Peak memory and OOM verdict, read after the child has exited."""

    @abstractmethod
    def destroy(self) -> None:
        """Remove whatever create() made, killing leftover processes first. Idempotent."""

    def common_env(self) -> dict[str, str]:
        return {ENV_THREADS: str(self.clock.threads), **self.clock.to_env(), **gpu_env(self.profile)}

    def command(self, argv: list[str]) -> list[str]:
        """Wrap a command so that it starts inside this cap."""
        return module_argv("devices.launch", "--", *argv)

    def __enter__(self) -> CapBackend:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.governor is not None:
            self.governor.stop()
        self.destroy()


def cell_cgroup_name(label: str) -> str:
    return f"{CGROUP_PREFIX}{os.getpid()}-{label}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_and_remove(directory: Path, procs_file: str = "cgroup.procs", timeout_s: float = 5.0) -> None:
    """Kill every process in a cgroup directory, then rmdir it (retrying while the kernel drains it). On cgroup v2
    the kernel kills them all at once (cgroup.kill: nothing forks past it); elsewhere each listed pid is SIGKILLed,
    which a fork bomb can outrun only up to its pids.max (and a v1 cell's freezer stops it first, see freeze)."""
    if not directory.exists():
        return
    deadline = time.monotonic() + timeout_s
    kill_file = directory / "cgroup.kill"
    while True:
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        try:
            pids = [int(p) for p in (directory / procs_file).read_text().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def freeze_and_kill(freezer: Path, timeout_s: float = 5.0) -> None:
    """cgroup v1's race-free kill: freeze the cgroup (no process of it runs, so none forks), SIGKILL every process
    in it (the signal waits while frozen), then thaw it so that they die."""
    state = freezer / "freezer.state"
    if not state.exists():
        return
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(OSError):
        state.write_text("FROZEN")
        while state.read_text().strip() != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in (freezer / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(OSError):
        state.write_text("THAWED")


def harness_pid(name: str) -> int | None:
    """The pid of the harness that made a per-cell cgroup, read from its name; None for any other name."""
    match = _STALE.match(name)
    return int(match.group(1)) if match else None


def sweep_stale(parent: Path) -> list[str]:
    """Remove per-cell cgroups left by a harness that died (e.g. SIGKILL); returns their names."""
    removed = []
    if not parent.is_dir():
        return removed
    for child in parent.iterdir():
        pid = harness_pid(child.name)
        if child.is_dir() and pid is not None and not pid_alive(pid):
            kill_and_remove(child)
            removed.append(child.name)
    return removed
