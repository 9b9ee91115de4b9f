"""Seconds per training step against model size, in the records' clock."""

from __future__ import annotations

from collections import defaultdict

from reports.clocks import time_label
from reports.plots.figures import Plot, method_legend, panels, params_axis, seconds_axis, to_png
from reports.plots.marks import clock_phrase, ladder_lines, scatter_status, series_key
from reports.rundata import RunData
from reports.style import method_order


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
            scatter_status(ax, params, seconds, record)
            lines[series_key(record)].append((params, seconds))
        ladder_lines(ax, lines)
        ax.set_title(device.name, fontsize=11)
        params_axis(ax, [n for _, n, _ in timed])
        seconds_axis(ax, times, f"time per step, {time_label(r for r, _, _ in own)}")
    method_legend(fig, method_order(r.params.method for r, _, _ in timed))
    return Plot(
        "step-time",
        "Step time per method and model size",
        f"Mean time per training step of the cells that finished, in {clock_phrase(r for r, _, _ in timed)}.",
        to_png(fig),
    )
