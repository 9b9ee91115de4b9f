"""A cell is one (device, workload) pair; its id is a hash of its content, so it is stable across runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from devices.profile import DeviceProfile
from devices.speed import CellClock, unplanned_clock
from harness.record.records import ModelResolution, Role
from workloads.host_memory import predict_peak_bytes
from workloads.params import WorkloadParams

#: The device fields that change a measurement: its name (a report's row; two named devices are two cells),
#: the caps imposed (memory, cores, processes, GPU memory and whether it is unified; swap is always off) and the
#: throughput the clock converts time with. Descriptions and sources only describe. The cooling enters with its
#: thermal curve (sustained share, time constant) when it throttles. The memory bandwidth is a figure of the
#: roofline clock, like the host's calibration, and stays out (committed ids hold).
DEVICE_IDENTITY = ("name", "memory_bytes", "cpus", "gpu_memory_bytes", "unified_memory", "gflops", "cooling", "pids")
#: Fields added after ids were first hashed, with their defaults: at its default a field stays out of the id.
LATER_DEVICE_FIELDS = {"gpu_memory_bytes": None, "unified_memory": False, "cooling": "fan", "pids": None}
#: The GPU share ids were first hashed with, always empty since: it stays in every id so that no id changes.
RETIRED_DEVICE_FIELDS = {"gpu_memory_fraction": None}


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def device_identity(device: DeviceProfile) -> dict[str, object]:
    """What of a device enters cell ids and the spec's hash: editing a description orphans no run or baseline, and a
    field added later keeps every id of the devices that leave it at its default."""
    fields = {field: getattr(device, field) for field in DEVICE_IDENTITY}
    changed = {k: v for k, v in fields.items() if k not in LATER_DEVICE_FIELDS or v != LATER_DEVICE_FIELDS[k]}
    curve = device.thermal_curve
    if curve.throttles:
        changed["thermal"] = [curve.sustained_share, curve.time_constant_s]
    return {**RETIRED_DEVICE_FIELDS, **changed}


def content_hash(data: object, length: int) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Cell:
    device: DeviceProfile
    params: WorkloadParams
    #: Planned with the spec (harness.plan.spec); a cell made without one runs at host speed.
    clock: CellClock = None  # type: ignore[assignment]
    role: Role = "cell"
    resolution: ModelResolution | None = None
    #: The memory model's figure, made when the cell is planned (`planned_cell`), never in an executor.
    predicted_peak_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.clock is None:
            object.__setattr__(self, "clock", unplanned_clock(self.device))

    @property
    def id(self) -> str:
        """The single source of cell identity (resume, baselines, logs, cgroups): the device's measured fields,
        the workload's fields that differ from their defaults (a new field with a default keeps every id) and
        the clock's kind, which changes what every time figure means; the host's calibration (which varies a
        little between runs) does not enter, so a resume on the same host finds its cells."""
        content = {
            "device": device_identity(self.device),
            "params": self.params.model_dump(exclude_defaults=True),
            "clock": self.clock.kind,
        }
        if self.role != "cell":  # a probe is its own measurement, never the cell of the same params
            content["role"] = self.role
        return content_hash(content, 12)

    @property
    def label(self) -> str:
        """Short and human: device/model/method/batch/seed, with the tuning when it is not full (MeZO on the
        head and full MeZO of one model are different experiments) and a backprop optimizer other than AdamW.
        The id tells every cell apart."""
        p = self.params
        method = p.method if p.tuning == "full" else f"{p.method}+{p.tuning}"
        if p.method.startswith("bp") and p.optimizer != "adamw":  # BP with SGD fits other models than with AdamW
            method += f"+{p.optimizer}"
        probe = " (probe)" if self.role == "probe" else ""
        return f"{self.device.name}/{p.model}/{method}/b{p.batch}/s{p.seed}{probe}"


def planned_cell(device: DeviceProfile, params: WorkloadParams, clock: CellClock, **extra: object) -> Cell:
    """A cell as the planner makes it: with its clock and its predicted peak, decided once, here."""
    return Cell(device, params, clock, predicted_peak_bytes=predict_peak_bytes(params, clock.threads), **extra)  # type: ignore[arg-type]
