"""Proof that a backend's cap binds: a child under the cap allocates less (must live) and more (must die)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from devices.caps.base import CapBackend, CapReading
from devices.profile import DeviceProfile

PROBE_CAP = 256 << 20
# Touches every page (b"x" * n writes them), so resident memory really grows to n bytes.
ALLOCATE = "import sys; block = b'x' * int(sys.argv[1]); print(len(block))"


@dataclass
class Proof:
    backend: str
    cap_bytes: int
    under_cap_survived: bool
    over_cap_stopped: bool
    over_cap_returncode: int | None
    peak_bytes: int | None
    detail: str

    @property
    def verified(self) -> bool:
        return self.under_cap_survived and self.over_cap_stopped

    def as_dict(self) -> dict:
        return {**asdict(self), "verified": self.verified}


def _allocate(backend: type[CapBackend], label: str, size: int, cap: int) -> tuple[int, str, CapReading]:
    profile = DeviceProfile(name="doctor-probe", memory=cap, cpus=1)
    with backend(profile, label) as capped:
        proc = subprocess.run(
            capped.command([sys.executable, "-c", ALLOCATE, str(size)]),
            env={**os.environ, **capped.child_env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        reading = capped.reading()
    lines = proc.stderr.strip().splitlines()
    return proc.returncode, lines[-1] if lines else "", reading


def prove(backend: type[CapBackend], cap: int | None = None) -> Proof:
    cap = cap or backend.probe_cap(PROBE_CAP)
    under_rc, under_err, _ = _allocate(backend, "doctor-under", cap // 4, cap)
    over_rc, over_err, reading = _allocate(backend, "doctor-over", cap * 2, cap)
    if backend.kills_on_oom:
        stopped = over_rc == -9 and reading.oom_killed
        detail = f"over-cap child returncode {over_rc}, kernel oom_kill seen: {reading.oom_killed}"
    else:
        stopped = over_rc != 0 and "MemoryError" in over_err
        detail = f"over-cap child returncode {over_rc}: {over_err}"
    if under_rc != 0:
        detail += f"; under-cap child failed ({under_rc}): {under_err}"
    return Proof(backend.name, cap, under_rc == 0, stopped, over_rc, reading.peak_bytes, detail)
