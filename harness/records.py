"""The result record: one JSON object per cell in results.jsonl (schema: harness/schemas/result.schema.json)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.profile import DeviceProfile
from devices.speed import CellClock
from workloads.params import WorkloadParams

SCHEMA_VERSION = 2  # 2: clock, device_seconds; wall_seconds became host_seconds
Status = Literal["ok", "oom", "timeout", "error"]
MemorySource = Literal["rss", "cgroup", "cuda"]


class MemoryFigures(BaseModel):
    """Every peak we could read, each from its own source (they differ; see DESIGN.md)."""

    model_config = ConfigDict(extra="forbid")

    rss_peak_bytes: int | None = Field(None, description="the cell process's own peak RSS (ru_maxrss via wait4)")
    cgroup_peak_bytes: int | None = Field(None, description="cgroup/container peak, includes page cache")
    cuda_peak_bytes: int | None = Field(None, description="torch.cuda.max_memory_allocated, misses the context")


class Validity(BaseModel):
    """MLPerf-style verdict: the record counts only if every rule held."""

    model_config = ConfigDict(extra="forbid")

    valid: bool
    checks: dict[str, bool]


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
        if isinstance(data, dict) and data.get("schema_version") == 1 and "wall_seconds" in data:
            return _from_schema_1(data)
        return data

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
    steps: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict, description="the workload's own figures")
    enforcement: str
    executor: str
    role: Role = Field("cell", description="probe: a few steps that find the largest fitting model, not a result")
    resolution: ModelResolution | None = Field(None, description="how a largest-fitting cell's model was chosen")
    overlapped: bool | None = Field(
        None, description="whether another cell of this `edgebench run` ran during this one; None if not known"
    )
    validity: Validity
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


def judge(
    params: WorkloadParams,
    status: Status,
    steps: int,
    metrics: dict[str, Any],
    enforced: bool,
) -> Validity:
    """A record is valid only when its cap was really enforced and the run is reproducible and complete."""
    budget_met = status != "ok" or (
        (params.max_steps is not None and steps >= params.max_steps)
        or (params.max_seconds is not None and metrics.get("train_seconds", 0) >= params.max_seconds * 0.95)
    )
    checks = {
        "cap_enforced": enforced,
        "no_error": status != "error",
        "budget_reached": budget_met,
        "seed_recorded": params.seed is not None,
        "versions_recorded": status != "ok" or bool(metrics.get("versions")),
    }
    return Validity(valid=all(checks.values()), checks=checks)


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema of one results.jsonl line, as committed in harness/schemas/result.schema.json."""
    schema = CellRecord.model_json_schema(mode="serialization")
    schema["title"] = "edgebench result record"
    schema["description"] = "One line of results.jsonl: the outcome of one cell (device x workload)."
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":  # regenerate: python -m harness.records > harness/schemas/result.schema.json
    import json

    print(json.dumps(record_json_schema(), indent=2))
