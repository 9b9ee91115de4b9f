"""Whether this host can simulate a device: a memory cap above the host's memory never binds."""

from __future__ import annotations

import psutil

from devices.profile import DeviceProfile, format_bytes
from harness.record.errors import UserError


def host_capacity_problem(device: DeviceProfile, host_bytes: int) -> str | None:
    """Why a host with `host_bytes` of memory cannot simulate the device (one line), or None when it can: a cap
    above the host's memory never binds, so its cells would measure the host, not the device."""
    if device.memory_bytes <= host_bytes:
        return None
    return (
        f"device {device.name} caps memory at {format_bytes(device.memory_bytes)} but this host has "
        f"{format_bytes(host_bytes)}, so the cap could never bind; pick a smaller device or run on a host "
        "with more memory"
    )


def host_memory_bytes() -> int:
    """The memory of the machine a local or Docker cell runs on (a Ray cell's node is the executor's to check)."""
    return psutil.virtual_memory().total


def check_host_capacity(devices: list[DeviceProfile], host_bytes: int | None = None) -> None:
    """Refuse, before any cell runs, a device this host cannot simulate (UserError: one line, exit 2)."""
    total = host_bytes or host_memory_bytes()
    for device in devices:
        problem = host_capacity_problem(device, total)
        if problem:
            raise UserError(problem)
