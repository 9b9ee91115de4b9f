"""A spec file's schema: the devices and the workload matrix it may name, and the run settings; a field that fails
validation becomes one line naming the file and the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.speed import DEFAULT_CLOCK, Clock
from harness.record.names import NAME_PATTERN
from harness.record.thresholds import Thresholds
from workloads.params import AXES
from workloads.resumable import DEFAULT_CHECKPOINT_SECONDS


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(
        "edgebench",
        pattern=NAME_PATTERN,
        description="letters, digits, '.', '_' and '-': it names the default run directory, results/<name>",
    )
    description: str = ""
    devices: list[str | dict[str, Any]] = Field(min_length=1)
    device_files: list[str] = Field(default_factory=list)
    matrix: dict[str, Any] | list[dict[str, Any]] = Field(
        description="axes -> values; a list of such blocks is their union (each may name its own `devices`)"
    )
    clock: Clock = Field(
        DEFAULT_CLOCK,
        description="device-scaled (CPU time converted to device time), device-throttled (the kernel slows "
        "each cell to its device's speed) or host; budgets and timeouts are in this clock's seconds",
    )
    timeout_s: float = Field(1800, gt=0, description="per-cell limit, in the clock's seconds")
    checkpoint_seconds: float = Field(
        DEFAULT_CHECKPOINT_SECONDS,
        gt=0,
        description="a training cell saves its state every this many of its clock's seconds, and a re-run resumes "
        "an interrupted cell from its last save",
    )
    mezo_checkpoints: Literal["weights", "journal"] = Field(
        "weights",
        description="what a MeZO cell's checkpoint holds: its weights (resumed in seconds) or its journal of passes "
        "(kilobytes whatever the model, replayed on resume at the passes' cost, without a forward), for long runs "
        "whose state travels in git",
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    network: bool = Field(
        False,
        description="let local cells use the host's network (they run in a namespace without one otherwise); the "
        "operator must also pass --allow-network",
    )

    @field_validator("matrix")
    @classmethod
    def _known_axes(cls, matrix: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
        blocks = matrix if isinstance(matrix, list) else [matrix]
        if not blocks:
            raise ValueError("give at least one matrix block")
        for block in blocks:
            for axis, values in block.items():
                if axis not in AXES and axis != "devices":
                    raise ValueError(f"unknown axis {axis!r}; axes are: {', '.join(AXES)}")
                if isinstance(values, list) and not values:
                    raise ValueError(f"axis {axis!r} has no values; give at least one")
            if "devices" in block:
                _check_device_names(block["devices"])
            if "model" not in block:
                raise ValueError("every matrix block needs a `model` axis")
        return blocks

    @field_validator("device_files")
    @classmethod
    def _no_nul_in_paths(cls, files: list[str]) -> list[str]:
        if any("\x00" in f for f in files):
            raise ValueError("a path holds a NUL character; remove it")
        return files


def _check_device_names(names: Any) -> None:
    """A block's `devices` narrows it to some of the spec's devices: one name or a list of names."""
    listed = names if isinstance(names, list) else [names]
    if not all(isinstance(name, str) and name for name in listed):
        raise ValueError("`devices` takes a device name or a list of names, e.g. devices: [rpi-4-2gb]")
