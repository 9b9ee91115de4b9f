"""Which cells resume, and where: the hand-off from the harness to a cell's checkpointer (workloads.resume).

Torch-free: the harness plans state directories in its lean parent process.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workloads.params import WorkloadParams

ENV_STATE = "EDGEBENCH_STATE"
#: The run directory's folder of per-cell state directories (removed once the cell's measurement is recorded).
CHECKPOINTS_DIR = "checkpoints"
#: The spec's default interval: a long cell loses at most this much device time to an interruption.
DEFAULT_CHECKPOINT_SECONDS = 1800.0


class Checkpointing(BaseModel):
    """A run's checkpoint settings (the spec's), which its executor turns into each resumable cell's StatePlan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_seconds: float = Field(DEFAULT_CHECKPOINT_SECONDS, gt=0)
    mezo: Literal["weights", "journal"] = "weights"


class StatePlan(BaseModel):
    """Where a cell keeps its checkpoint and how often it saves (set by the harness's executor)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str
    fd: int | None = Field(None, description="the directory, opened by the harness and inherited by the cell")
    every_seconds: float = Field(gt=0, description="in the cell clock's seconds of training and evaluation")
    cell_id: str
    journal: bool = Field(False, description="MeZO saves its journal instead of its weights (workloads.resume)")

    def to_env(self) -> dict[str, str]:
        return {ENV_STATE: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> StatePlan | None:
        text = os.environ.get(ENV_STATE)
        return cls.model_validate_json(text) if text else None


def resumable(params: WorkloadParams, probe: bool) -> bool:
    """Training cells resume; a probe (a few steps) and inference have nothing worth resuming."""
    return not probe and params.method != "inference"
