"""Which seconds a report's times are: each record carries its clock, and every axis, caption and table
that shows a time says whose seconds they are (a device's, scaled or throttled, or the host's)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from devices.speed import CellClock
from harness.record.records import CellRecord
from reports.rundata import RunData

MIXED = "mixed clocks"


def time_label(records: Iterable[CellRecord]) -> str:
    """The records' clock as an axis names it, or `mixed clocks` when they differ (a panel per device then
    names its own)."""
    labels = {r.clock.axis_label for r in records}
    return labels.pop() if len(labels) == 1 else MIXED


def device_clocks(run: RunData) -> list[tuple[str, CellClock]]:
    """Each device's clock as its records give it, in device order; a device twice only if its records differ."""
    pairs = dict.fromkeys((d.name, r.clock) for d in run.devices for r in run.by_device(d.name))
    return list(pairs)


def _host_figure(clocks: Iterable[CellClock]) -> str:
    figures = sorted({c.host_gflops_per_core for c in clocks if c.host_gflops_per_core is not None})
    return "; host " + " / ".join(f"{g:.0f}" for g in figures) + " GFLOPS per core" if figures else ""


def clock_sentence(clocks: list[CellClock]) -> str:
    """One sentence for the headline: what the run's times are, and how device seconds were obtained."""
    kinds = {c.kind for c in clocks}
    host = _host_figure(clocks)
    if kinds == {"device-scaled"}:
        return f"Times are device seconds (scaled clock: CPU time × host/device throughput ratio{host})."
    if kinds == {"device-throttled"}:
        return (
            "Times are device seconds (throttled clock: each cell's CPU quota is its device's throughput "
            f"over the host's per core, so wall-clock time is device time{host})."
        )
    if kinds == {"host"}:
        return "Times are host seconds: no device speed is simulated."
    labels = " and ".join(sorted({c.axis_label for c in clocks}))
    return (
        f"Times mix clocks ({labels}{host}): each device's clock is listed below, and each plot's time axis "
        "names its seconds."
    )


def device_clock_line(device: str, clock: CellClock) -> str:
    """How one device's seconds relate to the host's, with where its throughput figure came from."""
    if clock.kind == "host":
        return f"{device}: host seconds ({clock.source})"
    how = (
        f"one host CPU second counts as {clock.ratio:.3g} device seconds"
        if clock.scaled
        else f"throttled to {clock.cpu_quota_cores:.3g} host cores"
    )
    return f"{device}: {clock.device_gflops:g} GFLOPS, {how} (throughput: {clock.source})"


@dataclass(frozen=True)
class ClockSummary:
    sentence: str
    devices: list[str]


def clock_summary(run: RunData) -> ClockSummary | None:
    """The headline's note on time; None for a run without records (it shows no time)."""
    pairs = device_clocks(run)
    if not pairs:
        return None
    return ClockSummary(clock_sentence([c for _, c in pairs]), [device_clock_line(d, c) for d, c in pairs])
