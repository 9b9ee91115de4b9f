"""What a cell reports of itself (`metrics` of its result line and of its record): memory, timing, loss, accuracy,
checkpoints and its device clock, each a typed group that the cell fills and the harness and reports read by
attribute. Strict: a cell that reports anything else is refused as it reports it (harness.run.executors.base)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from workloads.predictions import PredictionsRef


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


#: A figure reports compare and plot: a finite number, never a string or a bool (a loss may be NaN, a time or an
#: accuracy never is).
Figure = Annotated[float, Field(strict=True), AfterValidator(_finite)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetFacts(Strict):
    """What identifies a cell's examples: a real task by the sha256 of its deduplicated examples, the synthetic one
    by the seed it is drawn from (workloads.tasks)."""

    name: str
    synthetic: bool = False
    seed: int | None = Field(None, description="the synthetic task's seed")
    split_seed: int | None = None
    examples: int | None = None
    duplicates_removed: int | None = None
    content_sha256: str | None = None
    splits: dict[str, int] = Field(default_factory=dict, description="examples per split")
    evaluated_examples: dict[str, int] = Field(default_factory=dict, description="examples each evaluation scores")
    label_names: list[str] = Field(default_factory=list)
    majority_label: str | None = None

    @property
    def identified(self) -> bool:
        """The examples are known: by their hash, or by the seed they are generated from."""
        return bool(self.content_sha256) or (self.synthetic and self.seed is not None)


class Segment(Strict):
    """One process's share of a resumed (or whole) cell: the steps it ran and the cell-clock seconds it added."""

    from_step: int
    steps: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    device_seconds: float = Field(0.0, description="the process's, up to its last checkpoint or its end")
    clock_ratio: float = 1.0


class Timing(Strict):
    """Seconds in the cell's clock (host_train_seconds: on this host), rounded to SECONDS_ROUNDING."""

    step_time_s: Figure | None = Field(None, description="mean step, the first (and worst-case padded) excluded")
    first_step_time_s: Figure | None = None
    train_seconds: Figure | None = None
    host_train_seconds: Figure | None = None
    eval_seconds: Figure | None = None
    checkpoint_seconds: Figure | None = None
    stopped_flat: str | None = Field(
        None, description="why training stopped before its budget (stop_when_flat): the last two doublings' gains"
    )
    segments: list[Segment] = Field(default_factory=list, description="a resumed cell's processes, in order")

    @property
    def earlier_device_seconds(self) -> float:
        """Device seconds of a resumed cell's earlier processes, up to their last checkpoints."""
        return sum(s.device_seconds for s in self.segments[:-1])


class Loss(Strict):
    first: float | None = None
    last: float | None = None
    values: list[float] = Field(default_factory=list, description="every step's, evenly thinned to at most 200")
    tokens_per_step: float | None = Field(None, description="real (unpadded) tokens of a training batch, mean")
    padded_tokens_per_step: float | None = None


class CurvePoint(Strict):
    """One evaluation: test and validation accuracy, in percent, after `step` steps and `seconds` of training."""

    seconds: Figure
    step: int
    accuracy: Figure | None = None
    val_accuracy: Figure | None = None


class Accuracy(Strict):
    """Percent of the evaluated examples classified right (prediction k of metrics.predictions is curve[k])."""

    curve: list[CurvePoint] = Field(default_factory=list, description="one point per evaluation, in order")
    initial: Figure | None = None
    final: Figure | None = None
    initial_val: Figure | None = None
    final_val: Figure | None = None
    majority: dict[str, float] | None = Field(None, description="per split, the majority label's share: the floor")


class Checkpoints(Strict):
    written: int = 0
    bytes: int | None = None
    error: str | None = None


class CellMemory(Strict):
    cuda_peak_bytes: int | None = Field(None, description="torch.cuda.max_memory_allocated; None without a GPU")


class PhaseTotals(Strict):
    cpu_seconds: float
    flops: float
    traffic_bytes: float
    flops_only_seconds: float
    roofline_seconds: float


class ThroughputPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int = Field(description="steps taken by then")
    device_seconds: float = Field(description="since the cell's process started, in its clock's seconds")
    work_seconds: float = Field(description="the work done by then, in device seconds at burst speed")
    gflops: float = Field(description="the throughput the clock ran the cell at then")


class DeviceClock(Strict):
    """The cell's report of its clock (workloads.throughput): the roofline's correction to the FLOPs-only time,
    the work done while the board was still cool, each phase's totals, and the throughput over time."""

    roofline_extra_s: float = 0.0
    heated_from_s: float = 0.0
    phases: dict[str, PhaseTotals] = Field(default_factory=dict)
    throughput: list[ThroughputPoint] = Field(default_factory=list)


class CellMetrics(Strict):
    """Everything a cell reports. A killed cell's keeps what it said before its first step (`param_count`,
    `dataset`); a group the cell never got to fill is empty."""

    param_count: int | None = Field(None, description="every parameter once, the head included")
    trainable_params: int | None = None
    model_family: str | None = None
    model_sha256: str | None = Field(None, description="the weight files' hash, for a hub id or a local directory")
    dtype: str | None = None
    gradient_checkpointing: bool | None = None
    threads: int | None = None
    task_kind: str | None = None
    versions: dict[str, str] | None = Field(None, description="the libraries the cell ran on ('missing' if absent)")
    dataset: DatasetFacts | None = None
    memory: CellMemory = Field(default_factory=CellMemory)
    timing: Timing = Field(default_factory=Timing)
    loss: Loss = Field(default_factory=Loss)
    accuracy: Accuracy = Field(default_factory=Accuracy)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    device_clock: DeviceClock = Field(default_factory=DeviceClock)
    predictions: PredictionsRef | None = Field(
        None, description="every evaluation's per-example predictions, predictions/<cell id>.npz in the run directory"
    )
    predictions_error: str | None = Field(None, description="why the predictions the cell sent were not kept")


#: Schema 4 and older kept every figure at the top of `metrics`: their names there, by group and name now.
FLAT_NAMES: dict[str, dict[str, str]] = {
    "memory": {"cuda_peak_bytes": "cuda_peak_bytes"},
    "timing": {
        **{name: name for name in ("step_time_s", "first_step_time_s", "train_seconds", "host_train_seconds")},
        **{name: name for name in ("eval_seconds", "checkpoint_seconds", "segments")},
    },
    "loss": {
        "loss_first": "first",
        "loss_last": "last",
        "losses": "values",
        "tokens_per_step": "tokens_per_step",
        "padded_tokens_per_step": "padded_tokens_per_step",
    },
    "accuracy": {
        "accuracy_curve": "curve",
        "initial_accuracy": "initial",
        "final_accuracy": "final",
        "initial_val_accuracy": "initial_val",
        "final_val_accuracy": "final_val",
        "majority_accuracy": "majority",
    },
    "checkpoints": {"checkpoints_written": "written", "checkpoint_bytes": "bytes", "checkpoint_error": "error"},
}


def grouped(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics (schema 4 and older) in today's groups; a group none of whose figures was kept stays out."""
    moved = {old for names in FLAT_NAMES.values() for old in names}
    metrics = {name: value for name, value in flat.items() if name not in moved}
    for group, names in FLAT_NAMES.items():
        values = {new: flat[old] for old, new in names.items() if old in flat}
        if values:
            metrics[group] = values
    return metrics
