"""The GPU share of a profile, applied inside the cell process once torch is imported.

Host memory is still capped by the host backend; this caps the CUDA caching allocator with
`torch.cuda.set_per_process_memory_fraction`, and reads the peak from `max_memory_allocated`
(which misses the CUDA context, so it is recorded as its own source).
"""

from __future__ import annotations

import os

from devices.caps.base import ENV_GPU_FRACTION


def apply_gpu_fraction(torch) -> float | None:
    """Cap this process's CUDA allocations to the profile's fraction; returns the fraction applied."""
    value = os.environ.get(ENV_GPU_FRACTION)
    if not value or not torch.cuda.is_available():
        return None
    fraction = float(value)
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
