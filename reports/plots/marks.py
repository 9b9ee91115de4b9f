"""Marks several plots share: status markers, lines along a size ladder, the name of the plotted clock."""

from __future__ import annotations

from collections.abc import Iterable

from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from harness.record.records import CellRecord
from reports.clocks import MIXED, time_label
from reports.style import STATUS_MARKERS, method_colour


def series_key(record: CellRecord) -> tuple:
    """Cells that differ only in model size form one line across the size ladder (one line per seed)."""
    p = record.params
    return (p.method, p.task, p.batch, p.seq_len, p.tuning, p.dtype, p.optimizer, p.seed)


def status_handles(statuses: set[str]) -> list[Line2D]:
    return [
        Line2D([], [], color="#444444", marker=STATUS_MARKERS[s], linestyle="none", label=s)
        for s in STATUS_MARKERS
        if s in statuses
    ]


def scatter_status(ax: Axes, x: float, y: float, record: CellRecord) -> None:
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


def ladder_lines(ax: Axes, points: dict[tuple, list[tuple[float, float]]]) -> None:
    for key, pts in points.items():
        pts.sort()
        ax.plot(
            [x for x, _ in pts], [y for _, y in pts], color=method_colour(key[0]), alpha=0.6, linewidth=1.4
        )


def clock_phrase(records: Iterable[CellRecord]) -> str:
    """A caption's name for the plotted seconds: the one clock, or a pointer to the panels' axes."""
    label = time_label(records)
    return "each device's clock (see each panel's axis)" if label == MIXED else label
