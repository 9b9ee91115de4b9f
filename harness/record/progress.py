"""Where a run stands while it is under way, from its directory alone (`edgebench status`): its records, and for
each cell a checkpoint holds mid-way, the step, training time and validation accuracy it reached and what its
state weighs (what a run carried from one machine to the next in git must commit)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.record.errors import UserError
from harness.record.store import RESULTS, load_records
from workloads import checkpoint
from workloads.resumable import CHECKPOINTS_DIR
from workloads.resume import journaled


@dataclass(frozen=True)
class CellState:
    """A cell under way, as its last checkpoint saved it (or why that checkpoint cannot be read)."""

    cell_id: str
    size_bytes: int = 0
    state: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    problem: str | None = None

    def line(self) -> str:
        if self.state is None or self.params is None:
            return f"{self.cell_id}: {self.problem}"
        p, loop = self.params, self.state["loop"]
        trace = loop["trace"]
        what = f"{p['method']}{'' if p['tuning'] == 'full' else '+' + p['tuning']} {p['model']} s{p['seed']}"
        curve = [point for point in trace["curve"] if "val_accuracy" in point]
        reached = (
            f", validation {curve[-1]['val_accuracy']:.2f} at step {curve[-1]['step']} (step 0: "
            f"{curve[0]['val_accuracy']:.2f})"
            if curve
            else ""
        )
        form = "journal" if journaled(self.state) else "weights"
        return (
            f"{self.cell_id} {what}: step {loop['step']}, {trace['train_seconds']:,.0f} s of training on its clock"
            f"{reached}; {form} checkpoint of {self.size_bytes / 2**20:,.1f} MiB, {loop['checkpoints']} saved"
        )


def cells_under_way(run_dir: Path) -> list[CellState]:
    """Every cell state directory of the run, finished cells' excluded (their state is removed with the record)."""
    finished = {r.cell_id for r in load_records(run_dir) if r.status in ("ok", "oom")}
    directories = sorted(p for p in (Path(run_dir) / CHECKPOINTS_DIR).glob("*") if p.is_dir())
    return [_read_state(d) for d in directories if d.name not in finished]


def _read_state(directory: Path) -> CellState:
    try:
        folder = checkpoint.Folder.open(directory)
        if not folder.exists(checkpoint.STATE_FILE):
            return CellState(directory.name, problem="no checkpoint yet (running, or stopped before its first save)")
        found, _ = checkpoint.trailer(folder)
    except (checkpoint.CheckpointRefused, OSError) as exc:
        return CellState(directory.name, problem=f"unreadable checkpoint ({exc})")
    size = (directory / checkpoint.STATE_FILE).stat().st_size
    return CellState(directory.name, size, found["state"], found["identity"]["params"])


def status_lines(run_dir: Path) -> list[str]:
    """The run's records by role and status, then one line per cell under way."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS).exists() and not (run_dir / CHECKPOINTS_DIR).is_dir():
        raise UserError(f"{run_dir} holds no run (no {RESULTS}, no {CHECKPOINTS_DIR}/); give the --out of `edgebench run`")
    records = load_records(run_dir)
    counts = Counter((r.role, r.status) for r in records)
    summary = ", ".join(f"{n} {role} {status}" for (role, status), n in sorted(counts.items())) or "none"
    under_way = cells_under_way(run_dir)
    return [
        f"{run_dir}: {len(records)} cells recorded ({summary}); {len(under_way)} under way",
        *(f"  {state.line()}" for state in under_way),
    ]
