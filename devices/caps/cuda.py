"""The GPU memory of a profile, applied inside the cell process once torch is imported.

A profile gives GPU memory in bytes, never as a share: half of an 80 GB card is not a 4 GB board. The cell turns
the bytes into `torch.cuda.set_per_process_memory_fraction` of the card it finds (bytes / the card's total), and
refuses a device with more GPU memory than the card. On a unified-memory board (Jetson) host and GPU draw on one
cap: what the process holds on the host when the cap is set is not the GPU's. Host memory is still capped by the
host backend; the CUDA peak is read from `max_memory_allocated` (which misses the CUDA context, so it is recorded
as its own source, beside the host's peak).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import psutil

from devices.profile import format_bytes

if TYPE_CHECKING:
    from devices.profile import DeviceProfile

# Environment variables the cell reads (set by the cap backends, see devices/caps/base.py).
ENV_GPU_MEMORY = "EDGEBENCH_GPU_MEMORY"
ENV_GPU_UNIFIED = "EDGEBENCH_GPU_UNIFIED"


class GpuCapError(RuntimeError):
    """The card this cell runs on cannot hold the device's GPU memory."""


def gpu_env(profile: DeviceProfile) -> dict[str, str]:
    """What a cell needs to cap its CUDA allocations: the device's GPU bytes, and whether they are unified."""
    cap = profile.gpu_cap_bytes
    if cap is None:
        return {}
    return {ENV_GPU_MEMORY: str(cap), **({ENV_GPU_UNIFIED: "1"} if profile.unified_memory else {})}


def gpu_fraction(cap_bytes: int, card_bytes: int, host_bytes: int = 0) -> float:
    """The share of the card that is the device's GPU memory: `cap_bytes` less `host_bytes` (what the process
    already holds of a unified cap), over the card's total. A device larger than the card is refused: its cap
    would never bind."""
    if cap_bytes > card_bytes:
        raise GpuCapError(
            f"the device's {format_bytes(cap_bytes)} of GPU memory exceeds this card's {format_bytes(card_bytes)}; "
            "pick a device with less GPU memory or run on a larger card"
        )
    usable = cap_bytes - host_bytes
    if usable <= 0:
        raise GpuCapError(
            f"the process already holds {format_bytes(host_bytes)} of the device's unified "
            f"{format_bytes(cap_bytes)} before CUDA starts; pick a device with more memory"
        )
    return usable / card_bytes


def apply_gpu_fraction(torch) -> float | None:
    """Cap this process's CUDA allocations at the profile's GPU bytes; returns the fraction of the card applied,
    or None when the device has no GPU or no CUDA device is visible (the cell then runs on the CPU)."""
    value = os.environ.get(ENV_GPU_MEMORY)
    if not value or not torch.cuda.is_available():
        return None
    host = psutil.Process().memory_info().rss if os.environ.get(ENV_GPU_UNIFIED) else 0
    fraction = gpu_fraction(int(value), torch.cuda.get_device_properties(0).total_memory, host)
    torch.cuda.set_per_process_memory_fraction(fraction)
    torch.cuda.reset_peak_memory_stats()
    return fraction


def cuda_peak_bytes(torch) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def cuda_unavailable_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None
