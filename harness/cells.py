"""A cell is one (device, workload) pair; its id is a hash of its content, so it is stable across runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from devices.profile import DeviceProfile
from devices.speed import CellClock, unplanned_clock
from workloads.params import WorkloadParams


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Cell:
    device: DeviceProfile
    params: WorkloadParams
    #: Planned with the spec (harness.spec); a cell made without one runs at host speed.
    clock: CellClock = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.clock is None:
            object.__setattr__(self, "clock", unplanned_clock(self.device))

    @property
    def id(self) -> str:
        """The clock's kind changes what every time figure means, so it enters the id; the host's calibration
        (which varies a little between runs) does not, so a resume on the same host finds its cells."""
        content = {"device": self.device.model_dump(), "params": self.params.model_dump(), "clock": self.clock.kind}
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """Short and human: device/model/method/batch/seed, with the tuning when it is not full (MeZO on the
        head and full MeZO of one model are different experiments). The id tells every cell apart."""
        p = self.params
        method = p.method if p.tuning == "full" else f"{p.method}+{p.tuning}"
        return f"{self.device.name}/{p.model}/{method}/b{p.batch}/s{p.seed}"
