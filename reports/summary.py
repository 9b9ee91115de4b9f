"""The headline answer per device: the largest model each method fits on a ladder of sizes, measured and
predicted (reports.fits holds the fit row and the ratio)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devices.profile import DeviceProfile
from harness.record.records import CellRecord
from reports.fits import ArmFit, Fit, Ratio, size_ratio
from reports.rundata import RunData
from reports.selection import seedless_key
from reports.spread import spread
from reports.style import TRAINING_METHODS, TUNINGS, count_of, method_order

#: The paper's comparison: how much larger a model MeZO fits than checkpointed backprop, both tuning it all.
RATIO_PAIR = (("mezo", "full"), ("bp-checkpointed", "full"))


@dataclass(frozen=True)
class DeviceHeadline:
    device: DeviceProfile
    fits: list[ArmFit]
    measured_ratio: Ratio | None
    predicted_ratio: Ratio | None
    sentence: str


def _largest(
    sized: list[tuple[int, CellRecord]],
    fits: Callable[[CellRecord], bool],
    figure: Callable[[CellRecord], int | None],
) -> Fit | None:
    """The largest model with a cell that `fits`, and its memory `figure` over that cell's seeds that fit."""
    fitting = [(n, r) for n, r in sized if fits(r)]
    if not fitting:
        return None
    params, record = max(fitting, key=lambda pair: pair[0])
    seeds = [r for _, r in fitting if seedless_key(r) == seedless_key(record)]
    peak = spread(f for r in seeds if (f := figure(r)) is not None)
    return Fit(record.params.model, params, at_least=params >= max(n for n, _ in sized), peak=peak)


def default_optimizer(record: CellRecord) -> bool:
    """The paper's backprop uses AdamW; other optimizers are arms of their own (probed ones are in reports.fits)."""
    return record.params.method == "mezo" or record.params.optimizer == "adamw"


def method_fit(run: RunData, device: DeviceProfile, method: str, tuning: str = "full") -> ArmFit:
    """The arm's largest model on the device's ladder of sizes: the largest that finished (measured) and the
    largest the memory model puts under the cap (predicted), over the arm's valid cells (backprop's with AdamW)."""
    sized = [
        (n, r)
        for r in run.valid_by_device(device.name)
        if (r.params.method, r.params.tuning) == (method, tuning)
        and default_optimizer(r)
        and (n := run.param_count(r)) is not None
    ]
    cap = device.memory_bytes
    measured = _largest(sized, lambda r: r.status == "ok", lambda r: r.peak_memory_bytes)
    predicted = _largest(
        sized,
        lambda r: r.predicted_peak_bytes is not None and r.predicted_peak_bytes <= cap,
        lambda r: r.predicted_peak_bytes,
    )
    tasks = ", ".join(sorted({r.params.task for _, r in sized}))
    optimizer = "adamw" if method.startswith("bp") else None
    how = f"the largest of the sizes its {count_of(len(sized), 'valid cell')} tried"
    return ArmFit(device.name, tasks, method, tuning, optimizer, measured, predicted, how, tested=len(sized))


def arms(records: list[CellRecord]) -> list[tuple[str, str]]:
    """The (method, tuning) pairs of training cells: methods in canonical order, full tuning first."""
    present = {(r.params.method, r.params.tuning) for r in records if r.params.method in TRAINING_METHODS}
    return [(m, t) for m in method_order(m for m, _ in present) for t in TUNINGS if (m, t) in present]


def _sentence(fits: dict[tuple[str, str], ArmFit], measured: Ratio | None, predicted: Ratio | None) -> str:
    top, bottom = (fits.get(m) for m in RATIO_PAIR)
    if top is None or bottom is None:
        return (
            "Run both MeZO and checkpointed BP on the whole model on this device to compare the largest model "
            "each fits."
        )
    if measured is not None:
        text = (
            f"MeZO fine-tunes a {measured.describe()} larger model than checkpointed BP "
            f"({top.measured.model} vs {bottom.measured.model})"
        )
    elif top.measured and not bottom.measured:
        text = f"MeZO fits {top.measured.model}; checkpointed BP fits none of the sizes tried"
    elif bottom.measured and not top.measured:
        text = f"Checkpointed BP fits {bottom.measured.model}; MeZO fits none of the sizes tried"
    else:
        text = "Neither MeZO nor checkpointed BP fits any of the sizes tried"
    return text + (f"; the memory model predicts {predicted.describe()}." if predicted else ".")


def device_headlines(run: RunData) -> list[DeviceHeadline]:
    """Per device, from its valid cells only (the report lists the invalid ones with the checks they failed)."""
    headlines = []
    for device in run.devices:
        fits = {arm: method_fit(run, device, *arm) for arm in arms(run.valid_by_device(device.name))}
        fits = {arm: f for arm, f in fits.items() if f.tested}
        if not fits:
            continue
        top, bottom = (fits.get(m) for m in RATIO_PAIR)
        measured = size_ratio(top and top.measured, bottom and bottom.measured)
        predicted = size_ratio(top and top.predicted, bottom and bottom.predicted)
        headlines.append(
            DeviceHeadline(
                device, list(fits.values()), measured, predicted, _sentence(fits, measured, predicted)
            )
        )
    return headlines


def _arm(fit: ArmFit) -> tuple[str, str, str]:
    return (fit.device, fit.method, fit.tuning)


def fit_rows(probed: list[ArmFit], headlines: list[DeviceHeadline]) -> list[ArmFit]:
    """The report's one fit table: every arm the harness probed (reports.fits.arm_fits), then every arm only a
    ladder of cells measured; a probed arm's own probes are not read again as a ladder."""
    decided = {_arm(f) for f in probed}
    return probed + [f for h in headlines for f in h.fits if _arm(f) not in decided]


def ladder_headlines(probed: list[ArmFit], headlines: list[DeviceHeadline]) -> list[DeviceHeadline]:
    """The headlines of devices with an arm only a ladder measured: a probed device's answer is its probes'."""
    decided = {_arm(f) for f in probed}
    return [h for h in headlines if any(_arm(f) not in decided for f in h.fits)]
