"""A real two-node Ray cluster on this machine, for the Ray tests and benchmark.

Each node is its own `ray start --block` process with its own CPUs, memory, custom resources, working
directory (cwd, HOME, TMPDIR and caches) and Ray temporary directory. Each runs in its own mount namespace
where the driver's directory is covered by an empty tmpfs: the nodes cannot read or write the run
directory, as on a cluster without a shared filesystem, and whatever a node wrote at that path stays
visible in its namespace (`written_over_hidden`) for the test to check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
GIB = 1 << 30
#: The shared cluster of the tests and the benchmark, as (cpus, memory bytes, custom resources) per node: a
#: 1 GiB device fits only on the worker.
HEAD = (1, 700 << 20, {"head-node": 1})
WORKER = (2, 3 * GIB, {"worker-node": 1})
#: 6 cells: the two small devices are OOM-killed while importing torch; the 1 GiB one runs on the worker.
SIX = """
name: ray-six
devices:
  - {name: tiny, memory: 120MiB, cpus: 1}
  - {name: small, memory: 150MiB, cpus: 1}
  - {name: roomy, memory: 1GiB, cpus: 1}
timeout_s: 120
matrix:
  model: opt-1m
  method: [mezo, inference]
  task: synthetic
  batch: 2
  seq_len: 16
  max_steps: 2
"""
START_TIMEOUT_S = 60
STOP_GRACE_S = 10
#: Enough for records and logs; Ray's default (30% of memory per node) only reserves /dev/shm for nothing.
OBJECT_STORE_BYTES = 100_000_000
#: Covers the driver's directory inside the node's namespace, then starts the node.
HIDE_AND_EXEC = 'mount -t tmpfs -o size=16m edgebench-hidden "$1" && shift && exec "$@"'


def can_start_cluster() -> str | None:
    """None when this machine can run the cluster, else why not (the tests skip with it)."""
    if not Path(RAY).exists():
        return "Ray is not installed (pip install 'edgebench[ray]')"
    if shutil.which("unshare") is None:
        return "no `unshare` to give each Ray node its own mount namespace"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"cannot create a mount namespace ({probe.stderr.strip()}); run as root"
    return None


@dataclass
class RayNode:
    role: str
    workdir: Path  # cwd, HOME, TMPDIR and caches: everything the node may write
    process: subprocess.Popen
    descendants: set[int] = field(default_factory=set)

    def start_log(self) -> str:
        """What `ray start` printed: the first thing to read when a node does not come up."""
        return (self.workdir / "start.log").read_text(errors="replace")[-3000:]

    @property
    def temp_dir(self) -> Path:
        return self.workdir / "ray"

    @property
    def scratch(self) -> Path:
        return self.workdir / "tmp"

    def pids(self) -> set[int]:
        """The node's processes now and any seen before (workers come and go)."""
        with contextlib.suppress(psutil.Error):
            self.descendants |= {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        return self.descendants

    def written_over_hidden(self, hidden: Path) -> list[str]:
        """What the node's processes wrote at the hidden driver path, as the node sees it."""
        return sorted(os.listdir(f"/proc/{self.process.pid}/root{hidden}"))


def node_env(workdir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "XDG_CACHE_HOME": str(workdir / "cache"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def start_node(role: str, hidden: Path, options: list[str]) -> RayNode:
    """One `ray start --block` in a fresh mount namespace; a short workdir keeps Ray's socket paths legal."""
    workdir = Path(tempfile.mkdtemp(prefix=f"eb-{role}-", dir="/tmp"))
    for sub in ("tmp", "cache", "ray"):
        (workdir / sub).mkdir()
    argv = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_AND_EXEC, "sh", str(hidden),
        RAY, "start", "--block", "--temp-dir", str(workdir / "ray"), "--disable-usage-stats", "--object-store-memory", str(OBJECT_STORE_BYTES), *options,
    ]  # fmt: skip
    with open(workdir / "start.log", "wb") as log:
        process = subprocess.Popen(
            argv, cwd=workdir, env=node_env(workdir), stdout=log, stderr=subprocess.STDOUT
        )
    return RayNode(role, workdir, process)


def node_options(cpus: int, memory_bytes: int, resources: dict[str, float]) -> list[str]:
    return ["--num-cpus", str(cpus), "--memory", str(memory_bytes), "--resources", json.dumps(resources)]


@dataclass
class TwoNodeCluster:
    """A head and a worker; `address` is what RAY_ADDRESS takes."""

    head: RayNode
    worker: RayNode
    address: str
    hidden: Path

    @property
    def nodes(self) -> tuple[RayNode, RayNode]:
        return self.head, self.worker

    def driver_env(self) -> dict[str, str]:
        return {**os.environ, "RAY_ADDRESS": self.address, "RAY_USAGE_STATS_ENABLED": "0"}

    def pids(self) -> set[int]:
        return self.head.pids() | self.worker.pids()

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it stops its node), then SIGKILL whatever of its tree is left."""
        for node in self.nodes:
            node.pids()
            node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            kill_pids(node.descendants)
            shutil.rmtree(node.workdir, ignore_errors=True)


def kill_pids(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


def start_cluster(
    hidden: Path,
    head: tuple[int, int, dict[str, float]],
    worker: tuple[int, int, dict[str, float]],
) -> TwoNodeCluster:
    """Start a head and a worker, each given (cpus, memory bytes, custom resources); waits for both."""
    head_node = start_node(
        "head", hidden, ["--head", "--port", "0", "--include-dashboard", "false", *node_options(*head)]
    )
    cluster = None
    try:
        address = _wait_for_file(head_node.temp_dir / "ray_current_cluster", head_node).strip()
        worker_node = start_node("worker", hidden, ["--address", address, *node_options(*worker)])
        cluster = TwoNodeCluster(head_node, worker_node, address, hidden)
        _wait_for_nodes(cluster, 2)
    except BaseException:
        if cluster is not None:
            cluster.stop()
        else:
            head_node.process.kill()
            kill_pids(head_node.pids())
        raise
    return cluster


def _wait_for_file(path: Path, node: RayNode) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        if node.process.poll() is not None:
            raise RuntimeError(f"the Ray {node.role} exited with {node.process.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"the Ray {node.role} did not write {path} within {START_TIMEOUT_S} s")


def _wait_for_nodes(cluster: TwoNodeCluster, count: int) -> None:
    """Both raylets registered with the GCS (asked from a throwaway driver that does not join as a node)."""
    script = (
        "import ray, time\n"
        f"ray.init(address={cluster.address!r}, include_dashboard=False, log_to_driver=False)\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
        "    time.sleep(0.2)\n"
    )
    checker = subprocess.Popen(
        [sys.executable, "-c", script], env=cluster.driver_env(), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while checker.poll() is None and time.monotonic() < deadline:
            if any(node.process.poll() is not None for node in cluster.nodes):
                break
            time.sleep(0.2)
    finally:
        checker.kill()
    if checker.wait() != 0:
        logs = "\n".join(f"--- {node.role}:\n{node.start_log()}" for node in cluster.nodes)
        raise RuntimeError(f"the {count} Ray nodes did not come up; `ray start` said:\n{logs}")
