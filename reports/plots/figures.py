"""Matplotlib plumbing shared by the plots: one panel per device, unit-aware axes, PNG output.

Figures are built with `matplotlib.figure.Figure` (no pyplot): no global state, nothing leaks
between reports, and no display backend is ever needed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from reports.style import MIB, format_params, method_colour, method_label, spans_decades

WIDTH_IN = 11.0
PANEL_HEIGHT_IN = 3.6
MAX_COLUMNS = 3
DPI = 110


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: plot-<name>.png
    title: str
    caption: str
    png: bytes


def panels(count: int, sharey: bool = True) -> tuple[Figure, list[Axes]]:
    """A grid with one panel per device, at most MAX_COLUMNS wide."""
    columns = min(count, MAX_COLUMNS)
    rows = -(-count // columns)
    width = {1: 8.0, 2: 10.0}.get(columns, WIDTH_IN)  # one lone panel is not stretched across the page
    fig = Figure(figsize=(width, PANEL_HEIGHT_IN * rows + 0.6), layout="constrained")
    grid = fig.subplots(rows, columns, sharey=sharey, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for spare in axes[count:]:
        spare.set_visible(False)
    for ax in axes:
        ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, axes[:count]


def single(height_in: float = 4.4, width_in: float = WIDTH_IN) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    ax = fig.subplots()
    ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _mib_ticks(value: float, _pos: object) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def memory_axis(ax: Axes, which: str, values_bytes: Iterable[float], label: str) -> None:
    """A memory axis in MiB, logarithmic when the values span decades."""
    log = spans_decades(values_bytes)
    set_scale = ax.set_xscale if which == "x" else ax.set_yscale
    set_scale("log" if log else "linear")
    axis = ax.xaxis if which == "x" else ax.yaxis
    if log:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_mib_ticks))
    axis.set_minor_formatter(NullFormatter())
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(f"{label} (MiB)")


def seconds_axis(ax: Axes, values: Iterable[float], label: str) -> None:
    """A time axis (y) in plain seconds, logarithmic when the values span decades. The label names whose
    seconds they are (a device's or the host's), so no unit is appended."""
    log = spans_decades(values)
    ax.set_yscale("log" if log else "linear")
    if log:
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(label)


def params_axis(ax: Axes, values: Iterable[float]) -> None:
    """Parameter count on x, log scale when the model sizes span decades (they usually do)."""
    ax.set_xscale("log" if spans_decades(values) else "linear")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_params(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters")


def method_legend(fig: Figure, methods: Iterable[str], extra: list | None = None) -> None:
    """One legend for the whole figure, above the panels, so every panel stays uncluttered."""
    handles = [
        Line2D([], [], color=method_colour(m), marker="o", linestyle="-", label=method_label(m))
        for m in methods
    ]
    handles += extra or []
    widest = max((len(h.get_label()) for h in handles), default=0)
    per_row = max(2, int(fig.get_figwidth() / (0.5 + 0.085 * widest)))  # long labels take fewer columns
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), per_row), frameon=False)


def to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def in_mib(value: float) -> float:
    return value / MIB
