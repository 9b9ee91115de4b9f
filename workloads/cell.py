"""One cell: build the model and task, train under the step / time budget (in the cell's clock), measure, report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from devices.caps.base import ENV_THREADS
from devices.caps.cuda import apply_gpu_fraction, cuda_peak_bytes
from devices.speed import CellClock
from workloads.methods import make_method
from workloads.models import (
    SequenceClassifier,
    build_model,
    checkpointing_enabled,
    init_prototype_head,
    load_tokenizer,
    select_trainable,
    trainable_parameters,
)
from workloads.params import WorkloadParams
from workloads.registry import resolve
from workloads.runner import Reporter
from workloads.sources import LABEL_WORDS, SYNTHETIC
from workloads.tasks import EVAL_SPLITS, Task, real_task, synthetic_task
from workloads.versions import library_versions

#: Losses kept in the record: every step up to this many, then evenly thinned.
MAX_LOSSES = 200


@dataclass
class CellOutcome:
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, task: Task, split: str, device: torch.device) -> float:
    """Percent of `split`'s evaluated examples the model classifies right."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in task.held_out_batches(split):
        batch = {k: v.to(device) for k, v in batch.items()}
        predicted = model(**batch).logits.argmax(-1)
        correct += int((predicted == batch["labels"]).sum())
        total += len(batch["labels"])
    model.train(was_training)
    return 100.0 * correct / total


def setup(params: WorkloadParams):
    """Threads, GPU share, seeds; returns the device and the thread count actually used."""
    threads = os.environ.get(ENV_THREADS)
    if threads:
        torch.set_num_threads(int(threads))
    fraction = apply_gpu_fraction(torch)
    torch.manual_seed(params.seed)
    return torch.device("cuda" if fraction is not None else "cpu"), torch.get_num_threads()


def prepare(params: WorkloadParams, device: torch.device):
    """Task and model, with the trainable parameters selected. Real tasks start from a zero-shot head."""
    if params.task == SYNTHETIC:
        from workloads.registry import model_shape

        shape = model_shape(params.model)
        decoder = shape.is_decoder if shape else True
        built = build_model(params, "lm" if decoder else "classification", num_labels=2)
        task = synthetic_task(params, built.vocab, decoder)
    else:
        tokenizer = load_tokenizer(params.model, params.trust_remote_code)
        task = real_task(params, tokenizer)
        built = build_model(params, "classification", task.num_labels)
        built.model.to(device)
        assert isinstance(built.model, SequenceClassifier)
        init_prototype_head(built.model, tokenizer, task.label_names, LABEL_WORDS)
    model = select_trainable(built.model.to(device), params.tuning, built.family)
    return model, task, built


@dataclass
class Trace:
    """What the loop observed: per-step losses and times, the accuracy curve (test accuracy as `accuracy`, the
    validation split's as `val_accuracy`). Times are in the cell's clock (device seconds unless the clock is
    host), and training time also in host seconds."""

    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    host_train_seconds: float = 0.0


def run_cell(params: WorkloadParams, reporter: Reporter) -> CellOutcome:
    device, threads = setup(params)
    model, task, built = prepare(params, device)
    facts = {"param_count": param_count(model), "dataset": dataset_facts(params, task)}
    reporter.progress(0, force=True, facts=facts)  # before any step: the record of a killed cell keeps them
    named = trainable_parameters(model)
    method = make_method(params, model, named)
    trace = Trace()
    clock = CellClock.from_env()
    now = clock.timer()

    evaluates = task.has_accuracy and params.evaluate

    def evaluate(step: int) -> None:
        if evaluates:
            t0 = now()
            method.ready_for_eval()
            scores = {split: accuracy(model, task, split, device) for split in EVAL_SPLITS}
            point = {
                "seconds": round(trace.train_seconds, 3),
                "step": step,
                "accuracy": scores["test"],
                "val_accuracy": scores["validation"],
            }
            trace.curve.append(point)
            trace.eval_seconds += now() - t0
            reporter.progress(step, force=True, accuracy=point["accuracy"], val_accuracy=point["val_accuracy"])

    evaluate(0)
    next_eval_s = params.eval_seconds
    step = 0
    while _within_budget(params, step, trace.train_seconds):
        batch = {k: v.to(device) for k, v in task.batch(step).items()}
        t0, host0 = now(), time.perf_counter()
        loss = method.step(batch, step, trace.train_seconds)
        trace.step_times.append(now() - t0)
        trace.host_train_seconds += time.perf_counter() - host0
        trace.train_seconds += trace.step_times[-1]
        trace.losses.append(loss)
        step += 1
        reporter.progress(step, loss=round(loss, 5))
        due_steps = params.eval_every is not None and step % params.eval_every == 0
        due_time = next_eval_s is not None and trace.train_seconds >= next_eval_s
        if (due_steps or due_time) and _within_budget(params, step, trace.train_seconds):
            evaluate(step)
        while next_eval_s is not None and params.eval_seconds and next_eval_s <= trace.train_seconds:
            next_eval_s += params.eval_seconds
    if evaluates and trace.curve[-1]["step"] != step:
        evaluate(step)
    metrics = _metrics(params, model, named, task, built, threads, trace)
    return CellOutcome(steps=step, metrics={**facts, **metrics})


def param_count(model: torch.nn.Module) -> int:
    """Every parameter of the model once (a tied LM head shares the embedding's)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def dataset_facts(params: WorkloadParams, task: Task) -> dict[str, Any]:
    """What identifies the examples: a real task's name, split sizes, split seed and content hash, or the seed
    the synthetic one is drawn from."""
    return task.info or {"name": task.name, "seed": params.seed, "synthetic": True}


def _within_budget(params: WorkloadParams, step: int, seconds: float) -> bool:
    if params.max_steps is not None and step >= params.max_steps:
        return False
    return params.max_seconds is None or seconds < params.max_seconds


def _thin(values: list[float], keep: int = MAX_LOSSES) -> list[float]:
    if len(values) <= keep:
        return [round(v, 6) for v in values]
    stride = len(values) / keep
    return [round(values[int(i * stride)], 6) for i in range(keep)]


def _metrics(params, model, named, task: Task, built, threads: int, trace: Trace) -> dict[str, Any]:
    losses, step_times, curve = trace.losses, trace.step_times, trace.curve
    # The first step pays one-off costs (allocator growth, lazy init); the mean excludes it when there are others.
    timed = step_times[1:] if len(step_times) > 1 else step_times
    metrics: dict[str, Any] = {
        "versions": library_versions(),
        "model_family": built.family,
        "trainable_params": sum(p.numel() for _, p in named) if params.method != "inference" else 0,
        "step_time_s": sum(timed) / len(timed) if timed else None,
        "first_step_time_s": step_times[0] if step_times else None,
        "train_seconds": round(trace.train_seconds, 4),
        "host_train_seconds": round(trace.host_train_seconds, 4),
        "eval_seconds": round(trace.eval_seconds, 4),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses": _thin(losses),
        "gradient_checkpointing": checkpointing_enabled(model),
        "dtype": params.dtype,
        "threads": threads,
        "task_kind": task.kind,
        "model_sha256": model_sha256(params.model),
        "cuda_peak_bytes": cuda_peak_bytes(torch),
    }
    if curve:
        metrics |= {
            "accuracy_curve": curve,
            "initial_accuracy": curve[0]["accuracy"],
            "final_accuracy": curve[-1]["accuracy"],
            "initial_val_accuracy": curve[0]["val_accuracy"],
            "final_val_accuracy": curve[-1]["val_accuracy"],
            "majority_accuracy": task.majority_accuracy(),
        }
    return metrics


def model_sha256(model: str) -> str | None:
    """The weights a local directory or hub id named in this run; None for registry names, pinned already."""
    weights = resolve(model).weights
    return weights.weights_sha256() if weights else None
