"""Roofline clock acceptance (issue 27): device seconds per step on rpi-4-4gb under the FLOPs-only and the roofline
scaled clock, per phase, for MeZO and checkpointed BP on opt-125m at batch 2 x 48 and 16 x 64.

Each (method, shape) runs in this process on the device's thread count here (at most the host's cores), WARMUP
steps and then STEPS timed ones, its phases timed by the cell's own meter (devices.roofline.PhaseMeter) with the
clock the harness would plan (host GFLOPS and memcpy rate from the cached calibrations). Printed per arm: device
seconds per step both ways, each phase's share of the roofline step and how far the phase moved, and the MeZO / BP
ratio at each shape both ways. The throttled clock charges what the FLOPs-only column does (a CFS quota slows
every CPU second alike), so the two columns are also how far the throttled and the roofline clocks part.

Run alone on the machine:
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_roofline.py \\
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import os

import pytest

SHAPES = ((2, 48), (16, 64))
ARMS = (("mezo", {"method": "mezo"}), ("bp-checkpointed", {"method": "bp-checkpointed", "optimizer": "adamw"}))
WARMUP, STEPS = 2, 4
DEVICE = "rpi-4-4gb"


def measure(arm: dict, batch: int, seq: int) -> dict[str, dict[str, float]]:
    """Per phase: CPU, FLOPs-only and roofline device seconds per step over STEPS steady-state steps."""
    import torch

    from devices.catalogue import load_catalogue
    from devices.host_speed import host_speed
    from devices.roofline import host_bandwidth
    from devices.speed import plan_clock
    from workloads.cell import prepare
    from workloads.methods import make_method
    from workloads.models import trainable_parameters
    from workloads.params import WorkloadParams

    profile = load_catalogue()[DEVICE]
    clock = plan_clock(profile, "device-scaled", host_speed(), os.cpu_count() or 1, host_bandwidth())
    torch.set_num_threads(clock.threads)
    params = WorkloadParams(model="opt-125m", batch=batch, seq_len=seq, max_steps=WARMUP + STEPS, **arm)
    net, task, _ = prepare(params, torch.device("cpu"))
    named = trainable_parameters(net)
    meter = clock.meter()
    method = make_method(params, net, named, meter)
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            meter.totals.clear()
        method.step(task.batch(step), step)
    return {
        name: {"cpu": t.cpu_seconds / STEPS, "flops_only": t.flops_only_seconds / STEPS, "roofline": t.roofline_seconds / STEPS,
               "intensity": t.flops / t.traffic if t.traffic else float("inf")}
        for name, t in meter.totals.items()
    }  # fmt: skip


def run_all() -> dict:
    return {(name, shape): measure(arm, *shape) for shape in SHAPES for name, arm in ARMS}


def report(results: dict) -> list[str]:
    lines = [f"\nroofline vs FLOPs-only scaled clock, opt-125m on {DEVICE}, device seconds per step"]
    steps = {}
    for (name, shape), phases in results.items():
        flops_only = sum(p["flops_only"] for p in phases.values())
        roofline = sum(p["roofline"] for p in phases.values())
        steps[name, shape] = (flops_only, roofline)
        lines.append(f"  {name} {shape[0]} x {shape[1]}: FLOPs-only {flops_only:.3f} s, roofline {roofline:.3f} s "
                     f"({roofline / flops_only - 1:+.1%})")  # fmt: skip
        for phase, p in phases.items():
            lines.append(f"    {phase}: share {p['roofline'] / roofline:.1%} (FLOPs-only {p['flops_only'] / flops_only:.1%}), "
                         f"moved {p['roofline'] / p['flops_only'] - 1:+.1%}, {p['intensity']:.1f} FLOPs/byte")  # fmt: skip
    for shape in SHAPES:
        (mf, mr), (bf, br) = steps["mezo", shape], steps["bp-checkpointed", shape]
        lines.append(f"  {shape[0]} x {shape[1]}: MeZO / BP step FLOPs-only {mf / bf:.3f} (BP / MeZO {bf / mf:.3f}), "
                     f"roofline {mr / br:.3f} (BP / MeZO {br / mr:.3f})")  # fmt: skip
    return lines


@pytest.mark.timeout(3600)
def test_roofline_moves_memory_bound_phases_only(benchmark, capsys):
    results = benchmark.pedantic(run_all, rounds=1, iterations=1)
    with capsys.disabled():
        print("\n".join(report(results)))
    for phases in results.values():
        for name in ("forward", "backward"):
            if name in phases:  # compute-bound on both machines: the roofline keeps the FLOPs-only charge
                assert abs(phases[name]["roofline"] / phases[name]["flops_only"] - 1) < 0.05, name
