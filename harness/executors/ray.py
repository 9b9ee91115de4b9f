"""Cells as Ray tasks: scale-out beyond one machine.

Ray's `memory` resource is logical (admission control only), so each task still runs its cell
through the local executor on whichever node it lands: the node's cgroups enforce the cap.
Connects to RAY_ADDRESS when set (an existing cluster, which must share the run directory),
else starts a local cluster. Live per-step progress is not forwarded from remote nodes.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.cells import Cell
from harness.errors import UserError
from harness.executors.base import ChildOutcome, Executor, ProgressFn
from harness.executors.local import LocalExecutor

POLL_S = 0.2


def _remote_backend(enforcement: str) -> tuple[str, bool]:
    from devices.caps.select import choose_backend

    backend = choose_backend(enforcement)
    return backend.name, backend.can_throttle()


def _remote_execute(run_dir: str, timeout_s: float, enforcement: str, cell: Cell) -> ChildOutcome:
    executor = LocalExecutor(Path(run_dir), timeout_s, enforcement)
    return executor.execute(cell, lambda *_: None)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, run_dir: Path, timeout_s: float, enforcement: str = "auto") -> None:
        super().__init__(run_dir, timeout_s, enforcement)
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray; install it with `pip install 'edgebench[ray]'`") from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.ray = ray
        self.started_cluster = not ray.is_initialized()
        if self.started_cluster:
            address = os.environ.get("RAY_ADDRESS")
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    **({} if address else {"num_cpus": os.cpu_count()}),
                )
            except ConnectionError as exc:
                raise UserError(f"cannot reach the Ray cluster at {address} ({exc}); start it or unset RAY_ADDRESS") from None
        self._execute = ray.remote(num_cpus=1)(_remote_execute)
        self._enforcement, self._throttles = ray.get(ray.remote(num_cpus=0)(_remote_backend).remote(enforcement))

    @property
    def enforcement(self) -> str:
        return self._enforcement

    @property
    def throttles(self) -> bool:
        return self._throttles

    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        capacity = self.ray.cluster_resources().get("memory", 0)
        if cell.device.memory_bytes > capacity:
            raise UserError(
                f"device {cell.device.name}'s cap ({cell.device.memory_bytes} bytes) exceeds the Ray cluster's "
                f"memory resource ({int(capacity)} bytes); add a larger node or lower the cap"
            )
        ref = self._execute.options(memory=cell.device.memory_bytes).remote(
            str(self.run_dir.resolve()), self.timeout_s, self.enforcement_requested, cell
        )
        while not self.ray.wait([ref], timeout=POLL_S)[0]:
            if self.stop.is_set():
                self.ray.cancel(ref, force=True)
                raise KeyboardInterrupt
        return self.ray.get(ref)

    def close(self) -> None:
        if self.started_cluster and self.ray.is_initialized():
            self.ray.shutdown()
