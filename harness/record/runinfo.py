"""run.json as one typed record: what a run was, on what, with which versions. `edgebench run` builds it
(harness.run.runinfo), the store writes and merges it (harness.record.store), reports read it by attribute.

Fields added since the first run.json have defaults, so an older file loads with them empty; a field no writer
ever wrote is refused (extra="forbid"), as in the cell records."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.host_speed import HostSpeed
from devices.profile import DeviceProfile
from devices.speed import CellClock
from harness.record.records import ModelResolution
from harness.record.thresholds import Thresholds
from workloads.host_memory import HostMemoryFacts
from workloads.params import WorkloadParams


class HostFacts(BaseModel):
    """The machine the writer ran on."""

    model_config = ConfigDict(extra="forbid")

    hostname: str
    platform: str
    machine: str = ""
    cpus: int | None
    memory_bytes: int
    in_ci: bool = False


class RunSpec(BaseModel):
    """The run's spec as the planner validated it (harness.plan.spec.Spec, a layer above this one, so its other
    fields are kept as written): the fields reports read are typed here."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    description: str = ""
    timeout_s: int | float | None = Field(None, description="per-cell limit, as the spec gave it")
    thresholds: Thresholds = Thresholds()


class ArmResolution(ModelResolution):
    """One largest-fitting arm: its device and workload (`params.model` is the largest candidate), and the model
    it resolved to and why."""

    arm: str = ""
    device: str
    params: WorkloadParams

    @model_validator(mode="before")
    @classmethod
    def _arm_model(cls, data: Any) -> Any:
        """Files written before the arm's params kept their model: it is the largest candidate."""
        if (
            isinstance(data, dict)
            and isinstance(params := data.get("params"), dict)
            and "model" not in params
        ):
            candidates = data.get("candidates") or [data.get("model")]
            return {**data, "params": {**params, "model": candidates[-1]}}
        return data


class RunInfo(BaseModel):
    """One writer's run.json (run.DEVICE.json for a `--device` slice), or the merge of every writer's
    (harness.record.store.read_run_info)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    started_at: str
    spec_path: str
    spec_hash: str
    spec: RunSpec
    devices: list[DeviceProfile]
    cells: list[str] = Field(
        description="the cells the run expects (once probing is done, its largest-fitting ones)"
    )
    cell_labels: dict[str, str] = {}
    largest_fitting_arms: list[str] = Field([], description="lets a report name the cells still missing")
    clock: str | None = None
    host_speed: HostSpeed | None = Field(
        None, description="the calibration the device clocks were planned with"
    )
    clocks: dict[str, CellClock] = Field({}, description="device name -> the clock of its cells")
    executor: str
    enforcement: str
    cell_user: str | None = None
    jobs: int = Field(
        1, description="with `slice`, how the cells shared the host (see each record's `overlapped`)"
    )
    slice: list[str] | None = Field(None, description="the devices of a `--device` writer")
    slice_after: str | None = Field(
        None, description="compose: the slice that ran before this one ('' for the first)"
    )
    host: HostFacts
    memory_model: list[HostMemoryFacts] = Field(
        [], description="the memory model's measured terms per thread count"
    )
    versions: dict[str, str | None]
    resolutions: list[ArmResolution] = []


def run_info_json_schema() -> dict[str, Any]:
    """The JSON Schema of run.json, as committed in harness/schemas/run.schema.json."""
    schema = RunInfo.model_json_schema(mode="serialization")
    schema["title"] = "edgebench run info"
    schema["description"] = (
        "run.json (run.DEVICE.json for a --device slice): what a run was, on what, with which versions."
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":  # regenerate: python -m harness.record.runinfo > harness/schemas/run.schema.json
    import json

    print(json.dumps(run_info_json_schema(), indent=2))
