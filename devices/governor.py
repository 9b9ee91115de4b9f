"""The throttled clock's thermal curve, enforced by the kernel: a harness thread lowers a cell's CFS quota along
its device's sustained-speed curve (devices.board) from the cell's first step.

Writing a CFS quota refills the group's runtime for the current period (the kernel resets it to the new quota and
unthrottles the group), so an open-loop schedule of writes runs a cell faster than its curve: writes every 33 ms
ran a heating cell at 5x its quota. The governor closes the loop instead. Every tick it reads the CPU time the
cell's group has used since it started heating and sets the quota that brings the work done to the curve's
W(t + tick) by the next tick. A refill's surplus is taken back at the next tick, so the work done tracks the curve
within about one period's quota, and each write is many periods apart. It never sets more than the curve's
throughput at that moment, plus CATCH_UP to make good the kernel's short deliveries (a quota hands a busy group
slightly less than its share), nor less than the kernel's smallest quota.

Work is counted in burst-seconds: at the burst quota Q (cores) a busy cell uses Q CPU-seconds per device second,
so W burst-seconds are W x Q CPU-seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devices.board import ThermalCurve
from devices.speed import CFS_MIN_QUOTA_US, CellClock

#: How far above the curve's throughput a tick may set the quota, to make good an earlier short delivery.
CATCH_UP = 1.10
#: Periods between two quota writes at least (each write refills one period's runtime), and the least tick.
PERIODS_PER_TICK = 10
MIN_TICK_S = 1.0


@dataclass(frozen=True)
class GovernorPlan:
    """What the governor holds a cell to: its curve, its burst quota and the CFS period its writes keep."""

    curve: ThermalCurve
    burst_cores: float
    period_us: int
    min_quota_us: int

    @property
    def tick_s(self) -> float:
        return max(MIN_TICK_S, PERIODS_PER_TICK * self.period_us / 1e6)

    def cores_for(self, elapsed: float, cpu_used: float) -> float:
        """The quota (cores) for the tick after `elapsed` device seconds of heating, in which the cell has used
        `cpu_used` CPU-seconds: what reaches the curve's work by the next tick, within the bounds above."""
        tick = self.tick_s
        wanted = (self.curve.work_in(elapsed + tick) * self.burst_cores - cpu_used) / tick
        ceiling = self.burst_cores * min(1.0, self.curve.share_at(elapsed) * CATCH_UP)
        floor = self.min_quota_us / self.period_us
        return min(max(wanted, floor), ceiling)

    def quota_us(self, cores: float) -> int:
        return max(self.min_quota_us, round(cores * self.period_us))


def governor_plan(clock: CellClock) -> GovernorPlan | None:
    """The plan of a throttled clock whose device throttles at its cooling; None for any other clock."""
    if not clock.governed or clock.thermal is None:
        return None
    period, _ = clock.cfs()
    return GovernorPlan(clock.thermal, clock.cpu_quota_cores, period, CFS_MIN_QUOTA_US)


@dataclass
class QuotaGovernor:
    """A thread that writes a running cell's quota along its plan. `cpu_seconds` reads the CPU time the cell's group
    has used (cumulative); `write` sets its quota in microseconds per `plan.period_us`."""

    plan: GovernorPlan
    cpu_seconds: Callable[[], float]
    write: Callable[[int], None]
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start heating now (idempotent: a cell heats once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._govern, name="quota-governor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _govern(self) -> None:
        t0, used0 = time.perf_counter(), self.cpu_seconds()
        while True:
            elapsed = time.perf_counter() - t0
            try:
                cores = self.plan.cores_for(elapsed, self.cpu_seconds() - used0)
                self.write(self.plan.quota_us(cores))
            except OSError:
                return  # the cell's group is gone: the cell has ended
            if self._stop.wait(self.plan.tick_s):
                return
