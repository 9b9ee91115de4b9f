"""Tiny cells, run in-process through run_cell and once end to end through the CLI in a capped cell."""

from __future__ import annotations

import csv
import io
import json

import pytest

from harness.record.store import load_records
from tests.helpers import edgebench, readable_directory, write_spec
from workloads.cell import run_cell
from workloads.methods import make_method
from workloads.metrics import Accuracy, CellMetrics, DatasetFacts
from workloads.params import WorkloadParams
from workloads.registry import model_shape
from workloads.reporter import Reporter

#: minilm-l1's parameters with a two-label head, as a cell builds it.
MINILM_L1_CLASSIFIER = model_shape("minilm-l1").params + 384 * 2 + 2


def _run(**fields):
    stream = io.StringIO()
    outcome = run_cell(WorkloadParams(**fields), Reporter(stream, min_interval_s=0))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    json.dumps(outcome.metrics.model_dump())  # the result line must be able to carry it
    return outcome, events


@pytest.fixture(scope="module")
def reviews():
    """In a folder anyone may read: a root harness runs its cells as nobody, who must be able to read the task."""
    with readable_directory() as folder:
        path = folder / "reviews.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(80):
                writer.writerow([f"a {'wonderful, moving' if i % 2 else 'dull, tedious'} film {i}", i % 2])
        yield str(path)


@pytest.mark.parametrize("method", ["mezo", "bp-checkpointed", "bp", "inference"])
def test_synthetic_cell_for_every_method(method):
    outcome, (facts, *steps) = _run(model="opt-1m", method=method, batch=2, seq_len=8, max_steps=3)
    m = outcome.metrics
    assert outcome.steps == 3 and [e["step"] for e in steps] == [1, 2, 3]
    assert all(e["loss"] > 0 for e in steps)
    assert facts["step"] == 0 and CellMetrics.model_validate(facts["facts"]) == CellMetrics(
        param_count=m.param_count, dataset=m.dataset
    )
    assert m.dataset == DatasetFacts(name="synthetic", seed=0, synthetic=True)
    assert m.param_count == 1018624 and m.dtype == "fp32" and m.threads >= 1
    assert m.trainable_params == (0 if method == "inference" else 1018624)
    assert m.gradient_checkpointing is (method == "bp-checkpointed")
    assert set(m.versions) == {"python", "torch", "transformers", "datasets", "peft"}
    timing = m.timing
    assert timing.step_time_s > 0 and timing.train_seconds >= 2 * timing.step_time_s and len(m.loss.values) == 3
    assert m.accuracy == Accuracy()  # synthetic: no accuracy claim


def test_real_task_cell_records_the_accuracy_curve(reviews):
    outcome, events = _run(
        model="minilm-l1",
        task=reviews,
        method="bp-checkpointed",
        batch=8,
        seq_len=16,
        max_steps=3,
        eval_every=2,
        lr=1e-3,
    )
    accuracy = outcome.metrics.accuracy
    curve = accuracy.curve
    assert [p.step for p in curve] == [0, 2, 3]
    assert all(p.accuracy is not None and p.val_accuracy is not None for p in curve)
    assert (accuracy.initial, accuracy.final) == (curve[0].accuracy, curve[-1].accuracy)
    assert (accuracy.initial_val, accuracy.final_val) == (curve[0].val_accuracy, curve[-1].val_accuracy)
    assert [p.seconds for p in curve] == sorted(p.seconds for p in curve)
    dataset = outcome.metrics.dataset
    assert dataset.splits == {"train": 64, "validation": 8, "test": 8} and dataset.split_seed == 1234
    assert dataset.evaluated_examples == {"validation": 8, "test": 8} and dataset.duplicates_removed == 0
    assert len(dataset.content_sha256) == 16
    assert set(accuracy.majority) == {"validation", "test"}
    assert all(0 <= v <= 100 for v in accuracy.majority.values())
    assert outcome.metrics.gradient_checkpointing is True
    assert any("accuracy" in e and "val_accuracy" in e for e in events)
    assert DatasetFacts.model_validate(events[0]["facts"]["dataset"]) == dataset  # reported before step 0's evaluation


def test_a_probe_trains_its_steps_without_evaluating(reviews):
    outcome, events = _run(
        model="minilm-l1", task=reviews, method="mezo", batch=8, seq_len=16, max_steps=2, evaluate=False
    )
    m = outcome.metrics
    assert outcome.steps == 2 and m.timing.eval_seconds == 0 and m.accuracy.final is None
    assert not any("accuracy" in e for e in events) and m.dataset.evaluated_examples  # held, not scored


def test_lora_and_head_tuning_train_few_parameters(reviews):
    lora, _ = _run(
        model="minilm-l1", task=reviews, method="mezo", tuning="lora", batch=4, seq_len=16, max_steps=2
    )
    head, _ = _run(
        model="minilm-l1", task=reviews, method="bp", tuning="head", batch=4, seq_len=16, max_steps=2
    )
    assert 0 < lora.metrics.trainable_params < 0.02 * lora.metrics.param_count
    assert head.metrics.trainable_params == 384 * 2 + 2


def test_bf16_inference_and_a_time_budget():
    outcome, _ = _run(
        model="opt-1m", method="inference", dtype="bf16", batch=2, seq_len=8, max_steps=None, max_seconds=0.5
    )
    timing = outcome.metrics.timing
    assert outcome.metrics.dtype == "bf16" and outcome.steps >= 1
    assert 0.5 <= timing.train_seconds < 0.5 + 5 * timing.step_time_s + 0.5


def test_each_step_is_given_the_training_seconds_before_it(monkeypatch):
    """A schedule over a time budget reads the training time so far (evaluation excluded) at every step."""
    import workloads.cell

    calls = []

    def recording(params, model, named, meter=None):
        method = make_method(params, model, named, meter)
        step = method.step
        method.step = lambda batch, i, seconds: calls.append((i, seconds)) or step(batch, i, seconds)
        return method

    monkeypatch.setattr(workloads.cell, "make_method", recording)
    outcome, _ = _run(model="opt-1m", method="bp", lr_schedule="linear", batch=2, seq_len=8, max_steps=4)
    assert [i for i, _ in calls] == [0, 1, 2, 3] and calls[0][1] == 0.0
    seconds = [s for _, s in calls]
    assert seconds == sorted(seconds) and seconds[-1] < outcome.metrics.timing.train_seconds


def _reviews_cell(tmp_path, reviews, settings: str, budget: str):
    """The one record of a minilm-l1 MeZO cell on `reviews`, run through the CLI, and its exit code."""
    spec = write_spec(
        tmp_path,
        f"devices: [rpi-4-2gb]\n{settings}\nmatrix: {{model: minilm-l1, task: {reviews}, method: mezo, "
        f"batch: 4, seq_len: 16, {budget}, lr: 1.0e-5}}\n",
    )
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "run"), "--no-report", timeout=300, process=True)
    (record,) = load_records(tmp_path / "run")
    return proc.returncode, record


def test_capped_real_task_cell_end_to_end(tmp_path, reviews):
    returncode, record = _reviews_cell(tmp_path, reviews, "timeout_s: 300", "max_steps: 2")
    assert returncode == 0
    assert record.status == "ok" and record.steps == 2, record.error
    assert record.predicted_peak_bytes and record.peak_memory_bytes
    assert 0.5 < record.predicted_peak_bytes / record.peak_memory_bytes < 2
    assert record.metrics.accuracy.final is not None and record.validity.valid


def test_a_killed_cell_keeps_the_facts_it_reported_before_its_first_step(tmp_path, reviews):
    budget = "max_steps: null, max_seconds: 3000"
    returncode, record = _reviews_cell(tmp_path, reviews, "clock: host\ntimeout_s: 30", budget)
    assert returncode == 3 and record.status == "timeout", record.error
    assert record.metrics.param_count == MINILM_L1_CLASSIFIER
    dataset = record.metrics.dataset
    assert dataset.name == reviews and dataset.splits == {"train": 64, "validation": 8, "test": 8}
    assert dataset.split_seed == 1234 and len(dataset.content_sha256) == 16


@pytest.mark.parametrize("status", ["oom", "timeout", "error"])
def test_a_cell_killed_before_it_reported_counts_its_parameters_from_the_registry(tmp_path, scripted, status):
    scripted.OUTCOMES = {"mezo": status}
    matrix = "{model: [opt-1m, minilm-l1], task: synthetic, method: [mezo, bp], max_steps: 1}"
    spec = write_spec(tmp_path, f"clock: host\ndevices: [rpi-4-2gb]\nmatrix: {matrix}\n")
    edgebench("run", str(spec), "--out", str(tmp_path / "run"), "--no-report")
    records = load_records(tmp_path / "run")
    counts = {(r.params.model, r.params.method, r.status): r.metrics.param_count for r in records}
    assert counts == {
        ("opt-1m", "mezo", status): 1_018_624,  # the LM head is tied to the embeddings
        ("opt-1m", "bp", "ok"): 1_018_624,
        ("minilm-l1", "mezo", status): MINILM_L1_CLASSIFIER,  # an encoder classifies: two labels
        ("minilm-l1", "bp", "ok"): MINILM_L1_CLASSIFIER,
    }


def test_lora_with_checkpointed_backprop_trains_the_adapters(reviews):
    outcome, _ = _run(
        model="minilm-l1",
        task=reviews,
        method="bp-checkpointed",
        tuning="lora",
        batch=4,
        seq_len=16,
        max_steps=2,
    )
    assert outcome.metrics.gradient_checkpointing is True
    assert 0 < outcome.metrics.trainable_params < 0.02 * outcome.metrics.param_count
    assert all(loss == loss for loss in outcome.metrics.loss.values)  # no NaN


def test_a_saved_local_model_directory_runs(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from workloads.registry import LADDER

    saved = tmp_path / "tiny-opt"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**LADDER["opt-1m"])).save_pretrained(saved)
    outcome, _ = _run(model=str(saved), method="mezo", batch=2, seq_len=8, max_steps=2)
    assert outcome.steps == 2 and outcome.metrics.param_count == 1018624
