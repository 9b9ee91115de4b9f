"""The DeviceProfile type: the caps a simulated device imposes on one cell."""

from __future__ import annotations

import math
import re

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.board import DEFAULT_COOLING, Cooling, Power, Thermal, ThermalCurve

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
#: The largest cap a kernel can hold (cgroup and rlimit values are signed 64-bit).
MAX_MEMORY_BYTES = 2**63 - 1
_SIZE = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | float | str) -> int:
    """Parse `512MiB`, `4GB`, `1.5g` or a plain number of bytes; decimal and binary units both work."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write e.g. 512MiB or 4GB")
    if isinstance(value, (int, float)):
        number, unit = value, ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size; write e.g. 512MiB or 4GB")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} in {value!r}; use B, KB, MB, GB, KiB, MiB or GiB")
    size = number * _UNITS[unit]  # an int stays exact; a float may be (or overflow to) inf or nan
    if isinstance(size, float) and not math.isfinite(size):
        raise ValueError(f"{value!r} is not a finite size; write e.g. 512MiB or 4GB")
    return int(size)


def format_bytes(n: int | float | None) -> str:
    """Human-readable binary size, e.g. 512.0 MiB."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


#: A cell's processes and threads at once unless its device says otherwise: torch, its OpenMP pool and a tokenizer's
#: pool take a few dozen per core; 1024 leaves room on a 16-core host and stops a fork bomb far below the host's pids.
DEFAULT_PIDS_LIMIT = 1024


class DeviceProfile(BaseModel):
    """A device as the harness simulates it: a memory cap, CPU cores and their speed, optional GPU memory."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    memory_bytes: int = Field(
        gt=0,
        le=MAX_MEMORY_BYTES,
        validation_alias=AliasChoices("memory", "memory_bytes"),
        description="memory cap for one cell, bytes; `memory: 512MiB` in YAML",
    )
    cpus: float = Field(default=1.0, gt=0, description="CPU cores (fractional allowed)")
    gpu_memory_bytes: int | None = Field(
        default=None,
        gt=0,
        le=MAX_MEMORY_BYTES,
        validation_alias=AliasChoices("gpu_memory", "gpu_memory_bytes"),
        description="the GPU's own memory, bytes (`gpu_memory: 4GB`); a cell gets that much of the card it runs on",
    )
    unified_memory: bool = Field(
        default=False,
        description="CPU and GPU share `memory`, as on a Jetson: one cap across host and GPU memory",
    )
    gflops: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="sustained fp32 matmul throughput of all its cores, GFLOPS; without it a cell runs at host speed",
    )
    gflops_source: str = Field(
        default="", description="where the throughput was published, and how it was derived"
    )
    bandwidth_gbs: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="memory bandwidth, GB/s"
    )
    bandwidth_source: str = ""
    cooling: Cooling = Field(
        default=DEFAULT_COOLING, description="the cooling the board runs with: none, heatsink or fan (see `thermal`)"
    )
    thermal: Thermal | None = Field(
        default=None, description="sustained / burst throughput per cooling and its time constant, with the source"
    )
    power: Power | None = Field(default=None, description="idle and full-load watts, with the source")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources a cell of this device asks for, e.g. {arm64: 1} to pin it to such nodes",
    )
    pids: int | None = Field(
        default=None,
        ge=32,
        le=1 << 22,
        description="most processes and threads one cell may have at once (cgroup pids.max, Docker pids_limit); "
        "default 1024: a fork bomb in a cell exhausts its own limit, not the host's",
    )
    description: str = ""
    source: str = ""

    @property
    def pids_limit(self) -> int:
        return self.pids or DEFAULT_PIDS_LIMIT

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _parse_memory(cls, value: object) -> int:
        size = parse_bytes(value)  # type: ignore[arg-type]
        if size <= 0:
            raise ValueError(f"memory must be positive, got {value!r}; write e.g. 512MiB")
        return size

    @field_validator("gpu_memory_bytes", mode="before")
    @classmethod
    def _parse_gpu_memory(cls, value: object) -> int | None:
        return None if value is None else parse_bytes(value)  # type: ignore[arg-type]

    @model_validator(mode="before")
    @classmethod
    def _no_gpu_fraction(cls, data: object) -> object:
        """A share of the host's card is no device (half of an 80 GB card is not a 4 GB board), so the old field is
        refused with its replacement; an empty one, as stored runs and records hold, is dropped."""
        if not isinstance(data, dict) or "gpu_memory_fraction" not in data:
            return data
        if data["gpu_memory_fraction"] is not None:
            raise ValueError(
                "gpu_memory_fraction is no longer read: replace it with the device's GPU memory in bytes, "
                "e.g. gpu_memory: 4GB (or unified_memory: true where CPU and GPU share `memory`)"
            )
        return {key: value for key, value in data.items() if key != "gpu_memory_fraction"}

    @model_validator(mode="after")
    def _one_gpu_memory(self) -> DeviceProfile:
        """A unified-memory board's GPU draws on `memory`: a second figure would be a second cap."""
        if self.unified_memory and self.gpu_memory_bytes is not None:
            raise ValueError("a unified_memory device's GPU shares its `memory`; remove gpu_memory")
        return self

    @model_validator(mode="after")
    def _cooling_known(self) -> DeviceProfile:
        """A cooling other than the default needs the board's figures for it: a guess would be a made-up clock."""
        if self.thermal is not None and self.cooling not in self.thermal.sustained:
            known = ", ".join(sorted(self.thermal.sustained))
            raise ValueError(f"cooling {self.cooling} has no sustained figure in `thermal` (it gives: {known})")
        if self.thermal is None and self.cooling != DEFAULT_COOLING:
            raise ValueError(f"cooling {self.cooling} needs the board's `thermal` figures; this profile gives none")
        return self

    @property
    def thermal_curve(self) -> ThermalCurve:
        """The throttling a cell of this profile runs under (none without thermal figures)."""
        if self.thermal is None:
            return ThermalCurve(cooling=self.cooling)
        return ThermalCurve(
            cooling=self.cooling,
            sustained_share=self.thermal.share(self.cooling),
            time_constant_s=self.thermal.time_constant_s,
        )

    @property
    def gpu_cap_bytes(self) -> int | None:
        """The GPU memory a cell may use: the whole `memory` on a unified-memory board (the host's share comes out
        of it when the cell sets its cap), else `gpu_memory`; None for a device without a GPU."""
        return self.memory_bytes if self.unified_memory else self.gpu_memory_bytes

    @property
    def threads(self) -> int:
        """Intra-op threads for torch: the profile's cores rounded up, at least one."""
        return max(1, int(-(-self.cpus // 1)))
