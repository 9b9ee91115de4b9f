"""The largest model each method fits per device, measured and predicted, as grouped bars."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from reports.fits import Fit
from reports.plots.figures import Plot, method_legend, single, to_png
from reports.style import format_params, method_colour, method_order, spans_decades
from reports.summary import DeviceHeadline


def _none_mark(ax: Axes, x: float) -> None:
    """`none` where an arm that was tried has no bar: not even the smallest size fits."""
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


def _fit_bar(ax: Axes, x: float, width: float, figure: Fit, colour: str, measured: bool) -> None:
    """One bar, solid when measured and hatched when predicted, labelled with its model (`≥`: the largest tried)."""
    ax.bar(
        x,
        figure.params,
        width * 0.92,
        color=colour if measured else "white",
        edgecolor=colour,
        hatch=None if measured else "///",
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


def _params_scale(ax: Axes, values: list[int]) -> None:
    """Parameters on y, logarithmic when the bars span decades, with room above the tallest for its label."""
    log = spans_decades(values)
    ax.set_yscale("log" if log else "linear")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_params(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("parameters of the largest model that fits")
    ax.set_ylim(top=max(values, default=1) * (8 if log else 1.35))


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
            for half, figure in enumerate((fit and fit.measured, fit and fit.predicted)):
                x = group - 0.4 + width * (2 * slot + half + 0.5)
                if figure is not None:
                    _fit_bar(ax, x, width, figure, method_colour(method), measured=half == 0)
                    values.append(figure.params)
                elif fit is not None:
                    _none_mark(ax, x)
    ax.set_xticks(range(len(headlines)), [h.device.name for h in headlines])
    ax.set_xlim(-0.5, len(headlines) - 0.5)
    _params_scale(ax, values)
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
