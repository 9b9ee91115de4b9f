"""What a report cannot vouch for, named rather than averaged in: invalid cells (left out of every headline, with
the checks they failed), cells recorded before some checks existed (valid as far as their facts go), cells whose
memory cap was not the kernel's (the rlimit fallback), and cells that ran a model's own Python code
(`trust_remote_code`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness.record.records import CellRecord, cap_by_kernel
from reports.rundata import RunData, cell_label
from reports.style import count_of


def failed_checks(record: CellRecord) -> list[str]:
    """Why a record is not valid: the checks it failed, or `not judged` when no verdict was made for it."""
    return record.validity.failed or ["not judged"]


@dataclass(frozen=True)
class Flagged:
    """Cells that share one reason to doubt them: the checks they failed (or never ran), or none."""

    checks: tuple[str, ...]
    labels: list[str]

    def line(self) -> str:
        return f"{', '.join(self.checks)}: {count_of(len(self.labels), 'cell')} ({'; '.join(self.labels)})"


def flagged(records: Iterable[CellRecord], checks_of: Callable[[CellRecord], list[str]]) -> list[Flagged]:
    """`records` grouped by `checks_of(record)`, in first-seen order."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for record in records:
        groups.setdefault(tuple(checks_of(record)), []).append(cell_label(record))
    return [Flagged(checks, labels) for checks, labels in groups.items()]


def invalid_cells(run: RunData) -> list[Flagged]:
    return flagged((r for r in run.records if not r.validity.valid), failed_checks)


def unchecked_cells(run: RunData) -> list[Flagged]:
    """Valid cells whose record is older than some checks' facts: whether those held is not known."""
    return flagged((r for r in run.valid_records if r.validity.unchecked), lambda r: r.validity.unchecked)


def remote_code_cells(run: RunData) -> list[str]:
    """Cells that let the model's repository run its own Python code in the cell (the spec set
    trust_remote_code): whatever that code did is part of the result."""
    return [cell_label(r) for r in run.records if r.params.trust_remote_code]


def soft_cap_cells(run: RunData) -> list[Flagged]:
    """Cells whose memory cap was not the kernel's, by enforcement: the rlimit fallback caps each process's address
    space, so their peaks and out-of-memory outcomes are not a device's (invalid too, but said on their own)."""
    return flagged((r for r in run.records if not cap_by_kernel(r)), lambda r: [r.enforcement])
