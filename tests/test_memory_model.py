"""The analytic memory model: torch-free, exact parameter counts, measured runtime baseline, sane ordering."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from devices.cache import environment
from workloads import baseline, host_memory
from workloads.allocator import FITTED, mmap_ceiling
from workloads.host_memory import fit_ratio, largest_fitting, predict_breakdown, predict_peak_bytes
from workloads.memory_model import (
    MAPPED_SHARE,
    SAVED_PER_TOKEN,
    TEXT_BYTES_PER_EXAMPLE,
    TOKENIZED_RESIDENT,
    backprop_activations,
    breakdown,
    data_bytes,
    per_token_elements,
    position_bias,
    working_set,
)
from workloads.params import WorkloadParams
from workloads.registry import LADDER, ladder_names, model_shape, resolve, shape_from_config
from workloads.weights import minilm_dir

#: Small configs of the three families, shaped so that H, A*S and F differ at the counting shape (B, S).
FAMILY_CONFIGS = {
    "bert": LADDER["bert-4m"],
    "opt": LADDER["opt-1m"],
    "mpnet": {
        "model_type": "mpnet",
        "vocab_size": 200,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "max_position_embeddings": 64,
    },
}
B, S = 2, 24


def test_memory_model_checks_and_estimate_do_not_import_torch():
    code = "import sys, harness.cli.commands.estimate, workloads.host_memory, workloads.checks; print('torch' in sys.modules)"
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
        "estimate", "--device", "rpi-4-2gb", "--model", "opt-125m", "--method", "bp-checkpointed", process=True
    )
    assert out["cap_bytes"] == 2_000_000_000 and out["param_count"] == 125239296
    assert out["predicted_peak_bytes"] == sum(out["breakdown_bytes"].values())
    assert out["fits"] is (out["predicted_peak_bytes"] <= out["cap_bytes"]) and out["fits"] is False
    per_method = out["largest_fitting_per_method"]
    ladder = ladder_names("opt")
    assert ladder.index(per_method["mezo"]) > ladder.index(per_method["bp-checkpointed"])
    assert out["mezo_over_bp_checkpointed_params"] > 1
    bad = edgebench("estimate", "--device", "rpi-4-2gb", "--model", "opt-nope", "--method", "mezo", process=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "opt-nope" in bad.stderr
    text = edgebench(
        "estimate", "--device", "rpi-zero-2w", "--model", "opt-1m", "--method", "mezo", check=True, process=True
    )
    assert "predicted peak" in text.stdout and "largest ladder model" in text.stdout


def _backbone(family: str):
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = FAMILY_CONFIGS[family]
    return AutoModel.from_config(AutoConfig.for_model(**config)), shape_from_config(config)


def _inputs(vocab: int, padded: bool):
    """Token ids and mask: padded as a real task's encoder batch is, or all ones as the synthetic LM task's."""
    import torch

    ids = torch.randint(3, vocab, (B, S), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, S // 2 :] = 0
    return ids, mask


def _layer_saved_elements(model) -> int:
    """Elements the second layer's forward saves for backward: unique storages, weights excluded (what
    docs/workloads.md counts; its LayerNorm statistics and SDPA's logsumexp are the small remainder)."""
    import torch
    from torch.autograd.graph import saved_tensors_hooks

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}
    inside = [False]

    def pack(tensor):
        storage = tensor.untyped_storage()
        if inside[0] and storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    layer = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len)[1]
    layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    layer.register_forward_hook(lambda *_: inside.__setitem__(0, False))
    ids, mask = _inputs(model.config.vocab_size, padded=model.config.model_type != "opt")
    model.train()
    with saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, attention_mask=mask)
    return sum(seen.values())


@pytest.mark.parametrize("family", ["bert", "mpnet", "opt"])
def test_saved_per_layer_is_what_autograd_keeps(family):
    model, shape = _backbone(family)
    kind = "decoder" if shape.is_decoder else "encoder"
    predicted = B * S * per_token_elements(shape, S, SAVED_PER_TOKEN[(kind, "full")])
    assert _layer_saved_elements(model) == pytest.approx(predicted, rel=0.02)


def test_lora_layer_keeps_only_the_adapters_input_gradient_path():
    from peft import LoraConfig, get_peft_model

    model, shape = _backbone("bert")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    predicted = B * S * per_token_elements(shape, S, SAVED_PER_TOKEN[("encoder", "lora")])
    assert _layer_saved_elements(model) == pytest.approx(predicted, rel=0.05)  # plus the rank-8 intermediates


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_no_grad_working_set_is_the_forward_live_peak(family):
    """The peak of live tensor bytes (the profiler's allocation events) during an eval-mode forward, after the inputs
    exist, against the counted working set (BERT's SDPA runs its flash kernel; MPNet's eager attention keeps
    scores, probabilities and its position bias)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model, shape = _backbone(family)
    ids, mask = _inputs(model.config.vocab_size, padded=True)
    model.eval()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(input_ids=ids, attention_mask=mask)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    predicted = 4 * (working_set(shape, B, S, dropout=False) + position_bias(shape, B, S))
    assert peak == pytest.approx(predicted, rel=0.05)


@pytest.mark.slow
def test_data_term_is_the_tokenised_task_in_memory():
    from workloads.models import load_tokenizer
    from workloads.tasks import real_task

    params = WorkloadParams(model="minilm-l1", task="rotten_tomatoes", batch=4, seq_len=24, eval_examples=32)
    task = real_task(params, load_tokenizer(params.model))
    splits = [task.train, *task.evaluated.values()]
    tensors = sum(
        t.numel() * t.element_size() for s in splits for t in (s.input_ids, s.attention_mask, s.labels)
    )
    assert data_bytes(params) == int(TOKENIZED_RESIDENT * tensors) + task.info["examples"] * TEXT_BYTES_PER_EXAMPLE
    assert data_bytes(params.model_copy(update={"task": "synthetic"})) == 0


def test_frozen_pretrained_embedding_counts_only_where_read():
    def weights(**fields) -> int:
        base = {"model": "mpnet-l2", "task": "rotten_tomatoes", "batch": 4, "seq_len": 32, "max_steps": 3}
        return predict_breakdown(WorkloadParams(**{**base, **fields})).weights

    shape = model_shape("mpnet-l2")
    everything = 4 * (shape.params + 2 * shape.hidden + 2)
    assert weights(method="mezo") == weights(method="bp") == everything  # written: every page copied
    assert (
        weights(method="inference", eval_examples=16)
        < weights(method="inference", eval_examples=512)
        < everything
    )
    embedding = 4 * shape.vocab * shape.hidden
    reached = everything - embedding + int(MAPPED_SHARE * embedding)
    assert weights(method="inference", max_steps=None, max_seconds=60) == reached  # steps unknown: all it reaches
    assert weights(method="inference", max_steps=100_000) == pytest.approx(reached, abs=1)
    assert weights(method="inference", model="bert-29m") == 4 * (model_shape("bert-29m").params + 2 * 512 + 2)


def test_checkpointing_never_predicts_more_than_plain_backprop_and_frozen_weights_retain_more():
    def acts(**fields) -> int:
        base = {"model": "minilm-l6", "task": "rotten_tomatoes", "batch": 16, "seq_len": 128}
        return predict_breakdown(WorkloadParams(**{**base, **fields})).activations

    for tuning in ("full", "lora"):
        assert acts(method="bp-checkpointed", tuning=tuning) <= acts(method="bp", tuning=tuning)
    assert acts(method="bp-checkpointed", model="minilm-l1") <= acts(method="bp", model="minilm-l1")  # one layer
    assert acts(method="bp", tuning="head") < acts(method="bp", tuning="lora")  # nothing kept in the backbone


def test_dynamic_padding_is_predicted_at_the_longest_batch_a_cell_draws(tmp_path):
    """`padding: longest` trims a training batch to its longest example only from step WORST_CASE_STEPS on; the
    first steps run at seq_len, so the peak is that of a full-width batch and the prediction is padding's to
    seq_len (the random-shape benchmark's real-task cells measure it so)."""
    from tests.helpers import write_rows
    from workloads.models import load_tokenizer
    from workloads.tasks import WORST_CASE_STEPS, real_task

    rows = [{"text": f"review {i} " + "word " * (i % 5), "label": i % 2} for i in range(80)]
    base = {"model": "minilm-l2", "batch": 4, "seq_len": 48, "method": "bp-checkpointed", "max_steps": 5}
    params = WorkloadParams(task=write_rows(tmp_path / "short.csv", rows), **base)
    task = real_task(params, load_tokenizer(params.model))
    widths = [task.batch(step)["input_ids"].shape[1] for step in range(WORST_CASE_STEPS + 2)]
    assert widths[:WORST_CASE_STEPS] == [params.seq_len] * WORST_CASE_STEPS
    assert max(widths[WORST_CASE_STEPS:]) < params.seq_len  # later batches are cut to their longest example

    def peak(**fields) -> int:
        return predict_peak_bytes(WorkloadParams(**{**base, "task": "rotten_tomatoes", **fields}))

    assert peak(padding="longest") == peak(padding="max_length") > peak(padding="max_length", seq_len=12)


def test_host_allocator_predicts_the_measured_growth_of_its_reference_cells(monkeypatch):
    """The measured term is the value at which the model predicts the difference between its reference cells'
    peaks (what does not grow with the shape cancels); other measured peaks give other values."""
    from workloads.calibration import REFERENCES

    pair = REFERENCES["no_grad_retention"]
    for growth_mib in (100, 160):
        monkeypatch.setattr(
            host_memory, "reference_peak_bytes", lambda term, index, threads, g=growth_mib: (500 + index * g) << 20
        )
        host_memory.host_allocator.cache_clear()
        alloc = host_memory.host_allocator(2)
        assert host_memory.growth(pair, alloc) == pytest.approx(growth_mib << 20, abs=16)
    assert alloc.no_grad_retention > FITTED.no_grad_retention  # 160 MiB is more than it predicts
    host_memory.host_allocator.cache_clear()


def test_validated_range_is_read_from_the_benchmark_cells(tmp_path):
    from workloads.validated import record_seed, validated_range

    path = tmp_path / "validation.json"
    cell = {"model": "minilm-l3", "method": "bp-checkpointed", "shape": "x", "predicted": 95, "measured": 100}
    record_seed(101, {}, [cell, {**cell, "model": "minilm-l6", "predicted": 120}, {**cell, "method": "mezo"}], path)
    record_seed(102, {}, [{**cell, "predicted": 104}], path)
    checked = validated_range("minilm-l1", "bp-checkpointed", path)
    assert (checked.cells, checked.low, checked.high, checked.within, checked.seeds) == (3, 0.95, 1.2, 2, (101, 102))
    record_seed(102, {}, [], path)  # a seed run again replaces its cells
    assert validated_range("minilm-l1", "bp-checkpointed", path).cells == 2
    assert validated_range("mpnet-l1", "bp-checkpointed", path) is None


def test_checkpointed_backprop_holds_one_recomputed_set_and_the_heap_retains_more_with_depth():
    """Every layer's input plus one live recomputed set (SGD: no optimizer temporaries), and retained sets growing
    with depth, counting only the tensors under glibc's mmap ceiling (MiniLM's B*A*S*S probabilities at 16 x 256
    are 48 MiB: mapped, returned)."""
    from workloads.allocator import MMAP_CEILING
    from workloads.memory_model import heap_saved, layer_saved

    def acts(model: str, b: int, s: int) -> int:
        params = WorkloadParams(
            model=model, method="bp-checkpointed", optimizer="sgd", task="rotten_tomatoes", batch=b, seq_len=s
        )
        return predict_breakdown(params).activations

    def sets(model: str, b: int, s: int) -> float:
        params = WorkloadParams(
            model=model, method="bp-checkpointed", optimizer="sgd", task="rotten_tomatoes", batch=b, seq_len=s
        )
        shape = model_shape(model)
        inputs = (shape.layers + 2) * b * s * shape.hidden
        return (acts(model, b, s) / 4 - inputs) / layer_saved(shape, params, b, s)

    shallow, deep = sets("minilm-l3", 32, 128), sets("minilm-l6", 32, 128)
    assert 1 < shallow < deep < 4
    params = WorkloadParams(model="minilm-l3", method="bp-checkpointed", batch=16, seq_len=256)
    shape = model_shape("minilm-l3")
    assert 4 * 16 * shape.heads * 256 * 256 > MMAP_CEILING
    assert heap_saved(shape, params, 16, 256) == layer_saved(shape, params, 16, 256) - 3 * 16 * shape.heads * 256**2


@pytest.mark.parametrize(
    ("tuning", "ceiling"),
    [
        ({}, 32 << 20),
        ({"MALLOC_ARENA_MAX": "2"}, 32 << 20),  # tuning that leaves the threshold dynamic
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, 131072),
        ({"MALLOC_MMAP_THRESHOLD_": "0x400000"}, 4 << 20),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=268435456"}, 32 << 20),  # above the ceiling: ignored
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, 128 << 10),  # pins the initial threshold
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, sys.maxsize),  # no mmap: the heap serves everything
    ],
)
def test_the_heap_ceiling_follows_glibc_tuning(tuning, ceiling):
    assert mmap_ceiling(tuning) == ceiling


def test_a_host_whose_allocator_maps_activations_is_predicted_to_retain_none_of_them(monkeypatch, tmp_path):
    """A pinned low mmap threshold (measured: the no-grad calibration pair grows 92 MB instead of 171) maps every
    activation on its own: backprop's heap terms vanish, and cached figures are the tuned environment's own."""
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path))
    params = WorkloadParams(model="opt-125m", method="bp", tuning="lora", batch=6, seq_len=128)
    shape = model_shape(params.model)
    default = breakdown(params, shape, 0)
    mapped = breakdown(params, shape, 0, alloc=replace(FITTED, mmap_ceiling=128 << 10))
    assert mapped.activations < default.activations
    kept = breakdown(params, shape, 0, alloc=replace(FITTED, mmap_ceiling=0)).activations
    assert mapped.activations == kept  # every saved tensor of this shape is over 128 KiB
    before = environment(("torch",))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    assert environment(("torch",)) != before


def test_cells_inherit_the_allocators_tuning(monkeypatch):
    from harness.run.executors.base import cell_env

    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    env = cell_env()
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.mmap_threshold=131072" and env["MALLOC_ARENA_MAX"] == "2"


def test_mapped_activations_and_the_gradients_replacing_them_peak_apart():
    """Where glibc maps every saved tensor, the backward returns them as the gradients arrive: the peak holds the
    larger of the activations (the backward's start) and the gradients with AdamW's temporaries (the optimizer's
    step), not their sum (mpnet-l10 BP AdamW at 2 x 256 with the threshold pinned at 128 KiB: 2,207 MiB measured,
    2,655 predicted by the sum)."""
    params = WorkloadParams(model="mpnet-l10", task="rotten_tomatoes", method="bp", batch=2, seq_len=256)
    shape = model_shape(params.model)
    mapped = replace(FITTED, mmap_ceiling=128 << 10)
    acts = backprop_activations(shape, params, 2, 256, mapped)
    assert acts.resident == 0 and acts.returned > 0
    peak = breakdown(params, shape, 0, alloc=mapped)
    temporaries = 2 * 4 * shape.largest_tensor
    assert peak.gradients + peak.activations == max(int(4 * acts.returned), peak.gradients + temporaries)
    assert breakdown(params, shape, 0).activations > 4 * acts.returned  # the heap keeps them: the sum
