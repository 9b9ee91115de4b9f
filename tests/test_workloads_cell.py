"""Tiny cells, run in-process through run_cell and once end to end through the CLI in a capped cell."""

from __future__ import annotations

import csv
import io
import json

import pytest

from harness.store import load_records
from tests.helpers import edgebench, readable_directory, write_spec
from workloads.cell import run_cell
from workloads.methods import make_method
from workloads.params import WorkloadParams
from workloads.runner import Reporter


def _run(**fields):
    stream = io.StringIO()
    outcome = run_cell(WorkloadParams(**fields), Reporter(stream, min_interval_s=0))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    json.dumps(outcome.metrics)  # the record must be able to carry it
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
    outcome, events = _run(model="opt-1m", method=method, batch=2, seq_len=8, max_steps=3)
    m = outcome.metrics
    assert outcome.steps == 3 and [e["step"] for e in events] == [1, 2, 3]
    assert all(e["loss"] > 0 for e in events)
    assert m["param_count"] == 1018624 and m["dtype"] == "fp32" and m["threads"] >= 1
    assert m["trainable_params"] == (0 if method == "inference" else 1018624)
    assert m["gradient_checkpointing"] is (method == "bp-checkpointed")
    assert set(m["versions"]) == {"python", "torch", "transformers", "datasets", "peft"}
    assert m["step_time_s"] > 0 and m["train_seconds"] >= 2 * m["step_time_s"] and len(m["losses"]) == 3
    assert "accuracy_curve" not in m  # synthetic: no accuracy claim


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
    m = outcome.metrics
    curve = m["accuracy_curve"]
    assert [p["step"] for p in curve] == [0, 2, 3]
    assert all(set(p) == {"seconds", "step", "accuracy", "val_accuracy"} for p in curve)
    assert (m["initial_accuracy"], m["final_accuracy"]) == (curve[0]["accuracy"], curve[-1]["accuracy"])
    assert (m["initial_val_accuracy"], m["final_val_accuracy"]) == (
        curve[0]["val_accuracy"],
        curve[-1]["val_accuracy"],
    )
    assert [p["seconds"] for p in curve] == sorted(p["seconds"] for p in curve)
    dataset = m["dataset"]
    assert dataset["splits"] == {"train": 64, "validation": 8, "test": 8} and dataset["split_seed"] == 1234
    assert dataset["evaluated_examples"] == {"validation": 8, "test": 8} and dataset["duplicates_removed"] == 0
    assert len(dataset["content_sha256"]) == 16
    assert set(m["majority_accuracy"]) == {"validation", "test"}
    assert all(0 <= v <= 100 for v in m["majority_accuracy"].values())
    assert m["gradient_checkpointing"] is True
    assert any("accuracy" in e and "val_accuracy" in e for e in events)


def test_lora_and_head_tuning_train_few_parameters(reviews):
    lora, _ = _run(
        model="minilm-l1", task=reviews, method="mezo", tuning="lora", batch=4, seq_len=16, max_steps=2
    )
    head, _ = _run(
        model="minilm-l1", task=reviews, method="bp", tuning="head", batch=4, seq_len=16, max_steps=2
    )
    assert 0 < lora.metrics["trainable_params"] < 0.02 * lora.metrics["param_count"]
    assert head.metrics["trainable_params"] == 384 * 2 + 2


def test_bf16_inference_and_a_time_budget():
    outcome, _ = _run(
        model="opt-1m", method="inference", dtype="bf16", batch=2, seq_len=8, max_steps=None, max_seconds=0.5
    )
    assert outcome.metrics["dtype"] == "bf16" and outcome.steps >= 1
    assert 0.5 <= outcome.metrics["train_seconds"] < 0.5 + 5 * outcome.metrics["step_time_s"] + 0.5


def test_each_step_is_given_the_training_seconds_before_it(monkeypatch):
    """A schedule over a time budget reads the training time so far (evaluation excluded) at every step."""
    import workloads.cell

    calls = []

    def recording(params, model, named):
        method = make_method(params, model, named)
        step = method.step
        method.step = lambda batch, i, seconds: calls.append((i, seconds)) or step(batch, i, seconds)
        return method

    monkeypatch.setattr(workloads.cell, "make_method", recording)
    outcome, _ = _run(model="opt-1m", method="bp", lr_schedule="linear", batch=2, seq_len=8, max_steps=4)
    assert [i for i, _ in calls] == [0, 1, 2, 3] and calls[0][1] == 0.0
    seconds = [s for _, s in calls]
    assert seconds == sorted(seconds) and seconds[-1] < outcome.metrics["train_seconds"]


def test_capped_real_task_cell_end_to_end(tmp_path, reviews):
    spec = write_spec(
        tmp_path,
        f"devices: [rpi-4-2gb]\ntimeout_s: 300\nmatrix: {{model: minilm-l1, task: {reviews}, method: mezo, "
        "batch: 4, seq_len: 16, max_steps: 2, lr: 1.0e-5}\n",
    )
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "run"), "--no-report", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = load_records(tmp_path / "run")
    assert record.status == "ok" and record.steps == 2, record.error
    assert record.predicted_peak_bytes and record.peak_memory_bytes
    assert 0.5 < record.predicted_peak_bytes / record.peak_memory_bytes < 2
    assert "final_accuracy" in record.metrics and record.validity.valid


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
    assert outcome.metrics["gradient_checkpointing"] is True
    assert 0 < outcome.metrics["trainable_params"] < 0.02 * outcome.metrics["param_count"]
    assert all(loss == loss for loss in outcome.metrics["losses"])  # no NaN


def test_a_saved_local_model_directory_runs(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from workloads.registry import LADDER

    saved = tmp_path / "tiny-opt"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**LADDER["opt-1m"])).save_pretrained(saved)
    outcome, _ = _run(model=str(saved), method="mezo", batch=2, seq_len=8, max_steps=2)
    assert outcome.steps == 2 and outcome.metrics["param_count"] == 1018624
