"""Bad workloads are refused when the spec is loaded: one line naming the problem and the fix, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.catalogue import load_catalogue, resolve_device
from harness.plan.spec import load_spec
from harness.record.errors import UserError
from tests.helpers import edgebench, write_rows, write_spec
from workloads.checks import check_params, file_summary
from workloads.flops import step_flops, step_seconds
from workloads.params import WorkloadParams
from workloads.sources import file_builder

#: A recipe sweep (3 learning rates x 3 seeds): bad input in any of its cells is refused as in a single cell.
RECIPE_SWEEP = "lr: [1e-5, 2e-5, 5e-5], seed: [0, 1, 2]"


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
        and "cells run offline" in message
    )


def test_an_operators_hub_offline_0_does_not_let_a_check_pass_an_uncached_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "unknown model 'someone/not-cached'" in _problem(model="someone/not-cached")


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


RPI4 = resolve_device("rpi-4-2gb", load_catalogue())
#: 9 device seconds of training: 90 warm-up steps of opt-1m fit (0.0903 s each at least), 1000 do not, nor 1 of
#: opt-125m (11.2 s); a largest-fitting search is refused only when its fastest candidate cannot finish the warm-up.
WARMUP = "max_steps: null, max_seconds: 9, warmup_steps"


@pytest.mark.parametrize(
    ("matrix", "steps", "fastest"),
    [
        (f"{{model: opt-1m, {WARMUP}: 1000}}", 1000, "opt-1m"),
        (f"{{model: {{largest_fitting: [opt-125m, opt-350m]}}, {WARMUP}: 1}}", 1, "opt-125m"),
    ],
)
def test_a_warmup_the_seconds_budget_cannot_hold_on_the_device_is_refused_at_plan_time(
    tmp_path, matrix, steps, fastest
):
    spec = write_spec(tmp_path, f"devices: [rpi-4-2gb]\nmatrix: {matrix}\n")
    with pytest.raises(UserError) as caught:
        load_spec(spec)
    step = step_seconds(step_flops(WorkloadParams(model=fastest)), RPI4.gflops)
    assert str(caught.value) == (
        f"{spec}: warm-up of {steps} steps needs at least {steps * step:.3g} device seconds on rpi-4-2gb "
        f"(step-time lower bound {step:.3g} s for {fastest}) but max_seconds is 9; lower warmup_steps or raise "
        "max_seconds"
    )


@pytest.mark.parametrize(
    "spec",
    [
        f"matrix: {{model: opt-1m, {WARMUP}: 90}}",
        f"matrix: {{model: {{largest_fitting: [opt-1m, opt-125m]}}, {WARMUP}: 90}}",
        f"clock: host\nmatrix: {{model: opt-1m, {WARMUP}: 1000}}",  # host seconds: only max_steps bounds it
        "matrix: {model: opt-1m, max_steps: 10, warmup_steps: 9, lr_schedule: cosine}",
    ],
)
def test_a_warmup_that_fits_its_budget_is_accepted(tmp_path, spec):
    loaded = load_spec(write_spec(tmp_path, f"devices: [rpi-4-2gb]\n{spec}\n"))
    assert len(loaded.cells) + len(loaded.fit_searches) == 1


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
        ("{model: opt-1m, task: DATA, batch: 1, SWEEP}", "leave the validation and test splits empty"),
        (
            "{model: opt-1m, max_steps: null, max_seconds: 9, warmup_steps: 1000, SWEEP}",
            "warm-up of 1000 steps needs at least 90.3 device seconds on rpi-4-2gb",
        ),
    ],
)
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, matrix, expected):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nfine,1\nbad,0\n")
    matrix = matrix.replace("DATA", str(data)).replace("SWEEP", RECIPE_SWEEP)
    spec = write_spec(tmp_path, f"devices: [rpi-4-2gb]\nmatrix: {matrix}\n")
    out = tmp_path / "out"
    proc = edgebench("run", str(spec), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgebench: error: ") and expected in lines[0], proc.stderr
    assert not out.exists()
