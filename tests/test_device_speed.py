"""Device speed: clocks planned from the catalogue's throughput and the host's measured one, enforced for real."""

from __future__ import annotations

import pytest

from devices.catalogue import load_catalogue
from devices.host_speed import HostSpeed, host_speed
from devices.profile import DeviceProfile
from devices.speed import CFS_MIN_QUOTA_US, CellClock, ClockError, cfs_quota, plan_clock
from harness.plan.spec import default_spec_path, load_spec
from tests.helpers import edgebench, fast_board, opt_1m_spec, require_kernel_caps, run_spec, write_spec

HOST = HostSpeed(gflops_per_core=200.0, cores=2, cpu="test", method="fixed for unit tests")


def pi(**fields) -> DeviceProfile:
    return DeviceProfile(**{"name": "pi", "memory": "1GB", "cpus": 4, "gflops": 20.0, **fields})


def test_every_catalogue_device_gives_its_throughput_and_source():
    for device in load_catalogue().values():
        assert device.gflops and device.gflops > 1, device.name
        assert device.gflops_source.startswith("https://"), device.name


def test_throttled_clock_is_the_device_share_of_a_host_core():
    clock = plan_clock(pi(), "device-throttled", HOST, host_cores=2)
    assert clock.kind == "device-throttled" and clock.cpu_quota_cores == pytest.approx(0.1)
    assert clock.ratio == pytest.approx(10.0) and clock.threads == 1
    assert clock.device_seconds(wall_seconds=30.0, cpu_seconds=3.0) == 30.0  # wall-clock is device time


def test_scaled_clock_converts_cpu_seconds_and_keeps_the_device_cores():
    clock = plan_clock(pi(), "device-scaled", HOST, host_cores=2)
    assert clock.cpu_quota_cores == 4 and clock.threads == 1
    assert clock.device_seconds(wall_seconds=3.5, cpu_seconds=3.0) == pytest.approx(30.0)
    # A hung cell burns no CPU: its timeout still comes, by the host's wall-clock.
    assert clock.elapsed(wall_seconds=50.0, cpu_seconds=0.1) == 50.0
    assert clock.elapsed(wall_seconds=5.0, cpu_seconds=4.0) == pytest.approx(40.0)
    # Faster than a host core is fine for a conversion, and gets as many threads as it needs.
    fast = plan_clock(pi(gflops=300.0), "device-scaled", HOST, host_cores=2)
    assert fast.ratio == pytest.approx(2 / 3) and fast.threads == 2


def test_a_device_without_throughput_runs_at_host_speed_and_says_so():
    clock = plan_clock(pi(gflops=None), "device-scaled", HOST, host_cores=2)
    assert (clock.kind, clock.requested, clock.ratio) == ("host", "device-scaled", 1.0)
    assert "gives no throughput" in clock.source
    assert clock.device_seconds(wall_seconds=7.0, cpu_seconds=1.0) == 7.0


def test_a_throttle_cannot_speed_a_cell_up():
    with pytest.raises(ClockError, match="a throttle cannot speed a cell up; use clock: host"):
        plan_clock(pi(gflops=401.0), "device-throttled", HOST, host_cores=2)
    with pytest.raises(ClockError, match="a throttle cannot speed a cell up"):
        plan_clock(pi(gflops=250.0, cpus=1), "device-throttled", HOST, host_cores=2)  # one core: 200 at most
    plan_clock(pi(gflops=399.0), "device-throttled", HOST, host_cores=2)


def test_parallel_threads_are_planned_at_the_hosts_per_core_figure_for_that_many_threads():
    host = HOST.model_copy(update={"cores": 4, "parallel_gflops_per_core": 140.0})
    assert [host.per_core(t) for t in (1, 2, 3, 4, 8)] == pytest.approx([200, 180, 160, 140, 140])
    # 300 GFLOPS: two threads at one thread's figure, but two parallel threads do 180 each, so 1.67 cores.
    clock = plan_clock(pi(gflops=300.0), "device-throttled", host, host_cores=4)
    assert clock.threads == 2 and clock.cpu_quota_cores == pytest.approx(300 / 180)
    assert clock.host_gflops_per_core == pytest.approx(180) and clock.ratio == pytest.approx(180 / 300)
    # 390 GFLOPS needs 2 threads at 200 each, and so 3 at 160 each: the second count decides.
    clock = plan_clock(pi(gflops=390.0), "device-throttled", host, host_cores=4)
    assert clock.threads == 3 and clock.cpu_quota_cores == pytest.approx(390 / 160)
    # Scaled clocks convert CPU seconds by the same figure, and a single-thread cell keeps the lone one.
    assert plan_clock(pi(gflops=300.0), "device-scaled", host, host_cores=4).ratio == pytest.approx(180 / 300)
    assert plan_clock(pi(), "device-scaled", host, host_cores=4).ratio == pytest.approx(10.0)
    with pytest.raises(ClockError, match="on 2 threads"):
        plan_clock(pi(gflops=300.0, cpus=2), "device-throttled", host.model_copy(update={"cores": 2}), 2)


def test_cfs_quota_holds_a_few_runtime_slices_within_the_kernel_limits():
    assert cfs_quota(4) == (100_000, 400_000)
    assert cfs_quota(0.5) == (100_000, 50_000)
    period, quota = cfs_quota(0.04)  # a Jetson Nano's share: a longer period, the same share
    assert period > 100_000 and quota / period == pytest.approx(0.04, rel=0.01)
    assert cfs_quota(0.0001) == (1_000_000, CFS_MIN_QUOTA_US)


def test_clock_travels_to_the_cell_through_its_environment(monkeypatch):
    clock = plan_clock(pi(), "device-scaled", HOST, host_cores=2)
    for key, value in clock.to_env().items():
        monkeypatch.setenv(key, value)
    assert CellClock.from_env() == clock


def test_default_matrix_runs_on_the_scaled_clock_of_each_catalogue_device():
    loaded = load_spec(default_spec_path())
    host = host_speed()
    assert loaded.spec.clock == "device-scaled" and loaded.host == host
    cells = [*loaded.cells, *(probe for search in loaded.fit_searches for probe in search.probes.values())]
    assert cells
    for cell in cells:
        assert cell.clock.kind == "device-scaled"
        assert cell.clock.ratio == pytest.approx(host.gflops_per_core / cell.device.gflops)


@pytest.mark.parametrize(
    ("devices", "clock", "message"),
    [
        ("[rpi-4-2gb]", "bogus", "clock: Input should be 'device-scaled', 'device-throttled' or 'host'"),
        ("[{name: b, memory: 1GB, gflops: 0}]", "host", "gflops: Input should be greater than 0"),
        ("[{name: b, memory: 1GB, gflops: -3}]", "host", "gflops: Input should be greater than 0"),
        ("[{name: b, memory: 1GB, gflops: .inf}]", "host", "gflops: Input should be a finite number"),
        ("[{name: b, memory: 1GB, cpus: 4, gflops: 90000}]", "device-throttled", "use clock: host"),
    ],
)
def test_bad_speed_input_is_one_line_exit_2_and_nothing_written(tmp_path, devices, clock, message):
    spec = opt_1m_spec("bad", devices).replace("timeout_s: 300", f"timeout_s: 300\nclock: {clock}")
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, spec)), "--out", str(out), process=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def _spec(clock: str, devices: str, model: str = "opt-1m", steps: int = 40) -> str:
    spec = opt_1m_spec(f"clock-{clock}", devices, "[mezo]").replace("max_steps: 2", f"max_steps: {steps}")
    spec = spec.replace("model: opt-1m", f"model: {model}").replace("seq_len: 16", "seq_len: 64")
    return spec.replace("timeout_s: 300", f"timeout_s: 9000\nclock: {clock}")


@pytest.mark.timing
@pytest.mark.integration
@pytest.mark.usefixtures("no_leftover_cgroups")
def test_scaled_cells_report_device_time_in_the_ratio_of_their_throughputs(tmp_path):
    require_kernel_caps()
    # opt-8m steps take a tenth of a second of host CPU: long enough to time, short enough for a test.
    # Two boards slower than any host core: a faster one would run a second thread, whose waits count as CPU time.
    spec = _spec("device-scaled", "[rpi-zero-2w, rpi-4-4gb]", model="opt-8m", steps=10)
    records = {r.device.name: r for r in run_spec(tmp_path, spec)}
    for record in records.values():
        assert record.status == "ok" and record.clock.kind == "device-scaled"
        # Device seconds are the cell's CPU seconds times the ratio, plus the roofline's correction of its phases
        # (devices.roofline); one thread keeps CPU time near wall time.
        extra = record.metrics.device_clock.roofline_extra_s
        train, host_train = record.metrics.timing.train_seconds, record.metrics.timing.host_train_seconds
        assert record.clock.roofline is not None and extra != 0
        assert (train - extra) / host_train == pytest.approx(record.clock.ratio, rel=0.25)
        assert record.device_seconds == pytest.approx(record.cpu_seconds * record.clock.ratio + extra, rel=1e-3)
    zero, pi4 = records["rpi-zero-2w"], records["rpi-4-4gb"]
    # Device seconds per host second of each cell's own steps: the two cells ran one after the other, and the host's
    # speed between them (a shared VM's: 17% apart in one CI run) cancels.
    per_host = lambda r: r.metrics.timing.train_seconds / r.metrics.timing.host_train_seconds  # noqa: E731
    step_ratio = per_host(zero) / per_host(pi4)
    raw = zero.metrics.timing.step_time_s / pi4.metrics.timing.step_time_s
    print(f"step ratio {step_ratio:.3f}, raw {raw:.3f}")
    # between the boards' compute ratio (2.03) and their bandwidth ratio (1.79), as the step's phases mix them
    assert pi4.device.bandwidth_gbs / zero.device.bandwidth_gbs * 0.9 < step_ratio
    assert step_ratio < pi4.device.gflops / zero.device.gflops * 1.1


@pytest.mark.timing
@pytest.mark.integration
@pytest.mark.usefixtures("no_leftover_cgroups")
def test_throttled_cells_run_at_the_device_speed_through_the_kernel(tmp_path):
    if require_kernel_caps() != "cgroup-v1":
        pytest.skip("the CPU controller is proven here on cgroup v1; v2 is covered by the fake-tree tests")
    # A fast device keeps the test short: torch's import runs under the throttle too.
    (record,) = run_spec(tmp_path, _spec("device-throttled", fast_board("2GB")))
    assert record.status == "ok" and record.clock.kind == "device-throttled"
    assert record.clock.cpu_quota_cores == pytest.approx(record.device.gflops / record.clock.host_gflops_per_core)
    assert record.device_seconds == record.host_seconds
    # The kernel held the cell to its quota: wall-clock is its CPU time divided by the share.
    assert record.host_seconds * record.clock.cpu_quota_cores == pytest.approx(record.cpu_seconds, rel=0.2)


def test_a_throttle_proof_is_decided_by_the_share_the_kernel_gave_and_fails_past_the_tolerance():
    """Issue 26, finding 12: the verdict is the quota share (CPU seconds per wall second over the quota), which the
    kernel enforces; the device ratio, which drifts with the host's load since its calibration, is reported beside."""
    from devices.verify import ThrottleProof

    def proof(share: float, ratio: float = 1.0) -> ThrottleProof:
        return ThrottleProof("d", 10.0, 10.0 * ratio, 0.1, 1, "", share, [share * 0.97, share, share * 1.02], ratio)

    assert proof(1.0).verified and proof(0.86).verified and proof(1.14, ratio=0.8).verified
    assert not proof(0.84).verified and not proof(1.5).verified and not proof(10.0).verified  # no throttle at all
    assert proof(1.0).as_dict()["spread"] == {"min": 0.97, "max": 1.02, "windows": 3}


def test_a_quota_too_small_for_this_host_to_prove_is_refused_with_the_reason_before_anything_runs():
    from devices.verify import MIN_PROVABLE_QUOTA_US, UnprovableThrottle, prove_throttle

    class NeverStarted:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a proof that cannot hold its verdict was run")

    host = HostSpeed(gflops_per_core=150.0, cores=2, cpu="test", method="test")
    tiny = DeviceProfile(name="tiny", memory="512MiB", cpus=1, gflops=1.5)  # 0.01 cores: 10 ms per 1 s period
    with pytest.raises(UnprovableThrottle, match=r"0\.010-core quota is 10 ms per 1 s period on this host, under the 25 ms"):
        prove_throttle(NeverStarted, tiny, host)
    assert MIN_PROVABLE_QUOTA_US == 25_000
