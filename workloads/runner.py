"""Entry point of one cell's child process: `python -m workloads.runner PARAMS_JSON`.

PARAMS_JSON is a WorkloadParams as JSON. The runner reports on its original stdout,
one JSON object per line (stray prints from libraries are sent to stderr instead):

    {"event": "progress", "step": 3, "rss_bytes": 123, "loss": 0.69, "elapsed_s": 1.2}
    {"event": "result", "status": "ok" | "oom" | "error", "steps": 10, "metrics": {...}, "error": null,
     "predictions": "<base64 of workloads.predictions' .npz>" | null}

"oom" here means an allocation failed inside the process (RLIMIT_AS, CUDA's memory fraction);
a kernel OOM kill leaves no result line and is detected by the harness from the cgroup.
"""

from __future__ import annotations

import base64
import os
import sys
import traceback

from workloads.params import WorkloadParams
from workloads.reporter import Reporter

OOM_MARKERS = ("can't allocate memory", "out of memory", "DefaultCPUAllocator", "CUDA out of memory")


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(m in str(exc) for m in OOM_MARKERS)


def main(argv: list[str]) -> int:
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    reporter = Reporter(events)
    params = WorkloadParams.model_validate_json(argv[0])
    try:
        from workloads.cell import run_cell

        outcome = run_cell(params, reporter)
        predictions = base64.b64encode(outcome.predictions).decode() if outcome.predictions else None
        reporter.send(
            "result", status="ok", steps=outcome.steps, metrics=outcome.metrics.model_dump(exclude_unset=True), error=None, predictions=predictions
        )
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
        if isinstance(exc, KeyboardInterrupt):
            raise
        status = "oom" if is_oom(exc) else "error"
        message = str(exc).strip().splitlines()
        last = f"{type(exc).__name__}: {message[0] if message else ''}"[:500]
        traceback.print_exc(file=sys.stderr)
        reporter.send("result", status=status, steps=reporter.step, metrics={}, error=last)
        return 0 if status == "oom" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
