"""Bad workloads are refused when the spec is loaded: one line naming the problem and the fix, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_rows, write_spec
from workloads.checks import check_params, file_summary
from workloads.params import WorkloadParams
from workloads.sources import file_builder


def _problem(**fields) -> str:
    with pytest.raises(ValueError) as caught:
        check_params(WorkloadParams(**fields))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_ladder_and_local_models_pass(tmp_path):
    check_params(WorkloadParams(model="opt-8m"))
    check_params(WorkloadParams(model="minilm-l3", task="rotten_tomatoes"))
    model_dir = tmp_path / "saved"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    check_params(WorkloadParams(model=str(model_dir)))


def test_unknown_model_id_names_the_ladder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    message = _problem(model="opt-does-not-exist")
    assert (
        "unknown model 'opt-does-not-exist'" in message
        and "opt-125m" in message
        and "HF_HUB_OFFLINE=0" in message
    )


def test_hub_id_in_the_cache_passes_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (tmp_path / "hub" / "models--someone--tiny-bert").mkdir(parents=True)
    check_params(WorkloadParams(model="someone/tiny-bert"))


def test_missing_local_model_dir(tmp_path):
    assert "does not exist" in _problem(model=str(tmp_path / "nowhere"))
    assert "has no config.json" in _problem(model=str(tmp_path))


def test_dataset_file_without_the_named_columns(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("sentence,label\n" + "".join(f"fine {i},1\n" for i in range(30)))
    message = _problem(model="opt-1m", task=str(data))
    assert "no column 'text'" in message and "sentence" in message and "text_column" in message
    check_params(WorkloadParams(model="opt-1m", task=str(data), text_column="sentence"))
    assert "no column 'y'" in _problem(
        model="opt-1m", task=str(data), text_column="sentence", label_column="y"
    )
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "stars": 3}\n')
    assert "no column 'label'" in _problem(model="opt-1m", task=str(jsonl))


def _rows(tmp_path, fmt: str, count: int) -> str:
    rows = [{"text": f"review {i}", "label": i % 2} for i in range(count)]
    return write_rows(tmp_path / f"d.{fmt}", rows, blank_line=True)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_a_file_too_small_to_split_is_refused_at_plan_time(tmp_path, fmt):
    message = _problem(model="opt-1m", task=_rows(tmp_path, fmt, 4), batch=1)
    assert message.endswith("leave the validation and test splits empty; give at least 5 distinct examples")
    check_params(WorkloadParams(model="opt-1m", task=_rows(tmp_path, fmt, 5), batch=1))
    assert "3 training examples, fewer than batch 4" in _problem(
        model="opt-1m", task=_rows(tmp_path, fmt, 5), batch=4
    )
    check_params(WorkloadParams(model="opt-1m", task=_rows(tmp_path, fmt, 500), batch=64))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_rows_are_counted_up_to_what_the_batch_needs(tmp_path, fmt):
    columns, rows = file_summary(Path(_rows(tmp_path, fmt, 1000)), file_builder(f"d.{fmt}"), 37)
    assert columns == ["text", "label"] and rows == 37
    assert file_summary(Path(_rows(tmp_path, fmt, 7)), file_builder(f"d.{fmt}"), 37)[1] == 7


def test_missing_dataset_file_and_unknown_hub_dataset(tmp_path, monkeypatch):
    assert "does not exist" in _problem(model="opt-1m", task=str(tmp_path / "missing.parquet"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert "not in the datasets cache" in _problem(model="opt-1m", task="glue/sst2")


@pytest.mark.parametrize("method", ["mezo", "bp", "bp-checkpointed"])
def test_bf16_training_is_refused_and_bf16_inference_passes(method):
    message = _problem(model="opt-1m", method=method, dtype="bf16")
    assert message.startswith("dtype bf16 is for inference only") and "use dtype: fp32" in message
    check_params(WorkloadParams(model="opt-1m", method="inference", dtype="bf16"))


def test_sequence_longer_than_the_model():
    assert "use seq_len <= 512" in _problem(model="opt-1m", seq_len=4096)


def test_warmup_is_in_steps_and_only_a_step_budget_bounds_it():
    check_params(WorkloadParams(model="opt-1m", max_steps=None, max_seconds=9, warmup_steps=1000))
    check_params(WorkloadParams(model="opt-1m", max_steps=10, warmup_steps=9, lr_schedule="cosine"))


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        ("{model: ./no-such-model-dir}", "does not exist"),
        ("{model: opt-1m, task: DATA, label_column: stars}", "no column 'stars'"),
        ("{model: opt-1m, batch: 0}", "batch"),
        ("{model: opt-1m, method: mezo, lr: -0.1}", "lr"),
        ("{model: opt-1m, method: mezo, dtype: bf16}", "dtype bf16 is for inference only"),
        ("{model: opt-1m, task: DATA, batch: 1}", "leave the validation and test splits empty"),
        ("{model: opt-1m, lr_schedule: step}", "lr_schedule"),
        ("{model: opt-1m, warmup_steps: -1}", "warmup_steps"),
        ("{model: opt-1m, max_steps: 5, warmup_steps: 5}", "warmup_steps 5 is not below max_steps 5"),
        ("{model: opt-1m, max_seconds: 9, warmup_steps: [2, 10]}", "warmup_steps 10 is not below max_steps 10"),
    ],
)
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, matrix, expected):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nfine,1\nbad,0\n")
    spec = write_spec(tmp_path, f"devices: [rpi-4-2gb]\nmatrix: {matrix.replace('DATA', str(data))}\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgebench: error: ") and expected in lines[0], proc.stderr
    assert not out.exists()
