"""Cheap, torch-free checks of a cell's workload, run when a spec is loaded. PLACEHOLDER: the workloads issue fills it."""

from __future__ import annotations

from workloads.params import WorkloadParams


def check_params(params: WorkloadParams) -> None:
    """Raise ValueError with one line naming the problem and the fix."""
