"""Cells as Ray tasks, on a cluster of machines that share no filesystem (`edgebench run --executor ray`).

A cell is one task that asks for its device's CPUs, memory (and a GPU): Ray places it on a node with
room, where the local executor runs it under that node's cgroups (Ray's `memory` resource is logical,
admission only) in a scratch directory of the node's own. The task streams the runner's progress back
and ends with what it observed and the cell's log, so only the driver writes the run directory. A task
whose worker or node dies is submitted once more, then recorded `error`; an OOM kill inside the cell is
a result. Ctrl-C cancels the tasks (each kills its cell and removes its cgroups) and then sweeps every
node for cgroups of workers that died. Connects to RAY_ADDRESS when set, else starts a local cluster
and stops it at the end. See docs/ray.md.
"""

from __future__ import annotations

import hashlib
import os
import queue
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices.cache import cache_dir
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import now_iso
from harness.record.store import LOGS_DIR, write_bytes_atomic
from harness.run.executors.base import (
    CHUNK_BYTES,
    MAX_LOG_BYTES,
    ChildOutcome,
    Executor,
    ProgressFn,
)
from harness.run.executors.local import LocalExecutor
from harness.run.executors.ray_placement import placement, placement_problem, task_options
from workloads.resumable import CHECKPOINTS_DIR, Checkpointing

POLL_S = 0.2
#: How long a cancelled task may take to kill its cell and remove the cgroups before Ray kills its worker.
CANCEL_GRACE_S = 10.0
#: A cell whose worker or node dies is tried once more; a second death is its result (`error`).
ATTEMPTS = 2


@dataclass(frozen=True)
class Finished:
    """A task's last item: what the node's local executor observed, the cell's log and where it ran."""

    outcome: ChildOutcome
    log: str
    where: str


def lost_outcome(started_at: str, wall_seconds: float, losses: list[str]) -> ChildOutcome:
    """A cell whose task was lost on every attempt (its worker or node died): no measurement, and why."""
    reason = f"its Ray task was lost on all {len(losses)} attempts (worker or node died); last: {losses[-1]}"
    return ChildOutcome(
        started_at=started_at,
        wall_seconds=wall_seconds,
        returncode=None,
        timed_out=False,
        oom_killed=False,
        result=None,
        stderr_tail=reason,
    )


def log_header(losses: list[str], where: str | None) -> str:
    """Lines before the cell's own log: each lost attempt, then where the finishing attempt ran."""
    lines = [f"edgebench: attempt {n} lost: {reason}" for n, reason in enumerate(losses, 1)]
    if where is not None:
        lines.append(f"edgebench: attempt {len(losses) + 1} ran on {where}")
    return "".join(line + "\n" for line in lines)


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


# --- what runs on the nodes -------------------------------------------------------------------------------


def run_cell(
    cell: Cell,
    timeout_s: float,
    enforcement: str,
    checkpointing: Checkpointing | None = None,
    state_root: str | None = None,
) -> Iterator[dict[str, Any] | Finished]:
    """The task: the local executor in a node-local scratch directory, its progress streamed as it comes.
    The cell runs in a thread so that this generator can yield; on Ray's cancel (KeyboardInterrupt here)
    or any exit, the thread is told to stop, which kills the cell and removes its cgroups."""
    with tempfile.TemporaryDirectory(prefix="edgebench-ray-", ignore_cleanup_errors=True) as name:
        scratch = Path(name)
        states = node_state_root(state_root) if checkpointing else None
        executor = LocalExecutor(scratch, timeout_s, enforcement, checkpointing, states)
        executor.admit([cell])  # as root: can this node's cell user run it (else refused, never root)?
        items: queue.Queue = queue.Queue()
        thread = threading.Thread(target=_execute_into, args=(executor, cell, items), daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = items.get(timeout=POLL_S)  # a timeout, so that Ray's cancel can interrupt the wait
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, ChildOutcome):
                    if states is not None and measured(item):
                        shutil.rmtree(states / cell.id, ignore_errors=True)
                    with open(scratch / "logs" / f"{cell.id}.log", "rb") as handle:  # the executor bounds it
                        log = handle.read(MAX_LOG_BYTES + CHUNK_BYTES).decode(errors="replace")
                    yield Finished(item, log, _where(scratch))
                    return
                yield item
        finally:
            executor.stop.set()
            thread.join()
            executor.close()  # puts back what admit opened to the cell user, and the host's cgroup setup


def node_state_root(driver_root: str | None) -> Path:
    """Where this node keeps cells' state directories: the driver's RUN_DIR/checkpoints when this node sees that
    folder and can write it (shared storage, or the driver's own host), else a node-local folder of the edgebench cache named
    by it. Without shared storage a cell so resumes only when Ray places it on the node that holds its state;
    elsewhere it starts at step 0."""
    if driver_root and Path(driver_root).is_dir() and os.access(driver_root, os.W_OK):
        return Path(driver_root)  # the driver made it: this node sees the driver's storage
    key = hashlib.sha256((driver_root or "").encode()).hexdigest()[:16]
    return cache_dir() / "ray-state" / key


def measured(outcome: ChildOutcome) -> bool:
    """A cell whose outcome is a measurement (ok or oom) is final: its state has served."""
    status = (outcome.result or {}).get("status")
    return not outcome.timed_out and (outcome.oom_killed or status in ("ok", "oom"))


def _where(scratch: Path) -> str:
    import ray

    return (
        f"Ray node {ray.get_runtime_context().get_node_id()[:12]} ({socket.gethostname()}), scratch {scratch}"
    )


def _execute_into(executor: LocalExecutor, cell: Cell, items: queue.Queue) -> None:
    try:
        items.put(executor.execute(cell, lambda _cell, event: items.put(event)))
    except BaseException as exc:  # raised again in the task's own thread
        items.put(exc)


def node_backend(enforcement: str) -> tuple[str, bool, bool]:
    """The cap backend this node would use, whether it can throttle, and whether it can govern a throttle."""
    executor = LocalExecutor(Path(tempfile.gettempdir()), 0, enforcement)  # chooses; writes no run directory
    return executor.enforcement, executor.throttles, executor.governs


def sweep_node() -> list[str]:
    """Remove the cgroups of cells whose Ray worker died: a killed worker never ran its cap's cleanup."""
    from devices.caps.base import sweep_stale
    from devices.caps.cgroup_v1 import CONTROLLERS, controller_dir
    from devices.caps.cgroup_v2 import find_base

    parents = (*(controller_dir(c) for c in CONTROLLERS), find_base())
    return [name for parent in parents if parent is not None for name in sweep_stale(parent)]


# --- the driver ---------------------------------------------------------------------------------------------


class RayExecutor(Executor):
    name = "ray"

    def __init__(
        self,
        run_dir: Path,
        timeout_s: float,
        enforcement: str = "auto",
        checkpointing: Checkpointing | None = None,
    ) -> None:
        super().__init__(run_dir, timeout_s, enforcement, checkpointing)
        if not os.environ.get("RAY_ADDRESS"):
            local_cluster_token()
        try:
            import ray
        except ImportError:
            raise UserError(
                "the ray executor needs Ray; install it with `pip install 'edgebench[ray]'`"
            ) from None
        self.ray = ray
        self.connected_here = not ray.is_initialized()
        if self.connected_here:
            connect(ray)
        self.needs_sweep = False  # set once a worker died or a task was cancelled
        self._task = ray.remote(num_returns="streaming")(run_cell)
        self._enforcement, self._throttles, self._governs = self._agreed_backend(enforcement)

    @property
    def enforcement(self) -> str:
        return self._enforcement

    @property
    def throttles(self) -> bool:
        return self._throttles

    @property
    def governs(self) -> bool:
        return self._governs

    def admit(self, cells: list[Cell]) -> None:
        """Refuse, in one line, a cell that no node of the cluster could ever run (it would wait forever)."""
        nodes = [node["Resources"] for node in self.ray.nodes() if node["Alive"]]
        for cell in cells:
            problem = placement_problem(cell, nodes)
            if problem:
                raise UserError(problem)

    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        self.admit([cell])
        started_at, t0 = now_iso(), time.perf_counter()
        losses: list[str] = []
        while len(losses) < ATTEMPTS:
            try:
                finished = self._attempt(cell, progress)
            except self.ray.exceptions.RayTaskError as exc:  # the task itself failed: it would fail again
                raise _user_error(exc) from None
            except self.ray.exceptions.RayError as exc:  # Ray lost its worker or node: a retry can finish it
                self.needs_sweep = True
                losses.append(first_line(exc))
                continue
            self._write_log(cell, log_header(losses, finished.where) + finished.log)
            return finished.outcome
        self._write_log(cell, log_header(losses, None))
        return lost_outcome(started_at, time.perf_counter() - t0, losses)

    def _attempt(self, cell: Cell, progress: ProgressFn) -> Finished:
        """One task: pass its progress on until its last item; on Ctrl-C cancel it and raise KeyboardInterrupt."""
        if self.checkpointing is not None:  # nodes that see this folder keep their cells' state in it
            (self.run_dir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
        stream = self._task.options(**task_options(placement(cell))).remote(
            cell,
            self.timeout_s,
            self.enforcement_requested,
            self.checkpointing,
            str(self.run_dir.resolve() / CHECKPOINTS_DIR),
        )
        while True:
            if self.stop.is_set():
                self._cancel(stream)
                raise KeyboardInterrupt  # an interrupted cell is not a result; resume redoes it
            if not self.ray.wait([stream], timeout=POLL_S)[0]:
                continue
            item = self.ray.get(next(stream))
            if isinstance(item, Finished):
                return item
            progress(cell, item)

    def _cancel(self, stream) -> None:
        """Ask the task to stop (its cell is killed and its cgroups removed); force it if it does not end."""
        self.needs_sweep = True
        done = stream.completed()
        for force in (False, True):
            self.ray.cancel(stream, force=force)
            if self.ray.wait([done], timeout=CANCEL_GRACE_S)[0]:
                return

    def _write_log(self, cell: Cell, text: str) -> None:
        write_bytes_atomic(self.run_dir / LOGS_DIR / f"{cell.id}.log", text.encode())

    def _agreed_backend(self, enforcement: str) -> tuple[str, bool, bool]:
        """Every node must cap cells the same way, or records from different nodes would not compare."""
        backends = self._on_every_node(node_backend, enforcement)
        if len(set(backends.values())) > 1:
            named = ", ".join(f"{node}: {name}" for node, (name, *_) in sorted(backends.items()))
            raise UserError(
                f"the Ray nodes cap cells differently ({named}); give every node the same cgroup setup "
                "or pass --enforcement with a backend all of them have"
            )
        return next(iter(backends.values()))

    def _on_every_node(self, function: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """Run a zero-CPU task pinned to each live node (it runs even beside busy cells): node id -> result."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ids = [node["NodeID"] for node in self.ray.nodes() if node["Alive"]]
        remote = self.ray.remote(function)
        refs = [
            remote.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(*args)
            for node in ids
        ]
        try:
            return dict(zip(ids, self.ray.get(refs), strict=True))
        except self.ray.exceptions.RayTaskError as exc:
            raise _user_error(exc) from None

    def close(self) -> None:
        if not self.ray.is_initialized():
            return
        try:
            if self.needs_sweep:
                self._on_every_node(sweep_node)
        finally:
            if self.connected_here:
                self.ray.shutdown()


def local_cluster_token() -> None:
    """Token authentication for the local cluster edgebench is about to start, unless the operator chose an auth
    mode: that cluster runs tasks as this (root) harness, and its GCS, raylet and workers listen on every
    interface for the whole run (Ray 2.60 here, docs/ray.md), so without a token whoever reaches the machine runs
    code as root. The token is fresh, held by this process and the cluster's own (cells never inherit RAY_*).
    Ray reads the mode when it is imported, so a process that imported Ray already keeps Ray's default; Ray
    releases before 2.52 ignore it."""
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def connect(ray) -> None:
    """The cluster in RAY_ADDRESS, else a new local one (never whichever cluster ran last on this machine)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    local = {} if address else {"num_cpus": len(os.sched_getaffinity(0))}
    try:
        ray.init(
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            **local,
        )
    except ConnectionError as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({first_line(exc)}); start it or unset RAY_ADDRESS"
        ) from None


def _user_error(exc: Exception) -> Exception:
    """A node's own refusal (no such cap backend there) as the one line a user sees; anything else as it is."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UserError):
        return UserError(f"on a Ray node: {cause}")
    return exc
