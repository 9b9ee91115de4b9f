"""Every plot a run has data for, each with a line saying why when it has none."""

from __future__ import annotations

from collections.abc import Callable

from reports.fits import ArmFit
from reports.plots.accuracy import accuracy_plot
from reports.plots.figures import Plot
from reports.plots.largest import largest_model_plot
from reports.plots.memory import peak_memory_plot, predicted_vs_measured_plot
from reports.plots.step_time import step_time_plot
from reports.rundata import JOULES, RunData
from reports.selection import GroupChoice

PLOT_NAMES = (
    "peak-memory",
    "largest-model",
    "accuracy-time",
    "accuracy-step",
    "accuracy-energy",
    "step-time",
    "predicted-vs-measured",
)

PlotBuilder = Callable[[], Plot | None]


def render_plots(
    run: RunData, fits: list[ArmFit], choices: list[GroupChoice]
) -> tuple[list[Plot], list[str]]:
    """Every plot the run has data for, and a line for each one it has not."""
    builders: list[tuple[str, PlotBuilder]] = [
        ("peak memory vs model size (no cell has a parameter count)", lambda: peak_memory_plot(run)),
        (
            "largest trainable model (no probed arm and no training cell with a parameter count)",
            lambda: largest_model_plot(fits),
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
