"""What a cell's device clock did: the throughput it ran at over device time, and where the roofline charged more.

The record keeps (device seconds, GFLOPS) at most MAX_POINTS times, evenly spread over the steps: on the scaled
clock the throughput is the device's burst figure times its thermal curve at that moment (devices.board); on the
throttled clock the quota's figure, constant; none on the host clock.
"""

from __future__ import annotations

from typing import Any

from devices.roofline import PhaseMeter
from devices.speed import CellClock

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
        if clock.scaled and clock.thermal is not None:
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


def clock_metrics(meter: PhaseMeter, trace: ThroughputTrace, heated_from: float) -> dict[str, Any]:
    """The cell's report of its clock: the roofline's correction to the FLOPs-only time (the executor adds it to
    the whole cell's device seconds), each phase's CPU seconds, FLOPs, bytes and device seconds both ways, and the
    throughput over time."""
    return {
        "roofline_extra_s": round(meter.extra, 6),
        "heated_from_s": round(heated_from, 6),
        "phases": {
            name: {
                "cpu_seconds": round(t.cpu_seconds, 6),
                "flops": t.flops,
                "traffic_bytes": t.traffic,
                "flops_only_seconds": round(t.flops_only_seconds, 6),
                "roofline_seconds": round(t.roofline_seconds, 6),
            }
            for name, t in meter.totals.items()
        },
        "throughput": [{"step": k, "device_seconds": t, "work_seconds": w, "gflops": g} for k, t, w, g in trace.points],
    }
