"""Every model name the harness knows, torch-free: what it is, where its weights and tokenizer come from, its shape.

Names: the random-weight size ladder built from configs (`opt-*`, `bert-*`), the pretrained ladder of
truncated sentence encoders (`minilm-l1`..`minilm-l6` from all-MiniLM-L6-v2, `mpnet-l1`..`mpnet-l12` and
`mpnet-base` from all-mpnet-base-v2; a rung keeps the first k layers), and any local directory with a
config.json or hub id. The harness parent (checks, memory model, `edgebench estimate`, reports) asks here
without building a model, so parameter counts are computed from the config; tests check them against
the real transformers models.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workloads.weights import BUNDLES

#: The tokenizer every config-built model shares on real tasks (the bundled MiniLM's WordPiece, 30,522 ids),
#: so ladder vocabularies are at least this large.
LADDER_VOCAB = 30522
#: The files of a checkpoint that hold its weights (safetensors, or PyTorch's pickles), hashed into a record.
WEIGHT_FILES = ("*.safetensors", "*.bin")
#: Families whose shape (and exact parameter count) is computed from a config; anything else is "other".
FAMILIES = ("opt", "bert", "mpnet")
PRETRAINED = "pretrained"  # the ladder of the truncated pretrained encoders
_RUNG = re.compile(r"^(minilm|mpnet)-l(\d+)$")
#: Names of a whole pretrained checkpoint.
_WHOLE = {"mpnet-base": "mpnet"}


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs to know about a model."""

    family: str  # "opt" (decoder), "bert" or "mpnet" (encoders)
    vocab: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    params: int  # backbone parameters (the LM head is tied to the embeddings; no pooler)
    largest_tensor: int  # elements of the largest single parameter tensor
    max_positions: int  # the longest sequence its position embeddings take

    @property
    def is_decoder(self) -> bool:
        return self.family == "opt"


@dataclass(frozen=True)
class Location:
    """Where weights or a tokenizer come from: a checkpoint shipped in pip packages (a key of
    `weights.BUNDLES`), a local directory, or a hub id."""

    kind: Literal["bundle", "local", "hub"]
    where: str

    def path(self) -> str:
        """What `from_pretrained` takes; a bundle is located (and assembled, the first time) now."""
        return str(BUNDLES[self.where].directory()) if self.kind == "bundle" else self.where

    def folder(self) -> Path | None:
        """The local folder holding the files: a bundle's (assembled now, the first time), a local directory, or a
        hub id's cached snapshot, looked up offline (None when it is not in the cache)."""
        if self.kind != "hub":
            return Path(self.path())
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(self.where, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache: no files here, the caller says so
            return None

    def weight_files(self) -> list[Path]:
        """The checkpoint's weight files, in name order."""
        folder = self.folder()
        return sorted(p for pattern in WEIGHT_FILES for p in folder.glob(pattern)) if folder else []

    def weights_sha256(self) -> str | None:
        """One sha256 over the checkpoint's weight files (names and contents, in name order), so that a record
        of a local directory or a hub id says which weights trained; None for a bundle, whose files are pinned
        already, or when no weight file is found."""
        files = [] if self.kind == "bundle" else self.weight_files()
        if not files:
            return None
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode() + b"\0")
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    """What one model name means."""

    name: str
    family: str  # opt / bert / mpnet / other
    config: dict[str, Any] | None  # with the truncation applied; None for a hub id (known once downloaded)
    weights: Location | None  # None: random weights from `config` (the size ladder)
    tokenizer: Location
    keep_layers: int | None = None  # a pretrained rung keeps its checkpoint's first k layers
    ladder: str | None = None  # the ladder this name belongs to: opt, bert or pretrained

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    @property
    def shape(self) -> ModelShape | None:
        return shape_from_config(self.config) if self.config else None


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
_SHARED_TOKENIZER = Location("bundle", "minilm")


def _rung(name: str) -> tuple[str, int | None] | None:
    """(bundle key, layers kept) for a pretrained rung or whole checkpoint name, else None."""
    if name in _WHOLE:
        return _WHOLE[name], None
    match = _RUNG.match(name)
    if match is None or not 1 <= int(match.group(2)) <= BUNDLES[match.group(1)].layers:
        return None
    return match.group(1), int(match.group(2))


def truncation(name: str) -> str | None:
    """How a pretrained rung is cut from its checkpoint ("truncated: first 8 of 12 layers"); None for a complete
    checkpoint and any other model. A truncated rung is a size proxy for memory fits, not a pretrained model of its
    size (its zero-shot accuracy is not monotone in depth), so an accuracy of one must say so."""
    rung = _rung(name)
    if rung is None or rung[1] is None or rung[1] >= BUNDLES[rung[0]].layers:
        return None
    return f"truncated: first {rung[1]} of {BUNDLES[rung[0]].layers} layers"


def is_known_name(name: str) -> bool:
    """A name of the registry's own (a ladder rung or a bundled checkpoint), not a directory or hub id."""
    return name in LADDER or _rung(name) is not None


def resolve(name: str) -> ModelEntry:
    """The entry of any model name: a ladder rung, a bundled pretrained rung, a local directory or a hub id."""
    if name in LADDER:
        config = dict(LADDER[name])
        family = config["model_type"]
        return ModelEntry(name, family, config, None, _SHARED_TOKENIZER, ladder=family)
    rung = _rung(name)
    if rung is not None:
        key, keep = rung
        bundle = BUNDLES[key]
        config = {**bundle.config, "num_hidden_layers": keep or bundle.layers}
        source = Location("bundle", key)
        return ModelEntry(name, config["model_type"], config, source, source, keep, PRETRAINED)
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        local = Location("local", str(path))
        return ModelEntry(name, family_of(config.get("model_type")), config, local, local)
    hub = Location("hub", name)
    return ModelEntry(name, "other", None, hub, hub)


def family_of(model_type: str | None) -> str:
    return model_type if model_type in FAMILIES else "other"


def model_shape(name: str) -> ModelShape | None:
    return resolve(name).shape


def known_names() -> list[str]:
    """How an error message lists the registry's names."""
    pretrained = [f"{key}-l1 .. {key}-l{bundle.layers}" for key, bundle in BUNDLES.items()]
    return [*LADDER, *pretrained, *_WHOLE]


def ladder_names(ladder: str) -> list[str]:
    """Rungs of one ladder (opt, bert, pretrained) in increasing size."""
    rungs = [f"{key}-l{k}" for key, bundle in BUNDLES.items() for k in range(1, bundle.layers + 1)]
    chosen = [entry for entry in map(resolve, [*LADDER, *rungs]) if entry.ladder == ladder]
    return [entry.name for entry in sorted(chosen, key=lambda entry: entry.shape.params)]


def pretrained_ladder() -> list[str]:
    """The truncated pretrained encoders in increasing size: minilm-l1..l6, then mpnet-l1..l12."""
    return ladder_names(PRETRAINED)


def ladder_of(entry: ModelEntry) -> str:
    """The ladder to search for a model's largest fitting size: its own, else the one of its family."""
    return entry.ladder or {"bert": "bert", "mpnet": PRETRAINED}.get(entry.family, "opt")


def shape_from_config(config: dict[str, Any]) -> ModelShape | None:
    """Exact parameter counts of transformers' OPTModel / BertModel / MPNetModel (no pooler) for a config."""
    kind = config.get("model_type")
    if kind not in FAMILIES:
        return None
    v, h, n = config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    ffn = config["ffn_dim"] if kind == "opt" else config["intermediate_size"]
    positions = config.get("max_position_embeddings", 512)
    layer = 4 * h * h + 2 * h * ffn + 9 * h + ffn  # attention (4 linear), 2 layer norms, 2 MLP linears
    usable = positions
    if kind == "opt":
        proj = config.get("word_embed_proj_dim") or h
        embed = v * proj + (positions + 2) * h + (2 * proj * h if proj != h else 0)
        extra = 2 * h if config.get("do_layer_norm_before", True) else 0  # the final layer norm
        largest = max(v * proj, (positions + 2) * h, h * ffn)
    elif kind == "bert":
        embed = v * h + positions * h + config.get("type_vocab_size", 2) * h + 2 * h
        extra, largest = 0, max(v * h, h * ffn)
    else:  # mpnet: no token types; one relative-position bias table (buckets x heads) shared by all layers
        embed = v * h + positions * h + 2 * h
        extra, largest = config.get("relative_attention_num_buckets", 32) * heads, max(v * h, h * ffn)
        usable = positions - config.get("pad_token_id", 1) - 1  # positions count from pad_token_id + 1
    return ModelShape(
        family=kind,
        vocab=v,
        hidden=h,
        layers=n,
        heads=heads,
        ffn=ffn,
        params=embed + n * layer + extra,
        largest_tensor=largest,
        max_positions=usable,
    )
