"""A run directory as reports see it: run.json, the latest record per cell, what is still missing, and the
per-example predictions its records reference (checked once, see `RunPredictions`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from devices.profile import DeviceProfile
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import CellRecord
from harness.record.runinfo import RunInfo
from harness.record.store import load_records, read_run_info
from reports.paired import Scored
from workloads.memory_model import param_count
from workloads.predictions import Predictions, PredictionsError, PredictionsRef, load
from workloads.registry import model_shape

TEST = "test"
VALIDATION = "validation"
JOULES = "joules"  # the x of an accuracy curve in device energy (`curve`)


def accuracy_curve(record: CellRecord, x_key: str, y_key: str = "accuracy") -> list[tuple[float, float]]:
    """The record's test accuracy (or `y_key`: val_accuracy) in percent, as workloads report it, against `x_key`,
    sorted."""
    points = [(getattr(p, x_key), getattr(p, y_key)) for p in record.metrics.accuracy.curve]
    return sorted((float(x), y) for x, y in points if y is not None)


def seeds_mean(curves: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Seeds' curves averaged point by point: the seeds evaluate at the same budgeted times, a seed with fewer
    points shortens the curve, and one without the figure leaves it empty."""
    if not curves or not all(curves):
        return []
    return [
        (statistics.fmean(c[i][0] for c in curves), statistics.fmean(c[i][1] for c in curves))
        for i in range(min(map(len, curves)))
    ]


def mean_watts(record: CellRecord) -> float | None:
    """The cell's mean device power: its joules over its device seconds (derived from the record's energy, which
    follows the clock: a throttling board draws less); None for a record without energy (host clock, a device
    without power figures, or written before energy)."""
    energy = record.energy
    if energy is None or energy.device_seconds <= 0:
        return None
    return energy.joules / energy.device_seconds


def energy_curve(record: CellRecord) -> list[tuple[float, float]]:
    """Test accuracy against device joules spent training by each evaluation: its training device seconds times
    the cell's mean power (derived, see `mean_watts`); [] for a record without energy."""
    watts = mean_watts(record)
    if watts is None:
        return []
    return [(seconds * watts, accuracy) for seconds, accuracy in accuracy_curve(record, "seconds")]


def curve(record: CellRecord, x_key: str) -> list[tuple[float, float]]:
    """Test accuracy against `x_key`: a curve point's own key (seconds, step), or `joules` (`energy_curve`)."""
    return energy_curve(record) if x_key == JOULES else accuracy_curve(record, x_key)


def cell_label(record: CellRecord) -> str:
    return Cell(record.device, record.params, record.clock, role=record.role).label


def _curve_problem(record: CellRecord, predictions: Predictions) -> str | None:
    """Why a predictions file does not belong to its record's accuracy curve (evaluation k is curve point k), or
    None. Each evaluation's accuracy must agree with the curve's to within one example (the curve may round)."""
    curve = record.metrics.accuracy.curve
    if predictions.evaluations != len(curve):
        return f"{predictions.evaluations} evaluations for {len(curve)} points of the accuracy curve"
    for name, key in (("test", "accuracy"), ("validation", "val_accuracy")):
        part = predictions.splits.get(name)
        if part is None or not len(part.labels):
            continue
        for k, point in enumerate(curve):
            stated = getattr(point, key)
            scored = 100 * float(predictions.correct(name, k).mean())
            if stated is not None and abs(scored - stated) > 100 / len(part.labels) + 1e-9:
                return f"evaluation {k} scores {scored:.2f} % on {name}, its curve says {stated:g} %"
    return None


@dataclass(frozen=True)
class RunPredictions:
    """The per-example predictions of a run's records, each checked against its sha256 and its record's curve.
    A cell whose file is missing, altered, malformed or not its curve's is named in `problems` (one line each)
    and its evaluations are left out of every paired comparison."""

    by_cell: dict[str, Predictions]
    problems: list[str]

    def scored(self, record: CellRecord, evaluation: int, split: str = TEST) -> Scored | None:
        """Evaluation `evaluation` (negative: from the end) of `record` on `split`, when it was kept."""
        predictions = self.by_cell.get(record.cell_id)
        if predictions is None or split not in predictions.splits or not predictions.evaluations:
            return None
        return Scored(predictions.splits[split].examples, predictions.correct(split, evaluation))

    def final(self, record: CellRecord, split: str = TEST) -> Scored | None:
        return self.scored(record, -1, split)

    def start(self, record: CellRecord, split: str = TEST) -> Scored | None:
        """The evaluation before any training (step 0), when the cell made one."""
        predictions = self.by_cell.get(record.cell_id)
        return self.scored(record, 0, split) if predictions and predictions.steps[:1] == [0] else None


def _checked(run_dir: Path, record: CellRecord, ref: PredictionsRef) -> Predictions:
    """The predictions the record names (`ref`), read and checked; PredictionsError saying why they cannot be
    used."""
    predictions = load(run_dir, ref)
    if predictions.evaluations != ref.evaluations:
        raise PredictionsError(
            f"{run_dir / ref.file}: {predictions.evaluations} evaluations, its record says {ref.evaluations}"
        )
    if problem := _curve_problem(record, predictions):
        raise PredictionsError(f"{run_dir / ref.file}: {problem}")
    return predictions


def load_predictions(run_dir: Path, records: list[CellRecord]) -> RunPredictions:
    """Every predictions file the records name (`metrics.predictions`); records without one are older, or their
    cell evaluated nothing."""
    by_cell: dict[str, Predictions] = {}
    problems = []
    for record in records:
        if (ref := record.metrics.predictions) is None:
            continue
        try:
            by_cell[record.cell_id] = _checked(run_dir, record, ref)
        except PredictionsError as exc:
            problems.append(f"{cell_label(record)} ({record.cell_id}): {exc}; its evaluations are left out")
    return RunPredictions(by_cell, problems)


@dataclass(frozen=True)
class RunData:
    run_dir: Path
    info: RunInfo
    records: list[CellRecord]

    @property
    def expected(self) -> list[str]:
        """The cell ids run.json lists."""
        return self.info.cells

    @cached_property
    def missing(self) -> list[str]:
        """Cell ids run.json lists that have no record yet (an interrupted or unfinished run)."""
        recorded = {r.cell_id for r in self.records}
        return [cell_id for cell_id in self.expected if cell_id not in recorded]

    def missing_labels(self) -> list[str]:
        return [self.info.cell_labels.get(cell_id, cell_id) for cell_id in self.missing]

    @cached_property
    def devices(self) -> list[DeviceProfile]:
        """run.json's devices in spec order, then any device only the records know (a sliced run)."""
        profiles = {d.name: d for d in self.info.devices}
        for record in self.records:
            profiles.setdefault(record.device.name, record.device)
        return list(profiles.values())

    @cached_property
    def _param_counts(self) -> dict[str, int]:
        """Parameter count per model name, from whichever cell of that model measured it."""
        counts: dict[str, int] = {}
        for record in self.records:
            count = record.metrics.param_count
            if count and count > 0:
                counts.setdefault(record.params.model, int(count))
        return counts

    def param_count(self, record: CellRecord) -> int | None:
        """A failed cell (an OOM kill leaves no metrics) borrows the count from its model's other cells."""
        own = record.metrics.param_count
        if own and own > 0:
            return int(own)
        if record.params.model in self._param_counts:
            return self._param_counts[record.params.model]
        shape = model_shape(record.params.model)  # a size no cell survived: count it from the config
        return param_count(shape, record.params) if shape else None

    @cached_property
    def predictions(self) -> RunPredictions:
        return load_predictions(self.run_dir, self.records)

    def by_device(self, device: str) -> list[CellRecord]:
        return [r for r in self.records if r.device.name == device]

    @cached_property
    def valid_records(self) -> list[CellRecord]:
        """The records a headline may use: an invalid one's figures do not mean what they say (reports.validity
        names them instead)."""
        return [r for r in self.records if r.validity.valid]

    def valid_by_device(self, device: str) -> list[CellRecord]:
        return [r for r in self.valid_records if r.device.name == device]

    @property
    def name(self) -> str:
        return self.info.spec.name or self.run_dir.name

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts


def load_run(run_dir: Path) -> RunData:
    """Raises UserError (one line, exit 2) for a missing directory or corrupted files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} not found; pass a directory written by `edgebench run`")
    return RunData(run_dir, read_run_info(run_dir), load_records(run_dir))
