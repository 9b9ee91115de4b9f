"""Test accuracy over training time, device energy or steps: the chosen recipes' seeds as mean ± std bands."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.record.records import CellRecord
from reports.accuracy import majority_test_accuracy
from reports.clocks import time_label
from reports.plots.figures import Plot, method_legend, panels, to_png
from reports.plots.marks import clock_phrase
from reports.rundata import JOULES, RunData, curve
from reports.selection import GroupChoice
from reports.spread import Band, mean_band
from reports.style import method_colour, method_order, spans_decades
from workloads.registry import truncation

LINESTYLES = ("-", "--", ":", "-.")

MAJORITY_COLOUR = "#555555"

X_LABELS = {"step": "step", JOULES: "device energy spent training (J)"}

#: The span of evaluation times over which the x axis turns logarithmic (linear from 0 to the first evaluation
#: after step 0): an `eval_at: log` curve spans 64.
LOG_SPAN = 30


def curve_variant(record: CellRecord) -> str:
    """The line style's key: the model, and what of it is tuned when that is not all of it (the head and the
    whole of one model are different curves, whichever method tunes them)."""
    tuning, model = record.params.tuning, record.params.model
    model = f"{model}, truncated" if truncation(model) else model
    return model if tuning == "full" else f"{model} ({tuning})"


def _draw_band(ax: Axes, band: Band, colour: str, linestyle: str) -> None:
    """The seeds' mean as a line, mean ± std shaded around it, and n at its end."""
    ax.plot(
        band.x,
        band.mean,
        color=colour,
        linestyle=linestyle,
        marker="." if len(band.x) < 30 else None,
        linewidth=1.6,
    )
    if band.std is not None:
        low = [m - s for m, s in zip(band.mean, band.std, strict=True)]
        high = [m + s for m, s in zip(band.mean, band.std, strict=True)]
        ax.fill_between(band.x, low, high, color=colour, alpha=0.18, linewidth=0)
    ax.annotate(
        f"n={band.n}",
        (band.x[-1], band.mean[-1]),
        xytext=(3, 0),
        textcoords="offset points",
        fontsize=7,
        color=colour,
        va="center",
    )


def _draw_majority(ax: Axes, records: list[CellRecord]) -> bool:
    """A dashed line per task at the majority-class accuracy of its test split; False when none is recorded."""
    levels = {r.params.task: m for r in records if (m := majority_test_accuracy(r)) is not None}
    for task, level in sorted(levels.items()):
        ax.axhline(level, color=MAJORITY_COLOUR, linestyle="--", linewidth=1.1, zorder=1)
        ax.annotate(
            f"majority class{f' ({task})' if len(levels) > 1 else ''} {level:.1f}%",
            (0.99, level),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 3),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=MAJORITY_COLOUR,
        )
    return bool(levels)


def accuracy_plot(run: RunData, choices: list[GroupChoice], x_key: str) -> Plot | None:
    """Test accuracy over training time in the records' clock (the paper's trade-off), over device energy
    (`JOULES`) or over steps, one panel per device: per setting, its chosen recipe's seeds as a mean line with a
    ± std band."""
    bands = [(c, b) for c in choices if (b := mean_band([curve(r, x_key) for r in c.shown]))]
    devices = [d for d in run.devices if any(c.sample.device.name == d.name for c, _ in bands)]
    if not devices:
        return None
    fig, axes = panels(len(devices))
    plotted = [r for c, _ in bands for r in c.shown]
    sizes = {curve_variant(r): run.param_count(r) or 0 for r in plotted}
    models = sorted(sizes, key=lambda m: (sizes[m], m))
    style = {m: LINESTYLES[i % len(LINESTYLES)] for i, m in enumerate(models)}
    methods, xs, majority = set(), [], False
    for ax, device in zip(axes, devices, strict=True):
        own = [(c, b) for c, b in bands if c.sample.device.name == device.name]
        for choice, band in own:
            record = choice.sample
            _draw_band(ax, band, method_colour(record.params.method), style[curve_variant(record)])
            methods.add(record.params.method)
            xs += band.x
        drawn = [r for c, _ in own for r in c.shown]
        majority = _draw_majority(ax, drawn) or majority
        ax.set_title(device.name, fontsize=11)
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlabel(X_LABELS.get(x_key) or f"training time, {time_label(drawn)}")
    if (threshold := log_threshold(xs)) is not None:
        for ax in axes:
            ax.set_xscale("symlog", linthresh=threshold)
    banded = any(b.std is not None for _, b in bands)
    method_legend(fig, method_order(methods), _legend_extras(models, style, banded, majority))
    return Plot(*_titles(x_key, plotted, majority), to_png(fig))


def log_threshold(xs: list[float]) -> float | None:
    """Where a symlog x axis turns logarithmic (the first evaluation after step 0), when the evaluations span more
    than LOG_SPAN (log-spaced ones: each doubling of the budget gets equal room); None: a linear axis."""
    return min(x for x in xs if x > 0) if spans_decades(xs, factor=LOG_SPAN) else None


def _legend_extras(models: list[str], style: dict[str, str], banded: bool, majority: bool) -> list:
    """Legend entries beside the methods: the line style of each model (when there are several), the band and
    the majority line when drawn."""
    model_handles = (
        [Line2D([], [], color="#444444", linestyle=style[m], label=m) for m in models]
        if len(models) > 1
        else []
    )
    band_handle = Patch(facecolor="#444444", alpha=0.25, label="mean ± std over n seeds")
    majority_handle = Line2D([], [], color=MAJORITY_COLOUR, linestyle="--", label="majority class (test)")
    return model_handles + ([band_handle] if banded else []) + ([majority_handle] if majority else [])


def _titles(x_key: str, plotted: list[CellRecord], majority: bool) -> tuple[str, str, str]:
    """The plot's name, title and caption for its x axis."""
    how = (
        "Each line is one setting's recipe chosen on validation accuracy (see the accuracy table): the mean "
        "test accuracy over its finished seeds, with a shaded mean ± std band (sample std, none for a single "
        "seed; seeds interpolated on a common grid) and n, the number of seeds, at its end. Where the evaluations "
        "span more than 30x, the x axis is logarithmic past the first evaluation after step 0."
        + (" The dashed grey line is the majority-class accuracy of the test split." if majority else "")
    )
    if x_key == "seconds":
        return (
            "accuracy-time",
            "Test accuracy vs training time",
            f"Test accuracy against training time in {clock_phrase(plotted)}: MeZO's cheap steps against "
            f"backprop's informative ones. {how}",
        )
    if x_key == JOULES:
        return (
            "accuracy-energy",
            "Test accuracy vs device energy",
            "Test accuracy against the device joules spent training (derived: each cell's training device seconds "
            "times its mean power, its record's joules over its device seconds, from the catalogue's idle and "
            f"full-load watts; a throttled board draws less): what a battery pays for each arm's accuracy. {how}",
        )
    return (
        "accuracy-step",
        "Test accuracy vs step",
        f"Test accuracy against optimisation steps; MeZO usually needs many more steps than backprop. {how}",
    )
