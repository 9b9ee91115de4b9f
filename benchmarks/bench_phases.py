"""Phase profile (issue 12, as ZO-Bench does): where a training step's time and peak memory go, per method.

Time, per steady-state step (wall-clock on the host's threads):
- MeZO: forwards (the perturbed losses), z generation (drawing z: `normal_` into chunk buffers, or slicing the
  table), parameter passes (applying z: the in-place adds, without drawing), other (Python, hashing seeds).
- backprop: forward, backward (with checkpointing: the recomputed forwards too), optimizer step, other.

Peak memory (resident set, Linux's VmHWM reset per phase through /proc/self/clear_refs):
- the peak of each phase, and the peak of a step split into: weights, buffers (the model's, MeZO's noise table
  and chunk buffers), gradients and optimizer state counted exactly from the tensors; runtime + data (what was
  resident before the first step, less weights and buffers: interpreter, libraries, the tokenised task); and
  activations + allocator slack as the measured remainder.

Beside them, the floor a parameter pass cannot beat on this host: the bytes MeZO's two passes move
(read w, read z per operation group, write w) over the host's measured in-place bandwidth, as a fraction of
two forwards. When that floor alone exceeds the issue's bound, the bound cannot hold with in-place
perturbation on this machine, whatever the noise source.

Each (method, shape) runs in its own process (RSS is not shared between them). Run alone on the machine:
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_phases.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

#: (model, batch, seq_len): issue 12's reference shapes.
SHAPES = (("opt-125m", 16, 64), ("opt-125m", 16, 48), ("opt-125m", 2, 48))
ARMS = (
    ("mezo", {"method": "mezo", "zo_noise": "table"}),
    ("mezo-normal", {"method": "mezo", "zo_noise": "normal"}),
    ("bp-checkpointed", {"method": "bp-checkpointed", "optimizer": "adamw"}),
    ("bp", {"method": "bp", "optimizer": "adamw"}),
)
WARMUP, STEPS, THREADS = 2, 5, 2
MIB = 2**20


def rss_now() -> int:
    return _status_kib("VmRSS") * 1024


def rss_peak() -> int:
    return _status_kib("VmHWM") * 1024


def reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class Phases:
    """Wall time and peak RSS per named phase; `wrap` times an object's method as that phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.peaks: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj, attribute: str, phase: str, peak: bool = True) -> None:
        inner = getattr(obj, attribute)

        def timed(*args, **kwargs):
            if peak:
                reset_peak()
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - t0
                self.calls[phase] += 1
                if peak:
                    self.peaks[phase] = max(self.peaks[phase], rss_peak())

        setattr(obj, attribute, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.peaks.clear()
        self.calls.clear()


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def inplace_bandwidth(torch, elements: int = 1 << 25) -> float:
    """Bytes per second of `w.add_(z, alpha)` on tensors far larger than cache (12 bytes an element)."""
    w, z = torch.randn(elements), torch.randn(elements)
    w.add_(z, alpha=1e-3)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        w.add_(z, alpha=1e-3)
        best = min(best, time.perf_counter() - t0)
    return 12 * elements / best


def profile_one(model: str, batch: int, seq_len: int, arm: dict) -> dict:
    """Build one cell in this process, run WARMUP + STEPS steps with the phases wrapped, return the profile."""
    import torch

    from workloads.cell import prepare
    from workloads.methods import Backprop, make_method
    from workloads.models import trainable_parameters
    from workloads.params import WorkloadParams

    torch.set_num_threads(THREADS)
    params = WorkloadParams(model=model, batch=batch, seq_len=seq_len, max_steps=WARMUP + STEPS, **arm)
    net, task, _ = prepare(params, torch.device("cpu"))
    named = trainable_parameters(net)
    method = make_method(params, net, named)
    resident = (
        rss_now()
    )  # before the first step: interpreter, torch, transformers, the task's tensors, weights
    phases = Phases()
    if isinstance(method, Backprop):
        phases.wrap(method.model, "forward", "forward")
        phases.wrap(torch.Tensor, "backward", "backward")
        phases.wrap(method.optimizer, "step", "optimizer step")
    else:
        mezo = method.optimizer
        phases.wrap(method.model, "forward", "forwards")
        phases.wrap(mezo, "_run", "parameter passes (with z)", peak=False)
        phases.wrap(mezo, "_noise", "z draws", peak=False)  # counted only: they run on the pass's threads
    step_seconds, step_peak = 0.0, 0
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            phases.reset()
        batch_ = task.batch(step)
        reset_peak()
        t0 = time.perf_counter()
        method.step(batch_, step)
        if step >= WARMUP:
            step_seconds += time.perf_counter() - t0
            step_peak = max(step_peak, rss_peak())
    grads = [p.grad for _, p in named if p.grad is not None]
    optimizer_state = [
        v for s in getattr(method.optimizer, "state", {}).values() for v in s.values() if torch.is_tensor(v)
    ]
    weights = tensor_bytes({id(p): p for p in net.parameters()}.values())
    buffers = tensor_bytes(net.buffers()) + _mezo_buffers(method)
    out = {
        "step_s": step_seconds / STEPS,
        "time": {k: v / STEPS for k, v in phases.seconds.items()},
        "phase_peak": dict(phases.peaks),
        "peak": step_peak,
        "memory": {
            "runtime + data": resident - weights - buffers,
            "weights": weights,
            "buffers": buffers,
            "gradients": tensor_bytes(grads),
            "optimizer state": tensor_bytes(optimizer_state),
        },
    }
    if not isinstance(method, Backprop):
        passes = out["time"].pop("parameter passes (with z)")
        out["time"].pop("z draws", None)
        z_seconds = _mezo_z_seconds(method.optimizer, phases.calls["z draws"] / STEPS)
        out["time"] |= {"z generation": z_seconds, "parameter passes (applying z)": passes - z_seconds}
        out["pass_bytes"] = _mezo_pass_bytes(method.optimizer)
    return out


def _mezo_buffers(method) -> int:
    mezo = getattr(method, "optimizer", None)
    tables = getattr(mezo, "tables", {})
    chunk_buffers = mezo.chunk * 4 * THREADS if getattr(mezo, "noise", "") == "normal" else 0
    return tensor_bytes(tables.values()) + chunk_buffers


def _mezo_z_seconds(mezo, draws_per_step: float) -> float:
    """Time of drawing a step's z without applying it: one full draw over every chunk on the pass's threads,
    times the chunk draws a step makes (counted by the wrapper) over the chunks in one draw."""
    plan = mezo._plan((10**6, 0))

    def draw(p: int) -> None:
        index, start = mezo.parts[p]
        mezo._noise(plan[p], mezo._part(index, start))

    mezo._each_part(draw)
    t0 = time.perf_counter()
    for _ in range(3):
        mezo._each_part(draw)
    return (time.perf_counter() - t0) / 3 * draws_per_step / len(mezo.parts)


def _mezo_pass_bytes(mezo) -> int:
    """Bytes a one-query step's two passes must move at least: pass 1 (+eps -> -eps) reads w and z and writes w;
    pass 2 (restore, update, next +eps) reads w, z and the next z and writes w."""
    return sum(t.numel() * t.element_size() for t in mezo.tensors) * (3 + 4)


def report(results: dict, bandwidth: float) -> list[str]:
    lines = [
        f"\nhost in-place add bandwidth (w.add_(z), 12 B/element, 32M elements): {bandwidth / 1e9:.1f} GB/s"
    ]
    for (model, batch, seq), arms in results.items():
        forward = arms["mezo"]["time"]["forwards"] / 2
        lines.append(f"\n{model} batch {batch} x {seq}: one inference-mode forward {forward:.3f} s")
        for name, prof in arms.items():
            parts = sorted(prof["time"].items(), key=lambda kv: -kv[1])
            other = prof["step_s"] - sum(prof["time"].values())
            row = ", ".join(f"{k} {v:.3f} s ({100 * v / prof['step_s']:.0f}%)" for k, v in parts)
            lines.append(f"  {name:16s} step {prof['step_s']:.3f} s = {row}, other {other:.3f} s")
            if "pass_bytes" in prof:
                floor = prof["pass_bytes"] / bandwidth
                lines.append(
                    f"  {'':16s} step / (2 x forward) {prof['step_s'] / (2 * forward):.3f}; passes move "
                    f"{prof['pass_bytes'] / 1e9:.2f} GB: floor {floor:.3f} s at host bandwidth -> "
                    f"best possible ratio {1 + floor / (2 * forward):.3f}"
                )
            memory = prof["memory"]
            residual = prof["peak"] - sum(memory.values())
            split = ", ".join(f"{k} {v / MIB:.0f}" for k, v in memory.items())
            phase_peaks = ", ".join(f"{k} {v / MIB:.0f}" for k, v in prof["phase_peak"].items())
            lines.append(
                f"  {'':16s} peak {prof['peak'] / MIB:.0f} MiB = {split}, activations + slack {residual / MIB:.0f} "
                f"(MiB); phase peaks: {phase_peaks}"
            )
    return lines


def run_all() -> dict:
    results: dict = {}
    for shape in SHAPES:
        for name, arm in ARMS:
            args = json.dumps([*shape, arm])
            proc = subprocess.run(
                [sys.executable, __file__, args], capture_output=True, text=True, check=False, timeout=1800
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{name} {shape}: {proc.stderr[-2000:]}")
            results.setdefault(shape, {})[name] = json.loads(proc.stdout.splitlines()[-1])
    return results


@pytest.mark.timeout(7200)
def test_phase_profile(benchmark, capsys):
    import torch

    torch.set_num_threads(THREADS)
    bandwidth = inplace_bandwidth(torch)
    results = benchmark.pedantic(run_all, rounds=1, iterations=1)
    lines = report(results, bandwidth)
    benchmark.extra_info["bandwidth_gbs"] = bandwidth / 1e9
    with capsys.disabled():
        print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(profile_one(*json.loads(sys.argv[1]))))
