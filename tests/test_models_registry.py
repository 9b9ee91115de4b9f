"""The model registry: what every kind of name means, exact parameter counts, and the memory model on MPNet."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from workloads.checks import check_params
from workloads.host_memory import largest_fitting, predict_peak_bytes
from workloads.memory_model import breakdown
from workloads.params import WorkloadParams
from workloads.registry import (
    LADDER,
    Location,
    is_known_name,
    ladder_names,
    model_shape,
    pretrained_ladder,
    resolve,
)
from workloads.weights import BUNDLES, minilm_dir

MINILM_RUNGS = [f"minilm-l{k}" for k in range(1, 7)]
MPNET_RUNGS = [f"mpnet-l{k}" for k in range(1, 13)]


def test_registry_and_weights_do_not_import_torch():
    code = "import sys, workloads.registry, workloads.weights; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_config_ladder_names_are_random_weights_with_the_shared_tokenizer():
    for name, family in (("opt-8m", "opt"), ("bert-4m", "bert")):
        entry = resolve(name)
        assert (entry.family, entry.ladder, entry.weights, entry.pretrained) == (family, family, None, False)
        assert entry.tokenizer == Location("bundle", "minilm") and entry.config == LADDER[name]


@pytest.mark.parametrize(
    ("name", "family", "bundle", "keep", "layers"),
    [
        ("minilm-l3", "bert", "minilm", 3, 3),
        ("mpnet-l6", "mpnet", "mpnet", 6, 6),
        ("mpnet-base", "mpnet", "mpnet", None, 12),
    ],
)
def test_pretrained_rungs_truncate_a_bundled_checkpoint(name, family, bundle, keep, layers):
    entry = resolve(name)
    assert entry.pretrained and entry.family == family and entry.ladder == "pretrained"
    assert entry.weights == entry.tokenizer == Location("bundle", bundle)
    assert entry.keep_layers == keep and entry.config["num_hidden_layers"] == entry.shape.layers == layers


def test_local_directories_and_hub_ids(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**BUNDLES["mpnet"].config, "num_hidden_layers": 2}))
    local = resolve(str(tmp_path))
    assert local.family == "mpnet" and local.weights == local.tokenizer == Location("local", str(tmp_path))
    assert local.shape == model_shape("mpnet-l2") and local.keep_layers is None and local.ladder is None
    hub = resolve("someone/tiny-model")
    assert (hub.family, hub.config, hub.shape) == ("other", None, None)
    assert hub.weights == hub.tokenizer == Location("hub", "someone/tiny-model")


def test_out_of_range_rungs_are_not_registry_names(monkeypatch, tmp_path):
    assert all(is_known_name(n) for n in [*LADDER, *MINILM_RUNGS, *MPNET_RUNGS, "mpnet-base"])
    assert not any(is_known_name(n) for n in ("minilm-l0", "minilm-l7", "mpnet-l13", "mpnet-large"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ValueError, match="unknown model 'mpnet-l13'.*mpnet-l1 .. mpnet-l12, mpnet-base"):
        check_params(WorkloadParams(model="mpnet-l13"))


def test_ladders_in_increasing_size():
    assert pretrained_ladder() == MINILM_RUNGS + MPNET_RUNGS
    sizes = [model_shape(n).params for n in pretrained_ladder()]
    assert sizes == sorted(set(sizes))
    assert ladder_names("opt") == [n for n in LADDER if n.startswith("opt")]
    assert ladder_names("bert") == [n for n in LADDER if n.startswith("bert")]


def test_pinned_minilm_config_matches_the_shipped_file():
    shipped = json.loads((minilm_dir() / "config.json").read_text())
    assert {k: shipped[k] for k in BUNDLES["minilm"].config} == BUNDLES["minilm"].config


def _real_backbone(name: str):
    from transformers import AutoModel

    entry = resolve(name)
    model = AutoModel.from_pretrained(entry.weights.path(), num_hidden_layers=entry.shape.layers)
    model.pooler = None
    return model


@pytest.mark.parametrize("name", [*MINILM_RUNGS, "mpnet-l1", "mpnet-l6", "mpnet-l12"])
def test_parameter_counts_are_exact(name):
    params = list(_real_backbone(name).parameters())
    shape = model_shape(name)
    assert shape.params == sum(p.numel() for p in params)
    assert shape.largest_tensor == max(p.numel() for p in params)


def test_mpnet_counts_and_position_limit():
    assert model_shape("mpnet-base").params == model_shape("mpnet-l12").params == 108_895_872
    assert model_shape("mpnet-l1").params == 30_929_280 and model_shape("mpnet-l6").params == 66_368_640
    assert model_shape("mpnet-base").max_positions == 512  # 514 embeddings, counted from pad_token_id + 1 = 2
    with pytest.raises(ValueError, match="512 positions"):
        check_params(WorkloadParams(model="mpnet-l1", seq_len=513))


def test_memory_model_counts_mpnet_position_bias_once():
    shape = model_shape("mpnet-l6")
    as_bert = dataclasses.replace(shape, family="bert")
    b, s = 8, 64
    for method in ("inference", "mezo", "bp", "bp-checkpointed"):
        params = WorkloadParams(model="mpnet-l6", task="rotten_tomatoes", method=method, batch=b, seq_len=s)
        extra = breakdown(params, shape, 0).activations - breakdown(params, as_bert, 0).activations
        assert extra == 4 * b * shape.heads * s * s  # one fp32 [B, A, S, S] bias shared by every layer


def test_memory_model_predicts_mpnet_cells_in_order():
    def peak(**fields) -> int:
        base = {"model": "mpnet-l6", "task": "rotten_tomatoes", "batch": 8, "seq_len": 64}
        return predict_peak_bytes(WorkloadParams(**{**base, **fields}))

    inference, mezo, ckpt, bp = (peak(method=m) for m in ("inference", "mezo", "bp-checkpointed", "bp"))
    assert 0.3e9 < inference < mezo < ckpt < bp < 3e9
    assert peak(method="mezo", model="mpnet-l12") > mezo > peak(method="mezo", model="minilm-l6")


def test_largest_fitting_walks_the_pretrained_ladder():
    params = WorkloadParams(model="mpnet-l6", task="rotten_tomatoes", method="mezo", batch=8, seq_len=64)
    small, large = largest_fitting(params, 0.8e9), largest_fitting(params, 4e9)
    ladder = pretrained_ladder()
    assert small in ladder and large == "mpnet-l12" and ladder.index(small) < ladder.index(large)


def test_a_local_checkpoint_is_known_by_the_sha256_of_its_weight_files(tmp_path):
    """A record of a local directory or hub id names its weights by hash (the validity check model_pinned)."""
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights one")
    local = Location("local", str(tmp_path))
    first = local.weights_sha256()
    assert first and len(first) == 64 and first == local.weights_sha256()
    (tmp_path / "config.json").write_text('{"edited": true}')  # not a weight file: same weights
    assert local.weights_sha256() == first
    weights.write_bytes(b"weights two")
    assert local.weights_sha256() not in (None, first)
    assert Location("local", str(tmp_path / "empty")).weights_sha256() is None
    assert Location("hub", "no-such-org/no-such-model").weights_sha256() is None  # offline, not cached


def test_a_truncated_rung_says_so_and_a_complete_checkpoint_does_not():
    from workloads.registry import truncation

    assert truncation("mpnet-l8") == "truncated: first 8 of 12 layers"
    assert truncation("minilm-l5") == "truncated: first 5 of 6 layers"
    assert [truncation(m) for m in ("mpnet-l12", "mpnet-base", "minilm-l6", "opt-8m", "org/model")] == [None] * 5
