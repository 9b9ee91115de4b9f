"""Proof that a backend's cap binds: a child under the cap allocates less (must live) and more (must die)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass

from devices.caps.base import CapBackend, CapReading
from devices.host_speed import HostSpeed
from devices.profile import DeviceProfile
from devices.pyexec import SAFE_CWD, code_argv, module_argv
from devices.speed import cfs_quota, plan_clock

#: The throttle proof's tolerance (the kernel hands the cell its quota within 15%) and least duration.
THROTTLE_TOLERANCE = 0.15
THROTTLE_SECONDS = 6.0
#: A window of k periods holds k or k+1 quota bursts, depending on where it starts: 30 periods keep
#: that phase error near 3%. The loop is timed in THROTTLE_WINDOWS parts too, whose spread the proof reports.
THROTTLE_PERIODS = 30
THROTTLE_WINDOWS = 3
#: The least quota per CFS period a proof can measure: below five of the kernel's 5 ms runtime slices a period's
#: burst is a handful of slices, and a 30-period window's share swings by more than the tolerance from one run to
#: the next (a quota that small is refused as unprovable here, with the reason).
MIN_PROVABLE_QUOTA_US = 25_000

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


class UnprovableThrottle(ValueError):
    """A device whose quota is too small for this host to prove (the reason says why)."""


@dataclass
class ThrottleProof:
    """A matmul loop under a device's CFS quota: the share of a core the kernel gave it (CPU seconds per wall
    second, against the quota) decides; its throughput against the device's catalogue figure is reported beside,
    with how far this host's speed per CPU second drifted from its calibration (load from other tenants changes that,
    not the throttle)."""

    device: str
    target_gflops: float
    measured_gflops: float | None
    quota_cores: float
    threads: int
    detail: str
    share: float | None = None  # CPU seconds per wall second over the whole loop, divided by the quota
    window_shares: list[float] | None = None
    host_drift: float | None = None  # GFLOPS per CPU second under the cap / the calibrated per-core figure

    @property
    def ratio(self) -> float | None:
        return None if self.measured_gflops is None else self.measured_gflops / self.target_gflops

    @property
    def spread(self) -> dict[str, float] | None:
        if not self.window_shares:
            return None
        return {
            "min": min(self.window_shares),
            "max": max(self.window_shares),
            "windows": len(self.window_shares),
        }

    @property
    def verified(self) -> bool:
        return self.share is not None and abs(self.share - 1) <= THROTTLE_TOLERANCE

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "spread": self.spread, "verified": self.verified}


def prove_throttle(
    backend: type[CapBackend], profile: DeviceProfile, host: HostSpeed, seconds: float = THROTTLE_SECONDS
) -> ThrottleProof:
    """Run the fixed matmul loop of `devices.host_speed` inside the device's throttled cap, timed by the wall clock.

    The child warms up before it joins the cap, so the proof times the throttle, not torch's import. A quota too
    small to measure here raises UnprovableThrottle before anything runs."""
    assert profile.gflops is not None
    clock = plan_clock(profile, "device-throttled", host, os.cpu_count() or 1)
    period_us, quota_us = cfs_quota(clock.cpu_quota_cores)
    if quota_us < MIN_PROVABLE_QUOTA_US:
        raise UnprovableThrottle(
            f"its {clock.cpu_quota_cores:.3f}-core quota is {quota_us / 1000:g} ms per {period_us / 1e6:g} s period "
            f"on this host, under the {MIN_PROVABLE_QUOTA_US / 1000:g} ms a proof can measure (five kernel slices)"
        )
    seconds = max(seconds, THROTTLE_PERIODS * period_us / 1e6)
    with backend(profile, "doctor-speed", clock) as capped:
        proc = subprocess.run(
            module_argv("devices.host_speed", "--measure", str(seconds), str(THROTTLE_WINDOWS)),
            env={**os.environ, **capped.child_env()},
            capture_output=True,
            text=True,
            timeout=seconds * 10 + 120,
            cwd=SAFE_CWD,
        )
    proof = ThrottleProof(profile.name, profile.gflops, None, clock.cpu_quota_cores, clock.threads, "")
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        proof.measured_gflops = result["gflops_per_wall_second"]
        proof.share = result["cpu_seconds"] / result["wall_seconds"] / clock.cpu_quota_cores
        proof.window_shares = [
            w["cpu_seconds"] / w["wall_seconds"] / clock.cpu_quota_cores for w in result["windows"]
        ]
        proof.host_drift = result["gflops_per_cpu_second"] / clock.host_gflops_per_core
        proof.detail = (
            f"{proof.share:.3f} of its {clock.cpu_quota_cores:.3f}-core quota over {seconds:g} s "
            f"(windows {min(proof.window_shares):.3f}-{max(proof.window_shares):.3f}); "
            f"{proof.measured_gflops:.1f} GFLOPS, host speed {proof.host_drift:.3f} of its calibration"
        )
    except (ValueError, IndexError, KeyError, ZeroDivisionError):
        lines = proc.stderr.strip().splitlines()
        proof.detail = (
            f"the measuring child failed ({proc.returncode}): {lines[-1] if lines else 'no output'}"
        )
    return proof
