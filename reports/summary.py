"""The headline answer per device: the largest model each method fits, measured and predicted."""

from __future__ import annotations

from dataclasses import dataclass

from devices.profile import DeviceProfile
from harness.records import CellRecord
from reports.rundata import RunData
from reports.style import TRAINING_METHODS, method_label, method_order

#: The paper's comparison: how much larger a model MeZO fits than checkpointed backprop.
RATIO_PAIR = ("mezo", "bp-checkpointed")


@dataclass(frozen=True)
class Fit:
    """The largest tested model that fits; `at_least` when even the largest size tried fits."""

    model: str
    params: int
    at_least: bool


@dataclass(frozen=True)
class MethodFit:
    method: str
    measured: Fit | None
    predicted: Fit | None
    tested: int  # cells of this method on this device with a known model size

    @property
    def label(self) -> str:
        return method_label(self.method)

    @property
    def measured_over_predicted(self) -> float | None:
        if self.measured and self.predicted:
            return self.measured.params / self.predicted.params
        return None


@dataclass(frozen=True)
class Ratio:
    value: float
    at_least: bool

    def describe(self) -> str:
        return f"{'≥ ' if self.at_least else ''}{self.value:.1f}×"


@dataclass(frozen=True)
class DeviceHeadline:
    device: DeviceProfile
    fits: list[MethodFit]
    measured_ratio: Ratio | None
    predicted_ratio: Ratio | None
    sentence: str


def _largest(sized: list[tuple[int, CellRecord]], fits) -> Fit | None:
    fitting = [(n, r) for n, r in sized if fits(r)]
    if not fitting:
        return None
    params, record = max(fitting, key=lambda pair: pair[0])
    return Fit(record.params.model, params, at_least=params >= max(n for n, _ in sized))


def method_fit(run: RunData, device: DeviceProfile, method: str) -> MethodFit:
    sized = [
        (n, r)
        for r in run.by_device(device.name)
        if r.params.method == method and (n := run.param_count(r)) is not None
    ]
    measured = _largest(sized, lambda r: r.status == "ok")
    predicted = _largest(
        sized, lambda r: r.predicted_peak_bytes is not None and r.predicted_peak_bytes <= device.memory_bytes
    )
    return MethodFit(method, measured, predicted, len(sized))


def _ratio(top: Fit | None, bottom: Fit | None) -> Ratio | None:
    """MeZO's largest over BP's: a lower bound when MeZO's largest is only the top of the ladder."""
    if top is None or bottom is None:
        return None
    return Ratio(top.params / bottom.params, at_least=top.at_least)


def _sentence(fits: dict[str, MethodFit], measured: Ratio | None, predicted: Ratio | None) -> str:
    top, bottom = (fits.get(m) for m in RATIO_PAIR)
    if top is None or bottom is None:
        return "Run both MeZO and checkpointed BP on this device to compare the largest model each fits."
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
    headlines = []
    for device in run.devices:
        methods = method_order(r.params.method for r in run.by_device(device.name))
        fits = {m: method_fit(run, device, m) for m in methods if m in TRAINING_METHODS}
        fits = {m: f for m, f in fits.items() if f.tested}
        if not fits:
            continue
        top, bottom = (fits.get(m) for m in RATIO_PAIR)
        measured = _ratio(top and top.measured, bottom and bottom.measured)
        predicted = _ratio(top and top.predicted, bottom and bottom.predicted)
        headlines.append(
            DeviceHeadline(
                device, list(fits.values()), measured, predicted, _sentence(fits, measured, predicted)
            )
        )
    return headlines
