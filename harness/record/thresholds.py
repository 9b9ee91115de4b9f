"""The regression gate's limits: a spec's `thresholds`, kept in its run.json, applied by `edgebench compare`
(reports.compare) to the baseline's records."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Thresholds(BaseModel):
    """Regression limits for `edgebench compare` (fractions; accuracy in points)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_memory_regression: float = Field(0.05, ge=0)
    max_time_regression: float = Field(0.20, ge=0)
    max_accuracy_drop: float = Field(1.0, ge=0)
