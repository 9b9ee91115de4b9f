"""The analytic memory model: torch-free, exact parameter counts, measured runtime baseline, sane ordering."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workloads import baseline
from workloads.memory_model import fit_ratio, largest_fitting, predict_breakdown, predict_peak_bytes
from workloads.params import WorkloadParams
from workloads.registry import LADDER, ladder_names, model_shape, resolve
from workloads.weights import minilm_dir


def test_memory_model_checks_and_estimate_do_not_import_torch():
    code = "import sys, harness.commands.estimate, workloads.memory_model, workloads.checks; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


@pytest.mark.parametrize("name", ["opt-1m", "opt-8m", "bert-4m", "minilm-l2"])
def test_parameter_counts_match_the_real_models(name):
    from transformers import AutoConfig, AutoModel

    config = resolve(name).config
    if name in LADDER:
        model = AutoModel.from_config(AutoConfig.for_model(**config))
    else:
        model = AutoModel.from_pretrained(str(minilm_dir()), num_hidden_layers=2)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    params = list(model.parameters())
    shape = model_shape(name)
    assert shape.params == sum(p.numel() for p in params)
    assert shape.largest_tensor == max(p.numel() for p in params)


def test_runtime_baseline_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path))
    baseline.runtime_baseline_bytes.cache_clear()
    first = baseline.runtime_baseline_bytes()
    (cached,) = tmp_path.glob("runtime-*.json")
    record = json.loads(cached.read_text())
    assert record["figure"] == first and record["environment"]["torch"] != "missing"
    assert 100e6 < first < 2e9  # an interpreter with torch and transformers loaded
    record["figure"] = 12345
    cached.write_text(json.dumps(record))
    baseline.runtime_baseline_bytes.cache_clear()
    assert baseline.runtime_baseline_bytes() == 12345  # read back, not re-measured
    baseline.runtime_baseline_bytes.cache_clear()


def test_prediction_orders_methods_sizes_batches_and_dtypes():
    def peak(**fields) -> int:
        return predict_peak_bytes(WorkloadParams(**{"model": "opt-30m", "batch": 8, "seq_len": 64, **fields}))

    inference, mezo, ckpt, bp = (peak(method=m) for m in ("inference", "mezo", "bp-checkpointed", "bp"))
    assert inference < mezo <= inference * 1.05 < ckpt < bp
    assert peak(method="bp", optimizer="sgd") < peak(method="bp", optimizer="sgd-momentum") < bp
    assert peak(method="mezo", dtype="bf16") < mezo
    assert peak(method="bp", batch=16) > bp and peak(method="mezo", model="opt-60m") > mezo
    assert peak(method="bp", tuning="lora") < bp
    assert predict_peak_bytes(WorkloadParams(model="someone/not-local")) is None


def test_terms_follow_the_design_formulas():
    parts = predict_breakdown(WorkloadParams(model="opt-125m", method="bp-checkpointed", optimizer="adamw"))
    params = model_shape("opt-125m").params
    assert parts.weights == parts.gradients == 4 * params and parts.optimizer == 8 * params
    assert parts.runtime == baseline.runtime_baseline_bytes()
    assert parts.total == sum(getattr(parts, k) for k in parts.__dataclass_fields__)


def test_mezo_counts_its_noise_table_or_buffers_and_adamw_state_follows_the_dtype():
    from workloads.params import ZO_CHUNK, ZO_MAX_WORKERS, ZO_TABLE

    def parts(**fields):
        return predict_breakdown(WorkloadParams(**{"model": "opt-125m", "method": "mezo", **fields}))

    assert parts().zo_buffer == parts(zo_noise="table").zo_buffer == 4 * ZO_TABLE  # 16 MiB, no chunk buffer
    assert parts(zo_noise="normal").zo_buffer == 4 * ZO_MAX_WORKERS * ZO_CHUNK
    assert parts(zo_variant="sign").zo_buffer == 4 * (ZO_TABLE + ZO_MAX_WORKERS * ZO_CHUNK)
    assert parts(tuning="head", task="rotten_tomatoes").zo_buffer < 2**20  # a small table for a small head
    table, inference = parts(batch=2, seq_len=48), parts(method="inference", batch=2, seq_len=48)
    assert table.total <= 1.03 * inference.total
    bf16 = predict_breakdown(WorkloadParams(model="opt-125m", method="bp", dtype="bf16", optimizer="adamw"))
    assert bf16.optimizer == 2 * 2 * model_shape("opt-125m").params  # exp_avg, exp_avg_sq in bf16


def test_largest_fitting_model_grows_with_the_cap_and_mezo_fits_more():
    params = WorkloadParams(model="opt-8m", method="bp-checkpointed", batch=1, seq_len=32)
    ladder = ladder_names("opt")
    sizes = [largest_fitting(params, cap) for cap in (1e9, 2e9, 4e9, 16e9)]
    assert [ladder.index(s) for s in sizes] == sorted(ladder.index(s) for s in sizes)
    assert largest_fitting(params, 1e6) is None
    ratio = fit_ratio(params, 4e9)
    assert ratio is not None and ratio > 1.5


def test_runtime_baseline_still_measured_when_the_cache_is_read_only(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGEBENCH_CACHE", str(blocker / "cache"))
    baseline.runtime_baseline_bytes.cache_clear()
    try:
        assert baseline.runtime_baseline_bytes() > 100e6
    finally:
        baseline.runtime_baseline_bytes.cache_clear()


def test_estimate_cli_prints_prediction_cap_fit_and_largest_model():
    from tests.helpers import edgebench, edgebench_json

    out = edgebench_json(
        "estimate", "--device", "rpi-4-2gb", "--model", "opt-125m", "--method", "bp-checkpointed"
    )
    assert out["cap_bytes"] == 2_000_000_000 and out["param_count"] == 125239296
    assert out["predicted_peak_bytes"] == sum(out["breakdown_bytes"].values())
    assert out["fits"] is (out["predicted_peak_bytes"] <= out["cap_bytes"]) and out["fits"] is False
    per_method = out["largest_fitting_per_method"]
    ladder = ladder_names("opt")
    assert ladder.index(per_method["mezo"]) > ladder.index(per_method["bp-checkpointed"])
    assert out["mezo_over_bp_checkpointed_params"] > 1
    bad = edgebench("estimate", "--device", "rpi-4-2gb", "--model", "opt-nope", "--method", "mezo")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "opt-nope" in bad.stderr
    text = edgebench(
        "estimate", "--device", "rpi-zero-2w", "--model", "opt-1m", "--method", "mezo", check=True
    )
    assert "predicted peak" in text.stdout and "largest ladder model" in text.stdout
