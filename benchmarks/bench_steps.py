"""Micro-benchmarks of one step per method on a fixed small model (opt-8m, synthetic batch 8 x 64).

Peak memory goes in extra_info: the process's high-water mark is reset (/proc/self/clear_refs)
after the model and method are built, so each figure is that method's own peak resident memory
(weights included). The ratios against inference are printed, measured in this one run.
Run: `make bench` (these are part of the stored baseline that `make bench-compare` checks).
"""

from __future__ import annotations

import pytest

from workloads.baseline import peak_rss_bytes
from workloads.methods import make_method
from workloads.models import trainable_parameters
from workloads.params import WorkloadParams

torch = pytest.importorskip("torch")

METHODS = ("inference", "mezo", "bp-checkpointed", "bp")
PEAKS: dict[str, int] = {}
TIMES: dict[str, float] = {}


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


@pytest.mark.parametrize("method", METHODS)
def test_step(benchmark, method):
    from workloads.cell import prepare, setup

    params = WorkloadParams(model="opt-8m", method=method, batch=8, seq_len=64, max_steps=1)
    device, threads = setup(params)
    model, task, _ = prepare(params, device)
    stepper = make_method(params, model, trainable_parameters(model))
    batch = task.batch(0)
    stepper.step(batch, 0)  # warm-up: allocator pools and optimizer state exist before timing
    reset_hwm()
    counter = iter(range(1, 1_000_000))
    benchmark.pedantic(lambda: stepper.step(batch, next(counter)), rounds=5, iterations=1)
    PEAKS[method] = peak_rss_bytes()
    TIMES[method] = benchmark.stats.stats.median
    benchmark.extra_info.update(peak_rss_bytes=PEAKS[method], threads=threads, params=params.model)
    if method == METHODS[-1]:
        base_peak, base_time = PEAKS["inference"], TIMES["inference"]
        for name in METHODS:
            print(
                f"\n{name:<16} peak {PEAKS[name] / 2**20:7.1f} MiB ({PEAKS[name] / base_peak:.3f}x inference), "
                f"step {TIMES[name] * 1000:7.1f} ms ({TIMES[name] / base_time:.2f}x a forward)"
            )
