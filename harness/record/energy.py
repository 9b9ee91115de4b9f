"""A cell's device clock as the record keeps it: device seconds with the roofline's correction, the throughput it
ran at over time, and its energy from the device's power figures (devices.board)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from devices.board import ENERGY_MODEL, joules
from devices.profile import DeviceProfile
from devices.speed import CellClock
from workloads.metrics import DeviceClock


class Energy(BaseModel):
    """Device joules of a cell, with the figures and the model they came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    joules: float = Field(ge=0)
    device_seconds: float = Field(ge=0, description="the cell's device time")
    burst_seconds: float = Field(ge=0, description="the cell's work in device seconds at burst speed")
    idle_watts: float
    load_watts: float
    model: str = ENERGY_MODEL
    source: str


def cell_energy(
    device: DeviceProfile, clock: CellClock, wall: float, cpu: float | None, report: DeviceClock, earlier: float
) -> Energy | None:
    """Joules of a cell on a device clock whose device gives power figures; None on the host clock or without them.
    `earlier`: device seconds of a resumed cell's earlier processes, charged at full load."""
    if device.power is None or clock.kind == "host":
        return None
    work = clock.burst_work(wall, cpu, report.roofline_extra_s)
    elapsed = clock.device_seconds(wall, cpu, report.roofline_extra_s, report.heated_from_s)
    if work is None or elapsed is None:
        return None
    total_work, total_elapsed = work + earlier, elapsed + earlier
    return Energy(
        joules=round(joules(device.power, total_elapsed, total_work), 3),
        device_seconds=round(total_elapsed, 4),
        burst_seconds=round(total_work, 4),
        idle_watts=device.power.idle_watts,
        load_watts=device.power.load_watts,
        source=device.power.source,
    )
