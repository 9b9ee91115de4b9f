"""The self-contained HTML report: Jinja2 (autoescaped), plots inlined as base64 PNG, no external requests.

A Content-Security-Policy with the hashes of the report's own style and script is part of the page:
nothing can be fetched, and no script but ours can run, even if a value escaped the escaping.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from devices.profile import format_bytes
from harness.record.records import now_iso
from harness.record.store import check_writable, write_atomic, write_bytes_atomic
from reports.accuracy import AccuracyRow, accuracy_rows
from reports.answers import answer_lines
from reports.clocks import clock_summary
from reports.compare.runs import Comparison, compare_runs
from reports.compare.seeds import ALPHA, MIN_SEEDS, describe_figure
from reports.findings import NO_ENERGY, device_answers, reaches
from reports.fits import arm_fits, params_of, size_ratios
from reports.pairs import change_text
from reports.plateau import PLATEAU_POINTS
from reports.plots.figures import Plot
from reports.plots.render import PLOT_NAMES, render_plots
from reports.rundata import RunData, load_run
from reports.selection import format_value
from reports.style import METHOD_COLOURS, MIB, count_of, format_params, method_label
from reports.summary import DeviceHeadline, device_headlines, fit_rows, ladder_headlines
from reports.table import CellRow, cell_rows, memory_misses, rows_csv
from reports.validity import invalid_cells, remote_code_cells, soft_cap_cells, unchecked_cells
from workloads.registry import truncation
from workloads.validated import BAND

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
CSV_NAME = "cells.csv"
PLOT_PREFIX = "plot-"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["zip"] = zip
    env.filters.update(
        mib=lambda n: "" if n is None else f"{n / MIB:,.1f}",
        size=format_bytes,
        params=format_params,
        percent=lambda v, digits=1: "" if v is None else f"{v:.{digits}f}",
        signed_percent=lambda v: "" if v is None else f"{v:+.1%}",
        seconds=lambda v: "" if v is None else (f"{v:.3g}" if v < 10 else f"{v:,.1f}"),
        ratio=lambda v: "" if v is None else f"{v:.2f}",
        times=lambda r: "-" if r is None else f"{'≥ ' if r.at_least else ''}{r.value:.2f}",
        method=method_label,
        sortkey=lambda v: "" if v is None else v,
        spread=lambda v: "-" if v is None else v.describe(),
        spread_mib=lambda v: "-" if v is None else v.scaled(MIB).describe(unit=" MiB"),
        seed_figure=lambda v, metric: describe_figure(metric, v),
        recipe_value=format_value,
        cells=lambda n: count_of(n, "cell"),
        change=change_text,
        truncation=lambda model: truncation(model) or "",
    )
    env.filters["apply"] = lambda value, name: "-" if value is None else env.filters[name](value)
    return env


def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text()


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _style() -> str:
    """The stylesheet plus one rule per method, so the table uses the plots' colours."""
    rules = "".join(f".m-{m}::before{{background:{c}}}\n" for m, c in METHOD_COLOURS.items())
    return _asset("report.css") + rules


def render_html(
    run: RunData,
    headlines: list[DeviceHeadline],
    accuracy: list[AccuracyRow],
    rows: list[CellRow],
    plots: list[Plot],
    skipped: list[str],
    comparison: Comparison | None,
) -> str:
    style, script = _style(), _asset("report.js")
    csp = (
        f"default-src 'none'; img-src data:; style-src '{_csp_hash(style)}'; "
        f"script-src '{_csp_hash(script)}'; base-uri 'none'; form-action 'none'"
    )
    context: dict[str, Any] = {
        "run": run,
        "info": run.info,
        "counts": run.status_counts(),
        "expected": len(set(run.expected) | {r.cell_id for r in run.records}),
        "missing": run.missing_labels(),
        "invalid": invalid_cells(run),
        "unchecked": unchecked_cells(run),
        "remote_code": remote_code_cells(run),
        "soft_cap": soft_cap_cells(run),
        "prediction_problems": run.predictions.problems,
        "accuracy": accuracy,
        "answers": (answers := device_answers(run, accuracy)),
        "answer_lines": [(a.device, answer_lines(a)) for a in answers],
        "plateau_points": PLATEAU_POINTS,
        "reaches": (reached := reaches(answers)),
        "energy_shown": any(r.has_energy for r in reached),
        "no_energy": NO_ENERGY,
        "fits": (fits := fit_rows(probed := arm_fits(run), headlines)),
        "sentences": ladder_headlines(probed, headlines),
        "ratios": size_ratios(fits),
        "params_of": params_of,
        "clock": clock_summary(run),
        "plots": [(p, "data:image/png;base64," + base64.b64encode(p.png).decode()) for p in plots],
        "plot_prefix": PLOT_PREFIX,
        "skipped": skipped,
        "rows": rows,
        "misses": memory_misses(rows),
        "predicted_cells": sum(r.predicted_over_measured is not None for r in rows),
        "band": BAND,
        "csv_name": CSV_NAME,
        "comparison": comparison,
        "alpha": ALPHA,
        "min_seeds": MIN_SEEDS,
        "generated_at": now_iso(),
        "csp": csp,
        "style": Markup(style),
        "script": Markup(script),
    }
    return _environment().get_template(TEMPLATE).render(context)


def write_report(run_dir: Path, out: Path | None = None, baseline: Path | None = None) -> Path:
    """Write OUT (default RUN_DIR/report.html) with plot-*.png and cells.csv beside it; return OUT.

    Everything is computed before anything is written, so bad input (UserError) writes nothing.
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    comparison = compare_runs(baseline, run_dir) if baseline is not None else None
    headlines, accuracy = device_headlines(run), accuracy_rows(run)
    choices = [a.choice for a in accuracy]
    rows = cell_rows(run, choices)
    plots, skipped = render_plots(run, fit_rows(arm_fits(run), headlines), choices)
    html = render_html(run, headlines, accuracy, rows, plots, skipped, comparison)
    check_writable(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in PLOT_NAMES:  # a plot this run has no data for must not show a previous render
        (out.parent / f"{PLOT_PREFIX}{name}.png").unlink(missing_ok=True)
    for plot in plots:  # never through a link planted in the run directory
        write_bytes_atomic(out.parent / f"{PLOT_PREFIX}{plot.name}.png", plot.png)
    write_atomic(out.parent / CSV_NAME, rows_csv(rows))
    write_atomic(out, html)
    return out
