"""Synthetic runs (run.json + results.jsonl written through the real store) for the report, compare and
browser tests and the report benchmark. No test lives here: these are the builders they share.

Figures follow the shape of real fit sweeps: memory grows with parameters (MeZO ~ 4 B/param, checkpointed
BP ~ 16, plain BP ~ 16 plus activations), a cell over its device's cap is an OOM kill.
"""

from __future__ import annotations

from pathlib import Path

from devices.speed import CellClock
from harness.records import CellRecord
from harness.store import RunStore
from tests.records_factory import make_record

MIB = 1024**2
LADDER = {"opt-1m": 1_100_000, "opt-8m": 8_400_000, "opt-30m": 29_800_000, "opt-125m": 125_200_000}
DEVICES = {"rpi-zero-2w": "512MB", "rpi-3b-plus": "1GB", "rpi-4-2gb": "2GB"}
BYTES_PER_PARAM = {"mezo": 4.4, "bp-checkpointed": 16.5, "bp": 18.0, "inference": 4.2}
RUNTIME_BYTES = 180 * MIB


def sweep_record(
    device: str, model: str, method: str, seed: int = 0, params: int | None = None
) -> CellRecord:
    """One fit-sweep cell: ok with metrics when its modelled peak fits the cap, an OOM kill otherwise."""
    params = params if params is not None else LADDER[model]
    memory = DEVICES.get(device, "2GB")
    peak = int(RUNTIME_BYTES + params * BYTES_PER_PARAM[method] * (1 + 0.02 * seed))
    probe = make_record(device=device, memory=memory, model=model, method=method, seed=seed)
    fits = peak <= probe.device.memory_bytes
    record = make_record(
        status="ok" if fits else "oom",
        peak=peak if fits else probe.device.memory_bytes,
        device=device,
        memory=memory,
        model=model,
        method=method,
        seed=seed,
    )
    step_time = 0.02 + params * (2.1e-9 if method == "mezo" else 5.5e-9)
    seconds = 3.0 + 3 * step_time
    metrics = dict(record.metrics)
    if fits:
        curve = [
            {"step": step, "seconds": round(step * step_time, 3), "accuracy": 50 + 30 * (1 - 0.93**step)}
            for step in range(0, 60 if method == "mezo" else 20, 4)
        ]
        metrics |= {
            "param_count": params,
            "step_time_s": step_time,
            "accuracy_curve": curve,
            "initial_accuracy": curve[0]["accuracy"],
            "final_accuracy": curve[-1]["accuracy"],
        }
    return record.model_copy(
        update={
            "metrics": metrics,
            "predicted_peak_bytes": int(peak * 1.08),
            "host_seconds": seconds,
            "device_seconds": seconds,  # the factory's host clock: device seconds are host seconds
            "error": None if fits else "killed by the kernel OOM killer (cgroup memory cap)",
        }
    )


def scaled_clock(gflops: float = 22.9, host_gflops: float = 190.0) -> CellClock:
    """A device-scaled clock as plan_clock gives one for a device of `gflops` on a host of `host_gflops` a core."""
    return CellClock(
        kind="device-scaled",
        requested="device-scaled",
        ratio=host_gflops / gflops,
        device_gflops=gflops,
        host_gflops_per_core=host_gflops,
        cpu_quota_cores=4,
        threads=4,
        source="a published HPL run",
    )


def on_clock(record: CellRecord, clock: CellClock) -> CellRecord:
    """The record on `clock`: its device seconds are its host seconds x the ratio (one busy core throughout);
    its metrics are left as they are."""
    return record.model_copy(update={"clock": clock, "device_seconds": record.host_seconds * clock.ratio})


def sweep(
    devices=tuple(DEVICES), models=tuple(LADDER), methods=("mezo", "bp-checkpointed", "bp"), seeds=(0,)
) -> list[CellRecord]:
    return [sweep_record(d, m, x, s) for d in devices for m in models for x in methods for s in seeds]


def write_run(run_dir: Path, records: list[CellRecord], expected: list[str] | None = None, **info) -> Path:
    """A run directory as `edgebench run` leaves it; `expected` lists cell ids run.json promises."""
    devices = {r.device.name: r.device.model_dump() for r in records}
    run_info = {
        "schema_version": 1,
        "started_at": "2026-11-24T12:00:00+00:00",
        "spec_path": "spec.yaml",
        "spec_hash": "0123456789abcdef",
        "spec": {
            "name": "synthetic-sweep",
            "description": "A synthetic fit sweep for tests.",
            "timeout_s": 900,
        },
        "devices": list(devices.values()),
        "cells": expected if expected is not None else [r.cell_id for r in records],
        "executor": "local",
        "enforcement": "cgroup-v1",
        "host": {"hostname": "test-host", "platform": "Linux", "cpus": 2, "memory_bytes": 24 << 30},
        "versions": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.0.0"},
        **info,
    }
    store = RunStore(run_dir)
    store.prepare(run_info, fresh=True)
    for record in records:
        store.append(record)
    return run_dir
