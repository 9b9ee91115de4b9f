"""The report's plots. Each returns a Plot, or None when the run holds no data for it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from devices.profile import format_bytes
from harness.record.records import CellRecord
from reports.accuracy import majority_test_accuracy
from reports.clocks import MIXED, time_label
from reports.figures import (
    Plot,
    in_mib,
    memory_axis,
    method_legend,
    panels,
    params_axis,
    seconds_axis,
    single,
    to_png,
)
from reports.rundata import JOULES, RunData, curve
from reports.selection import GroupChoice
from reports.spread import Band, mean_band
from reports.style import (
    METHODS,
    STATUS_MARKERS,
    format_params,
    method_colour,
    method_order,
    spans_decades,
)
from reports.summary import DeviceHeadline
from workloads.registry import truncation

LINESTYLES = ("-", "--", ":", "-.")
MAJORITY_COLOUR = "#555555"
OOM_DODGE = 1.12  # OOM markers of different methods share the cap line: shift each method a little
X_LABELS = {"step": "step", JOULES: "device energy spent training (J)"}
PLOT_NAMES = (
    "peak-memory",
    "largest-model",
    "accuracy-time",
    "accuracy-step",
    "accuracy-energy",
    "step-time",
    "predicted-vs-measured",
)


def _series_key(record: CellRecord) -> tuple:
    """Cells that differ only in model size form one line across the size ladder (one line per seed)."""
    p = record.params
    return (p.method, p.task, p.batch, p.seq_len, p.tuning, p.dtype, p.optimizer, p.seed)


def _status_handles(statuses: set[str]) -> list[Line2D]:
    return [
        Line2D([], [], color="#444444", marker=STATUS_MARKERS[s], linestyle="none", label=s)
        for s in STATUS_MARKERS
        if s in statuses
    ]


def _scatter_status(ax: Axes, x: float, y: float, record: CellRecord) -> None:
    """ok cells are filled dots; failed cells are large open markers in the method's colour."""
    colour = method_colour(record.params.method)
    ok = record.status == "ok"
    ax.plot(
        x,
        y,
        marker=STATUS_MARKERS[record.status],
        markersize=6 if ok else 10,
        color=colour,
        markerfacecolor=colour if ok else "white",
        markeredgewidth=1 if ok else 2,
        linestyle="none",
        zorder=3,
    )


def _ladder_lines(ax: Axes, points: dict[tuple, list[tuple[float, float]]]) -> None:
    for key, pts in points.items():
        pts.sort()
        ax.plot(
            [x for x, _ in pts], [y for _, y in pts], color=method_colour(key[0]), alpha=0.6, linewidth=1.4
        )


def peak_memory_plot(run: RunData) -> Plot | None:
    """Peak memory vs parameters per method; the device cap as a line; OOM cells sit on their cap."""
    devices = [d for d in run.devices if any(run.param_count(r) for r in run.by_device(d.name))]
    if not devices:
        return None
    fig, axes = panels(len(devices))
    all_values = [d.memory_bytes for d in devices]
    sizes, statuses, methods = [], set(), set()
    for ax, device in zip(axes, devices, strict=True):
        lines: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        for record in run.by_device(device.name):
            params = run.param_count(record)
            if params is None:
                continue
            peak = record.peak_memory_bytes
            if record.status == "oom":  # drawn on the cap it hit, whatever was read before the kill
                peak = device.memory_bytes
                params = params * OOM_DODGE ** METHODS.index(record.params.method)  # methods side by side
            elif peak is None:  # a timeout or error without a reading: only the table shows it
                continue
            _scatter_status(ax, params, in_mib(peak), record)
            if record.status == "ok":
                lines[_series_key(record)].append((params, in_mib(peak)))
            sizes.append(params)
            all_values.append(peak)
            statuses.add(record.status)
            methods.add(record.params.method)
        _ladder_lines(ax, lines)
        cap = in_mib(device.memory_bytes)
        ax.axhline(cap, color="#222222", linestyle="--", linewidth=1.2, zorder=2)
        ax.annotate(
            f"cap {format_bytes(device.memory_bytes)}",
            (0.01, cap),
            xycoords=("axes fraction", "data"),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=8,
            color="#222222",
        )
        ax.set_title(device.name, fontsize=11)
    for ax in axes:
        params_axis(ax, sizes)
        memory_axis(ax, "y", all_values, "peak memory")
    cap_handle = Line2D([], [], color="#222222", linestyle="--", label="device cap")
    method_legend(fig, method_order(methods), _status_handles(statuses) + [cap_handle])
    return Plot(
        "peak-memory",
        "Peak memory vs model size",
        "Peak memory of each cell (the process's own peak unless noted in the table) against the model's "
        "parameter count. The dashed line is the device's memory cap; cells killed for running out of memory "
        "are drawn on it as open crosses.",
        to_png(fig),
    )


def largest_model_plot(headlines: list[DeviceHeadline]) -> Plot | None:
    """Grouped bars: per device and method, the largest model measured to fit (solid) and predicted (hatched)."""
    if not headlines:
        return None
    fig, ax = single()
    methods = method_order({f.method for h in headlines for f in h.fits})
    width = 0.8 / (2 * len(methods))
    values = []
    for group, headline in enumerate(headlines):
        fits = {f.method: f for f in headline.fits if f.tuning == "full"}  # a bar per method: the whole model
        for slot, method in enumerate(methods):
            fit = fits.get(method)
            for half, (kind, figure) in enumerate(
                (("measured", fit and fit.measured), ("predicted", fit and fit.predicted))
            ):
                x = group - 0.4 + width * (2 * slot + half + 0.5)
                if figure is None:
                    if fit is not None:
                        ax.annotate(
                            "none",
                            (x, 0),
                            xycoords=("data", "axes fraction"),
                            xytext=(0, 3),
                            textcoords="offset points",
                            ha="center",
                            fontsize=7,
                            rotation=90,
                            color="#666666",
                        )
                    continue
                colour = method_colour(method)
                ax.bar(
                    x,
                    figure.params,
                    width * 0.92,
                    color=colour if kind == "measured" else "white",
                    edgecolor=colour,
                    hatch=None if kind == "measured" else "///",
                    linewidth=1.2,
                )
                ax.annotate(
                    ("≥" if figure.at_least else "") + figure.model,
                    (x, figure.params),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
                values.append(figure.params)
    ax.set_xticks(range(len(headlines)), [h.device.name for h in headlines])
    ax.set_xlim(-0.5, len(headlines) - 0.5)
    log = spans_decades(values)
    ax.set_yscale("log" if log else "linear")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_params(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("parameters of the largest model that fits")
    top = max(values, default=1)
    ax.set_ylim(top=top * (8 if log else 1.35))
    kinds = [
        Patch(facecolor="#888888", edgecolor="#888888", label="measured"),
        Patch(facecolor="white", edgecolor="#888888", hatch="///", label="predicted"),
    ]
    method_legend(fig, methods, kinds)
    return Plot(
        "largest-model",
        "Largest trainable model per device",
        "For each device and method, the largest model of the ladder that trained under the cap (solid) "
        "and the largest the analytic memory model says fits (hatched). “≥” marks the largest size tried: "
        "the true limit is higher.",
        to_png(fig),
    )


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
    if x_key == "step" and spans_decades(xs, factor=100):
        for ax in axes:
            ax.set_xscale("symlog", linthresh=10)
    model_handles = (
        [Line2D([], [], color="#444444", linestyle=style[m], label=m) for m in models]
        if len(models) > 1
        else []
    )
    banded = any(b.std is not None for _, b in bands)
    band_handle = Patch(facecolor="#444444", alpha=0.25, label="mean ± std over n seeds")
    majority_handle = Line2D([], [], color=MAJORITY_COLOUR, linestyle="--", label="majority class (test)")
    extra = model_handles + ([band_handle] if banded else []) + ([majority_handle] if majority else [])
    method_legend(fig, method_order(methods), extra)
    how = (
        "Each line is one setting's recipe chosen on validation accuracy (see the accuracy table): the mean "
        "test accuracy over its finished seeds, with a shaded mean ± std band (sample std, none for a single "
        "seed; seeds interpolated on a common grid) and n, the number of seeds, at its end."
        + (" The dashed grey line is the majority-class accuracy of the test split." if majority else "")
    )
    if x_key == "seconds":
        return Plot(
            "accuracy-time",
            "Test accuracy vs training time",
            f"Test accuracy against training time in {_clock_phrase(plotted)}: MeZO's cheap steps against "
            f"backprop's informative ones. {how}",
            to_png(fig),
        )
    if x_key == JOULES:
        return Plot(
            "accuracy-energy",
            "Test accuracy vs device energy",
            "Test accuracy against the device joules spent training (derived: each cell's training device seconds "
            "times its mean power, its record's joules over its device seconds, from the catalogue's idle and "
            f"full-load watts; a throttled board draws less): what a battery pays for each arm's accuracy. {how}",
            to_png(fig),
        )
    return Plot(
        "accuracy-step",
        "Test accuracy vs step",
        f"Test accuracy against optimisation steps; MeZO usually needs many more steps than backprop. {how}",
        to_png(fig),
    )


def _clock_phrase(records: Iterable[CellRecord]) -> str:
    """A caption's name for the plotted seconds: the one clock, or a pointer to the panels' axes."""
    label = time_label(records)
    return "each device's clock (see each panel's axis)" if label == MIXED else label


def step_time_plot(run: RunData) -> Plot | None:
    """Seconds per training step against model size, a line per method."""
    timed = [
        (r, run.param_count(r), t)
        for r in run.records
        if r.status == "ok" and run.param_count(r) and (t := r.metrics.timing.step_time_s)
    ]
    devices = [d for d in run.devices if any(r.device.name == d.name for r, _, _ in timed)]
    if not devices:
        return None
    fig, axes = panels(len(devices))
    times = [t for _, _, t in timed]
    for ax, device in zip(axes, devices, strict=True):
        lines: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        own = [(r, n, t) for r, n, t in timed if r.device.name == device.name]
        for record, params, seconds in own:
            _scatter_status(ax, params, seconds, record)
            lines[_series_key(record)].append((params, seconds))
        _ladder_lines(ax, lines)
        ax.set_title(device.name, fontsize=11)
        params_axis(ax, [n for _, n, _ in timed])
        seconds_axis(ax, times, f"time per step, {time_label(r for r, _, _ in own)}")
    method_legend(fig, method_order(r.params.method for r, _, _ in timed))
    return Plot(
        "step-time",
        "Step time per method and model size",
        f"Mean time per training step of the cells that finished, in {_clock_phrase(r for r, _, _ in timed)}.",
        to_png(fig),
    )


def predicted_vs_measured_plot(run: RunData) -> Plot | None:
    """Every finished cell against the identity line: how good is the analytic model?

    Killed cells are left out: their measured peak is where the cap stopped them, not what they needed.
    """
    pairs = [r for r in run.records if r.status == "ok" and r.predicted_peak_bytes and r.peak_memory_bytes]
    if not pairs:
        return None
    fig, ax = single(6.2, width_in=7.4)
    values = [v for r in pairs for v in (r.predicted_peak_bytes, r.peak_memory_bytes)]
    for record in pairs:
        _scatter_status(ax, in_mib(record.predicted_peak_bytes), in_mib(record.peak_memory_bytes), record)
    low, high = in_mib(min(values)) / 1.3, in_mib(max(values)) * 1.3
    ax.plot(
        [low, high], [low, high], color="#222222", linestyle="--", linewidth=1, label="measured = predicted"
    )
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    memory_axis(ax, "x", values, "predicted peak memory")
    memory_axis(ax, "y", values, "measured peak memory")
    identity = Line2D([], [], color="#222222", linestyle="--", label="measured = predicted")
    method_legend(
        fig,
        method_order(r.params.method for r in pairs),
        _status_handles({r.status for r in pairs}) + [identity],
    )
    return Plot(
        "predicted-vs-measured",
        "Predicted vs measured peak memory",
        "Each finished cell's measured peak against the analytic memory model's estimate. Points above the "
        "dashed line used more memory than predicted; OOM cells are left out (their peak is the cap).",
        to_png(fig),
    )


PlotBuilder = Callable[[], Plot | None]


def render_plots(
    run: RunData, headlines: list[DeviceHeadline], choices: list[GroupChoice]
) -> tuple[list[Plot], list[str]]:
    """Every plot the run has data for, and a line for each one it has not."""
    builders: list[tuple[str, PlotBuilder]] = [
        ("peak memory vs model size (no cell has a parameter count)", lambda: peak_memory_plot(run)),
        (
            "largest trainable model (no training cell has a parameter count)",
            lambda: largest_model_plot(headlines),
        ),
        (
            "accuracy vs time (no finished cell of a chosen recipe recorded an accuracy curve)",
            lambda: accuracy_plot(run, choices, "seconds"),
        ),
        (
            "accuracy vs step (no finished cell of a chosen recipe recorded an accuracy curve)",
            lambda: accuracy_plot(run, choices, "step"),
        ),
        (
            "accuracy vs device energy (no finished cell of a chosen recipe carries device joules: records on the "
            "host clock, of a device without power figures, or written before energy figures)",
            lambda: accuracy_plot(run, choices, JOULES),
        ),
        ("step time (no finished cell recorded step_time_s)", lambda: step_time_plot(run)),
        ("predicted vs measured memory (no cell has both figures)", lambda: predicted_vs_measured_plot(run)),
    ]
    plots, skipped = [], []
    for missing, build in builders:
        plot = build()
        if plot is None:
            skipped.append(missing)
        else:
            plots.append(plot)
    return plots, skipped
