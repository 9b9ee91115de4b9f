"""Docker for real: a real engine, the project image built from the Dockerfile offline, real OOM kills.

The engine and image come from tests/docker_engine.py (installed, started, built and cached there).
The last test stops the engine and checks that nothing is left behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.record.store import iter_records, load_records, read_run_info
from harness.run.executors.docker import LABEL
from tests import docker_engine
from tests.docker_engine import Compose
from tests.helpers import OOM_AND_OK, edgebench, fast_board, opt_1m_spec, start_edgebench, write_spec

pytestmark = [pytest.mark.docker, pytest.mark.integration]

# Two devices x two methods, a tiny model: enough to show slices, caps and the report.
TWO_BY_TWO = opt_1m_spec(
    "two-by-two",
    "[{name: small-512mib, memory: 512MiB, cpus: 1, gflops: 20}, {name: large-1gib, memory: 1GiB, cpus: 2, gflops: 60}]",
)

# Three devices x three methods: a run long enough (about a minute) to be interrupted at several points.
THREE_BY_THREE = opt_1m_spec(
    "three-by-three",
    "[{name: dev-a, memory: 512MiB, cpus: 1, gflops: 20}, {name: dev-b, memory: 768MiB, cpus: 1, gflops: 40},"
    " {name: dev-c, memory: 1GiB, cpus: 1, gflops: 60}]",
    "[mezo, bp-checkpointed, bp]",
)


def assert_hardened(container, memory: int, user: str = "1000:1000", cap_add: tuple[str, ...] = ()) -> None:
    """What `docker inspect` must show of every edgebench container (issue 15): its memory limit and no swap,
    no network, no capabilities (but `cap_add`), no-new-privileges, a read-only root, an unprivileged user."""
    host, name = container.attrs["HostConfig"], container.name
    assert (host["Memory"], host["MemorySwap"]) == (memory, memory), name
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True, name
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"], name
    assert [c.removeprefix("CAP_") for c in host["CapAdd"] or ()] == list(cap_add), name  # the engine may prefix
    assert container.attrs["Config"]["User"] == user, name


def running_cell_container(client, timeout_s: float = 120):
    """The first cell container the engine runs (inspected while it runs: the executor removes it after)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = client.containers.list(filters={"label": LABEL})
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError("no cell container started")


def test_docker_executor_runs_its_cell_in_a_hardened_container_and_the_cell_completes(engine, tmp_path):
    spec = write_spec(tmp_path, opt_1m_spec("hardened", "[rpi-4-2gb]", "[mezo]"))
    out = tmp_path / "run"
    argv = ["run", str(spec), "--executor", "docker", "--out", str(out), "--no-report"]
    harness = start_edgebench(*argv, stderr=subprocess.PIPE, text=True)
    client = engine.client()
    try:
        container = running_cell_container(client)
    finally:
        _, stderr = harness.communicate(timeout=300)
        client.close()
    assert harness.returncode == 0, stderr[-3000:]
    (record,) = load_records(out)
    assert record.status == "ok" and record.executor == "docker", record.error
    assert_hardened(container, record.device.memory_bytes)
    period, quota = container.attrs["HostConfig"]["CpuPeriod"], container.attrs["HostConfig"]["CpuQuota"]
    assert quota / period == record.device.cpus  # the CPU quota holds beside the hardening


def scaled_seconds(record) -> float:
    """The scaled clock's figure: CPU seconds at the device's ratio, plus the roofline's correction the cell
    reported (none for a device without a memory bandwidth)."""
    extra = record.metrics.device_clock.roofline_extra_s
    return record.cpu_seconds * record.clock.ratio + extra


def test_docker_executor_over_cap_is_oom_and_under_cap_is_ok(engine, tmp_path):
    out = tmp_path / "run"
    spec = write_spec(tmp_path, OOM_AND_OK)
    proc = edgebench("run", str(spec), "--executor", "docker", "--out", str(out), "--no-report", process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r.device.name: r for r in load_records(out)}
    small, large = records["rpi-zero-2w"], records["rpi-4-2gb"]
    assert (small.executor, small.enforcement) == ("docker", "container")
    assert small.status == "oom", small
    # Read inside the container before it ended: the cgroup's high-water mark reached the cap.
    assert 0.9 * small.device.memory_bytes <= small.memory.cgroup_peak_bytes <= small.device.memory_bytes
    assert large.status == "ok", large.error
    assert large.steps == 1 and large.validity.valid, large.validity
    assert large.peak_memory_source == "rss" and 300e6 < large.peak_memory_bytes < large.device.memory_bytes
    assert 300e6 < large.memory.cgroup_peak_bytes < large.device.memory_bytes
    assert (out / "logs" / f"{large.cell_id}.log").exists()
    # The default clock, inside the container: the cell's CPU seconds converted at the device's ratio, plus the
    # roofline's correction of its phases (devices.roofline), which the cell reports.
    assert large.clock.kind == "device-scaled" and large.clock.device_gflops == large.device.gflops
    assert large.device_seconds == pytest.approx(scaled_seconds(large), rel=1e-3)
    assert not engine.client().containers.list(all=True, filters={"label": LABEL})


@pytest.mark.timing
def test_docker_executor_throttles_a_cell_to_its_device_speed(engine, tmp_path):
    spec = opt_1m_spec("throttled", fast_board("1GiB"), "[mezo]").replace("timeout_s: 300", "timeout_s: 900\nclock: device-throttled")
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, spec)), "--executor", "docker", "--out", str(out), "--no-report", process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = load_records(out)
    assert record.status == "ok" and record.clock.kind == "device-throttled", record.error
    # The engine's cpu_quota came from the clock (the container refuses any other) and held the cell to it.
    assert record.device_seconds == record.host_seconds
    assert record.host_seconds * record.clock.cpu_quota_cores == pytest.approx(record.cpu_seconds, rel=0.25)


def test_ctrl_c_removes_the_running_cells_container(engine, tmp_path):
    spec = OOM_AND_OK.replace("devices: [rpi-zero-2w, rpi-4-2gb]", "devices: [rpi-4-2gb]")
    spec = spec.replace("opt-125m", "opt-1m").replace("max_steps: 1", "max_steps: null\n  max_seconds: 600")
    out = tmp_path / "run"
    argv = ["run", str(write_spec(tmp_path, spec)), "--executor", "docker", "--out", str(out), "--no-report"]
    harness = start_edgebench(
        *argv,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: under a background shell SIGINT arrives ignored, and Python then keeps ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    client = engine.client()
    running_cell_container(client)
    harness.send_signal(signal.SIGINT)
    assert harness.wait(timeout=60) == 130, harness.stderr.read()[-2000:]
    assert not client.containers.list(all=True, filters={"label": LABEL})
    assert load_records(out) == []  # an interrupted cell is not a result


def test_compose_runs_each_device_in_its_own_hardened_capped_container_then_the_report(engine, tmp_path):
    # ./results belongs to someone who is neither root nor the services' user (a checkout of another user):
    # `prepare` needs both its capabilities to make the run's folder there and hand it over.
    (tmp_path / "results").mkdir()
    os.chown(tmp_path / "results", 4242, 4242)
    compose = Compose(engine, tmp_path, TWO_BY_TWO, "edgebench-test")
    client = compose.client
    before = {c.id for c in client.containers.list(all=True)}  # a cached data root may hold others' leftovers
    try:
        compose.up()
        containers = compose.containers()
        assert set(containers) == set(compose.services) == {"prepare", "small-512mib", "large-1gib", "report"}
        assert_hardened(containers["prepare"], 32 << 20, user="0:0", cap_add=("CHOWN", "DAC_OVERRIDE"))
        for name, memory in (("small-512mib", 512 << 20), ("large-1gib", 1 << 30)):  # see harness.run.harness_user
            assert_hardened(containers[name], memory, user="0:0", cap_add=("CHOWN", "KILL", "SETGID", "SETUID"))
        assert_hardened(containers["report"], 1 << 30)
        for name, container in containers.items():
            host = container.attrs["HostConfig"]
            assert (host["CpuPeriod"], host["CpuQuota"]) == (
                compose.services[name].get("cpu_period", 0),
                compose.services[name].get("cpu_quota", 0),
            ), name
            assert container.attrs["State"]["ExitCode"] == 0, name
        # The cache volume took the image's /cache owner: the containers cached their host calibration there.
        cache = Path(client.volumes.get("edgebench-test_edgebench-cache").attrs["Mountpoint"])
        assert [p.stat().st_uid for p in cache.glob("edgebench/host-speed-*.json")] == [1000]
    finally:
        compose.down()
    run_dir = tmp_path / "results" / "two-by-two"
    records = load_records(run_dir)
    assert sorted((r.device.name, r.params.method, r.status) for r in records) == [
        ("large-1gib", "bp-checkpointed", "ok"),
        ("large-1gib", "mezo", "ok"),
        ("small-512mib", "bp-checkpointed", "ok"),
        ("small-512mib", "mezo", "ok"),
    ]
    assert {r.enforcement for r in records} == {"container"}
    for record in records:  # each device container ran its cells on its own scaled clock
        assert record.clock.kind == "device-scaled" and record.clock.device_gflops == record.device.gflops
        assert record.device_seconds == pytest.approx(scaled_seconds(record), rel=1e-3)
    assert read_run_info(run_dir).spec.name == "two-by-two"  # merged from the device slices' run info
    assert "<html" in (run_dir / "report.html").read_text()[:2000].lower()
    left = [(c.name, c.image.tags, c.labels) for c in client.containers.list(all=True) if c.id not in before]
    assert not left, f"containers left behind: {left}"
    assert {n.name for n in client.networks.list()} <= {"none", "host"}


def test_compose_interrupted_at_random_points_resumes_to_one_record_per_cell(engine, tmp_path):
    """Ctrl-C on `docker-compose up` at random moments, 5 times, then `up` again each time: compose stops every
    container (none runs on), and the last `up` ends with no failed service and exactly one record per cell."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    compose = Compose(engine, tmp_path, THREE_BY_THREE, "edgebench-sigint")
    run_dir = tmp_path / "results" / "three-by-three"

    def recorded() -> list[str]:
        """The cell id of every record line, repeats included (load_records keeps one per cell)."""
        return [r.cell_id for r in iter_records(run_dir)]

    # Where to interrupt: once k of the 9 cells are recorded, then a random delay,
    # so that the interrupts fall in every stage of the run, not 5 times in its first seconds. One due while compose
    # is still starting services waits until they have started: compose v1 stops only the containers running when
    # Ctrl-C arrives, and one it starts a moment later runs on (its known race, fixed in compose v2 by
    # docker/compose#10479).
    points = [(k, rng.uniform(0.5, 6.0)) for k in sorted(rng.sample(range(9), 5))]
    landed = 0
    try:
        for k, delay in points:
            before = compose.start_times()
            up = compose.popen("up")
            deadline = time.monotonic() + 300
            while len(recorded()) < k and up.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            interrupt_at = time.monotonic() + delay
            while not compose.started_since(before) and up.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(max(0.0, interrupt_at - time.monotonic()))
            if up.poll() is None:
                up.send_signal(signal.SIGINT)
                landed += 1
            output, _ = up.communicate(timeout=120)
            where = f"seed {seed}, interrupt after {k} cells + {delay:.1f} s"
            running = list(compose.containers(running_only=True))
            assert not running, f"{where}: still running {running}\n{output[-2000:]}"
            ids = recorded()
            assert len(ids) == len(set(ids)), f"{where}: a cell recorded twice"
        assert landed == 5, f"seed {seed}: {5 - landed} of the interrupts came after the run had finished"
        compose.up()
        exits = {name: c.attrs["State"]["ExitCode"] for name, c in compose.containers().items()}
        assert set(exits) == set(compose.services) and not any(exits.values()), f"seed {seed}: {exits}"
    finally:
        compose.down()
    records = list(iter_records(run_dir))
    cells = sorted((r.device.name, r.params.method) for r in records)
    methods = ("bp", "bp-checkpointed", "mezo")
    assert cells == [(d, m) for d in ("dev-a", "dev-b", "dev-c") for m in methods], f"seed {seed}"
    assert {r.status for r in records} == {"ok"}, f"seed {seed}"
    assert not compose.containers(), f"seed {seed}: containers left after down"


def test_nothing_is_left_behind(engine):
    docker_engine.stop_engine(engine)
    assert engine.process is None or engine.process.poll() is not None
    leftovers = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    if engine.exec_root is not None:
        assert str(engine.exec_root) not in leftovers, "dockerd or its containerd still runs"
        assert not docker_engine.mounts_under(engine.exec_root) and not engine.exec_root.exists()
