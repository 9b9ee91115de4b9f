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
        assert record.status == "ok" and record.metrics["train_seconds"] >= HOURS * 3600
        assert len(record.throughput) >= 16
    curve = bare.device.thermal_curve
    burst = bare.device.gflops
    # the throughput the clock ran at, point by point, is the profile's curve from the first step
    heated = bare.metrics["device_clock"]["heated_from_s"]
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
    proc = edgebench("run", str(write_spec(tmp_path, opt_1m_spec("bad", f"[{device}]"))), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
