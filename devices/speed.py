"""The clock each cell runs on: how its seconds become device seconds.

A device profile may give its fp32 throughput (`gflops`, all cores, with its source). A cell then
runs on one of three clocks (the spec's `clock:`):

- device-throttled: the CFS quota is device throughput / host throughput per core, so the kernel
  slows the cell to the device's speed and wall-clock seconds are device seconds;
- device-scaled: the cell runs unthrottled and its CPU seconds are converted to device seconds by
  the same ratio, so hours of device time run in minutes;
- host: raw host time, as on an unsimulated machine.

The host's throughput per core is measured, never assumed (devices.host_speed).

Both device clocks run a cell on ceil(quota) threads (at least one, at most the device's cores and
the host's): under a quota below one core, a second thread spends the quota waiting at the
barriers of parallel kernels. Measured here, sgemm under a 0.03-core quota reached 96% of the
target throughput on one thread and 36% on two.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.board import ThermalCurve
from devices.roofline import HostBandwidth, PhaseMeter, Roofline, plan_roofline

if TYPE_CHECKING:
    from devices.host_speed import HostSpeed
    from devices.profile import DeviceProfile

Clock = Literal["device-scaled", "device-throttled", "host"]
DEFAULT_CLOCK: Clock = "device-scaled"

#: Environment variable that hands a cell its clock (JSON of CellClock), set by the cap backends.
ENV_CLOCK = "EDGEBENCH_CLOCK"
#: CFS periods: the usual one and the kernel's longest; the smallest quota the kernel accepts.
CFS_PERIOD_US = 100_000
CFS_LONG_PERIOD_US = 1_000_000
CFS_MIN_QUOTA_US = 1_000
#: The quota a period should hold at least: the kernel hands out runtime in 5 ms slices
#: (sched_cfs_bandwidth_slice_us), and each throttled period costs the cell its caches. Measured on a
#: 2-core EPYC VM (`edgebench doctor`), jetson-nano (0.12 cores) and rpi-zero-2w (0.18 cores) reached
#: 93% and 91% of their throughput with a 20 ms floor, 102% and 97% with 50 ms, 101% and 99% with 100 ms.
CFS_QUOTA_FLOOR_US = 50_000


class ClockError(ValueError):
    """A clock that cannot be honoured for a device on this host."""



class CellClock(BaseModel):
    """How one cell's seconds become device seconds, decided at plan time and recorded with the result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Clock
    requested: Clock = Field(
        description="the spec's clock; `kind` is host when the device gives no throughput"
    )
    ratio: float = Field(1.0, gt=0, description="host per-core throughput / device throughput")
    device_gflops: float | None = None
    host_gflops_per_core: float | None = Field(
        None, description="the host's throughput per CPU-second at the cell's thread count"
    )
    cpu_quota_cores: float = Field(gt=0, description="the cell's CFS quota, in cores")
    threads: int = Field(ge=1, description="torch's intra-op threads in the cell")
    source: str = Field(description="where the device figure came from, or why the cell runs at host speed")
    roofline: Roofline | None = Field(
        None, description="device-scaled: each phase charged by FLOPs and bytes (devices.roofline); None: FLOPs only"
    )
    thermal: ThermalCurve | None = Field(
        None,
        description="the sustained-speed curve the device's cooling gives (scaled: charged through it; throttled: "
        "the quota follows it, devices.governor); None: burst speed",
    )

    @property
    def scaled(self) -> bool:
        return self.kind == "device-scaled"

    @property
    def throttled(self) -> bool:
        return self.kind == "device-throttled"

    @property
    def governed(self) -> bool:
        """A throttled clock whose quota falls along the device's thermal curve (devices.governor)."""
        return self.throttled and self.thermal is not None and self.thermal.throttles

    def cfs(self) -> tuple[int, int]:
        """(period, quota) in microseconds of the cell's CFS quota; a governed clock keeps the period its lowest
        (sustained) quota needs, since its quota falls to that."""
        if self.governed and self.thermal is not None:
            period, _ = cfs_quota(self.cpu_quota_cores * self.thermal.sustained_share)
            return period, max(CFS_MIN_QUOTA_US, round(self.cpu_quota_cores * period))
        return cfs_quota(self.cpu_quota_cores)

    @property
    def axis_label(self) -> str:
        """How a report names this clock's seconds."""
        return {
            "device-throttled": "device seconds (throttled)",
            "device-scaled": "device seconds (scaled)",
            "host": "host seconds",
        }[self.kind]

    def meter(self) -> PhaseMeter:
        """The phase meter a cell's methods report to: it charges the roofline's correction on the scaled clock."""
        return PhaseMeter(self.ratio, self.roofline if self.scaled else None)

    def timer(self, meter: PhaseMeter | None = None) -> Callable[[], float]:
        """A monotonic reading in this clock's seconds, for timing steps inside the cell: on the scaled clock the
        CPU seconds at the ratio, plus the roofline's correction of the phases `meter` timed, through the thermal
        curve (burst-seconds of work -> device seconds)."""
        if self.scaled:
            ratio, curve = self.ratio, self.thermal
            work = (lambda: time.process_time() * ratio + meter.extra) if meter else (lambda: time.process_time() * ratio)
            if curve is None or not curve.throttles:
                return work
            start = work()  # the board heats from here (the cell's first step), cool before
            return lambda: start + curve.elapsed_for_work(work() - start)
        return time.perf_counter

    def burst_work(
        self, wall_seconds: float, cpu_seconds: float | None, extra: float = 0.0, heated_from: float = 0.0
    ) -> float | None:
        """A whole cell's work in burst-device-seconds: what its clock charged before thermal throttling (scaled),
        or what the governed quota's curve allows in its wall-clock time after `heated_from` (throttled)."""
        if self.governed and self.thermal is not None:
            start = min(heated_from, wall_seconds)
            return start + self.thermal.work_in(wall_seconds - start)
        if not self.scaled:
            return wall_seconds
        return None if cpu_seconds is None else cpu_seconds * self.ratio + extra

    def device_seconds(
        self, wall_seconds: float, cpu_seconds: float | None, extra: float = 0.0, heated_from: float = 0.0
    ) -> float | None:
        """A whole cell's time in this clock's seconds, from what the executor observed (`extra`: the roofline's
        correction the cell reported; `heated_from`: the work done before its first step, at burst speed)."""
        if not self.scaled:
            return wall_seconds
        work = self.burst_work(wall_seconds, cpu_seconds, extra)
        if work is None or self.thermal is None:
            return work
        start = min(heated_from, work)
        return start + self.thermal.elapsed_for_work(work - start)

    def elapsed(self, wall_seconds: float, cpu_seconds: float | None) -> float:
        """How far a running cell is towards its timeout: device time, or host wall-clock for a hung cell
        (which burns no CPU and so gains no scaled time)."""
        device = self.device_seconds(wall_seconds, cpu_seconds)
        return max(wall_seconds, device or 0.0)

    def to_env(self) -> dict[str, str]:
        return {ENV_CLOCK: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> CellClock:
        """The clock the harness gave this cell; a host clock when the cell was started by hand."""
        text = os.environ.get(ENV_CLOCK)
        if text:
            return cls.model_validate_json(text)
        threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
        return cls(
            kind="host",
            requested="host",
            cpu_quota_cores=threads,
            threads=threads,
            source="started outside the harness",
        )


def cell_threads(profile: DeviceProfile, host_cores: int, quota: float | None = None) -> int:
    """torch's threads in a cell: the device's cores on this host's, and no more than a quota can keep busy."""
    wanted = min(profile.threads, host_cores) if quota is None else min(math.ceil(quota), profile.threads, host_cores)
    return max(1, wanted)


def host_clock(profile: DeviceProfile, host_cores: int, requested: Clock, source: str) -> CellClock:
    return CellClock(
        kind="host",
        requested=requested,
        cpu_quota_cores=profile.cpus,
        threads=cell_threads(profile, host_cores),
        source=source,
    )


def unplanned_clock(profile: DeviceProfile) -> CellClock:
    """Host speed on this machine, for a cell or a cap built without a planned clock (tests, tools)."""
    return host_clock(profile, os.cpu_count() or 1, "host", "no clock was planned for this cell")


def plan_clock(
    profile: DeviceProfile,
    requested: Clock,
    host: HostSpeed | None,
    host_cores: int,
    bandwidth: HostBandwidth | None = None,
) -> CellClock:
    """The clock of every cell of `profile`. Raises ClockError where the device cannot be simulated here."""
    if requested == "host":
        return host_clock(profile, host_cores, requested, "the spec asks for host time")
    if profile.gflops is None:
        return host_clock(
            profile, host_cores, requested, f"device {profile.name} gives no throughput: host speed"
        )
    if host is None:
        raise ClockError(
            "cannot measure this host's matmul throughput (python -m devices.host_speed --calibrate failed); "
            "check torch, or use clock: host"
        )
    threads, per_core = throttle_threads(profile, host, host_cores)
    quota = profile.gflops / per_core
    usable = min(profile.cpus, host_cores)
    if requested == "device-throttled" and quota > usable:
        raise ClockError(
            f"device {profile.name} does {profile.gflops:g} GFLOPS, more than this host gives one cell "
            f"({usable:g} cores x {per_core:.0f} GFLOPS on {threads} threads): a throttle cannot speed a cell "
            "up; use clock: host (or device-scaled)"
        )
    if requested == "device-throttled" and quota * CFS_LONG_PERIOD_US < CFS_MIN_QUOTA_US:
        raise ClockError(
            f"device {profile.name} ({profile.gflops:g} GFLOPS) is slower than the smallest CFS quota "
            f"can hold on this host ({host.gflops_per_core * CFS_MIN_QUOTA_US / CFS_LONG_PERIOD_US:.2f} GFLOPS); "
            "use clock: device-scaled"
        )
    curve = profile.thermal_curve
    if requested == "device-throttled" and quota * curve.sustained_share * CFS_LONG_PERIOD_US < CFS_MIN_QUOTA_US:
        raise ClockError(
            f"device {profile.name} sustains {profile.gflops * curve.sustained_share:g} GFLOPS with cooling "
            f"{curve.cooling}, slower than the smallest CFS quota can hold on this host; use clock: device-scaled"
        )
    return CellClock(
        kind=requested,
        requested=requested,
        ratio=per_core / profile.gflops,
        device_gflops=profile.gflops,
        host_gflops_per_core=per_core,
        cpu_quota_cores=quota if requested == "device-throttled" else profile.cpus,
        threads=threads,
        source=profile.gflops_source or "the device profile",
        roofline=plan_roofline(profile, per_core, bandwidth.per_core(threads) if bandwidth else None)
        if requested == "device-scaled"
        else None,
        thermal=curve if curve.throttles else None,
    )


def throttle_threads(profile: DeviceProfile, host: HostSpeed, host_cores: int) -> tuple[int, float]:
    """A device clock's thread count and the host's per-core throughput on that many threads: as many
    threads as the device's quota needs, counted again at the slower per-core figure of parallel threads."""
    assert profile.gflops is not None
    threads = cell_threads(profile, host_cores, profile.gflops / host.gflops_per_core)
    threads = cell_threads(profile, host_cores, profile.gflops / host.per_core(threads))
    return threads, host.per_core(threads)


def cfs_quota(cores: float) -> tuple[int, int]:
    """(period, quota) in microseconds for a CPU share: the usual 100 ms period, lengthened (up to the
    kernel's 1 s) until the quota holds a few of the kernel's runtime slices."""
    period = min(CFS_LONG_PERIOD_US, max(CFS_PERIOD_US, round(CFS_QUOTA_FLOOR_US / cores)))
    return period, max(CFS_MIN_QUOTA_US, round(cores * period))
