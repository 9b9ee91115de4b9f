"""Proof that a backend's cap binds: a child under the cap allocates less (must live) and more (must die)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass

from devices.caps.base import CapBackend, CapReading
from devices.profile import DeviceProfile
from devices.pyexec import SAFE_CWD, code_argv, module_argv
from devices.speed import HostSpeed, cfs_quota, plan_clock

#: The throttle proof's tolerance (within 15% of the device's throughput) and least duration.
THROTTLE_TOLERANCE = 0.15
THROTTLE_SECONDS = 6.0
#: A window of k periods holds k or k+1 quota bursts, depending on where it starts: 30 periods keep
#: that phase error near 3%.
THROTTLE_PERIODS = 30

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
            capped.command(code_argv(ALLOCATE, str(size))),
            env={**os.environ, **capped.child_env()},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=SAFE_CWD,
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


@dataclass
class ThrottleProof:
    """A matmul loop under a device's CFS quota, against the device's catalogue throughput."""

    device: str
    target_gflops: float
    measured_gflops: float | None
    quota_cores: float
    threads: int
    detail: str

    @property
    def ratio(self) -> float | None:
        return None if self.measured_gflops is None else self.measured_gflops / self.target_gflops

    @property
    def verified(self) -> bool:
        return self.ratio is not None and abs(self.ratio - 1) <= THROTTLE_TOLERANCE

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "verified": self.verified}


def prove_throttle(
    backend: type[CapBackend], profile: DeviceProfile, host: HostSpeed, seconds: float = THROTTLE_SECONDS
) -> ThrottleProof:
    """Run the fixed matmul loop of `devices.speed` inside the device's throttled cap, timed by the wall clock.

    The child warms up before it joins the cap, so the proof times the throttle, not torch's import."""
    assert profile.gflops is not None
    clock = plan_clock(profile, "device-throttled", host, os.cpu_count() or 1)
    period_s = cfs_quota(clock.cpu_quota_cores)[0] / 1e6
    seconds = max(seconds, THROTTLE_PERIODS * period_s)
    with backend(profile, "doctor-speed", clock) as capped:
        proc = subprocess.run(
            module_argv("devices.speed", "--measure", str(seconds)),
            env={**os.environ, **capped.child_env()},
            capture_output=True,
            text=True,
            timeout=seconds * 10 + 120,
            cwd=SAFE_CWD,
        )
    measured = None
    try:
        measured = json.loads(proc.stdout.strip().splitlines()[-1])["gflops_per_wall_second"]
        detail = f"{measured:.1f} GFLOPS measured under a {clock.cpu_quota_cores:.3f}-core quota"
    except (ValueError, IndexError, KeyError):
        lines = proc.stderr.strip().splitlines()
        detail = f"the measuring child failed ({proc.returncode}): {lines[-1] if lines else 'no output'}"
    return ThrottleProof(profile.name, profile.gflops, measured, clock.cpu_quota_cores, clock.threads, detail)
