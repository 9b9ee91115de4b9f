"""Synthetic runs (run.json + results.jsonl written through the real store) for the report, compare and
browser tests and the report benchmark. No test lives here: these are the builders they share.

Figures follow the shape of real fit sweeps: memory grows with parameters (MeZO ~ 4 B/param, checkpointed
BP ~ 16, plain BP ~ 16 plus activations), a cell over its device's cap is an OOM kill. Accuracy runs follow
the paper's second experiment: arms on MiniLM under a device-time budget, recipes x seeds, test and
validation curves, and the test split's majority class; each keeps per-example predictions
(workloads.predictions) that score what its curve says, so reports have evaluations to pair.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from devices.speed import CellClock
from harness.record.energy import Energy
from harness.record.records import CellRecord, judged
from harness.record.runinfo import RunInfo
from harness.record.store import RunStore
from tests.records_factory import make_record, merged
from workloads.predictions import Predictions, SplitPredictions, ref_for

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
    metrics = record.metrics
    if fits:
        curve = [
            {"step": step, "seconds": round(step * step_time, 3), "accuracy": 50 + 30 * (1 - 0.93**step)}
            for step in range(0, 60 if method == "mezo" else 20, 4)
        ]
        metrics = merged(
            metrics,
            param_count=params,
            timing={"step_time_s": step_time},
            accuracy={"curve": curve, "initial": curve[0]["accuracy"], "final": curve[-1]["accuracy"]},
        )
    return record.model_copy(
        update={
            "metrics": metrics,
            "predicted_peak_bytes": int(peak * 1.08),
            "host_seconds": seconds,
            "device_seconds": seconds,  # the factory's host clock: device seconds are host seconds
            "error": None if fits else "killed by the kernel OOM killer (cgroup memory cap)",
        }
    )


#: (method, tuning) -> {lr: (mean final validation %, mean final test %)}. On full MeZO the test split favours
#: the recipe validation ranks second: a report that chose on test would show 1e-5.
ACCURACY_ARMS = {
    ("mezo", "full"): {2e-5: (76.0, 75.2), 1e-5: (74.0, 76.5)},
    ("mezo", "head"): {2.0: (71.0, 70.7)},
    ("bp-checkpointed", "full"): {1e-4: (84.0, 83.1), 3e-5: (82.5, 82.0)},
    ("bp-checkpointed", "head"): {1e-3: (72.0, 71.4)},
}
SEED_NOISE = (0.0, 0.8, -0.9)  # points each seed adds to its recipe's mean
MAJORITY = {"validation": 50.2, "test": 50.0}  # rotten_tomatoes is balanced
BUDGET_S = 900.0
STEPS_PER_S = {("mezo", "full"): 1.5, ("mezo", "head"): 4.0, ("bp-checkpointed", "full"): 0.3}


#: Examples per held-out split of the synthetic predictions (positions in the deduplicated dataset).
EXAMPLES = {
    "validation": np.arange(0, 2 * 400, 2, dtype=np.int32),
    "test": np.arange(1, 2 * 400, 2, dtype=np.int32),
}
#: How hard each example is, shared by every cell (arms get the same examples wrong, as real models do).
DIFFICULTY = {name: np.random.default_rng(i).random(len(e)) for i, (name, e) in enumerate(EXAMPLES.items())}
#: The encoded predictions files of the records built here, by sha256: write_run writes those its records name.
PREDICTION_FILES: dict[str, bytes] = {}


def synthetic_predictions(key: str, points: list[dict]) -> Predictions:
    """Per evaluation and split, the examples a cell got right: the easiest (each cell's own noise on the shared
    difficulty, fixed over its evaluations) up to the curve's accuracy, rounded to whole examples."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
    predictions = Predictions()
    for name, examples in EXAMPLES.items():
        labels = (np.arange(len(examples)) % 2).astype(np.int8)
        predictions.splits[name] = SplitPredictions(examples, labels)
    ease = {name: DIFFICULTY[name] + 0.3 * rng.random(len(e)) for name, e in EXAMPLES.items()}
    for point in points:
        scored = {}
        for name, figure in (("test", "accuracy"), ("validation", "val_accuracy")):
            labels = predictions.splits[name].labels
            right = np.zeros(len(labels), dtype=bool)
            right[np.argsort(ease[name])[: round(point.get(figure, 50.0) * len(labels) / 100)]] = True
            scored[name] = (np.where(right, labels, 1 - labels), rng.random(len(labels)).astype(np.float16))
        predictions.add(point["step"], point["seconds"], scored)
    return predictions


def with_predictions(record: CellRecord, noise: str | None = None) -> CellRecord:
    """`record` with predictions that score its accuracy curve, their file kept for write_run. The examples it
    gets right follow the shared difficulty plus noise drawn from `noise` (default: its cell id, so a record of
    the same cell with a lower curve gets a subset of them right)."""
    curve = [point.model_dump(exclude_none=True) for point in record.metrics.accuracy.curve]
    predictions = synthetic_predictions(noise or record.cell_id, curve)
    data = predictions.encode()
    ref = ref_for(record.cell_id, data, predictions)
    PREDICTION_FILES[ref.sha256] = data
    return record.model_copy(update={"metrics": merged(record.metrics, predictions=ref)})


def accuracy_record(
    method: str,
    lr: float,
    seed: int,
    val: float,
    test: float,
    tuning: str = "full",
    device: str = "rpi-4-2gb",
    legacy: bool = False,
    predictions: bool = True,
) -> CellRecord:
    """One finished accuracy cell whose curves rise from 50 % to `val` / `test` over the budget, with per-example
    predictions unless `predictions` is false; `legacy` drops what older workloads did not record (validation
    figures, the majority class, predictions)."""
    record = make_record(
        device=device,
        model="minilm-l6",
        task="rotten_tomatoes",
        method=method,
        tuning=tuning,
        lr=lr,
        seed=seed,
        batch=16,
        max_steps=None,
        max_seconds=BUDGET_S,
        eval_seconds=300,
    )
    end = BUDGET_S + 7 * seed  # seeds stop at slightly different times, as real cells do
    rate = STEPS_PER_S.get((method, tuning), 0.6)

    def rise(final: float, t: float) -> float:
        return round(50 + (final - 50) * (1 - math.exp(-4 * t / end)) / (1 - math.exp(-4)), 3)

    curve = [
        {"seconds": t, "step": int(t * rate), "accuracy": rise(test, t)}
        | ({} if legacy else {"val_accuracy": rise(val, t)})
        for t in (0.0, 300.0, 600.0, end)
    ]
    accuracy = {"curve": curve, "initial": curve[0]["accuracy"], "final": curve[-1]["accuracy"]}
    if not legacy:
        accuracy |= {
            "initial_val": curve[0]["val_accuracy"],
            "final_val": curve[-1]["val_accuracy"],
            "majority": MAJORITY,
        }
    metrics = merged(
        record.metrics,
        param_count=22_713_216,
        timing={"step_time_s": 1 / rate, "train_seconds": end},
        accuracy=accuracy,
    )
    done = judged(record, metrics=metrics, steps=curve[-1]["step"], host_seconds=end, device_seconds=end)
    return with_predictions(done) if predictions and not legacy else done


def accuracy_run(
    seeds=(0, 1, 2), arms=ACCURACY_ARMS, legacy: bool = False, energy: bool = False
) -> list[CellRecord]:
    """Every arm x recipe x seed of ACCURACY_ARMS, each seed off its recipe's mean by SEED_NOISE; with `energy`,
    each record carries device joules (`with_energy`), MeZO's at a lower mean power than backprop's."""
    records = [
        accuracy_record(
            method,
            lr,
            seed,
            val + SEED_NOISE[seed % len(SEED_NOISE)],
            test + SEED_NOISE[seed % len(SEED_NOISE)],
            tuning=tuning,
            legacy=legacy,
        )
        for (method, tuning), recipes in arms.items()
        for lr, (val, test) in recipes.items()
        for seed in seeds
    ]
    if not energy:
        return records
    return [with_energy(r, BURST_SHARE.get(r.params.method, 1.0)) for r in records]


#: A mean power below full load (a share of the way from idle), as if MeZO's cells throttled more: arms then
#: differ in joules per device second, so energy does not merely rescale time.
BURST_SHARE = {"mezo": 0.8}


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
    devices=tuple(DEVICES),
    models=tuple(LADDER),
    methods=("mezo", "bp-checkpointed", "bp"),
    seeds=(0,),
    energy: bool = False,
) -> list[CellRecord]:
    records = [sweep_record(d, m, x, s) for d in devices for m in models for x in methods for s in seeds]
    return [with_energy(r) for r in records] if energy else records


#: A Pi 4's figures (devices/catalogue.yaml); a fixture's cell draws `burst_share` of the way from idle to load.
IDLE_W, LOAD_W = 2.7, 7.2


def with_energy(record: CellRecord, burst_share: float = 1.0) -> CellRecord:
    """`record` with the energy a device clock gives it: joules over its device seconds, at a mean power
    `burst_share` of the way from idle to full load (1: no throttling)."""
    seconds = record.device_seconds or 0.0
    work = seconds * burst_share
    energy = Energy(
        joules=round(IDLE_W * seconds + (LOAD_W - IDLE_W) * work, 3),
        device_seconds=seconds,
        burst_seconds=work,
        idle_watts=IDLE_W,
        load_watts=LOAD_W,
        source="test fixture",
    )
    return record.model_copy(update={"energy": energy})


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
    store.prepare(RunInfo.model_validate(run_info), fresh=True)
    for record in records:
        store.append(record)
        ref = record.metrics.predictions
        if ref is not None and ref.sha256 in PREDICTION_FILES:
            (run_dir / ref.file).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / ref.file).write_bytes(PREDICTION_FILES[ref.sha256])
    return run_dir
