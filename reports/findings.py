"""The answers a run gives to the paper's question, per device: which arm, on which model, reaches what test
accuracy (from the accuracy rows, whose recipes validation chose), and, where the harness resolved models by
probing (harness.resolve), the largest model each arm trains, measured and predicted, with MeZO's size ratio
over checkpointed backprop's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reports.accuracy import AccuracyRow
from reports.rundata import RunData
from reports.style import arm_label, format_params
from workloads.registry import model_shape

#: The two arms of the paper's memory claim: MeZO and checkpointed backprop with AdamW, both on every weight.
RATIO_ARMS = (("mezo", "full", None), ("bp-checkpointed", "full", "adamw"))


@dataclass(frozen=True)
class DeviceAnswer:
    device: str
    ranked: list[AccuracyRow]  # best mean final test accuracy first

    @property
    def best(self) -> AccuracyRow:
        return self.ranked[0]

    def sentence(self) -> str:
        best = self.best
        assert best.test is not None
        text = (
            f"{best.arm} on {best.model} ({params_of(best.model)}) reaches {best.test.describe(unit=' %')} test "
            f"accuracy after {best.budget}"
        )
        for other in self.ranked[1:]:
            assert other.test is not None
            gap = best.test.mean - other.test.mean
            text += (
                f"; {other.arm} on {other.model} ({params_of(other.model)}) {other.test.describe(unit=' %')}, "
                f"{gap:.1f} points lower"
            )
        return text + "."


def params_of(model: str) -> str:
    shape = model_shape(model)
    return format_params(shape.params) if shape else "size unknown"


def device_answers(run: RunData, rows: list[AccuracyRow]) -> list[DeviceAnswer]:
    """Per device, its accuracy rows with a test figure, best first. Test accuracy ranks arms here because this
    is the claim; every row's recipe was already chosen on validation."""
    answers = []
    for device in run.devices:
        measured = [r for r in rows if r.device == device.name and r.test is not None]
        if measured:
            answers.append(DeviceAnswer(device.name, sorted(measured, key=lambda r: -r.test.mean)))  # type: ignore[union-attr]
    return answers


@dataclass(frozen=True)
class ArmFit:
    device: str
    task: str
    method: str
    tuning: str
    optimizer: str | None
    measured: str | None  # None: not even the smallest candidate trained
    predicted: str | None
    reason: str

    @property
    def arm(self) -> str:
        label = arm_label(self.method, self.tuning)
        return f"{label} + {self.optimizer.upper() if self.optimizer == 'sgd' else 'AdamW'}" if self.optimizer else label

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.method, self.tuning, self.optimizer)


def _arm_fit(entry: dict[str, Any]) -> ArmFit:
    params = entry.get("params") or {}
    method = params.get("method", "")
    return ArmFit(
        device=entry.get("device", ""),
        task=params.get("task", ""),
        method=method,
        tuning=params.get("tuning", "full"),
        optimizer=params.get("optimizer") if method.startswith("bp") else None,
        measured=entry.get("model") if entry.get("trained", True) else None,
        predicted=entry.get("predicted"),
        reason=entry.get("reason", ""),
    )


def arm_fits(run: RunData) -> list[ArmFit]:
    """The probed arms of run.json, once each (arms differing only in seed or recipe share their probes)."""
    entries = run.info.get("resolutions")
    fits = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue  # a hand-edited or foreign run.json: report what is readable
        fit = _arm_fit(entry)
        fits.setdefault((fit.device, fit.task, fit.key), fit)
    return list(fits.values())


@dataclass(frozen=True)
class SizeRatio:
    device: str
    task: str
    measured: float | None
    predicted: float | None


def _ratio(top: str | None, bottom: str | None) -> float | None:
    top_shape, bottom_shape = (model_shape(m) if m else None for m in (top, bottom))
    return top_shape.params / bottom_shape.params if top_shape and bottom_shape else None


def size_ratios(fits: list[ArmFit]) -> list[SizeRatio]:
    """MeZO's largest trainable model over checkpointed backprop's (parameters), measured and predicted."""
    by_key = {(f.device, f.task, f.key): f for f in fits}
    ratios = []
    for device, task in dict.fromkeys((f.device, f.task) for f in fits):
        mezo, bp = (by_key.get((device, task, arm)) for arm in RATIO_ARMS)
        if mezo and bp:
            ratios.append(
                SizeRatio(device, task, _ratio(mezo.measured, bp.measured), _ratio(mezo.predicted, bp.predicted))
            )
    return ratios
