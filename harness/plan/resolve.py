"""Largest-fitting models: which model of a spec's list each device trains with each workload, found by probing.

A matrix block may give `model: {largest_fitting: [smallest, ..., largest]}`. Every device and every
combination of the block's other axes is a *fit search* (FitSearch; not an *arm*, which in reports is a method
and its tuning). For each search the harness probes candidates, each for a few
steps under the device's caps, starting from the largest one the analytic memory model puts within PROBE_HEADROOM
above the cap, then up while probes train or down while they are killed, until a candidate that trains sits under
one that does not (or the list ends). That candidate is the search's model: its cell runs with the search's own budget
and carries the resolution in its record (with `probe_only: true` the probes are the result, as in a fit
sweep). Probes are recorded too, marked `role: probe`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.profile import DeviceProfile, format_bytes
from devices.speed import CellClock
from harness.record.cells import Cell, planned_cell
from harness.record.records import CellRecord, ModelResolution, ProbeOutcome
from workloads.params import WorkloadParams
from workloads.registry import PRETRAINED, ladder_names

#: Ladders a spec may name instead of listing candidates (workloads.registry).
LADDERS = ("opt", "bert", PRETRAINED)

#: Probing starts from the largest candidate predicted within these bytes over the cap. The memory model
#: predicts the process's RSS within 8% (benchmarks/bench_memory_model.py), but the cap binds the cgroup's
#: charge, which leaves out library pages another process loaded first: a fixed amount, not a share of the cap,
#: 154-269 MiB below RSS in the paper-fit reference (LoRA on MPNet aside: its frozen weights stay in the mmapped
#: checkpoint, 638 MiB). Starting higher costs an OOM probe per rung (a 30% margin started 2 GB boards' MPNet
#: backprop three rungs above its fit); starting lower, a walk up.
PROBE_HEADROOM = 256 << 20


class LargestFitting(BaseModel):
    """The `model` axis of a block that asks for the largest model that trains under each device's cap."""

    model_config = ConfigDict(extra="forbid")

    largest_fitting: list[str] = Field(
        min_length=1, description="candidate models, smallest first, or a ladder's name (opt, bert, pretrained)"
    )
    probe_steps: int = Field(2, ge=1, le=100, description="training steps of each probe")
    probe_only: bool = Field(False, description="the probes are the result (a fit sweep): no cell trains the model")

    @field_validator("largest_fitting", mode="before")
    @classmethod
    def _ladder(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value not in LADDERS:
            raise ValueError(f"{value!r} is not a ladder; name one of {', '.join(LADDERS)} or list the models")
        return ladder_names(value)


def probe_params(params: WorkloadParams, probe_steps: int) -> WorkloadParams:
    """A few steps of the cell's model with its shape of work (method, tuning, batch, length, optimizer, and the
    cell's evaluation before its first step: it leaves the heap larger, by 67 MiB for MPNet-L6 backprop, whose
    cells a probe without it had passed were killed at the 2 GB cap before one step); what does not change memory
    (seed, learning rate and its schedule, queries, budget, evaluations during training) is fixed, so that searches
    differing only there share their probes."""
    return params.model_copy(
        update={
            "max_steps": probe_steps,
            "max_seconds": None,
            "eval_every": None,
            "eval_seconds": None,
            "seed": 0,
            "lr": None,
            "lr_schedule": "constant",
            "warmup_steps": 0,
            "n_queries": 1,
        }
    )


def killed_cells(records: Iterable[CellRecord]) -> dict[str, CellRecord]:
    """Resolved cells the kernel killed at the cap, under the id of the probe that had let their model through:
    a cell's longer run is the better evidence (page cache charged to it, allocator growth), so its model no
    longer counts as fitting and the search resolves again, one model down."""
    killed = {}
    for record in records:
        if record.role == "cell" and record.status == "oom" and record.resolution is not None:
            probe = probe_params(record.params, record.resolution.probe_steps)
            killed[Cell(record.device, probe, record.clock, role="probe").id] = record
    return killed


@dataclass(frozen=True)
class FitSearch:
    """One device and one workload whose model is to be resolved (run.json calls its label an arm: the key
    stays so that committed runs load); `params.model` is the largest candidate."""

    device: DeviceProfile
    clock: CellClock
    params: WorkloadParams
    candidates: tuple[str, ...]
    probe_steps: int
    probe_only: bool = False

    def probe_params(self, model: str) -> WorkloadParams:
        return probe_params(self.params.model_copy(update={"model": model}), self.probe_steps)

    @cached_property
    def probes(self) -> dict[str, Cell]:
        return {m: planned_cell(self.device, self.probe_params(m), self.clock, role="probe") for m in self.candidates}

    @cached_property
    def first(self) -> int:
        """Index of the first candidate to probe: the largest predicted within the headroom over the cap."""
        limit = self.device.memory_bytes + PROBE_HEADROOM
        within = [i for i, m in enumerate(self.candidates) if (self.probes[m].predicted_peak_bytes or 0) <= limit]
        return within[-1] if within else 0

    @cached_property
    def predicted(self) -> str | None:
        """The largest candidate the memory model puts under the cap, beside the measured one in reports."""
        cap = self.device.memory_bytes
        fitting = [m for m in self.candidates if (self.probes[m].predicted_peak_bytes or cap + 1) <= cap]
        return fitting[-1] if fitting else None

    @property
    def label(self) -> str:
        return Cell(self.device, self.params, self.clock).label.replace(f"/{self.params.model}/", "/largest-fitting/")

    def cell(self, resolution: ModelResolution) -> Cell:
        params = self.params.model_copy(update={"model": resolution.model})
        return planned_cell(self.device, params, self.clock, resolution=resolution)


@dataclass(frozen=True)
class Progress:
    """Where a search's probing stands: the next probe to run, or the resolution, or a probe that failed."""

    next_probe: Cell | None = None
    resolution: ModelResolution | None = None
    failed: Cell | None = None


def _outcome(model: str, record: CellRecord) -> ProbeOutcome:
    return ProbeOutcome(
        model=model,
        cell_id=record.cell_id,
        status=record.status,
        peak_memory_bytes=record.peak_memory_bytes,
        cgroup_peak_bytes=record.memory.cgroup_peak_bytes,
        predicted_peak_bytes=record.predicted_peak_bytes,
    )


def advance(search: FitSearch, outcomes: dict[str, CellRecord]) -> Progress:
    """Bracket the largest model that trains: from the first candidate walk up while probes train; if the first
    was killed at the cap, walk down to the first that trains. An error or timeout stops the search (a broken model
    or workload is not "too large"); a probe without a record is the next to run."""
    probed: list[ProbeOutcome] = []
    found: str | None = None
    first = search.first
    walks = (range(first, len(search.candidates)), range(first - 1, -1, -1))
    for walk, (up, indices) in enumerate(zip((True, False), walks, strict=True)):
        if walk and found is not None:
            break
        for i in indices:
            model = search.candidates[i]
            record = outcomes.get(search.probes[model].id)
            if record is None:
                return Progress(next_probe=search.probes[model])
            probed.append(_outcome(model, record))
            if record.status in ("error", "timeout"):
                return Progress(failed=search.probes[model])
            if record.status == "ok":
                found = model
                if not up:
                    break
            elif up:
                break
    return Progress(resolution=_resolution(search, found, probed))


def _resolution(search: FitSearch, found: str | None, probes: list[ProbeOutcome]) -> ModelResolution:
    by_model = {p.model: p for p in probes}
    if found is None:
        model = search.candidates[0]
        reason = "no candidate trained under the cap; the cell runs the smallest to record its outcome"
    else:
        model = found
        probe = by_model[found]
        peaks = f"peak {format_bytes(probe.peak_memory_bytes)}" + (
            f", cgroup {format_bytes(probe.cgroup_peak_bytes)}" if probe.cgroup_peak_bytes else ""
        )
        cap = format_bytes(search.device.memory_bytes)
        reason = f"the largest candidate whose {search.probe_steps}-step probe trained under the {cap} cap ({peaks})"
        above = search.candidates.index(found) + 1
        if above == len(search.candidates):
            reason += "; it is the largest candidate"
        else:
            reason += f"; the next larger, {search.candidates[above]}, was killed at the cap"
    return ModelResolution(
        candidates=list(search.candidates),
        probe_steps=search.probe_steps,
        model=model,
        trained=found is not None,
        predicted=search.predicted,
        probes=probes,
        reason=reason,
    )


def resolve_searches(
    searches: Iterable[FitSearch], outcomes: dict[str, CellRecord], run_probes: Callable[[list[Cell]], list[CellRecord]]
) -> tuple[list[tuple[FitSearch, ModelResolution]], list[Cell]]:
    """Probe in rounds (the next probe of every unresolved search, shared probes once) until each search is resolved
    or has a failed probe. Returns each resolved search with its resolution, and the probes that failed."""
    outcomes = dict(outcomes)
    pending = list(searches)
    resolved: list[tuple[FitSearch, ModelResolution]] = []
    failed: dict[str, Cell] = {}
    while pending:
        states = [(search, advance(search, outcomes)) for search in pending]
        resolved += [(search, s.resolution) for search, s in states if s.resolution]
        failed.update({s.failed.id: s.failed for _, s in states if s.failed})
        pending = [search for search, s in states if s.next_probe]
        probes = {s.next_probe.id: s.next_probe for _, s in states if s.next_probe}
        if probes:
            outcomes.update({r.cell_id: r for r in run_probes(list(probes.values()))})
            unrecorded = set(probes) - set(outcomes)
            if unrecorded:  # the scheduler records every cell it runs; without a record this would loop
                raise RuntimeError(f"probes gave no record: {sorted(unrecorded)}")
    return resolved, list(failed.values())
