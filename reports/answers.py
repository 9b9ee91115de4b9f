"""The answer per device as a table: each arm's model (complete checkpoint or truncated rung), its final test
accuracy with its 95 % interval, its gain over its own step 0 and its gap to the device's best arm (each paired,
reports.pairs), whether its validation curve had flattened (reports.plateau), and the cells the kernel killed.
The README's tables and the HTML report's are these lines (tests/test_readme_findings.py re-derives them)."""

from __future__ import annotations

from dataclasses import dataclass

from reports.accuracy import AccuracyRow
from reports.findings import (
    DeviceAnswer,
    accuracy_model,
    arm_counts,
    change_verdict,
    device_answers,
    status_of,
    winner,
)
from reports.pairs import Pairing, Unpaired, change_text
from reports.rundata import RunData
from reports.style import count_of

NONE = "-"


@dataclass(frozen=True)
class AnswerLine:
    """One arm of one device, every figure already written as the tables show it."""

    device: str
    arm: str
    method: str
    model: str
    final: str
    start: str
    gain: str
    versus: str
    plateau: str
    killed: str
    majority: str

    def markdown(self) -> str:
        cells = (self.device, self.arm, self.model, self.final, self.start, self.gain, self.versus, self.plateau)
        return "| " + " | ".join((*cells, self.killed, self.majority)) + " |"


MARKDOWN_HEAD = (
    "| device | arm | model (parameters) | final test accuracy, % | at step 0, % | gain over step 0, points "
    "| vs the best arm, points | validation over the last doubling | cells killed | majority class, % |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _final(row: AccuracyRow) -> str:
    """`87.4 (95% CI 86.0 to 88.9, n=3)`; without kept predictions, mean +/- std and why there is no interval."""
    if isinstance(row.final, Unpaired):
        assert row.test is not None
        return f"{row.test.describe().replace('±', '+/-')}; no interval ({row.final.reason})"
    return row.final.describe()


def _killed(counts: dict[tuple[str, str, str, str], int], arm: str, model: str) -> str:
    """The cells of this arm on this model that ended unmeasured, by outcome: `3 (oom)`."""
    parts = [f"{n} ({status})" for (a, m, _, status), n in counts.items() if (a, m) == (arm, model)]
    return "; ".join(parts) or NONE


def _gain(row: AccuracyRow) -> str:
    if not row.start:
        return NONE
    return change_text(row.gain) + ("" if isinstance(row.gain, Unpaired) else f": {change_verdict(row.gain)}")


def _versus(versus: Pairing | None, best: AccuracyRow, row: AccuracyRow) -> str:
    if versus is None:
        return NONE
    return change_text(versus) + ("" if isinstance(versus, Unpaired) else f": {winner(versus, best, row)}")


def _measured(answer: DeviceAnswer, row: AccuracyRow, versus: Pairing | None, killed: str) -> AnswerLine:
    return AnswerLine(
        device=answer.device,
        arm=row.arm,
        method=row.method,
        model=accuracy_model(row.model, row.task),
        final=_final(row),
        start=f"{row.start.mean:.1f}" if row.start else NONE,
        gain=_gain(row),
        versus=_versus(versus, answer.best, row),
        plateau=row.plateau.text(),
        killed=killed,
        majority=f"{row.majority:.1f}" if row.majority is not None else NONE,
    )


def _none_measured(device: str, arm: str, model: str, status: str, cells: int) -> AnswerLine:
    """A line for an arm's model none of whose cells gave a measurement (`status`: how they ended)."""
    return AnswerLine(
        device=device,
        arm=arm,
        method="",
        model=model,
        final=f"none measured: {status} ({count_of(cells, 'cell')})",
        start=NONE,
        gain=NONE,
        versus=NONE,
        plateau=NONE,
        killed=f"{cells} ({status})",
        majority=NONE,
    )


def answer_lines(answer: DeviceAnswer) -> list[AnswerLine]:
    """The device's arms, best mean final test accuracy first, each with the cells of its arm and model the kernel
    killed; an arm's model with none measured (e.g. the larger model it was resolved down from) last, on a line of
    its own."""
    counts = arm_counts(answer.unmeasured, status_of)
    lines, named = [], set()
    for row, versus in zip(answer.ranked, [None, *answer.gaps], strict=True):
        killed = NONE if (row.arm, row.model) in named else _killed(counts, row.arm, row.model)
        named.add((row.arm, row.model))
        lines.append(_measured(answer, row, versus, killed))
    for (arm, model, task, status), n in counts.items():
        if (arm, model) not in named:
            lines.append(_none_measured(answer.device, arm, accuracy_model(model, task), status, n))
    return lines


def answer_table(run: RunData, rows: list[AccuracyRow]) -> str:
    """Markdown: every device's answer lines under one header."""
    lines = [line.markdown() for answer in device_answers(run, rows) for line in answer_lines(answer)]
    return "\n".join([MARKDOWN_HEAD, *lines])
