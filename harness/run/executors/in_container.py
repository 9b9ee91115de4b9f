"""The Docker executor's entry point inside a cell's container: `python -m harness.run.executors.in_container JOB`.

JOB is JSON with the cell's device, params and timeout. The cell runs as a child process through the
local executor with the `container` backend: the container's limit is the cap, the child's own peak
comes from wait4 and the container cgroup's peak and OOM counter are read before the container
ends (its cgroup is gone once it exits). Progress events are forwarded on stdout as they come,
then one {"event": "outcome", ...} line carries what the local executor observed; the cell's
stderr follows on this process's stderr.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from devices.profile import DeviceProfile
from devices.speed import CellClock
from harness.record.cells import Cell
from harness.record.records import MemoryFigures
from harness.run.executors.base import ChildOutcome
from harness.run.executors.local import LocalExecutor
from workloads.params import WorkloadParams
from workloads.resumable import Checkpointing

#: Where a resumable cell's state directory (RUN_DIR/checkpoints/<cell id> on the host) is mounted.
STATE_MOUNT = "/state"


def job_json(cell: Cell, timeout_s: float, checkpointing: Checkpointing | None = None) -> str:
    return json.dumps(
        {
            "device": cell.device.model_dump(),
            "params": cell.params.model_dump(),
            "clock": cell.clock.model_dump(),
            "timeout_s": timeout_s,
            "checkpointing": checkpointing.model_dump() if checkpointing else None,
        }
    )


def outcome_json(outcome: ChildOutcome) -> str:
    fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}
    return json.dumps({"event": "outcome", **fields, "memory": outcome.memory.model_dump()}, default=str)


def outcome_from_event(event: dict[str, Any]) -> ChildOutcome:
    fields = {f.name for f in dataclasses.fields(ChildOutcome)}
    values = {k: v for k, v in event.items() if k in fields}
    values["memory"] = MemoryFigures.model_validate(values.get("memory") or {})
    return ChildOutcome(**values)


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    cell = Cell(
        DeviceProfile.model_validate(job["device"]),
        WorkloadParams.model_validate(job["params"]),
        CellClock.model_validate(job["clock"]),
    )
    run_dir = Path(tempfile.mkdtemp(prefix="edgebench-"))
    checkpointing = Checkpointing.model_validate(job["checkpointing"]) if job.get("checkpointing") else None
    executor = LocalExecutor(run_dir, job["timeout_s"], "container", checkpointing, Path(STATE_MOUNT))

    def forward(_cell: Cell, event: dict[str, Any]) -> None:
        print(json.dumps(event, default=str), flush=True)

    outcome = executor.execute(cell, forward)
    print(outcome_json(outcome), flush=True)
    with open(run_dir / "logs" / f"{cell.id}.log", "rb") as log:  # bounded by the executor (MAX_LOG_BYTES)
        shutil.copyfileobj(log, sys.stderr.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
