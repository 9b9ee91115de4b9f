"""What every executor shares: the interface and how a finished child becomes a record."""

from __future__ import annotations

import base64
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.cells import Cell
from harness.energy import cell_energy, clock_report, throughput_points
from harness.records import CellRecord, MemoryFigures, Status, judged, now_iso
from harness.store import write_bytes_atomic
from workloads.memory_model import head_size, is_lm
from workloads.params import WorkloadParams
from workloads.predictions import PredictionsError, decode, ref_for
from workloads.registry import model_shape
from workloads.resumable import StatePlan, resumable

ProgressFn = Callable[[Cell, dict[str, Any]], None]

# No network at run time: cells load models and datasets from local files unless the user says otherwise.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class ChildOutcome:
    """What an executor observed of one cell's process or container."""

    started_at: str
    wall_seconds: float
    returncode: int | None
    timed_out: bool
    oom_killed: bool
    result: dict[str, Any] | None  # the runner's final "result" event, if it got that far
    memory: MemoryFigures = field(default_factory=MemoryFigures)
    cpu_seconds: float | None = None  # the cell process's user + system time (wait4), for the scaled clock
    swap_excluded: bool | None = None  # the cap's word (devices.caps.base.CapReading); None: not observed
    stderr_tail: str = ""


class Executor(ABC):
    name: ClassVar[str]

    def __init__(
        self, run_dir: Path, timeout_s: float, enforcement: str = "auto", checkpoint_s: float | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.timeout_s = timeout_s
        self.enforcement_requested = enforcement
        self.checkpoint_s = checkpoint_s  # the spec's checkpoint_seconds; None: cells are not checkpointed
        self.stop = threading.Event()  # set on Ctrl-C: running cells are killed and cleaned up

    @property
    @abstractmethod
    def enforcement(self) -> str:
        """The backend that actually caps cells (recorded in run.json and every record)."""

    @property
    @abstractmethod
    def throttles(self) -> bool:
        """Whether cells get a CPU quota, which the device-throttled clock needs."""

    @abstractmethod
    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        """Run the cell's child under its caps and report what happened."""

    #: Whom cells run as, when the executor chose (a root harness's unprivileged cell user, or "root: why not");
    #: None: as the harness's own user.
    cells_run_as: str | None = None

    def admit(self, cells: list[Cell]) -> None:  # noqa: B027 - optional hook, a local host runs any cell
        """Refuse up front, as a UserError, cells this executor could never run (before any cell runs)."""

    def state_plan(self, cell: Cell, directory: Path) -> StatePlan | None:
        """A resumable cell's checkpoint plan, its state in `directory`, when this run checkpoints."""
        if self.checkpoint_s is None or not resumable(cell.params, probe=cell.role == "probe"):
            return None
        return StatePlan(directory=str(directory), every_seconds=self.checkpoint_s, cell_id=cell.id)

    def run(self, cell: Cell, progress: ProgressFn) -> CellRecord:
        facts: dict[str, Any] = {}

        def keep_facts(running: Cell, event: dict[str, Any]) -> None:
            facts.update(event.get("facts") or {})
            progress(running, event)

        outcome = self.execute(cell, keep_facts)
        facts |= keep_predictions(self.run_dir, cell.id, outcome.result)
        return self.to_record(cell, outcome, facts)

    def close(self) -> None:  # noqa: B027 - optional hook, most executors hold nothing
        """Release what the executor holds (engine clients, clusters)."""

    def to_record(self, cell: Cell, out: ChildOutcome, facts: dict[str, Any]) -> CellRecord:
        """The record of what the child did, judged on what is known now (the scheduler adds how the cell shared
        the host, and judges it again). `facts`: what the cell reported before its first step."""
        result = out.result or {}
        status, error = outcome_status(cell, out, self.timeout_s)
        metrics = cell_metrics(cell.params, facts, result.get("metrics") or {})
        memory = memory_figures(out.memory, metrics)
        peak, source = primary_peak(memory)
        steps = int(result.get("steps") or 0)
        record = CellRecord(
            cell_id=cell.id,
            device=cell.device,
            params=cell.params,
            status=status,
            error=error,
            peak_memory_bytes=peak,
            peak_memory_source=source,
            memory=memory,
            predicted_peak_bytes=cell.predicted_peak_bytes,
            clock=cell.clock,
            host_seconds=round(out.wall_seconds, 3),
            cpu_seconds=_rounded(out.cpu_seconds),
            device_seconds=_rounded(device_seconds(cell, out, metrics)),
            energy=cell_energy(
                cell.device, cell.clock, out.wall_seconds, out.cpu_seconds, clock_report(metrics), earlier(metrics)
            ),
            throughput=throughput_points(metrics),
            steps=steps,
            metrics=metrics,
            enforcement=self.enforcement,
            swap_excluded=out.swap_excluded,
            executor=self.name,
            role=cell.role,
            resolution=cell.resolution,
            started_at=out.started_at,
            finished_at=now_iso(),
        )
        return judged(record)


def outcome_status(cell: Cell, out: ChildOutcome, timeout_s: float) -> tuple[Status, str | None]:
    """What became of the cell: the executor's observation (timeout, OOM kill) outranks the runner's word."""
    result = out.result or {}
    if out.timed_out:
        return "timeout", f"cell exceeded its {timeout_s:g} s timeout ({cell.clock.axis_label})"
    if out.oom_killed:
        return "oom", f"killed by the kernel at the {cell.device.memory_bytes} byte cap"
    if result.get("status") in ("ok", "oom"):
        return result["status"], result.get("error")
    return "error", result.get("error") or out.stderr_tail or f"cell exited with code {out.returncode} and no result"


def keep_predictions(run_dir: Path, cell_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """Write the per-example predictions a cell sent with its result to the run directory; the record's
    `predictions` metric names the file and its hash. Predictions that do not decode are named in the record
    instead (`predictions_error`), and the cell keeps its other figures."""
    encoded = (result or {}).pop("predictions", None)
    if not encoded:
        return {}
    try:
        data = base64.b64decode(encoded, validate=True)
        ref = ref_for(cell_id, data, decode(data))
    except (ValueError, PredictionsError) as exc:
        return {"predictions_error": f"the cell's predictions were unreadable: {exc}"[:300]}
    write_bytes_atomic(run_dir / ref.file, data)
    return {"predictions": ref.model_dump()}


def device_seconds(cell: Cell, out: ChildOutcome, metrics: dict[str, Any]) -> float | None:
    """The cell's time in its clock's seconds: this process's, and that of the earlier segments of a resumed
    cell up to their last checkpoints (their work after it was redone here)."""
    report = clock_report(metrics)
    own = cell.clock.device_seconds(out.wall_seconds, out.cpu_seconds, report.roofline_extra_s, report.heated_from_s)
    return None if own is None else own + earlier(metrics)


def earlier(metrics: dict[str, Any]) -> float:
    """Device seconds of a resumed cell's earlier processes, up to their last checkpoints."""
    segments = metrics.get("segments")
    if not isinstance(segments, list) or len(segments) < 2:
        return 0.0
    return sum(float(s.get("device_seconds") or 0.0) for s in segments[:-1] if isinstance(s, dict))


def cell_metrics(params: WorkloadParams, facts: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """The runner's metrics over the facts the cell reported before its first step (its dataset, its parameter
    count), which a killed cell's record keeps; one that died before them still says its parameter count."""
    metrics = {**facts, **reported}
    if "param_count" not in metrics and (count := registry_param_count(params)) is not None:
        metrics["param_count"] = count
    return metrics


def registry_param_count(params: WorkloadParams) -> int | None:
    """The model's parameters from its registry shape, with the two-label head a classifier gets on the synthetic
    task and on the shipped tasks (the head the memory model plans with); None for an unknown shape."""
    shape = model_shape(params.model)
    if shape is None:
        return None
    return shape.params + (0 if is_lm(shape, params) else head_size(shape, num_labels=2))


def memory_figures(observed: MemoryFigures, metrics: dict[str, Any]) -> MemoryFigures:
    """The executor's figures, with the CUDA peak the workload measured when the executor could not."""
    if observed.cuda_peak_bytes is None and metrics.get("cuda_peak_bytes") is not None:
        return observed.model_copy(update={"cuda_peak_bytes": metrics["cuda_peak_bytes"]})
    return observed


def collect_events(
    lines: Iterable[bytes | str], cell: Cell, progress: ProgressFn, events: list[dict]
) -> None:
    """Read the runner's JSON-lines channel: keep every event, pass progress on for the live line."""
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a stray line from a library, not an event
        events.append(event)
        if event.get("event") == "progress":
            progress(cell, event)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def primary_peak(memory: MemoryFigures) -> tuple[int | None, str | None]:
    """Compare methods on the process's own peak; the cgroup's figure includes page cache."""
    for source in ("cuda", "rss", "cgroup"):
        value = getattr(memory, f"{source}_peak_bytes")
        if value is not None:
            return value, source
    return None, None
