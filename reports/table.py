"""The cells table: one row per recorded cell (each seed its own row), raw values for CSV, formatted by the
template for HTML."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields

from harness.record.records import CellRecord
from reports.rundata import RunData, cell_label
from reports.selection import GroupChoice, is_accuracy_record
from reports.validity import failed_checks
from workloads.validated import BAND


@dataclass(frozen=True)
class CellRow:
    cell_id: str
    label: str
    device: str
    device_memory_bytes: int
    model: str
    param_count: int | None
    method: str
    tuning: str
    optimizer: str
    lr: float
    task: str
    batch: int
    seq_len: int
    seed: int
    status: str
    error: str | None
    peak_memory_bytes: int | None
    peak_memory_source: str | None
    rss_peak_bytes: int | None
    cgroup_peak_bytes: int | None
    predicted_peak_bytes: int | None
    host_seconds: float
    device_seconds: float | None  # in the clock's seconds: the host's too when the clock is host
    clock: str
    steps: int
    step_time_s: float | None
    initial_accuracy: float | None
    final_accuracy: float | None  # on the test split
    final_val_accuracy: float | None
    recipe: str  # "chosen" when its recipe is the one the summary shows, "not chosen", "" for no accuracy
    valid: bool
    failed_checks: str
    unchecked_checks: str  # checks the record is too old for: whether they held is not known

    @property
    def predicted_over_measured(self) -> float | None:
        if self.predicted_peak_bytes and self.peak_memory_bytes and self.status == "ok":
            return self.predicted_peak_bytes / self.peak_memory_bytes
        return None


def _recipe_verdict(record: CellRecord, shown: set[str]) -> str:
    if record.status != "ok" or not is_accuracy_record(record):
        return ""
    return "chosen" if record.cell_id in shown else "not chosen"


def cell_rows(run: RunData, choices: list[GroupChoice]) -> list[CellRow]:
    """Every record, one per seed; `choices` mark the cells whose recipe the accuracy summary shows."""
    shown = {r.cell_id for c in choices for r in c.shown}
    rows = []
    for r in run.records:
        rows.append(
            CellRow(
                cell_id=r.cell_id,
                label=cell_label(r),
                device=r.device.name,
                device_memory_bytes=r.device.memory_bytes,
                model=r.params.model,
                param_count=run.param_count(r),
                method=r.params.method,
                tuning=r.params.tuning,
                optimizer=r.params.optimizer,
                lr=r.params.learning_rate,
                task=r.params.task,
                batch=r.params.batch,
                seq_len=r.params.seq_len,
                seed=r.params.seed,
                status=r.status,
                error=r.error,
                peak_memory_bytes=r.peak_memory_bytes,
                peak_memory_source=r.peak_memory_source,
                rss_peak_bytes=r.memory.rss_peak_bytes,
                cgroup_peak_bytes=r.memory.cgroup_peak_bytes,
                predicted_peak_bytes=r.predicted_peak_bytes,
                host_seconds=r.host_seconds,
                device_seconds=r.device_seconds,
                clock=r.clock.kind,
                steps=r.steps,
                step_time_s=r.metrics.timing.step_time_s,
                initial_accuracy=r.metrics.accuracy.initial,
                final_accuracy=r.metrics.accuracy.final,
                final_val_accuracy=r.metrics.accuracy.final_val,
                recipe=_recipe_verdict(r, shown),
                valid=r.validity.valid,
                failed_checks="" if r.validity.valid else " ".join(failed_checks(r)),
                unchecked_checks=" ".join(r.validity.unchecked),
            )
        )
    return rows


def memory_misses(rows: list[CellRow]) -> list[CellRow]:
    """The ok cells whose predicted / measured peak leaves BAND, worst first: where the memory model was wrong."""
    missed = [r for r in rows if (ratio := r.predicted_over_measured) and not BAND[0] <= ratio <= BAND[1]]
    return sorted(missed, key=lambda r: -abs((r.predicted_over_measured or 1.0) - 1.0))


def rows_csv(rows: list[CellRow]) -> str:
    """The table as CSV with raw units (bytes, seconds, accuracy in percent) for papers and scripts."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(CellRow)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return buffer.getvalue()
