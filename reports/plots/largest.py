"""The fit table (reports.fits) as grouped bars: per device, the largest model each method fits, measured and
predicted."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from reports.fits import ArmFit, Fit
from reports.plots.figures import Plot, method_legend, single, to_png
from reports.style import format_params, method_colour, method_order, spans_decades


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


def _bars(fits: list[ArmFit]) -> dict[tuple[str, str], dict[str, ArmFit]]:
    """Per device and task, a bar per method: its arm on the whole model (backprop's with AdamW)."""
    groups: dict[tuple[str, str], dict[str, ArmFit]] = {}
    for fit in fits:
        if fit.tuning == "full" and fit.optimizer in (None, "adamw"):
            groups.setdefault((fit.device, fit.task), {}).setdefault(fit.method, fit)
    return groups


def largest_model_plot(fits: list[ArmFit]) -> Plot | None:
    """Grouped bars: per device and method, the largest model measured to fit (solid) and predicted (hatched)."""
    groups = _bars(fits)
    if not groups:
        return None
    fig, ax = single()
    methods = method_order({m for bars in groups.values() for m in bars})
    width = 0.8 / (2 * len(methods))
    values = []
    for group, bars in enumerate(groups.values()):
        for slot, method in enumerate(methods):
            fit = bars.get(method)
            for half, figure in enumerate((fit and fit.measured, fit and fit.predicted)):
                x = group - 0.4 + width * (2 * slot + half + 0.5)
                if figure is not None and figure.params:
                    _fit_bar(ax, x, width, figure, method_colour(method), measured=half == 0)
                    values.append(figure.params)
                elif fit is not None:
                    _none_mark(ax, x)
    one_task = len({task for _, task in groups}) == 1
    ax.set_xticks(range(len(groups)), [d if one_task else f"{d}\n{t}" for d, t in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    _params_scale(ax, values)
    kinds = [
        Patch(facecolor="#888888", edgecolor="#888888", label="measured"),
        Patch(facecolor="white", edgecolor="#888888", hatch="///", label="predicted"),
    ]
    method_legend(fig, methods, kinds)
    return Plot(
        "largest-model",
        "Largest trainable model per device",
        "For each device and method, the largest model that trained under the cap (solid) and the largest the "
        "analytic memory model says fits (hatched), as the fit table gives them. “≥” marks the largest size "
        "tried on a ladder: the true limit is higher.",
        to_png(fig),
    )
