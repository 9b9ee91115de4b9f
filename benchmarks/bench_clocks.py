"""Device speed acceptance: the throttled and the scaled clock agree, and devices differ by their throughput.

1. Clock agreement: MiniLM-L6 on Rotten Tomatoes (MeZO and checkpointed BP, batch 16 x 64) on rpi-4-4gb,
   once on the throttled clock (the kernel's CFS quota slows the cell to the Pi 4's 22.9 GFLOPS, so
   wall-clock is device time) and once on the scaled clock (unthrottled; CPU seconds x host/device
   ratio), for the same device budget. Printed: steps per device-second on each clock, their ratio, and
   the host seconds the scaled clock needed for the budget (its speed-up over the throttled run).
2. Device ratio: the same opt-8m MeZO cell on rpi-zero-2w and rpi-5-8gb, on both clocks. Printed: the
   step-time ratio against the ratio of their catalogue throughputs.

Run (about 15 minutes, one benchmark at a time on this machine):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_clocks.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import pytest

from tests.helpers import run_spec

CLOCKS = ("device-throttled", "device-scaled")
BUDGET_S = 120  # device seconds of training per agreement cell

AGREEMENT = """
name: bench-clock-agreement
clock: {clock}
devices: [rpi-4-4gb]
timeout_s: 7200
matrix:
  model: minilm-l6
  task: rotten_tomatoes
  method: [mezo, bp-checkpointed]
  batch: 16
  seq_len: 64
  max_steps: null
  max_seconds: {budget}
  eval_examples: 16  # accuracy is not the point here: a small split keeps the throttled evaluation short
"""

DEVICE_RATIO = """
name: bench-device-ratio
clock: {clock}
devices: [rpi-zero-2w, rpi-5-8gb]
timeout_s: 7200
matrix:
  model: opt-8m
  task: synthetic
  method: mezo
  batch: 8
  seq_len: 64
  max_steps: 12
"""


def run_all(tmp_path):
    runs = {}
    for clock in CLOCKS:
        for name, spec in (("agreement", AGREEMENT), ("ratio", DEVICE_RATIO)):
            directory = tmp_path / f"{name}-{clock}"
            directory.mkdir()
            runs[name, clock] = run_spec(directory, spec.format(clock=clock, budget=BUDGET_S))
    return runs


@pytest.mark.timeout(7200)
def test_clocks_agree_and_devices_keep_their_ratio(benchmark, tmp_path, capsys):
    runs = benchmark.pedantic(run_all, args=(tmp_path,), rounds=1, iterations=1)
    for records in runs.values():
        assert all(r.status == "ok" for r in records), [r.error for r in records]
    lines = [f"\nclock agreement: minilm-l6 on rotten_tomatoes, rpi-4-4gb, batch 16 x 64, {BUDGET_S} device seconds"]
    agreement = {}
    for method in ("mezo", "bp-checkpointed"):
        by_clock = {c: next(r for r in runs["agreement", c] if r.params.method == method) for c in CLOCKS}
        rate = {c: r.steps / r.metrics.timing.train_seconds for c, r in by_clock.items()}
        agreement[method] = rate["device-scaled"] / rate["device-throttled"]
        throttled, scaled = by_clock["device-throttled"], by_clock["device-scaled"]
        speedup = throttled.metrics.timing.host_train_seconds / scaled.metrics.timing.host_train_seconds
        lines += [
            f"  {method}: steps per device-second throttled {rate['device-throttled']:.4f} "
            f"({throttled.steps} steps in {throttled.metrics.timing.train_seconds:.0f} s, quota "
            f"{throttled.clock.cpu_quota_cores:.3f} cores), scaled {rate['device-scaled']:.4f} "
            f"({scaled.steps} steps, ratio {scaled.clock.ratio:.2f}): scaled / throttled = {agreement[method]:.3f}",
            f"    host seconds of training for the {BUDGET_S} s budget: throttled "
            f"{throttled.metrics.timing.host_train_seconds:.0f}, scaled {scaled.metrics.timing.host_train_seconds:.1f} "
            f"(speed-up {speedup:.1f}x); whole cell {throttled.host_seconds:.0f} s vs {scaled.host_seconds:.0f} s",
        ]
    ratios = {}
    for clock in CLOCKS:
        cells = {r.device.name: r for r in runs["ratio", clock]}
        zero, pi5 = cells["rpi-zero-2w"], cells["rpi-5-8gb"]
        catalogue = pi5.device.gflops / zero.device.gflops
        ratios[clock] = zero.metrics.timing.step_time_s / pi5.metrics.timing.step_time_s / catalogue
        lines.append(
            f"device ratio, {clock}: opt-8m MeZO step {zero.metrics.timing.step_time_s:.3f} s on rpi-zero-2w, "
            f"{pi5.metrics.timing.step_time_s:.3f} s on rpi-5-8gb: {zero.metrics.timing.step_time_s / pi5.metrics.timing.step_time_s:.2f}x "
            f"vs catalogue {catalogue:.2f}x (measured / catalogue {ratios[clock]:.3f})"
        )
    benchmark.extra_info.update(
        {f"agreement_{k}": v for k, v in agreement.items()} | {f"device_ratio_{k}": v for k, v in ratios.items()}
    )
    with capsys.disabled():
        print("\n".join(lines))
    assert all(abs(v - 1) <= 0.20 for v in agreement.values()), agreement
    assert all(abs(v - 1) <= 0.20 for v in ratios.values()), ratios
