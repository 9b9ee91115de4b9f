"""`edgebench run --executor ray` on a real two-node Ray cluster on this machine (tests/ray_cluster.py).

The head offers 1 CPU and 700 MiB, the worker 2 CPUs and 3 GiB, so a 1 GiB device can only run on the worker.
Neither node can see the pytest directories (the run directories among them): records and logs must
come back through Ray, and what a node wrote at the hidden path stays behind in its namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.record.store import load_records
from tests.helpers import CliResult, cell_cgroups, edgebench, require_kernel_caps, start_edgebench, write_spec
from tests.ray_cluster import HEAD, SIX, WORKER, TwoNodeCluster, can_start_cluster, start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.usefixtures("no_leftover_cgroups")]

WAIT_S = 120

# One roomy cell per seed that trains until it is stopped (the tests kill or interrupt it).
LONG = """
name: ray-long
devices:
  - {name: roomy, memory: 1GiB, cpus: 1}
timeout_s: 600
matrix:
  model: opt-1m
  method: mezo
  task: synthetic
  batch: 2
  seq_len: 16
  seed: SEEDS
  max_steps: MAX_STEPS
"""


def long_spec(seeds: int = 1, max_steps: int | None = None) -> str:
    steps = "null\n  max_seconds: 600" if max_steps is None else str(max_steps)
    return LONG.replace("SEEDS", str(list(range(seeds)))).replace("MAX_STEPS", steps)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> TwoNodeCluster:
    require_kernel_caps()
    reason = can_start_cluster()
    if reason:
        pytest.skip(reason)
    nodes = start_cluster(tmp_path_factory.getbasetemp(), HEAD, WORKER)
    yield nodes
    nodes.stop()


def run_on(cluster: TwoNodeCluster, spec: Path, out: Path, *extra: str) -> CliResult:
    argv = ["run", str(spec), "--out", str(out), "--no-report", "--executor", "ray", *extra]
    return edgebench(*argv, process=True, env=cluster.driver_env(), timeout=WAIT_S * 2)


def start_run(spec: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """The CLI in its own process group, as a shell starts a foreground job (Ctrl-C reaches the whole group)."""
    argv = ["run", str(spec), "--out", str(out), "--no-report", "--executor", "ray", *extra]
    return start_edgebench(
        *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, process_group=0
    )


def processes_under(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
    return found


def command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def cell_work(roots: list[int]) -> list[psutil.Process]:
    """Under these processes: Ray workers inside a cell task, and the cells' own runners."""
    return [
        p
        for p in processes_under(roots)
        if command(p).startswith("ray::run_cell") or "workloads.runner" in command(p)
    ]


def runners(roots: list[int]) -> list[psutil.Process]:
    return [p for p in processes_under(roots) if "workloads.runner" in command(p)]


def cell_worker(roots: list[int], killed: set[int]) -> psutil.Process | None:
    """The Ray worker running a cell's runner now, other than those killed before."""
    for runner in runners(roots):
        with contextlib.suppress(psutil.Error):
            parent = runner.parent()
            if (
                parent is not None
                and parent.pid not in killed
                and command(parent).startswith("ray::run_cell")
            ):
                return parent
    return None


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def node_roots(cluster: TwoNodeCluster) -> list[int]:
    return [node.process.pid for node in cluster.nodes]


def statuses(out: Path) -> dict[str, str]:
    return {r.cell_id: r.status for r in load_records(out)}


def test_two_node_run_equals_local_and_only_the_driver_writes(cluster, tmp_path):
    spec = write_spec(tmp_path, SIX)
    local = edgebench("run", str(spec), "--out", str(tmp_path / "local"), "--no-report", "--jobs", "2", process=True)
    assert local.returncode == 0, local.stderr[-3000:]
    proc = run_on(cluster, spec, tmp_path / "ray", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]

    expected = statuses(tmp_path / "local")
    assert sorted(expected.values()) == ["ok", "ok", "oom", "oom", "oom", "oom"]
    assert statuses(tmp_path / "ray") == expected
    records = load_records(tmp_path / "ray")
    assert {r.executor for r in records} == {"ray"}
    ok = [r for r in records if r.status == "ok"]
    assert all(r.steps == 2 and r.peak_memory_source == "rss" for r in ok)
    # Logs came back through Ray; the 1 GiB cells ran on the worker, in its own directory.
    for record in records:
        log = (tmp_path / "ray" / "logs" / f"{record.cell_id}.log").read_text()
        assert log.startswith("edgebench: attempt 1 ran on Ray node"), log[:300]
        if record.device.name == "roomy":
            assert f"scratch {cluster.worker.scratch}/" in log.splitlines()[0]
    # No node wrote at the driver's path (hidden from both); the cells' scratch went (torch's caches stay).
    assert [node.written_over_hidden(cluster.hidden) for node in cluster.nodes] == [[], []]
    assert [p.name for p in cluster.worker.scratch.iterdir() if p.name.startswith("edgebench")] == []


def test_device_larger_than_every_node_is_refused_in_one_line(cluster, tmp_path):
    spec = write_spec(tmp_path, long_spec(max_steps=2).replace("memory: 1GiB", "memory: 4GiB"))
    proc = run_on(cluster, spec, tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("edgebench: error:")]
    assert "device roomy needs 1 CPU, 4.0 GiB memory on one Ray node" in line
    assert "the cluster's largest offer 2 CPU, 3.0 GiB memory" in line
    assert load_records(tmp_path / "run") == []


@pytest.mark.parametrize("kills", [1, 2])
def test_killed_worker_is_retried_once_then_the_cell_is_an_error(cluster, tmp_path, kills):
    before = cell_cgroups()
    spec = write_spec(tmp_path, long_spec(max_steps=2))
    harness = start_run(spec, tmp_path / "run", cluster.driver_env())
    killed: set[int] = set()
    for _ in range(kills):
        worker = wait_for(lambda: cell_worker(node_roots(cluster), killed), "a cell to start on the cluster")
        worker.kill()
        killed.add(worker.pid)
    _, stderr = harness.communicate(timeout=WAIT_S)
    (record,) = load_records(tmp_path / "run")
    log = (tmp_path / "run" / "logs" / f"{record.cell_id}.log").read_text()
    if kills == 1:
        assert harness.returncode == 0, stderr[-3000:]
        assert record.status == "ok" and record.steps == 2
        assert log.startswith("edgebench: attempt 1 lost: WorkerCrashedError")
        assert "edgebench: attempt 2 ran on Ray node" in log
    else:
        assert harness.returncode == 3, stderr[-3000:]  # a cell without a measurement
        assert record.status == "error"
        assert record.error.startswith("its Ray task was lost on all 2 attempts (worker or node died)")
        assert "WorkerCrashedError" in record.error
    assert cell_cgroups() - before == set()  # the killed workers' cgroups were swept
    assert cell_work(node_roots(cluster)) == []


def test_ctrl_c_on_the_cluster_cancels_cells_and_removes_their_cgroups(cluster, tmp_path):
    before = cell_cgroups()
    harness = start_run(
        write_spec(tmp_path, long_spec(seeds=2)), tmp_path / "run", cluster.driver_env(), "--jobs", "2"
    )
    wait_for(lambda: len(runners(node_roots(cluster))) == 2, "two cells running")
    os.killpg(harness.pid, signal.SIGINT)
    _, stderr = harness.communicate(timeout=WAIT_S)
    assert harness.returncode == 130, stderr[-3000:]
    assert cell_work(node_roots(cluster)) == []
    assert cell_cgroups() - before == set()
    assert load_records(tmp_path / "run") == []  # an interrupted cell is not a result
    assert all(node.process.poll() is None for node in cluster.nodes)  # the user's cluster stays up


def test_ctrl_c_stops_the_local_cluster_that_edgebench_started(tmp_path):
    require_kernel_caps()
    if not Path(sys.executable).with_name("ray").exists():
        pytest.skip("Ray is not installed (pip install 'edgebench[ray]')")
    before = cell_cgroups()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    harness = start_run(write_spec(tmp_path, long_spec()), tmp_path / "run", env)
    wait_for(lambda: runners([harness.pid]), "a cell to start on the local cluster")
    started = processes_under([harness.pid])
    assert any("raylet" in command(p) for p in started)
    # The cluster listens on every interface: it demands a fresh token, which the cells never inherit.
    (gcs,) = [p for p in started if "gcs_server" in command(p)]
    environ = gcs.environ()
    assert environ["RAY_AUTH_MODE"] == "token" and len(environ["RAY_AUTH_TOKEN"]) == 64
    assert not [p for p in runners([harness.pid]) if "RAY_AUTH_TOKEN" in p.environ()]
    os.killpg(harness.pid, signal.SIGINT)
    _, stderr = harness.communicate(timeout=WAIT_S)
    assert harness.returncode == 130, stderr[-3000:]
    psutil.wait_procs(started, timeout=10)
    assert [command(p) for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert cell_cgroups() - before == set()
