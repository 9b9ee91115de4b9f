"""What a board does beyond its burst speed: its sustained (thermally limited) throughput and its power draw.

Thermal model. Under sustained load a board's throughput falls from its burst figure (the profile's `gflops`)
towards a sustained one that depends on its cooling, with a time constant:

    g(t) = burst * (s + (1 - s) * exp(-t / tau))        s = sustained / burst for the chosen cooling

A cell's work, counted in burst-device-seconds W (what the clock charges at burst speed), takes device time t with
W(t) = s * t + (1 - s) * tau * (1 - exp(-t / tau)); `elapsed_for_work` inverts it. The model starts every cell on a
cool board (no heat carried over from a previous cell) and keeps the board under load for the whole cell.

Energy model. Power follows the work done: P(t) = idle + (load - idle) * g(t) / burst (a throttled board draws less
as its clock falls), so a cell's joules are idle * t + (load - idle) * W. Memory-bound phases are charged the same
power as compute-bound ones (no per-phase power figures are published for these boards).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Cooling = Literal["none", "heatsink", "fan"]
COOLINGS: tuple[Cooling, ...] = ("none", "heatsink", "fan")
#: The cooling a profile runs with when it names none: the catalogue's throughputs are HPL runs on cooled boards.
DEFAULT_COOLING: Cooling = "fan"


class Thermal(BaseModel):
    """A board's sustained throughput per cooling, as a share of its burst throughput, and how fast it gets there."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sustained: dict[str, float] = Field(
        description="sustained throughput / burst throughput under each cooling (none, heatsink, fan); 1 = no throttling"
    )
    time_constant_s: float = Field(gt=0, description="seconds of full load for the throughput to fall 63% of the way")
    source: str = Field(min_length=1, description="where the throttling was measured, and how the figures were read")

    @field_validator("sustained")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        for cooling, share in value.items():
            if cooling not in COOLINGS:
                raise ValueError(f"unknown cooling {cooling!r}; use one of: {', '.join(COOLINGS)}")
            if not 0 < share <= 1:
                raise ValueError(
                    f"sustained throughput under cooling {cooling} is {share:g} x burst; it must be above 0 and at most "
                    "the burst throughput (1)"
                )
        return value

    def share(self, cooling: Cooling) -> float:
        return self.sustained[cooling]


class Power(BaseModel):
    """A board's power draw, watts at the wall (or the supply), idle and at full CPU load."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    idle_watts: float = Field(ge=0, description="booted, idle, headless")
    load_watts: float = Field(gt=0, description="all CPU cores busy (an HPL or stress run)")
    source: str = Field(min_length=1)

    @field_validator("idle_watts", "load_watts", mode="before")
    @classmethod
    def _not_negative(cls, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"watts cannot be negative, got {value:g}")
        return value

    @model_validator(mode="after")
    def _load_above_idle(self) -> Power:
        if self.load_watts < self.idle_watts:
            raise ValueError(f"load_watts {self.load_watts:g} is below idle_watts {self.idle_watts:g}")
        return self


class ThermalCurve(BaseModel):
    """The throttling one cell runs under: its device's thermal model at the profile's cooling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cooling: Cooling
    sustained_share: float = Field(1.0, gt=0, le=1)
    time_constant_s: float = Field(1.0, gt=0)

    @property
    def throttles(self) -> bool:
        return self.sustained_share < 1

    def share_at(self, elapsed: float) -> float:
        """Throughput / burst throughput after `elapsed` device seconds under load."""
        s = self.sustained_share
        return s + (1 - s) * math.exp(-max(elapsed, 0.0) / self.time_constant_s)

    def work_in(self, elapsed: float) -> float:
        """Burst-seconds of work done in `elapsed` device seconds."""
        s, tau = self.sustained_share, self.time_constant_s
        return s * elapsed + (1 - s) * tau * (1 - math.exp(-max(elapsed, 0.0) / tau))

    def elapsed_for_work(self, work: float) -> float:
        """Device seconds that `work` burst-seconds take: the inverse of work_in (Newton from the sustained bound)."""
        if not self.throttles or work <= 0:
            return max(work, 0.0)
        t = work / self.sustained_share  # an upper bound: work_in(t) >= s * t
        for _ in range(50):
            step = (self.work_in(t) - work) / self.share_at(t)
            t -= step
            if abs(step) < 1e-9 * max(1.0, t):
                break
        return t


def joules(power: Power, elapsed: float, work: float) -> float:
    """Energy of a cell that did `work` burst-seconds of work in `elapsed` device seconds (see the module)."""
    return power.idle_watts * elapsed + (power.load_watts - power.idle_watts) * min(work, elapsed)


ENERGY_MODEL = "idle_watts x device seconds + (load_watts - idle_watts) x burst-seconds of work (power follows the clock)"
