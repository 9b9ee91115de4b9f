"""The largest model each arm trains per device, as the harness probed it (harness.plan.resolve, kept in run.json),
measured and predicted, with MeZO's size ratio over checkpointed backprop's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devices.profile import format_bytes
from reports.rundata import RunData
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
class ArmFit:
    device: str
    task: str
    method: str
    tuning: str
    optimizer: str | None
    measured: str | None  # None: not even the smallest candidate trained
    predicted: str | None
    reason: str
    probes: tuple[str, ...] = ()  # the cell ids of the probes that decided it

    @property
    def arm(self) -> str:
        label = arm_label(self.method, self.tuning)
        return (
            f"{label} + {OPTIMIZER_LABELS.get(self.optimizer, self.optimizer)}" if self.optimizer else label
        )

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
        probes=tuple(probe.get("cell_id", "") for probe in entry.get("probes") or []),
    )


def arm_fits(run: RunData) -> list[ArmFit]:
    """The probed arms of run.json, once each (arms differing only in seed or recipe share their probes), but
    those decided by an invalid probe (reports.validity names its cell and the checks it failed)."""
    entries = run.info.get("resolutions")
    invalid = {r.cell_id for r in run.records if not r.validity.valid}
    fits = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue  # a hand-edited or foreign run.json: report what is readable
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
    measured: float | None
    predicted: float | None


def _count(model: str | None, task: str) -> int | None:
    shape = model_shape(model) if model else None
    return param_count(shape, WorkloadParams(model=model, task=task)) if shape and model else None


def _ratio(top: str | None, bottom: str | None, task: str) -> float | None:
    top_count, bottom_count = _count(top, task), _count(bottom, task)
    return top_count / bottom_count if top_count and bottom_count else None


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
                    _ratio(mezo.measured, bp.measured, task),
                    _ratio(mezo.predicted, bp.predicted, task),
                )
            )
    return ratios


def _fit_cell(fit: ArmFit | None) -> str:
    if fit is None:
        return "-"
    measured = f"{fit.measured} ({params_of(fit.measured, fit.task)})" if fit.measured else "none"
    return measured if fit.predicted == fit.measured else f"{measured}; predicted {fit.predicted or 'none'}"


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


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
