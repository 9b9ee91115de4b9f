"""Each device's clock, planned once per run from the spec's clock kind, the host's calibration and its cores."""

from __future__ import annotations

import os
from pathlib import Path

from devices.host_speed import HostSpeed, host_speed
from devices.profile import DeviceProfile
from devices.roofline import host_bandwidth
from devices.speed import CellClock, Clock, ClockError, plan_clock
from harness.record.errors import UserError


def plan_clocks(
    clock: Clock, devices: list[DeviceProfile], origin: Path
) -> tuple[HostSpeed | None, dict[str, CellClock]]:
    """Each device's clock, decided once for all its cells; the host is calibrated only when a device clock
    needs it (measured once per environment, then cached)."""
    needs_host = clock != "host" and any(d.gflops is not None for d in devices)
    host = host_speed() if needs_host else None
    bandwidth = host_bandwidth() if needs_host and clock == "device-scaled" else None
    cores = os.cpu_count() or 1
    try:
        return host, {d.name: plan_clock(d, clock, host, cores, bandwidth) for d in devices}
    except ClockError as exc:
        raise UserError(f"{origin}: clock: {exc}") from None
