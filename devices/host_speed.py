"""This host's measured fp32 matmul throughput per core, which the device clocks (devices.speed) scale by.

The throughput is measured once per environment (`python -m devices.host_speed --calibrate`, cached
like the memory model's runtime baseline), never assumed: on one thread and on all the host's cores,
because a thread of a parallel matmul does less per CPU-second than a lone one (measured on a 2-core
EPYC VM: 67-69 GFLOPS per core alone, 50-58 per core on two threads), and a quota computed from the
single-thread figure left a 97 GFLOPS device at 77% of its speed. The same matmul loop, run inside a
device's cap (`--measure`), is the throttle proof's child (devices.verify).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from devices.cache import cpu_model, measured_once
from devices.child_env import ENV_THREADS, join_cgroups
from devices.per_core import PerCore, per_core_medians

#: The planning harness's HostSpeed (JSON), handed to the harness inside a throttled compose container.
ENV_HOST_SPEED = "EDGEBENCH_HOST_SPEED"
#: Square matrices of this size fit in cache and take well under a CFS period each, so a quota
#: is sampled finely (a 1024 matmul takes about 11 ms of a host core).
MATMUL_N = 256
#: The host figure is the median of a few short runs, so one burst of load on the host does not skew it.
CALIBRATION_SECONDS = 1.5
CALIBRATION_RUNS = 3


class HostSpeed(BaseModel):
    """This host's fp32 matmul throughput per core: FLOPs per CPU-second of one thread."""

    model_config = ConfigDict(frozen=True)

    gflops_per_core: float = Field(gt=0)
    parallel_gflops_per_core: float | None = Field(
        None, gt=0, description="per core, with one thread on each of the host's cores (None: one core)"
    )
    cores: int = Field(ge=1)
    cpu: str
    method: str

    def per_core(self, threads: int) -> float:
        """Throughput per CPU-second of each of `threads` threads: measured at one thread and at all the
        host's cores, interpolated between."""
        return PerCore(self.gflops_per_core, self.parallel_gflops_per_core, self.cores).at(threads)


def matmul_throughput(
    seconds: float, n: int = MATMUL_N, before: Callable[[], None] | None = None, windows: int = 1
) -> dict[str, Any]:
    """fp32 matmul FLOPs per wall second and per CPU second over a fixed loop, on torch's current threads, and
    the same for each of `windows` consecutive parts of the loop (the throttle proof's spread).

    `before` runs after the warm-up, right before the timed loop (the throttle proof joins its cap there,
    so that the proof times the throttle rather than torch's import under it)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):  # warm up: first calls pick kernels and fault in pages
        torch.mm(a, b, out=out)
    if before is not None:
        before()
    flops = 2.0 * n**3
    parts = []
    wall0, cpu0, count = time.perf_counter(), time.process_time(), 0
    for part in range(1, windows + 1):
        part_wall, part_cpu, part_count = time.perf_counter(), time.process_time(), count
        while time.perf_counter() - wall0 < seconds * part / windows:
            torch.mm(a, b, out=out)
            count += 1
        wall, cpu = time.perf_counter() - part_wall, time.process_time() - part_cpu
        parts.append(
            {
                "wall_seconds": wall,
                "cpu_seconds": cpu,
                "gflops_per_wall_second": flops * (count - part_count) / wall / 1e9,
            }
        )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "gflops_per_wall_second": flops * count / wall / 1e9,
        "gflops_per_cpu_second": flops * count / cpu / 1e9,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "threads": torch.get_num_threads(),
        "windows": parts,
    }


def calibrate() -> HostSpeed:
    import torch

    rate = per_core_medians(
        lambda: matmul_throughput(CALIBRATION_SECONDS)["gflops_per_cpu_second"], CALIBRATION_RUNS, digits=1
    )
    return HostSpeed(
        gflops_per_core=rate.single,
        parallel_gflops_per_core=rate.parallel,
        cores=rate.cores,
        cpu=cpu_model(),
        method=f"torch.mm {MATMUL_N}x{MATMUL_N} fp32 per CPU-second, 1 thread and {rate.cores} threads, median of "
        f"{CALIBRATION_RUNS} x {CALIBRATION_SECONDS:g} s each, torch {torch.__version__}",
    )


def _calibrated(figure: object) -> bool:
    """A cached figure that this version would have measured: one with the parallel figure on a multi-core host."""
    speed = _host_speed_or_none(figure)
    return speed is not None and (speed.cores == 1 or speed.parallel_gflops_per_core is not None)


def _host_speed_or_none(figure: object) -> HostSpeed | None:
    """A HostSpeed from a cached, measured or handed-down figure; None for one that is not (e.g. hand-edited)."""
    try:
        return HostSpeed.model_validate(figure)
    except ValueError:
        return None


def host_speed() -> HostSpeed | None:
    """This environment's measured throughput: cached, else measured now (a few seconds). None if it cannot be.

    A harness that planned a throttled container hands its calibration down in EDGEBENCH_HOST_SPEED, so the
    container records the clock its quota was computed from (and does not re-measure under the throttle)."""
    handed = os.environ.get(ENV_HOST_SPEED)
    if handed and (speed := _host_speed_or_none(json.loads(handed))):
        return speed
    figure = measured_once(
        "host-speed",
        ["devices.host_speed", "--calibrate"],
        packages=("torch",),
        valid=_calibrated,
    )
    return None if figure is None else HostSpeed.model_validate(figure)


def measure_under_cap(seconds: float, windows: int = 1) -> dict[str, Any]:
    """The throttle proof's child: warm up unthrottled, join the cap the harness made, then time the loop
    on the clock's thread count."""
    import torch

    def enter_cap() -> None:
        join_cgroups()
        torch.set_num_threads(int(os.environ.get(ENV_THREADS) or 1))

    return matmul_throughput(seconds, before=enter_cap, windows=windows)


if __name__ == "__main__":  # --calibrate: this host's figure; --measure S: the loop's throughput under a cap
    if sys.argv[1:2] == ["--calibrate"]:
        print(calibrate().model_dump_json())
    elif sys.argv[1:2] == ["--measure"] and len(sys.argv) in (3, 4):
        print(
            json.dumps(measure_under_cap(float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 1))
        )
    else:
        sys.exit("usage: python -m devices.host_speed --calibrate | --measure SECONDS [WINDOWS]")
