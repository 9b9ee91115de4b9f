"""One cell: build the model and task, train under the step / time budget (in the cell's clock), measure, report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from devices.caps.cuda import apply_gpu_fraction, cuda_peak_bytes
from devices.child_env import ENV_THREADS
from devices.environment import library_versions
from devices.speed import CellClock
from workloads.doubling import flat_stop
from workloads.methods import Method, make_method, trainable_numel
from workloads.metrics import (
    Accuracy,
    CellMemory,
    CellMetrics,
    Checkpoints,
    DatasetFacts,
    Loss,
    Segment,
    Timing,
)
from workloads.models import (
    SequenceClassifier,
    build_model,
    checkpointing_enabled,
    init_head,
    load_tokenizer,
    select_trainable,
    trainable_parameters,
)
from workloads.params import WorkloadParams
from workloads.phases import PhaseCosts, batch_shape
from workloads.predictions import Predictions, SplitPredictions
from workloads.registry import resolve
from workloads.reporter import Reporter
from workloads.resumable import StatePlan
from workloads.resume import Checkpointer, Loop, say
from workloads.sources import LABEL_WORDS, SYNTHETIC
from workloads.tasks import EVAL_SPLITS, WORST_CASE_STEPS, Task, real_task, synthetic_task
from workloads.throughput import ThroughputTrace, WorkMeter, clock_metrics, heat_start

if TYPE_CHECKING:
    from devices.roofline import PhaseMeter

#: Losses kept in the record: every step up to this many, then evenly thinned.
MAX_LOSSES = 200


@dataclass
class CellOutcome:
    steps: int
    metrics: CellMetrics = field(default_factory=CellMetrics)
    predictions: bytes | None = None  # workloads.predictions' encoding of every evaluation


@torch.inference_mode()
def score(
    model: torch.nn.Module, task: Task, split: str, device: torch.device, on_batch: Callable[[dict], None] | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Percent of `split`'s evaluated examples the model classifies right, and per example (in the split's order)
    the predicted class and its margin over the runner-up. `on_batch` sees every batch (the roofline's costs)."""
    was_training = model.training
    model.eval()
    n = len(task.evaluated[split])
    predicted, margin = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.float16)
    for rows, batch in task.held_out_batches(split):
        batch = {k: v.to(device) for k, v in batch.items()}
        if on_batch is not None:
            on_batch(batch)
        logits = model(**batch).logits.float()
        top = logits.topk(min(2, logits.shape[-1]), dim=-1).values
        predicted[rows.numpy()] = logits.argmax(-1).cpu().numpy()
        margin[rows.numpy()] = (top[:, 0] - top[:, -1]).cpu().numpy()
    model.train(was_training)
    labels = task.evaluated[split].labels.numpy()
    return 100.0 * float((predicted == labels).mean()), predicted, margin


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
        init_head(built.model, tokenizer, task.label_names, LABEL_WORDS, params.head)
    model = select_trainable(built.model.to(device), params.tuning, built.family)
    return model, task, built


def run_cell(params: WorkloadParams, reporter: Reporter) -> CellOutcome:
    device, threads = setup(params)
    model, task, built = prepare(params, device)
    facts = CellMetrics(param_count=param_count(model), dataset=dataset_facts(params, task))
    reporter.progress(0, force=True, facts=facts.model_dump(exclude_unset=True))  # before any step: the record of a killed cell keeps them
    named = trainable_parameters(model)
    clock, loop = CellClock.from_env(), Loop(next_eval_s=params.eval_seconds)
    meter = clock.meter()
    method = make_method(params, model, named, meter)
    costs = PhaseCosts(params, 0)
    evaluates = task.has_accuracy and params.evaluate
    if evaluates:
        loop.predictions = empty_predictions(task)
    saver = checkpointer(params, clock)
    if saver is not None:
        _resume(saver, loop, method, named, reporter)
        clock = saver.clock
        meter.ratio = clock.ratio
    heated_from = heat_start(clock, meter)  # a cool board until now
    now = clock.timer(meter)
    clock_reading = WorkMeter(clock, meter, now, heated_from)
    if clock.governed:  # the harness's governor lowers the quota along the board's curve from here
        reporter.progress(loop.step, force=True, heating=True)
    if saver is not None:
        saver.origin = clock_reading.origin
    loop.segments.append(Segment(from_step=loop.step, clock_ratio=clock.ratio))
    trace = loop.trace

    evaluate = _evaluator(model, task, device, method, meter, costs, now, loop, reporter)
    if evaluates and not trace.curve:
        evaluate(0)
    targets = params.eval_fractions()
    throughput = ThroughputTrace(clock, heated_from)
    while _within_budget(params, loop.step, trace.train_seconds):
        batch = {k: v.to(device) for k, v in task.batch(loop.step).items()}
        t0, host0 = now(), time.perf_counter()
        loss = method.step(batch, loop.step, trace.train_seconds)
        spent = now() - t0
        _count_step(loop, batch, loss, spent, host0)
        throughput.sample(loop.step, clock_reading.since_start(), clock_reading.work())
        loop.segments[-1].steps += 1
        loop.segments[-1].train_seconds += spent
        reporter.progress(loop.step, loss=round(loss, 5))
        if evaluates and eval_due(params, loop, targets) and _within_budget(params, loop.step, trace.train_seconds):
            evaluate(loop.step)
            if _stopped_flat(params, loop):
                break
        if saver is not None and saver.due(loop) and _within_budget(params, loop.step, trace.train_seconds):
            saver.save(loop, method, named, now)
            reporter.progress(loop.step, force=True, checkpoint=saver.saves, checkpoint_bytes=saver.bytes_written)
    if evaluates and trace.curve[-1]["step"] != loop.step:
        evaluate(loop.step)
    loop.segments[-1].device_seconds = clock_reading.elapsed()
    metrics = _metrics(params, model, named, task, built, threads, loop, saver)
    metrics.param_count, metrics.dataset = facts.param_count, facts.dataset
    metrics.device_clock = clock_metrics(meter, throughput, heated_from)
    outcome = CellOutcome(steps=loop.step, metrics=metrics)
    if evaluates:
        outcome.predictions = loop.predictions.encode()
    return outcome


def _stopped_flat(params: WorkloadParams, loop: Loop) -> bool:
    """Whether the evaluation just made ends training (stop_when_flat), saying why in the log and the trace."""
    trace = loop.trace
    share = params.budget_share(loop.step, trace.train_seconds)
    trace.stopped_flat = flat_stop(params.stop_when_flat, trace.curve, share)
    if trace.stopped_flat is not None:
        say(f"stopped at step {loop.step}: {trace.stopped_flat}")
    return trace.stopped_flat is not None


def _resume(
    saver: Checkpointer, loop: Loop, method: Method, named: list[tuple[str, torch.nn.Parameter]], reporter: Reporter
) -> None:
    """Resume `loop` and `method` from the cell's checkpoint, and say how: refused (the cell starts at step 0, and
    its record says why) or resumed at the checkpoint's step, as the next segment."""
    if (why := saver.resume(loop, method, named)) is not None:
        say(f"checkpoint refused, starting at step 0: {why}")
        reporter.progress(0, force=True, checkpoint_refused=why)
    elif loop.step:
        say(f"resumed from the checkpoint at step {loop.step} (segment {len(loop.segments) + 1})")
        reporter.progress(loop.step, force=True, resumed_from=loop.step, segment=len(loop.segments) + 1)


def _evaluator(
    model: torch.nn.Module,
    task: Task,
    device: torch.device,
    method: Method,
    meter: PhaseMeter,
    costs: PhaseCosts,
    now: Callable[[], float],
    loop: Loop,
    reporter: Reporter,
) -> Callable[[int], None]:
    """The cell's evaluation at a step: each evaluated split scored with its forward passes charged to the clock's
    evaluation phase, the accuracies added to the curve and the progress report, the predictions kept, and its
    time counted apart from training's."""
    trace = loop.trace

    def evaluate(step: int) -> None:
        t0 = now()
        method.ready_for_eval()
        with meter.phase("evaluation") as phase:

            def charge(batch: dict) -> None:
                cost = costs.forward(*batch_shape(batch))
                phase.add(cost.flops, cost.traffic)

            scored = {split: score(model, task, split, device, charge) for split in EVAL_SPLITS}
        point = {
            "seconds": round(trace.train_seconds, 3),
            "step": step,
            "accuracy": scored["test"][0],
            "val_accuracy": scored["validation"][0],
        }
        trace.curve.append(point)
        loop.predictions.add(step, trace.train_seconds, {split: s[1:] for split, s in scored.items()})
        spent = now() - t0
        trace.eval_seconds += spent
        loop.segments[-1].eval_seconds += spent
        reporter.progress(step, force=True, accuracy=point["accuracy"], val_accuracy=point["val_accuracy"])

    return evaluate


def _count_step(loop: Loop, batch: dict, loss: float, spent: float, host0: float) -> None:
    """Count a training step that took `spent` seconds of the cell's clock and began at `host0` on the host's
    perf_counter: its times, loss and tokens go to the trace, and the loop moves to the next step."""
    trace = loop.trace
    trace.step_times.append(spent)
    trace.host_train_seconds += time.perf_counter() - host0
    trace.train_seconds += spent
    trace.losses.append(loss)
    trace.padded_tokens += batch["input_ids"].numel()
    trace.real_tokens += int(batch["attention_mask"].sum())
    loop.step += 1


def checkpointer(params: WorkloadParams, clock: CellClock) -> Checkpointer | None:
    """A training cell's checkpointer when the harness planned one (inference has nothing to resume)."""
    plan = StatePlan.from_env()
    return Checkpointer(plan, params, clock) if plan and params.method != "inference" else None


def empty_predictions(task: Task) -> Predictions:
    return Predictions(
        splits={
            name: SplitPredictions(np.asarray(task.positions[name], dtype=np.int32), split.labels.numpy())
            for name, split in task.evaluated.items()
        }
    )


def eval_due(params: WorkloadParams, loop: Loop, targets: list[float]) -> bool:
    """Whether the step just taken reached an evaluation point (every k steps, every k seconds, or `eval_at`'s
    next share of the budget); the time-based schedules move on past every point reached."""
    seconds = loop.trace.train_seconds
    due = params.eval_every is not None and loop.step % params.eval_every == 0
    if loop.next_eval_s is not None and seconds >= loop.next_eval_s:
        due = True
        while loop.next_eval_s <= seconds:
            loop.next_eval_s += params.eval_seconds
    share = params.budget_share(loop.step, seconds)
    if loop.next_fraction < len(targets) and share >= targets[loop.next_fraction]:
        due = True
        while loop.next_fraction < len(targets) and share >= targets[loop.next_fraction]:
            loop.next_fraction += 1
    return due


def param_count(model: torch.nn.Module) -> int:
    """Every parameter of the model once (a tied LM head shares the embedding's)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def dataset_facts(params: WorkloadParams, task: Task) -> DatasetFacts:
    """What identifies the examples: a real task's name, split sizes, split seed and content hash, or the seed
    the synthetic one is drawn from."""
    return DatasetFacts.model_validate(task.info or {"name": task.name, "seed": params.seed, "synthetic": True})


def _within_budget(params: WorkloadParams, step: int, seconds: float) -> bool:
    if params.max_steps is not None and step >= params.max_steps:
        return False
    return params.max_seconds is None or seconds < params.max_seconds


def _thin(values: list[float], keep: int = MAX_LOSSES) -> list[float]:
    if len(values) <= keep:
        return [round(v, 6) for v in values]
    stride = len(values) / keep
    return [round(values[int(i * stride)], 6) for i in range(keep)]


def _metrics(params, model, named, task: Task, built, threads: int, loop: Loop, saver) -> CellMetrics:
    trace = loop.trace
    losses, step_times = trace.losses, trace.step_times
    # The first step pays one-off costs (allocator growth, lazy init), and with dynamic padding the first
    # WORST_CASE_STEPS are padded to seq_len: the mean excludes them when there are others.
    skip = WORST_CASE_STEPS if params.padding == "longest" and task.train is not None else 1
    timed = step_times[skip:] if len(step_times) > skip else step_times[-1:]
    return CellMetrics(
        versions=library_versions(),
        model_family=built.family,
        trainable_params=trainable_numel(params, named),
        gradient_checkpointing=checkpointing_enabled(model),
        dtype=params.dtype,
        threads=threads,
        task_kind=task.kind,
        model_sha256=model_sha256(params.model),
        memory=CellMemory(cuda_peak_bytes=cuda_peak_bytes(torch)),
        timing=Timing(
            step_time_s=sum(timed) / len(timed) if timed else None,
            first_step_time_s=step_times[0] if step_times else None,
            train_seconds=round(trace.train_seconds, 4),
            host_train_seconds=round(trace.host_train_seconds, 4),
            eval_seconds=round(trace.eval_seconds, 4),
            checkpoint_seconds=round(trace.checkpoint_seconds, 4),
            stopped_flat=trace.stopped_flat,
            segments=loop.segments,
        ),
        loss=Loss(
            first=losses[0] if losses else None,
            last=losses[-1] if losses else None,
            values=_thin(losses),
            tokens_per_step=trace.real_tokens / len(losses) if losses else None,
            padded_tokens_per_step=trace.padded_tokens / len(losses) if losses else None,
        ),
        checkpoints=Checkpoints(
            written=loop.checkpoints,
            bytes=saver.bytes_written if saver and saver.saves else None,
            error=saver.error if saver else None,
        ),
        accuracy=_accuracy(trace.curve, task) if trace.curve else Accuracy(),
    )


def _accuracy(curve: list[dict[str, Any]], task: Task) -> Accuracy:
    return Accuracy(
        curve=curve,
        initial=curve[0]["accuracy"],
        final=curve[-1]["accuracy"],
        initial_val=curve[0]["val_accuracy"],
        final_val=curve[-1]["val_accuracy"],
        majority=task.majority_accuracy(),
    )


def model_sha256(model: str) -> str | None:
    """The weights a local directory or hub id named in this run; None for registry names, pinned already."""
    weights = resolve(model).weights
    return weights.weights_sha256() if weights else None
