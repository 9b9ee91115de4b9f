"""What every executor shares: the interface and how a finished child becomes a record."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import ValidationError

from devices.cache import allocator_environment
from devices.environment import OFFLINE_ENV
from devices.validation import validation_message
from harness.record.cells import Cell
from harness.record.energy import cell_energy
from harness.record.records import CellRecord, MemoryFigures, Status, now_iso
from harness.record.store import write_bytes_atomic
from workloads.memory_model import param_count
from workloads.metrics import CellMetrics
from workloads.params import WorkloadParams
from workloads.predictions import PredictionsError, decode, ref_for
from workloads.registry import model_shape
from workloads.resumable import Checkpointing, StatePlan, resumable

ProgressFn = Callable[[Cell, dict[str, Any]], None]

#: The only variables of the harness's environment a cell inherits: locale, PATH, where caches are and the C
#: allocator's tuning (`devices.cache.allocator_environment`, part of the host the cells measure). Tokens
#: (HF_TOKEN), cloud and CI secrets, proxies and PYTHON* stay with the harness.
INHERITED_ENV = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "HOME", "USER", "LOGNAME", "TMPDIR",
        "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR",
        "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "EDGEBENCH_CACHE", "EDGEBENCH_HOST_SPEED",
    }
)  # fmt: skip
INHERITED_PREFIXES = ("LC_",)


def cpu_need(cell: Cell) -> float:
    """The cores a cell keeps busy: on a throttled clock its CFS quota, otherwise its torch threads (the device's
    cores on this host's, or fewer on a scaled clock: devices.speed.cell_threads)."""
    return cell.clock.cpu_quota_cores if cell.clock.throttled else cell.clock.threads


def cell_env(*layers: dict[str, str]) -> dict[str, str]:
    """A cell's environment: the allow-listed part of the harness's (INHERITED_ENV), then `layers` (the cap's, the
    cell user's, the state plan's), then OFFLINE_ENV, which always wins."""
    env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith(INHERITED_PREFIXES)}
    env.update(allocator_environment())
    for layer in layers:
        env.update(layer)
    return env | OFFLINE_ENV


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
    violation: str | None = None  # a bound on the cell's output it crossed (CellOutput), which stopped it


class Executor(ABC):
    name: ClassVar[str]

    def __init__(
        self,
        run_dir: Path,
        timeout_s: float,
        enforcement: str = "auto",
        checkpointing: Checkpointing | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.timeout_s = timeout_s
        self.enforcement_requested = enforcement
        self.checkpointing = checkpointing  # the spec's; None: cells are not checkpointed
        self.stop = threading.Event()  # set on Ctrl-C: running cells are killed and cleaned up

    @property
    @abstractmethod
    def enforcement(self) -> str:
        """The backend that actually caps cells (recorded in run.json and every record)."""

    @property
    @abstractmethod
    def throttles(self) -> bool:
        """Whether cells get a CPU quota, which the device-throttled clock needs."""

    @property
    def governs(self) -> bool:
        """Whether a throttled cell's quota can follow its board's thermal curve while it runs (devices.governor)."""
        return False

    @abstractmethod
    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        """Run the cell's child under its caps and report what happened."""

    #: Whom cells run as, when the executor chose (a root harness's unprivileged cell user, or "root: why not");
    #: None: as the harness's own user.
    cells_run_as: str | None = None
    #: Whether cells may use the host's network (the spec and the operator both allowed it); only local cells can.
    allow_network: bool = False

    def admit(self, cells: list[Cell]) -> None:  # noqa: B027 - optional hook, a local host runs any cell
        """Refuse up front, as a UserError, cells this executor could never run (before any cell runs)."""

    def state_plan(self, cell: Cell, directory: Path) -> StatePlan | None:
        """A resumable cell's checkpoint plan, its state in `directory`, when this run checkpoints."""
        settings = self.checkpointing
        if settings is None or not resumable(cell.params, probe=cell.role == "probe"):
            return None
        return StatePlan(
            directory=str(directory),
            every_seconds=settings.every_seconds,
            cell_id=cell.id,
            journal=settings.mezo == "journal",
        )

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
        """The record of what the child did, not judged yet: the verdict needs how the cell shared the host, which
        only the scheduler knows (harness.scheduler judges it). `facts`: what the cell reported before its first
        step."""
        result = out.result or {}
        status, error = outcome_status(cell, out, self.timeout_s)
        metrics, refused = cell_metrics(cell.params, facts, result.get("metrics") or {})
        if refused and status == "ok":
            status, error = "error", refused
        memory = memory_figures(out.memory, metrics)
        peak, source = primary_peak(memory)
        steps = int(result.get("steps") or 0)
        return CellRecord(
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
                cell.device, cell.clock, out.wall_seconds, out.cpu_seconds, metrics.device_clock, metrics.timing.earlier_device_seconds
            ),
            throughput=metrics.device_clock.throughput,
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


def outcome_status(cell: Cell, out: ChildOutcome, timeout_s: float) -> tuple[Status, str | None]:
    """What became of the cell: the executor's observation (timeout, OOM kill) outranks the runner's word."""
    result = out.result or {}
    if out.violation:
        return "error", out.violation
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


def device_seconds(cell: Cell, out: ChildOutcome, metrics: CellMetrics) -> float | None:
    """The cell's time in its clock's seconds: this process's, and that of the earlier segments of a resumed
    cell up to their last checkpoints (their work after it was redone here)."""
    report = metrics.device_clock
    own = cell.clock.device_seconds(out.wall_seconds, out.cpu_seconds, report.roofline_extra_s, report.heated_from_s)
    return None if own is None else own + metrics.timing.earlier_device_seconds


def cell_metrics(
    params: WorkloadParams, facts: dict[str, Any], reported: dict[str, Any]
) -> tuple[CellMetrics, str | None]:
    """The runner's metrics over the facts the cell reported before its first step (its dataset, its parameter
    count), which a killed cell's record keeps; one that died before them still says its parameter count. Metrics
    that are not workloads.metrics' are refused, with one line saying why (the record keeps the facts alone)."""
    refused = None
    try:
        metrics = CellMetrics.model_validate({**facts, **reported})
    except ValidationError as exc:
        refused = f"the cell's metrics are not workloads.metrics': {validation_message(exc, under='metrics')}"
        metrics = _facts_only(facts)
    if metrics.param_count is None and (shape := model_shape(params.model)) is not None:
        metrics.param_count = param_count(shape, params)
    return metrics, refused


def _facts_only(facts: dict[str, Any]) -> CellMetrics:
    try:
        return CellMetrics.model_validate(facts)
    except ValidationError:
        return CellMetrics()


def memory_figures(observed: MemoryFigures, metrics: CellMetrics) -> MemoryFigures:
    """The executor's figures, with the CUDA peak the workload measured when the executor could not."""
    reported = metrics.memory.cuda_peak_bytes
    if observed.cuda_peak_bytes is None and reported is not None:
        return observed.model_copy(update={"cuda_peak_bytes": reported})
    return observed


#: Bounds on what the harness, which has no cap, takes in of a cell: a longer line, more kept events or a larger
#: stderr log stops the cell, recorded `error` with the reason. A line: the result line carries the cell's
#: per-example predictions base64-encoded, a few hundred KB for a whole test split (Rotten Tomatoes' 1,066 reviews);
#: 64 MiB is about a hundred times that and still leaves the harness well under 200 MiB when a cell prints without
#: end. Events: the runner sends a few besides its throttled progress (which is passed on, never kept); what is kept
#: (events, facts) is bounded by their number and, together, by MAX_LINE_BYTES.
MAX_LINE_BYTES = 64 << 20
MAX_EVENTS = 10_000
MAX_LOG_BYTES = 64 << 20
CHUNK_BYTES = 1 << 16


class CellOutput:
    """Reads a cell's JSON-lines channel and stderr within the bounds above. The first bound a cell crosses is its
    `violation`; `on_violation` (the executor's) then stops the cell, and whatever else it sends is dropped.
    `on_heating` runs when the cell says it takes its first step (a governed clock's board starts to heat there)."""

    def __init__(
        self,
        cell: Cell,
        progress: ProgressFn,
        on_violation: Callable[[str], None] = lambda why: None,
        on_heating: Callable[[], None] = lambda: None,
    ):
        self.cell, self.progress, self.on_violation, self.on_heating = cell, progress, on_violation, on_heating
        self.events: list[dict[str, Any]] = []
        self.violation: str | None = None
        self._kept = self._kept_bytes = 0  # events kept (not progress), and their size
        self._lock = threading.Lock()

    def violate(self, why: str) -> None:
        with self._lock:
            if self.violation is not None:
                return
            self.violation = why
        self.on_violation(why)

    def read_events(self, chunks: Iterable[bytes]) -> None:
        """Split `chunks` into lines and read each as an event, holding at most MAX_LINE_BYTES of one line."""
        pending = bytearray()
        for chunk in chunks:
            if self.violation is not None:
                continue  # drain: the cell is being stopped
            scanned = len(pending)
            pending += chunk
            while (newline := pending.find(b"\n", scanned)) >= 0:
                self._event(bytes(pending[:newline]))
                del pending[: newline + 1]
                scanned = 0
            if len(pending) > MAX_LINE_BYTES:
                pending = bytearray()
                self.violate(f"the cell wrote a line of over {MAX_LINE_BYTES >> 20} MiB on its event channel; stopped")
        if pending and self.violation is None:
            self._event(bytes(pending))

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return  # a stray line from a library, not an event
        if not isinstance(event, dict):
            return
        progress = event.get("event") == "progress"
        if not progress or event.get("facts"):  # kept, here or in the record's facts
            self._kept += 1
            self._kept_bytes += len(line)
            if self._kept > MAX_EVENTS or self._kept_bytes > MAX_LINE_BYTES:
                self.violate(f"the cell sent over {MAX_EVENTS} events or {MAX_LINE_BYTES >> 20} MiB of them; stopped")
                return
        if progress:
            if event.get("heating"):
                self.on_heating()
            self.progress(self.cell, event)
        else:
            self.events.append(event)

    def copy_log(self, chunks: Iterable[bytes], log: BinaryIO) -> None:
        """Write the cell's stderr to its log, up to MAX_LOG_BYTES; until the executor closes the log, which it
        does when it abandons the cell (Ctrl-C, SIGTERM: an interrupted cell is no result)."""
        written = 0
        with contextlib.suppress(ValueError):  # I/O on the closed log
            for chunk in chunks:
                if self.violation is not None and written >= MAX_LOG_BYTES:
                    continue
                room = MAX_LOG_BYTES - written
                log.write(chunk[:room])
                log.flush()  # the log is read while the cell runs (by people, and by tests)
                written += min(len(chunk), room)
                if len(chunk) > room:
                    log.write(b"\nedgebench: log cut here: the cell wrote over the limit\n")
                    self.violate(f"the cell wrote over {MAX_LOG_BYTES >> 20} MiB to stderr; stopped")
            log.flush()

    def results(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "result"]


def chunks_of(stream: BinaryIO) -> Iterator[bytes]:
    """A pipe's bytes as they come, in chunks of at most CHUNK_BYTES, until its end."""
    fd = stream.fileno()
    while chunk := os.read(fd, CHUNK_BYTES):
        yield chunk


def tail_of(log: BinaryIO, size: int = CHUNK_BYTES) -> bytes:
    """The last `size` bytes of a log, without reading the rest."""
    log.seek(0, os.SEEK_END)
    end = log.tell()
    log.seek(max(0, end - size))
    return log.read()


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def primary_peak(memory: MemoryFigures) -> tuple[int | None, str | None]:
    """Compare methods on the process's own peak; the cgroup's figure includes page cache."""
    for source in ("cuda", "rss", "cgroup"):
        value = getattr(memory, f"{source}_peak_bytes")
        if value is not None:
            return value, source
    return None, None
