"""Analytic peak-memory model (DESIGN.md). PLACEHOLDER: the workloads issue replaces this."""

from __future__ import annotations

from workloads.params import WorkloadParams


def predict_peak_bytes(params: WorkloadParams) -> int | None:
    return None
