"""The result record: one JSON object per cell in results.jsonl (schema: harness/schemas/result.schema.json)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.profile import DeviceProfile
from devices.speed import CellClock
from harness.record.energy import Energy
from workloads.metrics import CellMetrics, ThroughputPoint, grouped
from workloads.params import WorkloadParams
from workloads.registry import is_known_name

#: 2: clock, device_seconds; wall_seconds became host_seconds. 3: swap_excluded, cpu_sharing and the checks of
#: `judge` (an older record is judged as it loads, by the checks its facts allow; see Validity.unchecked).
#: 4: dynamic padding (params.padding; older records padded every training batch to seq_len), resumed segments
#: (metrics.segments) and per-example predictions (metrics.predictions). 5: typed metrics in groups
#: (workloads.metrics; older records' flat metrics are grouped as they load).
SCHEMA_VERSION = 5
#: The schema since which a record holds every fact today's checks read: an older one is judged again as it loads.
CHECKED_SINCE = 4
Status = Literal["ok", "oom", "timeout", "error"]
MemorySource = Literal["rss", "cgroup", "cuda"]


class MemoryFigures(BaseModel):
    """Every peak we could read, each from its own source (they differ; README, "How a cell runs")."""

    model_config = ConfigDict(extra="forbid")

    rss_peak_bytes: int | None = Field(None, description="the cell process's own peak RSS (ru_maxrss via wait4)")
    cgroup_peak_bytes: int | None = Field(None, description="cgroup/container peak, includes page cache")
    cuda_peak_bytes: int | None = Field(None, description="torch.cuda.max_memory_allocated, misses the context")


class Validity(BaseModel):
    """MLPerf-style verdict: the record counts only if every rule held (`judge` makes it)."""

    model_config = ConfigDict(extra="forbid")

    valid: bool
    checks: dict[str, bool]

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, held in self.checks.items() if not held)

    @property
    def unchecked(self) -> list[str]:
        """Today's checks this verdict did not run: the record is older than the facts they need, so it cannot
        say whether they hold (reports name them rather than let an unknown pass silently)."""
        return [name for name in CHECKS if name not in self.checks]


class CpuSharing(BaseModel):
    """How a cell shared the host's CPUs with the cells that ran beside it, as the scheduler admitted them."""

    model_config = ConfigDict(extra="forbid")

    demand_cores: float = Field(
        description="the most cores the cells running during this one needed together, its own included"
    )
    host_cores: int = Field(description="the cores the scheduler shared among cells")


Role = Literal["cell", "probe"]


class ProbeOutcome(BaseModel):
    """One probe of a largest-fitting resolution: a few steps of a candidate model under the device's cap."""

    model_config = ConfigDict(extra="forbid")

    model: str
    cell_id: str
    status: Status
    peak_memory_bytes: int | None = None
    cgroup_peak_bytes: int | None = Field(None, description="what the cap binds: the cgroup's peak, page cache included")
    predicted_peak_bytes: int | None = None


class ModelResolution(BaseModel):
    """Why a cell trains the model it does: the largest candidate whose probe trained under the cap."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str] = Field(description="the spec's list, smallest first")
    probe_steps: int = Field(2, description="training steps of each probe")
    model: str = Field(description="the model the cell trains")
    trained: bool = Field(True, description="false when no candidate trained and `model` is the smallest")
    predicted: str | None = Field(None, description="the largest candidate the memory model puts under the cap")
    probes: list[ProbeOutcome] = Field(default_factory=list, description="in the order they ran")
    reason: str


class CellRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or version >= SCHEMA_VERSION:
            return data  # today's, or not a record (its validation says why)
        if data.get("schema_version") == 1 and "wall_seconds" in data:
            data = _from_schema_1(data)
        metrics = data.get("metrics")
        return {**data, "metrics": grouped(metrics)} if isinstance(metrics, dict) else data

    @model_validator(mode="after")
    def _rejudge_older(self) -> CellRecord:
        """A record of an older schema holds the verdict of older checks: judge it by today's, as far as its facts
        go (see `judge`)."""
        if self.schema_version < CHECKED_SINCE:
            self.validity = judge(self)
        return self

    schema_version: int = SCHEMA_VERSION
    cell_id: str
    device: DeviceProfile
    params: WorkloadParams
    status: Status
    error: str | None = None
    peak_memory_bytes: int | None = Field(None, description="the figure to compare methods on")
    peak_memory_source: MemorySource | None = None
    memory: MemoryFigures = Field(default_factory=MemoryFigures)
    predicted_peak_bytes: int | None = Field(None, description="the analytic memory model's estimate")
    clock: CellClock = Field(description="how the cell's seconds relate to the device's, with the ratio and its source")
    host_seconds: float = Field(description="the cell's wall-clock time on this host")
    cpu_seconds: float | None = Field(None, description="the cell process's user + system CPU time on this host")
    device_seconds: float | None = Field(
        None, description="the cell's time in its clock's seconds (scaled: CPU seconds x ratio); None if unknown"
    )
    energy: Energy | None = Field(
        None, description="device joules and the model that gave them; None on the host clock, for a device without "
        "power figures, or in a record written before energy"
    )
    throughput: list[ThroughputPoint] = Field(
        default_factory=list, description="the throughput the device clock ran the cell at over its device time"
    )
    steps: int = 0
    metrics: CellMetrics = Field(default_factory=CellMetrics, description="the workload's own figures")
    enforcement: str
    swap_excluded: bool | None = Field(
        None,
        description="whether swap could hold none of the cell's memory (the cap limits swap too, or the host has "
        "none), so an overrun dies at the cap; None if not recorded",
    )
    executor: str
    role: Role = Field("cell", description="probe: a few steps that find the largest fitting model, not a result")
    resolution: ModelResolution | None = Field(None, description="how a largest-fitting cell's model was chosen")
    overlapped: bool | None = Field(
        None, description="whether another cell of this `edgebench run` ran during this one; None if not known"
    )
    cpu_sharing: CpuSharing | None = Field(
        None, description="the CPUs it shared while overlapped; None if not known"
    )
    validity: Validity = Field(
        default_factory=lambda: Validity(valid=False, checks={}),
        description="the verdict of harness.record.records.judge; a record not judged yet is not valid",
    )
    started_at: str
    finished_at: str


def _from_schema_1(data: dict[str, Any]) -> dict[str, Any]:
    """A record written before device clocks: its times were host seconds on the profile's cores."""
    device = data.get("device") or {}
    cpus = device.get("cpus", 1.0) if isinstance(device, dict) else 1.0
    clock = {
        "kind": "host",
        "requested": "host",
        "cpu_quota_cores": cpus,
        "threads": max(1, math.ceil(cpus)),
        "source": "recorded before device clocks (schema 1): host seconds",
    }
    host_seconds = data.get("wall_seconds")
    rest = {k: v for k, v in data.items() if k != "wall_seconds"}
    return {"clock": clock, "host_seconds": host_seconds, "device_seconds": host_seconds, **rest}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: Caps the kernel enforces on a cell's memory. An rlimit caps address space, not memory, and binds at another
#: size (torch maps far more than it touches); a GPU's CUDA share caps the card on top of the host's cap, not
#: instead of it.
CELL_CGROUPS = ("cgroup-v1", "cgroup-v2")  # a cgroup made for each cell
KERNEL_CAPS = (*CELL_CGROUPS, "container")
#: Metrics round seconds to 4 decimals.
SECONDS_ROUNDING = 1e-4


def cap_by_kernel(record: CellRecord) -> bool:
    """The memory cap was the kernel's: over it the cell dies, as on the device."""
    return record.enforcement in KERNEL_CAPS


def swap_excluded(record: CellRecord) -> bool | None:
    """Swap could hold none of the cell's memory, else a cell over its cap pages out and lives."""
    return record.swap_excluded


def budget_or_cap_reached(record: CellRecord) -> bool:
    """An ok cell trained its whole budget: max_steps steps or max_seconds of training in its clock's seconds,
    whichever ended the loop, or until its validation curve was flat (stop_when_flat: the rule's own end of the
    budget, with its reason recorded). An OOM cell measured what it set out to, the cap stopping it (whether that cap was
    the kernel's is cap_by_kernel's question), so no budget is claimed for it. A timeout or an error was stopped
    by neither and measured nothing."""
    if record.status != "ok":
        return record.status == "oom"
    params, seconds = record.params, record.metrics.timing.train_seconds
    steps_done = params.max_steps is not None and record.steps >= params.max_steps
    time_done = params.max_seconds is not None and seconds is not None and seconds >= params.max_seconds - SECONDS_ROUNDING
    stopped_flat = params.stop_when_flat is not None and record.metrics.timing.stopped_flat is not None
    return steps_done or time_done or stopped_flat


def clock_calibrated(record: CellRecord) -> bool:
    """Device seconds carry the figures they came from: the device's throughput, the host's measured one per
    core and their ratio. Host seconds need none."""
    clock = record.clock
    if clock.kind == "host":
        return True
    if not (clock.device_gflops and clock.host_gflops_per_core):
        return False
    return math.isclose(clock.ratio, clock.host_gflops_per_core / clock.device_gflops, rel_tol=1e-6)


def versions_recorded(record: CellRecord) -> bool:
    """An ok cell names the libraries it ran on (torch at least): results drift between versions. A killed cell
    reports nothing of its own; run.json holds the harness's versions. Today's cells always report them: this
    and the presence checks beside it catch a record that lost them (hand-edited, or from another writer)."""
    if record.status != "ok":
        return True
    versions = record.metrics.versions or {}
    return versions.get("torch") not in (None, "missing")


def data_hashed(record: CellRecord) -> bool:
    """An ok cell identifies its examples: a real task by the sha256 of its deduplicated examples, the synthetic
    one by the seed it is generated from."""
    if record.status != "ok":
        return True
    dataset = record.metrics.dataset
    return dataset is not None and dataset.identified


def model_pinned(record: CellRecord) -> bool | None:
    """The weights are known: by their name for a ladder rung (random weights from a registry config and the
    cell's seed) or a bundled checkpoint whose files are pinned; by the sha256 of its weight files, which an ok
    cell records, for a hub id or a local directory, whose name may mean other weights in another run."""
    if is_known_name(record.params.model) or record.status != "ok":
        return True
    if "model_sha256" not in record.metrics.model_fields_set and record.schema_version < CHECKED_SINCE:
        return None  # recorded before cells hashed their weights: unchecked, not failed
    return bool(record.metrics.model_sha256)


def isolated(record: CellRecord) -> bool | None:
    """A cell alone on the host shared nothing. One that overlapped others is valid only with a cgroup of its own
    (per-cell cgroups or containers; cells of one `container` backend share their container's) and while the CPU
    needs of all the cells running together fit the host's cores (the scheduler admits only such cells: this
    half catches an admission that did not)."""
    if not record.overlapped:
        return None if record.overlapped is None else True
    if not (record.enforcement in CELL_CGROUPS or record.executor == "docker"):
        return False
    sharing = record.cpu_sharing
    return None if sharing is None else sharing.demand_cores <= sharing.host_cores + 1e-9


#: Every check a verdict runs, by name: True or False, or None when the record does not hold the fact it needs.
#: The seed is no check: WorkloadParams always holds one (0 by default).
CHECKS: dict[str, Callable[[CellRecord], bool | None]] = {
    check.__name__: check
    for check in (
        cap_by_kernel,
        swap_excluded,
        budget_or_cap_reached,
        clock_calibrated,
        versions_recorded,
        data_hashed,
        model_pinned,
        isolated,
    )
}


def judge(record: CellRecord) -> Validity:
    """Every check must hold. A fact today's schema records but this record lacks fails its check: the harness
    should have recorded it. A record of an older schema never could: a check it has no fact for is left out of
    its verdict, which names it as unchecked (CellRecord re-judges such records as they load)."""
    current = record.schema_version >= CHECKED_SINCE
    answers = {name: check(record) for name, check in CHECKS.items()}
    checks = {name: bool(held) for name, held in answers.items() if held is not None or current}
    return Validity(valid=all(checks.values()), checks=checks)


def judged(record: CellRecord, **facts: Any) -> CellRecord:
    """The record with its last `facts` set, and its verdict: a new record's one verdict, made by the scheduler
    once the cell has finished, since a verdict must see every fact it reads and how a cell shared the host is
    known only then (older records are judged as they load: CellRecord)."""
    updated = record.model_copy(update=facts)
    return updated.model_copy(update={"validity": judge(updated)})


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema of one results.jsonl line, as committed in harness/schemas/result.schema.json."""
    schema = CellRecord.model_json_schema(mode="serialization")
    schema["title"] = "edgebench result record"
    schema["description"] = "One line of results.jsonl: the outcome of one cell (device x workload)."
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":  # regenerate: python -m harness.record.records > harness/schemas/result.schema.json
    import json

    print(json.dumps(record_json_schema(), indent=2))
