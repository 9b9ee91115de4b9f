"""The roofline scaled clock: each phase of a step is charged by its FLOPs and by the bytes it moves.

The FLOPs-only scaled clock converts every CPU second by one ratio, host GFLOPS per core / device GFLOPS. That is
right for a phase bound by compute on both machines and wrong for one bound by memory: MeZO's parameter passes,
an optimizer step, a small-batch forward on a board with little bandwidth per FLOP. The roofline clock charges
each phase p, measured at c_p host CPU seconds with F_p FLOPs and B_p bytes of memory traffic, as

    device_p = c_p * max(F_p / G_dev, B_p / W_dev) / max(F_p / G_host, B_p / W_host)

(G: fp32 matmul GFLOPS, per CPU-second on the host; W: memory traffic per second, per CPU-second on the host).
The measured host time keeps what the roofline ignores (small kernels, Python, caches); the ratio of the two
rooflines moves it to the device. A phase bound by compute on both sides is charged exactly the FLOPs-only ratio;
one bound by memory on both sides is charged host bandwidth / device bandwidth. CPU time outside any phase
(data, Python between phases) stays at the FLOPs-only ratio.

Bandwidth. The catalogue's `bandwidth_gbs` is a tinymembench memcpy rate (bytes copied per second), and the host's
is measured the same way (`python -m devices.roofline --calibrate`: one `copy_` of 64 MiB, per CPU-second, on one
thread and on all cores, cached once per environment like the host's GFLOPS). A copy moves each byte twice (read,
write), so both are doubled into traffic per second; the ratio of the two does not depend on that convention.

The throttled clock cannot do this: a CFS quota slows every CPU second alike, so it charges memory-bound phases at
the compute ratio, as the FLOPs-only scaled clock does (measure how far they part with benchmarks/bench_roofline.py).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from devices.cache import cpu_model, measured_once
from devices.per_core import PerCore, per_core_medians

if TYPE_CHECKING:
    from devices.profile import DeviceProfile

COPY_BYTES = 64 * 2**20
CALIBRATION_SECONDS = 1.0
CALIBRATION_RUNS = 3


class HostBandwidth(BaseModel):
    """This host's memcpy rate per CPU-second of one thread (bytes copied, as tinymembench counts them)."""

    model_config = ConfigDict(frozen=True)

    gbs_per_core: float = Field(gt=0)
    parallel_gbs_per_core: float | None = Field(None, gt=0, description="per core with a thread on every core")
    cores: int = Field(ge=1)
    cpu: str
    method: str

    def per_core(self, threads: int) -> float:
        """The memcpy rate per CPU-second of each of `threads` threads (as HostSpeed.per_core)."""
        return PerCore(self.gbs_per_core, self.parallel_gbs_per_core, self.cores).at(threads)


class Roofline(BaseModel):
    """The four figures a roofline clock converts with, recorded with the cell's clock."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_gflops: float = Field(gt=0)
    device_bandwidth_gbs: float = Field(gt=0, description="the device's memcpy rate (catalogue bandwidth_gbs)")
    host_gflops_per_core: float = Field(gt=0)
    host_bandwidth_gbs_per_core: float = Field(gt=0, description="the host's memcpy rate per CPU-second")
    source: str = ""

    def device_seconds(self, flops: float, traffic: float) -> float:
        return max(flops / (self.device_gflops * 1e9), traffic / (2 * self.device_bandwidth_gbs * 1e9))

    def host_seconds(self, flops: float, traffic: float) -> float:
        return max(flops / (self.host_gflops_per_core * 1e9), traffic / (2 * self.host_bandwidth_gbs_per_core * 1e9))

    def ratio(self, flops: float, traffic: float) -> float | None:
        """Device seconds per host CPU-second for a phase of `flops` and `traffic` bytes; None for an empty one."""
        host = self.host_seconds(flops, traffic)
        return None if host <= 0 else self.device_seconds(flops, traffic) / host


def plan_roofline(profile: DeviceProfile, host_gflops: float, host_gbs: float | None) -> Roofline | None:
    """The roofline figures of a scaled cell: None (FLOPs only) where the device or the host lacks a bandwidth."""
    if profile.gflops is None or profile.bandwidth_gbs is None or host_gbs is None:
        return None
    return Roofline(
        device_gflops=profile.gflops,
        device_bandwidth_gbs=profile.bandwidth_gbs,
        host_gflops_per_core=host_gflops,
        host_bandwidth_gbs_per_core=host_gbs,
        source=profile.bandwidth_source or "the device profile",
    )


@dataclass
class Phase:
    """One timed span of a phase: what it computed and moved (added while it runs)."""

    name: str
    flops: float = 0.0
    traffic: float = 0.0
    child_cpu: float = 0.0

    def add(self, flops: float, traffic: float) -> None:
        self.flops += flops
        self.traffic += traffic


@dataclass
class PhaseTotals:
    cpu_seconds: float = 0.0
    flops: float = 0.0
    traffic: float = 0.0
    flops_only_seconds: float = 0.0  # device seconds at the FLOPs-only ratio
    roofline_seconds: float = 0.0  # device seconds at the roofline ratio


class PhaseMeter:
    """Times phases in CPU seconds and keeps the roofline's correction to the FLOPs-only clock (`extra`).

    Phases nest: an outer phase (MeZO's step) is charged its own CPU time, less that of the phases inside it."""

    def __init__(self, ratio: float = 1.0, roofline: Roofline | None = None) -> None:
        self.ratio, self.roofline = ratio, roofline
        self.extra = 0.0
        self.totals: dict[str, PhaseTotals] = defaultdict(PhaseTotals)
        self._stack: list[Phase] = []

    @contextmanager
    def phase(self, name: str, flops: float = 0.0, traffic: float = 0.0) -> Iterator[Phase]:
        span = Phase(name, flops, traffic)
        self._stack.append(span)
        t0 = time.process_time()
        try:
            yield span
        finally:
            elapsed = time.process_time() - t0
            self._stack.pop()
            if self._stack:
                self._stack[-1].child_cpu += elapsed
            self._charge(span, max(elapsed - span.child_cpu, 0.0))

    def _charge(self, span: Phase, cpu: float) -> None:
        ratio = self.roofline.ratio(span.flops, span.traffic) if self.roofline else None
        charged = cpu * (self.ratio if ratio is None else ratio)
        totals = self.totals[span.name]
        totals.cpu_seconds += cpu
        totals.flops += span.flops
        totals.traffic += span.traffic
        totals.flops_only_seconds += cpu * self.ratio
        totals.roofline_seconds += charged
        self.extra += charged - cpu * self.ratio


#: A meter that charges nothing extra: the default for a method built without a clock (tests, tools).
def null_meter() -> PhaseMeter:
    return PhaseMeter()


def copy_rate(seconds: float) -> float:
    """Bytes copied per CPU-second by `copy_` of COPY_BYTES, on torch's current threads."""
    import torch

    n = COPY_BYTES // 4
    src, dst = torch.randn(n), torch.empty(n)
    dst.copy_(src)  # fault the pages in
    cpu0, wall0, count = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - wall0 < seconds:
        dst.copy_(src)
        count += 1
    return COPY_BYTES * count / max(time.process_time() - cpu0, 1e-9)


def calibrate() -> HostBandwidth:
    import torch

    rate = per_core_medians(lambda: copy_rate(CALIBRATION_SECONDS) / 1e9, CALIBRATION_RUNS, digits=2)
    return HostBandwidth(
        gbs_per_core=rate.single,
        parallel_gbs_per_core=rate.parallel,
        cores=rate.cores,
        cpu=cpu_model(),
        method=f"torch copy_ of {COPY_BYTES // 2**20} MiB fp32, bytes copied per CPU-second, 1 and {rate.cores} "
        f"threads, median of {CALIBRATION_RUNS} x {CALIBRATION_SECONDS:g} s, torch {torch.__version__}",
    )


def _valid(figure: object) -> bool:
    try:
        HostBandwidth.model_validate(figure)
    except ValueError:
        return False
    return True


def host_bandwidth() -> HostBandwidth | None:
    """This environment's measured memcpy rate: cached, else measured now (a few seconds). None if it cannot be."""
    figure = measured_once("host-bandwidth", ["devices.roofline", "--calibrate"], packages=("torch",), valid=_valid)
    return None if figure is None else HostBandwidth.model_validate(figure)


if __name__ == "__main__":  # --calibrate: this host's memcpy rate
    if sys.argv[1:2] == ["--calibrate"]:
        print(calibrate().model_dump_json())
    else:
        sys.exit("usage: python -m devices.roofline --calibrate")
