"""Simulated against published (issue 27, acceptance 4): device seconds of a batch-1 forward under the FLOPs-only
(before issue 27) and the roofline (after) scaled clock, beside the latency a publication measured for the same
model on a real board. `SOURCES` is the table of publications; docs/devices.md cites each and states the error.

Each forward is timed by the cell's own meter (devices.roofline.PhaseMeter) with the clock the harness would plan
for the board, after the publication's warm-up count, over its run count, on the thread count the harness plans
here. Where a publication does not state its sequence length, `seqs` brackets it; where it does not name its
board for certain, `devices` lists each board it may be.

Run alone on the machine:
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_published.py \\
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

SHODH = "https://www.shodh-memory.com/blog/embedding-models-edge-devices (table 'Speed (Pi 4)')"
ARM_LAB = (
    "https://github.com/dav-mac/executorch_on_arm_labs/blob/e69baf35dc4a3f0597d703eb99351b836474cbea/plots/PT.png "
    "(Arm Education lab 1, figure legend 'Mean')"
)


@dataclass(frozen=True)
class Published:
    """One published latency of a batch-1 forward of a named model on a real board, as the source states it."""

    name: str  # the model as the source names it
    model: str  # the edgebench model of the same shape
    ms: float  # the published latency per forward
    source: str
    runtime: str  # what the source ran: edgebench runs and scales PyTorch eager
    devices: tuple[str, ...]  # catalogue boards; more than one where the source leaves the board open
    seqs: tuple[int, ...]  # tokens per forward; more than one where the source does not state it
    warmup: int = 3  # forwards before timing, and timed forwards: the source's, else these
    steps: int = 30


SOURCES = (
    Published("all-MiniLM-L6-v2", "minilm-l6", 34.0, SHODH, "ONNX Runtime", ("rpi-4-4gb",), (16, 32, 128)),
    Published("all-mpnet-base-v2", "mpnet-l12", 340.0, SHODH, "ONNX Runtime", ("rpi-4-4gb",), (16, 32, 128)),
    Published(
        "facebook/opt-125m",
        "opt-125m",
        1962.83,
        ARM_LAB,
        "PyTorch eager fp32",
        ("rpi-5-8gb", "rpi-4-4gb"),
        (128,),
        warmup=1,
        steps=20,
    ),
)


def measure(entry: Published, device: str, seq: int) -> dict[str, float]:
    """Device seconds per batch-1 forward of `entry.model` at `seq` tokens on `device`, FLOPs-only and roofline,
    and the host CPU seconds."""
    import torch

    from devices.catalogue import load_catalogue
    from devices.host_speed import host_speed
    from devices.roofline import host_bandwidth
    from devices.speed import plan_clock
    from workloads.cell import prepare
    from workloads.methods import make_method
    from workloads.models import trainable_parameters
    from workloads.params import WorkloadParams

    clock = plan_clock(
        load_catalogue()[device], "device-scaled", host_speed(), os.cpu_count() or 1, host_bandwidth()
    )
    torch.set_num_threads(clock.threads)
    params = WorkloadParams(
        model=entry.model, method="inference", batch=1, seq_len=seq, padding="max_length",
        max_steps=entry.warmup + entry.steps,
    )  # fmt: skip
    net, task, _ = prepare(params, torch.device("cpu"))
    meter = clock.meter()
    method = make_method(params, net, trainable_parameters(net), meter)
    for step in range(entry.warmup + entry.steps):
        if step == entry.warmup:
            meter.totals.clear()
        method.step(task.batch(step), step)
    totals = meter.totals.values()
    return {
        "cpu": sum(t.cpu_seconds for t in totals) / entry.steps,
        "flops_only": sum(t.flops_only_seconds for t in totals) / entry.steps,
        "roofline": sum(t.roofline_seconds for t in totals) / entry.steps,
        "threads": clock.threads,
    }


def run_all() -> dict:
    return {
        (entry, device, seq): measure(entry, device, seq)
        for entry in SOURCES
        for device in entry.devices
        for seq in entry.seqs
    }


def error(simulated_ms: float, published_ms: float) -> str:
    return f"{simulated_ms / published_ms - 1:+.0%}"


def report(results: dict) -> list[str]:
    lines = ["\nbatch-1 forward, simulated vs published"]
    for (entry, device, seq), r in results.items():
        before, after = 1000 * r["flops_only"], 1000 * r["roofline"]
        lines.append(
            f"  {entry.name} ({entry.model}) on {device}, {seq} tokens: published {entry.ms:.0f} ms "
            f"({entry.runtime}, {entry.source}); FLOPs-only {before:.1f} ms ({error(before, entry.ms)}); "
            f"roofline {after:.1f} ms ({error(after, entry.ms)}); host CPU {1000 * r['cpu']:.1f} ms on "
            f"{r['threads']} thread(s)"
        )
    return lines


@pytest.mark.timeout(1800)
def test_simulated_forward_against_published(benchmark, capsys):
    results = benchmark.pedantic(run_all, rounds=1, iterations=1)
    with capsys.disabled():
        print("\n".join(report(results)))
    # these boards have more bandwidth per FLOP than this host: the roofline never adds
    for r in results.values():
        assert 0 < r["roofline"] <= r["flops_only"] * 1.05
