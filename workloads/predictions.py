"""Per-example predictions of every evaluation of a cell, stored compactly beside the records.

A cell's evaluations make one `.npz` file (numpy only, so the harness and reports read it without torch),
written by the harness to RUN_DIR/predictions/<cell id>.npz and named with its sha256 in the record's
`metrics.predictions` (`PredictionsRef`). Two evaluations on the same split can then be compared example by
example (reports.paired). Arrays, per held-out split S (validation, test):

- `S_examples` (int32, n): the examples' positions in the deduplicated dataset, in the split's order: two
  files compare only where these agree;
- `S_labels` (int8, n): the true labels;
- `S_predicted` (int8, evaluations x n): the class each evaluation predicted;
- `S_margin` (float16, evaluations x n): the predicted class's score over the runner-up's (a confidence);

and `steps` (int64) and `seconds` (float64), one per evaluation, in the order of the record's accuracy curve.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: The directory of a run that holds the predictions files.
PREDICTIONS_DIR = "predictions"
SPLITS = ("validation", "test")


class PredictionsRef(BaseModel):
    """Where a record's predictions are and what they hash to (`metrics.predictions`)."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="path relative to the run directory, predictions/<cell id>.npz")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    evaluations: int = Field(ge=0)
    examples: dict[str, int] = Field(description="per split, the examples each evaluation scored")


class PredictionsError(ValueError):
    """A predictions file that is missing, altered or malformed."""


@dataclass
class SplitPredictions:
    examples: np.ndarray
    labels: np.ndarray
    predicted: list[np.ndarray] = field(default_factory=list)
    margin: list[np.ndarray] = field(default_factory=list)


@dataclass
class Predictions:
    """Every evaluation of one cell (what `encode` writes and `load` reads)."""

    splits: dict[str, SplitPredictions] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        return len(self.steps)

    def add(self, step: int, seconds: float, scored: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """One evaluation: per split, (predicted, margin) in the split's order."""
        self.steps.append(step)
        self.seconds.append(seconds)
        for name, (predicted, margin) in scored.items():
            self.splits[name].predicted.append(np.asarray(predicted, dtype=np.int8))
            self.splits[name].margin.append(np.asarray(margin, dtype=np.float16))

    def correct(self, split: str, evaluation: int) -> np.ndarray:
        """Whether each example of `split` was classified right at `evaluation` (negative: from the end)."""
        part = self.splits[split]
        return part.predicted[evaluation] == part.labels

    def encode(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "steps": np.asarray(self.steps, dtype=np.int64),
            "seconds": np.asarray(self.seconds, dtype=np.float64),
        }
        for name, part in self.splits.items():
            n = len(part.labels)
            arrays[f"{name}_examples"] = np.asarray(part.examples, dtype=np.int32)
            arrays[f"{name}_labels"] = np.asarray(part.labels, dtype=np.int8)
            arrays[f"{name}_predicted"] = np.stack(part.predicted) if part.predicted else np.zeros((0, n), np.int8)
            arrays[f"{name}_margin"] = np.stack(part.margin) if part.margin else np.zeros((0, n), np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()


def decode(data: bytes) -> Predictions:
    """A Predictions from `encode`'s bytes; PredictionsError when they are not such a file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        steps, seconds = arrays.pop("steps"), arrays.pop("seconds")
        out = Predictions(steps=[int(s) for s in steps], seconds=[float(s) for s in seconds])
        for name in sorted({key.rsplit("_", 1)[0] for key in arrays}):
            predicted, margin = arrays[f"{name}_predicted"], arrays[f"{name}_margin"]
            labels = arrays[f"{name}_labels"]
            if predicted.shape != margin.shape or predicted.shape != (len(steps), len(labels)):
                raise PredictionsError(f"split {name}: arrays of mismatched shapes")
            out.splits[name] = SplitPredictions(arrays[f"{name}_examples"], labels, list(predicted), list(margin))
    except PredictionsError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise PredictionsError(f"not a predictions file ({type(exc).__name__}: {exc})") from None
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref_for(cell_id: str, data: bytes, predictions: Predictions) -> PredictionsRef:
    """The record's reference to `data`, the encoded predictions of cell `cell_id`."""
    return PredictionsRef(
        file=f"{PREDICTIONS_DIR}/{cell_id}.npz",
        sha256=sha256(data),
        evaluations=predictions.evaluations,
        examples={name: len(part.labels) for name, part in predictions.splits.items()},
    )


def load(run_dir: Path, ref: PredictionsRef) -> Predictions:
    """The predictions a record references, checked against its hash: PredictionsError naming the file when it
    is missing, altered or malformed (a report leaves that cell's evaluations out and says so)."""
    path = Path(run_dir) / ref.file
    if Path(ref.file).is_absolute() or ".." in Path(ref.file).parts:
        raise PredictionsError(f"{ref.file}: a predictions path must lie inside the run directory")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PredictionsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if sha256(data) != ref.sha256:
        raise PredictionsError(f"{path}: does not match the sha256 its record gives (altered or replaced)")
    try:
        return decode(data)
    except PredictionsError as exc:
        raise PredictionsError(f"{path}: {exc}") from None
