"""The answers a run gives to the paper's question, per device: which arm, on which model, reaches what test
accuracy (from the accuracy rows, whose recipes validation chose), and what each arm spends to reach another's.
The largest model each arm trains is reports.fits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.record.records import CellRecord
from reports.accuracy import AccuracyRow
from reports.fits import params_of
from reports.paired import PairedDifference
from reports.pairs import Pairing, Unpaired, gap
from reports.rundata import JOULES, RunData, curve, seeds_mean
from reports.style import BACKPROP_METHODS, arm_label, count_of
from reports.validity import failed_checks
from workloads.registry import truncation
from workloads.sources import SYNTHETIC


@dataclass(frozen=True)
class DeviceAnswer:
    device: str
    ranked: list[AccuracyRow]  # best mean final test accuracy first
    unmeasured: list[CellRecord]  # valid accuracy cells that ended unmeasured (e.g. killed at the cap)
    invalid: list[CellRecord]  # accuracy cells left out: some validity check failed
    gaps: list[Pairing] = field(default_factory=list)  # per ranked[1:]: its final test accuracy - the best's

    @property
    def best(self) -> AccuracyRow:
        return self.ranked[0]

    def sentence(self) -> str:
        text = self._ranking() if self.ranked else "no valid accuracy measurement"
        for (arm, model, _, status), count in arm_counts(self.unmeasured, status_of).items():
            text += f"; {arm} on {model}: {status} in {count_of(count, 'cell')}"
        for (arm, model, _, checks), count in arm_counts(self.invalid, _failed).items():
            text += f"; left out, invalid ({checks}): {arm} on {model} in {count_of(count, 'cell')}"
        return text + "."

    def _ranking(self) -> str:
        best = self.best
        assert best.test is not None
        text = (
            f"{best.arm} on {accuracy_model(best.model, best.task)} reaches {best.test.describe(unit=' %')} test "
            f"accuracy after {best.budget}{_from_start(best)}"
        )
        for other, pairing in zip(self.ranked[1:], self.gaps, strict=True):
            assert other.test is not None
            gap = best.test.mean - other.test.mean
            text += (
                f"; {other.arm} on {accuracy_model(other.model, other.task)} {other.test.describe(unit=' %')}"
                f"{_from_start(other)}, {gap:.1f} points lower{_gap_text(pairing, best, other)}"
            )
        return text


def _named(row: AccuracyRow) -> str:
    return f"{row.arm} on {row.model}"


def winner(pairing: PairedDifference, best: AccuracyRow, other: AccuracyRow) -> str:
    """Who wins `other` minus `best`: only an interval that excludes zero names one."""
    return f"{_named(best if pairing.difference < 0 else other)} wins" if pairing.decisive else "no winner"


def change_verdict(gained: PairedDifference) -> str:
    """What a paired gain over step 0 says: a gain or a loss only when its interval excludes zero."""
    return ("a gain" if gained.difference > 0 else "a loss") if gained.decisive else "no clear change"


def _gap_text(pairing: Pairing, best: AccuracyRow, other: AccuracyRow) -> str:
    """The paired interval of `other` minus `best`, and who wins."""
    if isinstance(pairing, Unpaired):
        return f", {pairing.figures()}"
    return f" ({pairing.figures()}: {winner(pairing, best, other)})"


def status_of(record: CellRecord) -> str:
    return record.status


def _failed(record: CellRecord) -> str:
    return ", ".join(failed_checks(record))


def arm_counts(
    records: list[CellRecord], why: Callable[[CellRecord], str]
) -> dict[tuple[str, str, str, str], int]:
    """(arm, model, task, why) -> cells: the seeds and recipes of one arm fail together (killed at the cap, or one check
    failed for all), say it once."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for record in records:
        params = record.params
        key = (arm_label(params.method, params.tuning), params.model, params.task, why(record))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _from_start(row: AccuracyRow) -> str:
    """How much of a final figure training earned (a pretrained model's head starts far above chance), with the
    paired interval of the gain: a gain or a loss only when it excludes zero."""
    if not row.start:
        return ""
    if isinstance(row.gain, Unpaired):
        return f" (from {row.start.mean:.1f} % at step 0; {row.gain.figures()})"
    gained = row.gain
    change = f"{gained.difference:+.1f} points, {gained.figures()}: {change_verdict(gained)}"
    return f" (from {row.start.mean:.1f} % at step 0; {change})"


def accuracy_model(model: str, task: str) -> str:
    """A model beside an accuracy: its size, and whether it is a truncated rung rather than a whole checkpoint."""
    cut = truncation(model)
    return f"{model} ({params_of(model, task)}{'; ' + cut if cut else ''})"


def device_answers(run: RunData, rows: list[AccuracyRow]) -> list[DeviceAnswer]:
    """Per device, its accuracy rows with a test figure, best first, and the accuracy cells left out as invalid
    (`rows` are of valid cells: reports.accuracy). Test accuracy ranks arms here because this is the claim; every
    row's recipe was already chosen on validation."""
    answers = []
    for device in run.devices:
        measured = [r for r in rows if r.device == device.name and r.test is not None]
        cells = [r for r in run.by_device(device.name) if r.role == "cell" and r.params.task != SYNTHETIC]
        unmeasured = [r for r in cells if r.validity.valid and r.status != "ok"]
        invalid = [r for r in cells if not r.validity.valid]
        if measured or invalid:
            ranked = sorted(measured, key=lambda r: -r.test.mean)  # type: ignore[union-attr]
            gaps = [gap(run.predictions, r.choice.shown, ranked[0].choice.shown) for r in ranked[1:]]
            answers.append(DeviceAnswer(device.name, ranked, unmeasured, invalid, gaps))
    return answers


def mean_curve(row: AccuracyRow, x_key: str = "seconds") -> list[tuple[float, float]]:
    """Test accuracy against device seconds (or `x_key`: reports.rundata.curve, e.g. device joules), averaged
    over the chosen recipe's seeds at each evaluation (the seeds evaluate at the same budgeted times; a seed with
    fewer points shortens the curve, and one without the figure leaves the curve empty)."""
    return seeds_mean([curve(r, x_key) for r in row.choice.shown])


def first_reaching(points: list[tuple[float, float]], target: float) -> float | None:
    """The x of the first point at or above `target`; None: not within the curve."""
    return next((x for x, accuracy in points if accuracy >= target), None)


def passing_table(answers: list[DeviceAnswer]) -> str:
    """Markdown: per device, how long each MeZO arm's mean curve takes to reach each backprop arm's final test
    accuracy and the ends of its interval (0 s: it starts above it, before any training)."""
    lines = ["| device | MeZO arm, model | reaches | after (device s) |", "|---|---|---|---|"]
    for r in reaches(answers):
        if r.arm.method == "mezo" and r.target.method in BACKPROP_METHODS:
            assert r.target.test is not None
            target = f"{r.target.arm} on {accuracy_model(r.target.model, r.target.task)}: {r.target.test.mean:.1f} %"
            lines.append(f"| {r.device} | {r.arm.arm} on {accuracy_model(r.arm.model, r.arm.task)} | {target} | {r.after_seconds} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Reach:
    """What one arm spends to reach another arm's final test accuracy on the same device. `interval` holds the
    device times the arm's mean curve takes to reach the ends of the target's 95 % interval: the answer's
    sensitivity to the target's uncertainty, not an interval of the time (the arm's own curve is its seeds'
    mean)."""

    device: str
    arm: AccuracyRow
    target: AccuracyRow
    seconds: float | None  # device seconds of training; None: not within the budget
    joules: float | None  # device joules of training; None: not within the budget, or no energy figures
    has_energy: bool
    interval: tuple[float | None, float | None] | None = None  # to the target's interval's low and high ends
    last_seconds: float | None = None  # the device seconds of the arm's last evaluation: how far it was watched

    def _seconds(self, seconds: float | None) -> str:
        if seconds is not None:
            return f"{seconds:,.0f}"
        last = self.last_seconds
        return f"not within {last:,.0f} s" if last is not None else "not within the budget"

    @property
    def after_joules(self) -> str:
        if not self.has_energy:
            return "no energy figures"
        return f"{self.joules:,.0f}" if self.joules is not None else "not within the budget"

    @property
    def after_seconds(self) -> str:
        """`1,200 (800 to 2,400 across the target's 95% CI)`: the time to the target's mean, then to the ends of its
        interval (how much the answer depends on the target's uncertainty: not an interval of the time itself);
        `not within 600 s` when the mean is not reached (with the time to the interval's low end, when that is)."""
        text = self._seconds(self.seconds)
        if self.interval is None:
            return text
        early, late = self.interval
        if self.seconds is not None:
            return f"{text} ({self._seconds(early)} to {self._seconds(late)} across the target's 95% CI)"
        return text if early is None else f"{text} ({self._seconds(early)} to its 95% CI's low end)"


def _interval_times(points: list[tuple[float, float]], target: AccuracyRow) -> tuple[float | None, float | None] | None:
    if isinstance(target.final, Unpaired):
        return None
    return first_reaching(points, target.final.low), first_reaching(points, target.final.high)


def reaches(answers: list[DeviceAnswer]) -> list[Reach]:
    """Per device, every arm against every other arm's final test accuracy: the device seconds (with the times
    to the ends of the target's interval) and the device joules (reports.rundata.energy_curve) its mean curve
    takes to reach it."""
    found = []
    for answer in answers:
        for arm in answer.ranked:
            seconds, joules = mean_curve(arm), mean_curve(arm, JOULES)
            last = seconds[-1][0] if seconds and seconds[-1][0] > 0 else None
            for target in (r for r in answer.ranked if r is not arm):
                assert target.test is not None
                found.append(
                    Reach(
                        answer.device,
                        arm,
                        target,
                        first_reaching(seconds, target.test.mean),
                        first_reaching(joules, target.test.mean),
                        bool(joules),
                        _interval_times(seconds, target),
                        last,
                    )
                )
    return found


def energy_table(answers: list[DeviceAnswer]) -> str:
    """Markdown: per device, the device joules (and seconds) each arm's mean curve takes to reach each other arm's
    final test accuracy; a plain note when no arm's records carry energy (written before energy figures, or on the
    host clock)."""
    found = reaches(answers)
    if not any(r.has_energy for r in found):
        return NO_ENERGY
    lines = [
        "| device | arm, model | reaches | after (device s) | after (device J) |",
        "|---|---|---|---|---|",
    ]
    for r in found:
        assert r.target.test is not None
        target = f"{r.target.arm} on {accuracy_model(r.target.model, r.target.task)}: {r.target.test.mean:.1f} %"
        lines.append(
            f"| {r.device} | {r.arm.arm} on {accuracy_model(r.arm.model, r.arm.task)} | {target} | {r.after_seconds} | "
            f"{r.after_joules} |"
        )
    return "\n".join(lines)


NO_ENERGY = (
    "No device energy: these records carry no joules (written before energy figures, on the host clock, or on a "
    "device without power figures)."
)


if __name__ == "__main__":  # print a reference run's README tables: python -m reports.findings RUN_DIR
    import sys

    from reports.accuracy import accuracy_rows
    from reports.answers import answer_table
    from reports.fits import arm_fits, fit_table
    from reports.rundata import load_run

    loaded = load_run(Path(sys.argv[1]))
    for problem in loaded.predictions.problems:
        print(f"reports.findings: predictions left out: {problem}", file=sys.stderr)
    for task in dict.fromkeys(f.task for f in arm_fits(loaded)):
        print(f"{task}:\n{fit_table(loaded, task)}\n")
    if accuracy := accuracy_rows(loaded):
        answers = device_answers(loaded, accuracy)
        print(f"{answer_table(loaded, accuracy)}\n\n{passing_table(answers)}\n\n{energy_table(answers)}\n")
        for answer in answers:
            print(f"{answer.device}: {answer.sentence()}")
