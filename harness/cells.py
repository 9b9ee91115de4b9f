"""A cell is one (device, workload) pair; its id is a hash of its content, so it is stable across runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from devices.profile import DeviceProfile
from workloads.params import WorkloadParams


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Cell:
    device: DeviceProfile
    params: WorkloadParams

    @property
    def id(self) -> str:
        content = {"device": self.device.model_dump(), "params": self.params.model_dump()}
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.device.name}/{self.params.model}/{self.params.method}/b{self.params.batch}/s{self.params.seed}"
