"""What a cell's device clock did: the throughput it ran at over device time, and where the roofline charged more.

The record keeps (device seconds, work done, GFLOPS) at most MAX_POINTS times, evenly spread over the steps, all
counted from the cell's process start. The throughput is the device's burst figure times its thermal curve at that
moment (devices.board) on both device clocks: the scaled clock charges the cell through the curve, the throttled
clock's quota follows it (devices.governor); none on the host clock. The work done is what the clock charged on the
scaled clock, and on the throttled one the CPU time the kernel let the cell use since its first step at the burst
quota's rate (so the points show what the quota really gave, not the curve it was told).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from devices.roofline import PhaseMeter
from devices.speed import CellClock
from workloads.metrics import DeviceClock, PhaseTotals, ThroughputPoint

MAX_POINTS = 128


class ThroughputTrace:
    def __init__(self, clock: CellClock, heated_from: float = 0.0) -> None:
        """`heated_from`: the device seconds at the first step, where the board starts to heat."""
        self.clock, self.heated_from = clock, heated_from
        self.points: list[tuple[int, float, float, float]] = []
        self._stride, self._seen = 1, 0

    def gflops_at(self, elapsed: float) -> float | None:
        clock = self.clock
        if clock.kind == "host" or clock.device_gflops is None:
            return None
        if clock.thermal is not None:
            return clock.device_gflops * clock.thermal.share_at(elapsed - self.heated_from)
        return clock.device_gflops

    def sample(self, step: int, elapsed: float, work: float) -> None:
        """Keep every `stride`-th sample (`work`: burst-seconds done by then); when full, drop every other point
        and double the stride."""
        self._seen += 1
        gflops = self.gflops_at(elapsed)
        if gflops is None or (self._seen - 1) % self._stride:
            return
        self.points.append((step, round(elapsed, 3), round(work, 3), round(gflops, 4)))
        if len(self.points) >= MAX_POINTS:
            self.points = self.points[::2]
            self._stride *= 2


def scaled_work(clock: CellClock, meter: PhaseMeter) -> float:
    """Burst-seconds the scaled clock has charged since the process started."""
    return clock.burst_work(0.0, time.process_time(), meter.extra) or 0.0


def heat_start(clock: CellClock, meter: PhaseMeter) -> float:
    """Device seconds from the process's start to the cell's first step, where its board starts to heat (cool
    before): what the scaled clock charged so far; the process's wall-clock age on the throttled clock."""
    if clock.scaled:
        return scaled_work(clock, meter)
    if clock.throttled:
        return max(0.0, time.time() - psutil.Process().create_time())
    return 0.0


class WorkMeter:
    """A cell's device seconds and work done since its process start, read at each step (see the module)."""

    def __init__(self, clock: CellClock, meter: PhaseMeter, now: Callable[[], float], heated_from: float) -> None:
        self.clock, self.meter, self.now, self.heated_from = clock, meter, now, heated_from
        #: The scaled clock reads the process's CPU time from its very start; the others count from here.
        self.origin = 0.0 if clock.scaled else now()
        self._cpu0 = time.process_time()

    def elapsed(self) -> float:
        """Device seconds since the first step (the scaled clock: since the process started)."""
        return self.now() - self.origin

    def since_start(self) -> float:
        return self.elapsed() + (self.heated_from if self.clock.throttled else 0.0)

    def work(self) -> float:
        """Burst-seconds of work since the process started."""
        clock = self.clock
        if clock.scaled:
            return scaled_work(clock, self.meter)
        if clock.throttled:
            return self.heated_from + (time.process_time() - self._cpu0) * clock.ratio
        return self.elapsed()


def clock_metrics(meter: PhaseMeter, trace: ThroughputTrace, heated_from: float) -> DeviceClock:
    """The cell's report of its clock: the roofline's correction to the FLOPs-only time (the executor adds it to
    the whole cell's device seconds), each phase's CPU seconds, FLOPs, bytes and device seconds both ways, and the
    throughput over time."""
    return DeviceClock(
        roofline_extra_s=round(meter.extra, 6),
        heated_from_s=round(heated_from, 6),
        phases={
            name: PhaseTotals(
                cpu_seconds=round(t.cpu_seconds, 6),
                flops=t.flops,
                traffic_bytes=t.traffic,
                flops_only_seconds=round(t.flops_only_seconds, 6),
                roofline_seconds=round(t.roofline_seconds, 6),
            )
            for name, t in meter.totals.items()
        },
        throughput=[
            ThroughputPoint(step=k, device_seconds=t, work_seconds=w, gflops=g) for k, t, w, g in trace.points
        ],
    )
