"""The largest model each arm trains per device, measured and predicted, and MeZO's size ratio over checkpointed
backprop's: one fit row type (ArmFit) and one ratio (size_ratio), whether the harness probed the fit
(harness.plan.resolve, kept in run.json) or a ladder of cells measured it (reports.summary)."""

from __future__ import annotations

from dataclasses import dataclass

from devices.profile import format_bytes
from harness.record.runinfo import ArmResolution
from reports.rundata import RunData
from reports.spread import Spread
from reports.style import arm_label, format_params
from workloads.memory_model import param_count
from workloads.params import WorkloadParams
from workloads.registry import model_shape

OPTIMIZER_LABELS = {"adamw": "AdamW", "sgd": "SGD", "sgd-momentum": "SGD with momentum"}

#: The two arms of the paper's memory claim: MeZO and checkpointed backprop with AdamW, both on every weight.
RATIO_ARMS = (("mezo", "full", None), ("bp-checkpointed", "full", "adamw"))


def params_of(model: str, task: str) -> str:
    """The model's size as a cell on `task` builds it (workloads.memory_model.param_count)."""
    count = _count(model, task)
    return format_params(count) if count else "size unknown"


@dataclass(frozen=True)
class Fit:
    """The largest model that fits, with its parameters; `at_least` when it is the largest size tried (the real
    limit is higher); `peak` the memory behind it over the seeds of its cell, where cells measured it (bytes)."""

    model: str
    params: int | None
    at_least: bool = False
    peak: Spread | None = None


@dataclass(frozen=True)
class Ratio:
    """How many times more parameters one arm's largest model has than another's; a lower bound when the first
    arm's largest is only the largest size tried."""

    value: float
    at_least: bool

    def describe(self) -> str:
        return f"{'≥ ' if self.at_least else ''}{self.value:.1f}×"


def size_ratio(top: Fit | None, bottom: Fit | None) -> Ratio | None:
    """`top`'s parameters over `bottom`'s; None when either fits nothing or has no known size. A lower bound when
    only `top` is the largest size tried (both at it: they agree as far as the ladder goes)."""
    if top is None or bottom is None or not top.params or not bottom.params:
        return None
    return Ratio(top.params / bottom.params, at_least=top.at_least and not bottom.at_least)


@dataclass(frozen=True)
class ArmFit:
    """The largest model one arm trains on one device: probed by the harness (`reason` says how), or read off the
    cells of a ladder of sizes (`tested` of them)."""

    device: str
    task: str
    method: str
    tuning: str
    optimizer: str | None
    measured: Fit | None  # None: not even the smallest candidate trained
    predicted: Fit | None
    reason: str = ""
    probes: tuple[str, ...] = ()  # the cell ids of the probes that decided it
    tested: int = 0  # ladder fits: cells of this arm with a known model size

    @property
    def label(self) -> str:
        return arm_label(self.method, self.tuning)

    @property
    def arm(self) -> str:
        optimizer = OPTIMIZER_LABELS.get(self.optimizer, self.optimizer) if self.optimizer else None
        return f"{self.label} + {optimizer}" if optimizer else self.label

    @property
    def measured_over_predicted(self) -> Ratio | None:
        """The measured largest model's parameters over the predicted one's (a lower bound when the measured is the
        largest size tried)."""
        return size_ratio(self.measured, self.predicted)

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.method, self.tuning, self.optimizer)


def _probed(model: str | None, task: str, candidates: list[str]) -> Fit | None:
    """A probed fit; `at_least` when it is the search's largest candidate (a larger model might fit too)."""
    return Fit(model, _count(model, task), at_least=model == candidates[-1]) if model else None


def _arm_fit(entry: ArmResolution) -> ArmFit:
    method, task = entry.params.method, entry.params.task
    return ArmFit(
        device=entry.device,
        task=task,
        method=method,
        tuning=entry.params.tuning,
        optimizer=entry.params.optimizer if method.startswith("bp") else None,
        measured=_probed(entry.model, task, entry.candidates) if entry.trained else None,
        predicted=_probed(entry.predicted, task, entry.candidates),
        reason=entry.reason,
        probes=tuple(probe.cell_id for probe in entry.probes),
    )


def arm_fits(run: RunData) -> list[ArmFit]:
    """The probed arms of run.json, once each (arms differing only in seed or recipe share their probes), but
    those decided by an invalid probe (reports.validity names its cell and the checks it failed)."""
    invalid = {r.cell_id for r in run.records if not r.validity.valid}
    fits = {}
    for entry in run.info.resolutions:
        fit = _arm_fit(entry)
        if not invalid.intersection(fit.probes):
            fits.setdefault((fit.device, fit.task, fit.key), fit)
    return list(fits.values())


#: Table columns: MeZO, then checkpointed BP with AdamW, SGD and LoRA, then plain BP (the paper's order).
ARM_ORDER = [
    ("mezo", "full", None),
    ("bp-checkpointed", "full", "adamw"),
    ("bp-checkpointed", "full", "sgd"),
    ("bp-checkpointed", "lora", "adamw"),
    ("bp", "full", "adamw"),
]


def arm_rank(fit: ArmFit) -> int:
    return ARM_ORDER.index(fit.key) if fit.key in ARM_ORDER else len(ARM_ORDER)


@dataclass(frozen=True)
class SizeRatio:
    device: str
    task: str
    measured: Ratio | None
    predicted: Ratio | None


def _count(model: str | None, task: str) -> int | None:
    shape = model_shape(model) if model else None
    return param_count(shape, WorkloadParams(model=model, task=task)) if shape and model else None


def size_ratios(fits: list[ArmFit]) -> list[SizeRatio]:
    """MeZO's largest trainable model over checkpointed backprop's (parameters), measured and predicted."""
    by_key = {(f.device, f.task, f.key): f for f in fits}
    ratios = []
    for device, task in dict.fromkeys((f.device, f.task) for f in fits):
        mezo, bp = (by_key.get((device, task, arm)) for arm in RATIO_ARMS)
        if mezo and bp:
            ratios.append(
                SizeRatio(
                    device,
                    task,
                    size_ratio(mezo.measured, bp.measured),
                    size_ratio(mezo.predicted, bp.predicted),
                )
            )
    return ratios


def _fit_cell(fit: ArmFit | None) -> str:
    if fit is None:
        return "-"
    measured = (
        f"{'≥ ' if fit.measured.at_least else ''}{fit.measured.model} ({params_of(fit.measured.model, fit.task)})"
        if fit.measured
        else "none"
    )
    if _model(fit.predicted) == _model(fit.measured):
        return measured
    return f"{measured}; predicted {_model(fit.predicted) or 'none'}"


def _model(fit: Fit | None) -> str | None:
    return fit.model if fit else None


def _times(ratio: Ratio | None) -> str:
    return f"{'≥ ' if ratio.at_least else ''}{ratio.value:.2f}x" if ratio is not None else "-"


def fit_table(run: RunData, task: str) -> str:
    """Markdown: per device, the largest model each arm trains (and the prediction where it differs), with
    MeZO's size ratio over checkpointed BP's, measured and predicted. README's table is this, re-derived by a test."""
    order = {d.name: i for i, d in enumerate(run.devices)}
    fits = sorted(
        (f for f in arm_fits(run) if f.task == task),
        key=lambda f: (order.get(f.device, len(order)), arm_rank(f)),
    )
    arms = sorted(
        dict.fromkeys((f.key, f.arm) for f in fits),
        key=lambda pair: ARM_ORDER.index(pair[0]) if pair[0] in ARM_ORDER else len(ARM_ORDER),
    )
    ratios = {r.device: r for r in size_ratios(fits)}
    caps = {d.name: d.memory_bytes for d in run.devices}
    header = ["device (cap)", *(label for _, label in arms), "MeZO / ckpt BP measured", "predicted"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for device in dict.fromkeys(f.device for f in fits):
        by_key = {f.key: f for f in fits if f.device == device}
        ratio = ratios.get(device)
        cap = format_bytes(caps[device]) if device in caps else "?"
        row = [f"{device} ({cap})", *(_fit_cell(by_key.get(key)) for key, _ in arms)]
        row += [_times(ratio.measured if ratio else None), _times(ratio.predicted if ratio else None)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
