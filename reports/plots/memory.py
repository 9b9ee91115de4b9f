"""Memory plots: peak memory against model size, and measured against predicted peaks."""

from __future__ import annotations

from collections import defaultdict

from matplotlib.lines import Line2D

from devices.profile import format_bytes
from reports.plots.figures import (
    Plot,
    in_mib,
    memory_axis,
    method_legend,
    panels,
    params_axis,
    single,
    to_png,
)
from reports.plots.marks import ladder_lines, scatter_status, series_key, status_handles
from reports.rundata import RunData
from reports.style import METHODS, method_order

OOM_DODGE = 1.12  # OOM markers of different methods share the cap line: shift each method a little


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
            scatter_status(ax, params, in_mib(peak), record)
            if record.status == "ok":
                lines[series_key(record)].append((params, in_mib(peak)))
            sizes.append(params)
            all_values.append(peak)
            statuses.add(record.status)
            methods.add(record.params.method)
        ladder_lines(ax, lines)
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
    method_legend(fig, method_order(methods), status_handles(statuses) + [cap_handle])
    return Plot(
        "peak-memory",
        "Peak memory vs model size",
        "Peak memory of each cell (the process's own peak unless noted in the table) against the model's "
        "parameter count. The dashed line is the device's memory cap; cells killed for running out of memory "
        "are drawn on it as open crosses.",
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
        scatter_status(ax, in_mib(record.predicted_peak_bytes), in_mib(record.peak_memory_bytes), record)
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
        status_handles({r.status for r in pairs}) + [identity],
    )
    return Plot(
        "predicted-vs-measured",
        "Predicted vs measured peak memory",
        "Each finished cell's measured peak against the analytic memory model's estimate. Points above the "
        "dashed line used more memory than predicted; OOM cells are left out (their peak is the cap).",
        to_png(fig),
    )
