"""Sustained speed (issue 27): a scaled cell on a Pi 4 profile without cooling runs at its burst throughput first and
at its sustained throughput later, as the profile's thermal curve says; with a fan it does not slow. Its energy
follows the power model. A slow device (the Pi 4's figures at 1/100 of its GFLOPS) reaches two device hours in a
ten host seconds on the scaled clock."""

from __future__ import annotations

import pytest

from devices.board import Power, ThermalCurve, joules
from tests.helpers import opt_1m_spec, require_kernel_caps, run_spec

HOURS = 2
DEVICES = """
devices:
  - {name: pi4-bare, like: rpi-4-4gb, cooling: none, gflops: 0.229}
  - {name: pi4-fan, like: rpi-4-4gb, cooling: fan, gflops: 0.229}
"""



def early_and_late(points):
    """The first three points (the board still near its burst speed) and the last half of the cell."""
    end = points[-1].device_seconds
    return points[:3], [p for p in points if p.device_seconds >= end / 2]


def rate(window, measure) -> float:
    return (measure(window[-1]) - measure(window[0])) / (window[-1].device_seconds - window[0].device_seconds)


def test_the_curve_inverts_and_throttles_to_its_sustained_share():
    curve = ThermalCurve(cooling="none", sustained_share=0.667, time_constant_s=300)
    assert curve.share_at(0) == 1 and curve.share_at(7200) == pytest.approx(0.667, abs=1e-6)
    for work in (1.0, 300.0, 5000.0):
        assert curve.work_in(curve.elapsed_for_work(work)) == pytest.approx(work, rel=1e-9)
    assert curve.elapsed_for_work(7200) == pytest.approx((7200 - 0.333 * 300) / 0.667, rel=1e-3)
    power = Power(idle_watts=2.7, load_watts=7.2, source="s")
    assert joules(power, 100.0, 100.0) == pytest.approx(720.0) and joules(power, 100.0, 50.0) == pytest.approx(495.0)


@pytest.mark.integration
@pytest.mark.usefixtures("no_leftover_cgroups")
def test_a_bare_pi_slows_to_its_sustained_speed_and_a_fanned_one_does_not(tmp_path):
    require_kernel_caps()
    (tmp_path / "devices.yaml").write_text(DEVICES)
    text = opt_1m_spec("thermal", "[pi4-bare, pi4-fan]", "[mezo]").replace("max_steps: 2", "max_steps: null")
    text = text.replace("timeout_s: 300", "timeout_s: 90000\nclock: device-scaled\ndevice_files: [devices.yaml]") + f"  max_seconds: {HOURS * 3600}\n"
    records = {r.device.name: r for r in run_spec(tmp_path, text)}
    bare, fan = records["pi4-bare"], records["pi4-fan"]
    for record in (bare, fan):
        assert record.status == "ok" and record.metrics.timing.train_seconds >= HOURS * 3600
        assert len(record.throughput) >= 16
    curve = bare.device.thermal_curve
    burst = bare.device.gflops
    # the throughput the clock ran at, point by point, is the profile's curve from the first step
    heated = bare.metrics.device_clock.heated_from_s
    for point in bare.throughput:
        assert point.gflops == pytest.approx(burst * curve.share_at(point.device_seconds - heated), rel=1e-3)
    assert bare.throughput[0].gflops > 0.97 * burst and bare.throughput[-1].gflops < 0.68 * burst
    assert all(p.gflops == burst for p in fan.throughput)
    # and the work it did: burst-seconds per device second, 1 on a cool board, the sustained share later
    early, late = early_and_late(bare.throughput)
    speed = lambda window: rate(window, lambda p: p.work_seconds)  # noqa: E731
    expected = lambda window: rate(window, lambda p: curve.work_in(p.device_seconds - heated))  # noqa: E731
    assert speed(early) > 0.9 and speed(late) < 0.7
    for window in (early, late):
        assert speed(window) == pytest.approx(expected(window), rel=1e-2)
    early, late = early_and_late(fan.throughput)
    assert speed(early) == pytest.approx(1, rel=1e-3) and speed(late) == pytest.approx(1, rel=1e-3)
    # energy: the throttled board did less work per device second, and drew less power for it
    assert bare.energy is not None and fan.energy is not None
    assert bare.energy.burst_seconds < 0.8 * bare.energy.device_seconds
    assert fan.energy.burst_seconds == pytest.approx(fan.energy.device_seconds, rel=1e-6)
    assert fan.energy.joules == pytest.approx(7.2 * fan.energy.device_seconds, rel=1e-3)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("{name: b, like: rpi-4-4gb, power: {idle_watts: -1, load_watts: 5, source: s}}", "watts cannot be negative"),
        (
            "{name: b, like: rpi-4-4gb, thermal: {sustained: {fan: 1.2}, time_constant_s: 60, source: s}}",
            "at most the burst throughput",
        ),
        ("{name: b, like: rpi-4-4gb, cooling: liquid}", "devices[0].cooling: Input should be 'none', 'heatsink' or"),
        ("{name: b, like: rpi-5-8gb, cooling: heatsink}", "cooling heatsink has no sustained figure"),
        ("{name: b, like: rpi-4-4gb, bandwidth_gbs: 0}", "bandwidth_gbs: Input should be greater than 0"),
    ],
)
def test_bad_board_figures_are_one_line_exit_2_and_nothing_written(tmp_path, device, message):
    from tests.helpers import edgebench, write_spec

    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, opt_1m_spec("bad", f"[{device}]"))), "--out", str(out), process=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


# --- the throttled clock: the kernel's quota follows the curve (devices.governor) ---------------------------------

TAU = 8.0
SUSTAINED = 0.5


def hot_and_fanned(gflops: float) -> str:
    """Two boards alike but for their cooling: one falls to half its speed with a time constant of TAU seconds."""
    thermal = f"thermal: {{sustained: {{none: {SUSTAINED}, fan: 1.0}}, time_constant_s: {TAU}, source: test}}"
    power = "power: {idle_watts: 2, load_watts: 6, source: test}"
    board = f"memory: 2GB, cpus: 4, gflops: {gflops}, gflops_source: test, {thermal}, {power}"
    return f"[{{name: hot, cooling: none, {board}}}, {{name: fanned, cooling: fan, {board}}}]"


def simulated_usage(plan, write_refills: bool, seconds: float, governed: bool = True) -> list[tuple[float, float]]:
    """A busy cell under a kernel that, like CFS, refills a period's runtime at every quota write: (device seconds,
    CPU seconds used) at each tick, the quota set by the governor's plan or, `governed` False, open-loop by the
    curve's share at that moment."""
    used, elapsed, points = 0.0, 0.0, []
    while elapsed < seconds:
        cores = plan.cores_for(elapsed, used) if governed else plan.burst_cores * plan.curve.share_at(elapsed)
        used += cores * plan.tick_s + (cores * plan.period_us / 1e6 if write_refills else 0.0)
        elapsed += plan.tick_s
        points.append((elapsed, used))
    return points


def test_the_governor_holds_a_busy_cell_to_its_curve_through_the_kernels_refills():
    from devices.governor import GovernorPlan

    curve = ThermalCurve(cooling="none", sustained_share=0.6, time_constant_s=120)
    plan = GovernorPlan(curve, burst_cores=0.5, period_us=100_000, min_quota_us=1_000)
    for refills in (False, True):
        for elapsed, used in simulated_usage(plan, refills, 1800):
            assert used / plan.burst_cores == pytest.approx(curve.work_in(elapsed), abs=plan.tick_s * 0.15)
    # open loop, the refills run the cell a tenth of a period per tick ahead of its curve, and it never catches up
    elapsed, used = simulated_usage(plan, True, 1800, governed=False)[-1]
    assert used / plan.burst_cores > 1.09 * curve.work_in(elapsed)


def test_a_throttled_clock_plans_its_governor_from_the_sustained_quota():
    from devices.governor import governor_plan
    from devices.host_speed import HostSpeed
    from devices.profile import DeviceProfile
    from devices.speed import ClockError, plan_clock

    host = HostSpeed(gflops_per_core=100.0, cores=2, cpu="test", method="test")
    thermal = {"sustained": {"none": 0.25, "fan": 1.0}, "time_constant_s": 60, "source": "s"}
    hot = DeviceProfile(name="hot", memory="1GB", cpus=4, gflops=40.0, cooling="none", thermal=thermal)
    clock = plan_clock(hot, "device-throttled", host, host_cores=2)
    assert clock.governed and clock.cpu_quota_cores == pytest.approx(0.4)
    plan = governor_plan(clock)
    assert plan is not None and plan.period_us == 500_000  # 0.1 sustained cores hold 50 ms in a 500 ms period
    assert clock.cfs() == (500_000, 200_000)
    fanned = plan_clock(hot.model_copy(update={"cooling": "fan"}), "device-throttled", host, host_cores=2)
    assert not fanned.governed and governor_plan(fanned) is None and fanned.cfs() == (125_000, 50_000)
    # energy and device time: the wall clock, and the curve's work after the first step
    assert clock.device_seconds(100.0, None, heated_from=10.0) == 100.0
    assert clock.burst_work(100.0, None, heated_from=10.0) == pytest.approx(10 + clock.thermal.work_in(90.0))
    with pytest.raises(ClockError, match="sustains 0.05 GFLOPS with cooling none"):
        plan_clock(hot.model_copy(update={"gflops": 0.2}), "device-throttled", host, host_cores=2)


def test_a_governed_cgroup_v2_quota_is_written_and_its_cpu_time_read(tmp_path):
    from devices.caps.cgroup_v2 import CgroupV2
    from devices.host_speed import HostSpeed
    from devices.profile import DeviceProfile
    from devices.speed import plan_clock

    host = HostSpeed(gflops_per_core=100.0, cores=2, cpu="test", method="test")
    thermal = {"sustained": {"none": 0.5}, "time_constant_s": 60, "source": "s"}
    hot = DeviceProfile(name="hot", memory="1GB", cpus=4, gflops=60.0, cooling="none", thermal=thermal)
    cap = CgroupV2(hot, "cell", plan_clock(hot, "device-throttled", host, host_cores=2))
    cap.directory, cap.period_us = tmp_path, 166_667
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    cap.write_quota(50_000)
    assert (tmp_path / "cpu.max").read_text() == "50000 166667" and cap.cpu_usage_seconds() == 2.5


def test_only_an_executor_that_can_lower_a_running_quota_takes_a_throttled_board_that_heats(tmp_path):
    from harness.plan.spec import load_spec
    from harness.record.errors import UserError
    from harness.run.matrix import check_clocks

    spec = opt_1m_spec("hot", hot_and_fanned(1.0)).replace("timeout_s: 300", "timeout_s: 300\nclock: device-throttled")
    (tmp_path / "spec.yaml").write_text(spec)
    loaded = load_spec(tmp_path / "spec.yaml")

    class FixedQuota:
        name, enforcement, throttles, governs = "docker", "container", True, False

    with pytest.raises(UserError, match="device hot throttles with cooling none, and the docker executor cannot"):
        check_clocks(FixedQuota(), loaded.cells, loaded.path)
    check_clocks(FixedQuota(), [c for c in loaded.cells if c.device.name == "fanned"], loaded.path)


@pytest.mark.timing
@pytest.mark.integration
@pytest.mark.usefixtures("no_leftover_cgroups")
def test_a_throttled_board_without_cooling_slows_along_its_curve_through_the_kernels_quota(tmp_path):
    """Both boards side by side (so the host's load falls on both): the hot one's work per device second, which the
    cell measures as CPU time the kernel gave it, starts at its burst rate and falls to its sustained share, as the
    curve says; the fanned twin keeps its rate."""
    from devices.host_speed import host_speed
    from harness.record.store import load_records
    from tests.helpers import edgebench

    require_kernel_caps()
    gflops = round(0.6 * host_speed().gflops_per_core, 1)
    spec = opt_1m_spec("hot", hot_and_fanned(gflops), "[mezo]").replace("max_steps: 2", "max_steps: null")
    spec = spec.replace("timeout_s: 300", "timeout_s: 600\nclock: device-throttled") + f"  max_seconds: {5 * TAU}\n"
    (tmp_path / "spec.yaml").write_text(spec)
    out = tmp_path / "run"
    edgebench("run", str(tmp_path / "spec.yaml"), "--out", str(out), "--no-report", "--jobs", "2", check=True, process=True)
    records = {r.device.name: r for r in load_records(out)}
    hot, fanned = records["hot"], records["fanned"]
    for record in (hot, fanned):
        assert record.status == "ok" and record.clock.kind == "device-throttled", record.error
        assert len(record.throughput) >= 32
    assert hot.clock.governed and not fanned.clock.governed
    heated = hot.metrics.device_clock.heated_from_s
    curve = hot.clock.thermal
    speed = lambda window: rate(window, lambda p: p.work_seconds)  # noqa: E731
    early = [p for p in hot.throughput if p.device_seconds - heated <= 2.0]
    late = [p for p in hot.throughput if p.device_seconds - heated >= 3 * TAU]
    fan_rate = speed(fanned.throughput)
    print(f"fanned {fan_rate:.3f}; hot early {speed(early):.3f} late {speed(late):.3f} (curve: 1 -> {SUSTAINED})")
    assert fan_rate == pytest.approx(1.0, abs=0.1)
    assert speed(early) > 0.85 * fan_rate
    assert speed(late) / fan_rate == pytest.approx(curve.share_at(3 * TAU), rel=0.12)
    assert hot.steps < 0.9 * fanned.steps  # the curve gives it 0.6 of the twin's CPU time over 5 tau
    for point in hot.throughput:
        assert point.gflops == pytest.approx(gflops * curve.share_at(point.device_seconds - heated), rel=1e-3)
    assert hot.energy is not None and hot.energy.burst_seconds < 0.8 * hot.energy.device_seconds


def test_compose_refuses_a_throttled_board_that_heats_in_one_line(tmp_path):
    from tests.helpers import edgebench, write_spec

    spec = "name: hot\nclock: device-throttled\ndevices: [{name: pi, like: rpi-4-4gb, cooling: none}]\n"
    write_spec(tmp_path, spec + "matrix: {model: opt-1m}\n")
    proc = edgebench("compose", "spec.yaml", "--no-engine-check", cwd=tmp_path, process=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "device pi throttles with cooling none: a compose container's quota" in proc.stderr
