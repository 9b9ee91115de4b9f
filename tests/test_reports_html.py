"""The HTML report from synthetic run directories: files, content, escaping, partial runs, bad input."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.image import imread

import reports.plots.accuracy
import reports.plots.step_time
from harness.record.errors import UserError
from harness.record.records import judged
from reports.html import write_report
from reports.plots.accuracy import curve_variant
from reports.plots.render import PLOT_NAMES
from reports.rundata import load_run
from reports.selection import choose_recipes
from reports.spread import spread
from reports.summary import device_headlines
from tests.helpers import edgebench
from tests.records_factory import make_record
from tests.test_reports_fixtures import accuracy_run, on_clock, scaled_clock, sweep, sweep_record, write_run
from workloads.registry import model_shape


class Resources(HTMLParser):
    """Every URL the page would fetch on load, and its Content-Security-Policy."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[str] = []
        self.images: list[str] = []
        self.csp = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy":
            self.csp = attrs["content"]
        if tag == "img":
            self.images.append(attrs["src"])
        for name in ("src", "srcset", "poster", "data"):
            if attrs.get(name):
                self.fetched.append(attrs[name])
        if tag == "link":
            self.fetched.append(attrs.get("href", ""))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    run_dir = write_run(tmp_path_factory.mktemp("run"), sweep(energy=True))
    return write_report(run_dir)


def test_report_files_are_written_beside_it(full_report):
    run_dir = full_report.parent
    assert full_report == run_dir / "report.html"
    for name in PLOT_NAMES:
        image = imread(run_dir / f"plot-{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 500, name
    rows = list(csv.DictReader(io.StringIO((run_dir / "cells.csv").read_text())))
    assert len(rows) == len(load_run(run_dir).records) == 36
    assert {r["status"] for r in rows} == {"ok", "oom"}
    assert rows[0]["peak_memory_bytes"].isdigit()


def test_report_is_self_contained(full_report):
    html = full_report.read_text()
    parser = Resources()
    parser.feed(html)
    assert len(parser.images) == len(PLOT_NAMES)
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert all(url.startswith("data:") for url in parser.fetched), parser.fetched
    assert "url(" not in html and "@import" not in html
    assert parser.csp.startswith("default-src 'none'; img-src data:;")  # and forbids any other fetch


def test_report_shows_system_and_every_cell(full_report):
    html = full_report.read_text()
    for text in ("cgroup-v1", "2.13.0", "test-host", "rpi-zero-2w", "488.3 MiB", "36 of 36 cells recorded"):
        assert text in html
    assert html.count('<tr class="r-') == 36
    assert html.count('<tr class="r-oom"') == 9
    assert "Partial run" not in html


def test_headline_largest_model_per_method(tmp_path):
    run = load_run(write_run(tmp_path, sweep(devices=("rpi-zero-2w", "rpi-4-2gb"))))
    zero, four = device_headlines(run)
    fits = {f.method: f for f in zero.fits}
    assert (fits["mezo"].measured.model, fits["bp-checkpointed"].measured.model) == ("opt-30m", "opt-8m")
    assert fits["mezo"].predicted.model == "opt-30m"
    assert zero.measured_ratio.value == pytest.approx(29_800_000 / 8_400_000)
    assert not zero.measured_ratio.at_least
    # On 2 GB MeZO fits the largest size tried: the ratio is only a lower bound.
    assert four.measured_ratio.at_least and "≥ 4.2×" in four.sentence


def test_partial_run_says_what_is_missing(tmp_path):
    records = sweep(devices=("rpi-4-2gb",), models=("opt-1m", "opt-8m"))
    done, missing = records[:4], records[4:]
    labels = {r.cell_id: f"rpi-4-2gb/{r.params.model}/{r.params.method}/b8/s0" for r in records}
    run_dir = write_run(tmp_path, done, expected=[r.cell_id for r in records], cell_labels=labels)
    html = " ".join(write_report(run_dir).read_text().split())
    assert f"4 of {len(records)} cells recorded" in html
    assert f"{len(missing)} of {len(records)} cells in run.json have no record yet" in html
    for record in missing:
        assert labels[record.cell_id] in html
    assert html.count('<tr class="r-') == 4


def test_records_without_metrics_still_render(tmp_path):
    """Failed cells and workloads that report nothing: the report says which plots have no data."""
    records = [
        make_record(model="my-model-a", method="mezo"),
        make_record(status="oom", peak=None, model="my-model-b", method="bp"),
        make_record(status="timeout", peak=None, model="my-model-c", method="mezo"),
        make_record(status="error", peak=None, model="my-model-c", method="bp").model_copy(
            update={"error": "RuntimeError: boom"}
        ),
    ]
    run_dir = write_run(tmp_path, records)
    html = write_report(run_dir).read_text()
    assert (
        "Not drawn, for lack of data" in html
        and "no finished cell of a chosen recipe recorded an accuracy curve" in html
    )
    for status in ("ok", "oom", "timeout", "error"):
        assert f'<tr class="r-{status}"' in html
    assert "RuntimeError: boom" in html
    assert not list(run_dir.glob("plot-*.png"))


def test_oom_cell_borrows_param_count_from_its_model(tmp_path):
    ok = sweep_record("rpi-4-2gb", "opt-125m", "mezo")
    oom = sweep_record("rpi-zero-2w", "opt-125m", "bp")
    assert oom.status == "oom" and oom.metrics.param_count is None
    never_fits = sweep_record("rpi-zero-2w", "opt-350m", "bp", params=331_000_000)
    run = load_run(write_run(tmp_path, [ok, oom, never_fits]))
    assert run.param_count(oom) == 125_200_000
    # No cell of opt-350m survived: its size comes from the ladder's config, without building it.
    assert run.param_count(never_fits) == model_shape("opt-350m").params


def test_empty_run_renders(tmp_path):
    html = write_report(write_run(tmp_path, [], expected=["abc123"])).read_text()
    assert "No results yet" in html and "0 of 1 cells recorded" in html


def test_model_names_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    run_dir = write_run(tmp_path, [sweep_record("rpi-4-2gb", evil, "mezo", params=8_000_000)])
    html = write_report(run_dir).read_text()
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_stale_plots_of_an_earlier_render_are_removed(tmp_path):
    run_dir = write_run(tmp_path, sweep(devices=("rpi-4-2gb",), models=("opt-1m",)))
    write_report(run_dir)
    assert (run_dir / "plot-accuracy-time.png").exists()
    write_run(run_dir, [make_record(model="opt-8m")])
    write_report(run_dir)
    assert not (run_dir / "plot-accuracy-time.png").exists()


def test_cli_report_with_out_and_baseline(tmp_path):
    records = sweep(devices=("rpi-4-2gb",), models=("opt-1m", "opt-8m"))
    base = write_run(tmp_path / "base", records)
    bumped = [r.model_copy(update={"peak_memory_bytes": int(r.peak_memory_bytes * 1.1)}) for r in records[:1]]
    cur = write_run(tmp_path / "cur", bumped + records[1:])
    out = tmp_path / "site" / "index.html"
    result = edgebench("report", str(cur), "--out", str(out), "--baseline", str(base))
    assert result.returncode == 0
    assert result.stdout.strip() == str(out)
    html = out.read_text()
    assert "Versus baseline" in html and "1 regression<" in html and "peak memory +10.0%" in html
    assert (out.parent / "cells.csv").exists() and (out.parent / "plot-peak-memory.png").exists()


@pytest.mark.parametrize("problem", ["missing", "corrupted-info", "corrupted-results"])
def test_bad_run_directory_is_one_line_and_writes_nothing(tmp_path, problem):
    run_dir = tmp_path / "run"
    if problem != "missing":
        write_run(run_dir, sweep(devices=("rpi-4-2gb",), models=("opt-1m",)))
        name = "run.json" if problem == "corrupted-info" else "results.jsonl"
        with open(run_dir / name, "a") as handle:
            handle.write("{broken\n")
    out = tmp_path / "out" / "report.html"
    result = edgebench("report", str(run_dir), "--out", str(out))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.parent.exists()
    with pytest.raises(UserError):
        write_report(run_dir, out)


def test_malformed_metrics_are_refused_in_one_line_naming_the_record(tmp_path):
    """Metrics are typed (workloads.metrics): a results.jsonl line whose metrics are not is no record."""
    run_dir = write_run(tmp_path, [make_record(model="opt-8m"), make_record(model="opt-8m", method="bp")])
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    odd = json.loads(lines[1])
    odd["metrics"]["timing"] = {"step_time_s": "slow"}
    (run_dir / "results.jsonl").write_text("\n".join([lines[0], json.dumps(odd)]) + "\n")
    result = edgebench("report", str(run_dir))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "results.jsonl line 2 is not a valid result record" in line
    assert not (run_dir / "report.html").exists()


def test_accuracy_curves_of_one_model_tuned_two_ways_get_their_own_line_styles():
    full, head = (make_record(model="minilm-l6", task="rotten_tomatoes", tuning=t) for t in ("full", "head"))
    assert curve_variant(full) == "minilm-l6"
    assert curve_variant(head) == "minilm-l6 (head)"


def _clocked_run(tmp_path: Path) -> Path:
    """rpi-4-2gb on a scaled clock; rpi-zero-2w at host speed, as a device that gives no throughput runs."""
    host = make_record(device="rpi-zero-2w").clock.model_copy(
        update={"requested": "device-scaled", "source": "device rpi-zero-2w gives no throughput: host speed"}
    )
    records = [
        on_clock(r, scaled_clock() if r.device.name == "rpi-4-2gb" else host)
        for r in sweep(devices=("rpi-zero-2w", "rpi-4-2gb"), models=("opt-1m", "opt-8m"))
    ]
    return write_run(tmp_path, records)


def test_headline_and_table_say_whose_seconds_the_times_are(tmp_path):
    run_dir = _clocked_run(tmp_path)
    html = " ".join(write_report(run_dir).read_text().split())
    assert "Times mix clocks (device seconds (scaled) and host seconds; host 190 GFLOPS per core)" in html
    assert "rpi-4-2gb: 22.9 GFLOPS, one host CPU second counts as 8.3 device seconds" in html
    assert "rpi-zero-2w: host seconds (device rpi-zero-2w gives no throughput: host speed)" in html
    assert "device (s)</button>" in html and "host (s)</button>" in html
    rows = list(csv.DictReader(io.StringIO((run_dir / "cells.csv").read_text())))
    for row in rows:
        ratio = 190.0 / 22.9 if row["device"] == "rpi-4-2gb" else 1.0
        assert float(row["device_seconds"]) == pytest.approx(float(row["host_seconds"]) * ratio)
        assert row["clock"] == ("device-scaled" if row["device"] == "rpi-4-2gb" else "host")
    one_clock = write_run(
        tmp_path / "scaled", [on_clock(r, scaled_clock()) for r in sweep(devices=("rpi-4-2gb",))]
    )
    html = " ".join(write_report(one_clock).read_text().split())
    assert (
        "Times are device seconds (scaled clock: CPU time × host/device throughput ratio; "
        "host 190 GFLOPS per core)." in html
    )


def test_time_axes_and_captions_name_the_clock(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(reports.plots.accuracy, "to_png", lambda fig: figures.append(fig) or b"")
    monkeypatch.setattr(reports.plots.step_time, "to_png", lambda fig: figures.append(fig) or b"")
    run = load_run(_clocked_run(tmp_path))
    accuracy = reports.plots.accuracy.accuracy_plot(run, choose_recipes(run.records), "seconds")
    axes = {ax.get_title(): ax for ax in figures[-1].axes if ax.get_visible()}
    assert axes["rpi-4-2gb"].get_xlabel() == "training time, device seconds (scaled)"
    assert axes["rpi-zero-2w"].get_xlabel() == "training time, host seconds"
    assert "wall-clock" not in accuracy.title + accuracy.caption
    assert "each device's clock" in accuracy.caption
    step = reports.plots.step_time.step_time_plot(run)
    axes = {ax.get_title(): ax for ax in figures[-1].axes if ax.get_visible()}
    assert axes["rpi-4-2gb"].get_ylabel() == "time per step, device seconds (scaled)"
    assert axes["rpi-zero-2w"].get_ylabel() == "time per step, host seconds"
    scaled_only = load_run(write_run(tmp_path / "scaled", [on_clock(r, scaled_clock()) for r in sweep()]))
    assert "in device seconds (scaled)" in reports.plots.step_time.step_time_plot(scaled_only).caption
    assert "wall-clock" not in step.caption


@pytest.fixture(scope="module")
def accuracy_report(tmp_path_factory) -> Path:
    """The paper's accuracy experiment: four arms (MeZO and checkpointed BP, full and head), 3 seeds each."""
    return write_report(write_run(tmp_path_factory.mktemp("accuracy"), accuracy_run()))


def _text(path: Path) -> str:
    return " ".join(path.read_text().split())


def test_accuracy_summary_shows_the_recipe_chosen_on_validation_with_its_test_spread(accuracy_report):
    html = _text(accuracy_report)
    assert "recipe chosen on validation accuracy: lr 2e-5 (mean val 76.0 over 3 seeds); at the edge of its grid (lr 2e-5 is the largest tried): extend the grid; test shown" in html
    mezo = [
        r for r in accuracy_run() if (r.params.method, r.params.tuning, r.params.lr) == ("mezo", "full", 2e-5)
    ]
    test = spread(r.metrics.accuracy.final for r in mezo)
    assert f'<td class="num spread">{test.describe()}</td>' in html and "(n=3)" in html and " ± " in html
    assert html.count('<td class="num majority">50.0</td>') == 4  # every setting beside the majority class
    for arm in ("MeZO", "MeZO + head", "BP (checkpointed)", "BP (checkpointed) + head"):
        assert f'">{arm}</span></td>' in html
    # The runner-up is listed with its validation figure, never shown as the result.
    assert "runner-up" in html and "lr 1e-5" in html and html.count("<strong>chosen</strong>") == 2


def test_cells_table_keeps_one_row_per_seed_and_marks_the_chosen_recipe(accuracy_report):
    rows = list(csv.DictReader(io.StringIO((accuracy_report.parent / "cells.csv").read_text())))
    assert len(rows) == 18 and {r["seed"] for r in rows} == {"0", "1", "2"}
    assert (
        sum(r["recipe"] == "chosen" for r in rows) == 12
        and sum(r["recipe"] == "not chosen" for r in rows) == 6
    )
    assert {r["tuning"] for r in rows} == {"full", "head"}
    assert all(float(r["final_val_accuracy"]) > 50 for r in rows)


def test_accuracy_plots_draw_the_mean_with_a_band_n_and_the_majority_line(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(reports.plots.accuracy, "to_png", lambda fig: figures.append(fig) or b"")
    run = load_run(write_run(tmp_path, accuracy_run()))
    for x_key in ("seconds", "step"):
        plot = reports.plots.accuracy.accuracy_plot(run, choose_recipes(run.records), x_key)
        assert "mean ± std" in plot.caption and "majority-class accuracy of the test split" in plot.caption
        assert "chosen on validation accuracy" in plot.caption
        (ax,) = [ax for ax in figures[-1].axes if ax.get_visible()]
        assert len(ax.collections) == 4  # one band per setting: 4 arms, the chosen recipe each
        assert [t.get_text() for t in ax.texts].count("n=3") == 4
        majority = [line for line in ax.lines if list(line.get_ydata()) == [50.0, 50.0]]
        assert len(majority) == 1 and majority[0].get_linestyle() == "--"
        legend = [t.get_text() for t in figures[-1].legends[0].get_texts()]
        assert "mean ± std over n seeds" in legend and "majority class (test)" in legend


def test_records_without_validation_say_so_and_are_not_chosen_on_test(tmp_path):
    one_recipe = accuracy_run(arms={("mezo", "full"): {2e-5: (76.0, 75.2)}}, legacy=True)
    html = _text(write_report(write_run(tmp_path / "one", one_recipe)))
    assert "one recipe tried (lr 2e-5), validation not recorded; test shown" in html
    assert '<td class="num majority">-</td>' in html
    two = accuracy_run(arms={("mezo", "full"): {2e-5: (76.0, 75.2), 1e-5: (74.0, 76.5)}}, legacy=True)
    run_dir = write_run(tmp_path / "two", two)
    html = _text(write_report(run_dir))
    assert "no recipe chosen: validation not recorded for its 2 recipes" in html
    assert not (run_dir / "plot-accuracy-time.png").exists()  # nothing to show that test did not pick


def test_headline_counts_seeds_and_tells_head_arms_apart(tmp_path):
    run = load_run(write_run(tmp_path, sweep(devices=("rpi-4-2gb",), seeds=(0, 1, 2)) + accuracy_run()))
    (headline,) = device_headlines(run)
    labels = [f.label for f in headline.fits]
    assert labels == ["MeZO", "MeZO + head", "BP (checkpointed)", "BP (checkpointed) + head", "BP"]
    mezo = headline.fits[0].measured
    assert mezo.model == "opt-125m" and mezo.peak.n == 3 and mezo.peak.std > 0  # the fixture's seeds differ
    assert "checkpointed BP" in headline.sentence  # the ratio compares the full arms, not the head ones
    html = _text(write_report(run.run_dir))
    assert f"peak {mezo.peak.scaled(1024**2).describe(unit=' MiB')}" in html


def test_cli_report_prints_each_settings_test_accuracy_and_how_its_recipe_was_chosen(tmp_path):
    run_dir = write_run(tmp_path, accuracy_run())
    result = edgebench("report", str(run_dir))
    assert result.returncode == 0
    assert result.stdout.strip() == str(run_dir / "report.html")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 5  # four settings, then the device's answer
    assert lines[-1].startswith("edgebench report: answer: rpi-4-2gb: BP (checkpointed) on minilm-l6")
    assert any(
        line.startswith(
            "edgebench report: rpi-4-2gb minilm-l6 MeZO rotten_tomatoes b16 900 s: final test accuracy "
        )
        and "(n=3), majority class 50.0; recipe chosen on validation accuracy: lr 2e-5" in line
        for line in lines
    )


def test_accuracy_table_shows_each_settings_gain_over_step_0_with_its_paired_interval(accuracy_report):
    html = _text(accuracy_report)
    assert "gain over step 0 (points, paired 95% CI)</th>" in html
    gains = html.split('<td class="gain">')[1:]
    assert len(gains) == 4
    for cell in gains:
        assert (
            cell.startswith("+")
            and "(paired 95% CI +" in cell
            and "bootstrap p&lt;0.001, 400 examples" in cell
        )
    assert 'id="predictions"' not in html  # every file is there and its record's
    assert "on minilm-l6 wins</td>" in html  # the answer table names the best arm's wins over the others


def test_records_without_predictions_say_so_and_broken_files_are_named(tmp_path):
    legacy = accuracy_run(arms={("mezo", "full"): {2e-5: (76.0, 75.2)}}, legacy=True)
    html = _text(write_report(write_run(tmp_path / "legacy", legacy)))
    assert '<td class="gain">no paired interval (no predictions)</td>' in html and "95% CI +" not in html
    records = accuracy_run(arms={("mezo", "full"): {2e-5: (76.0, 75.2)}})
    run_dir = write_run(tmp_path / "broken", records)
    lost = records[0]
    (run_dir / lost.metrics.predictions.file).unlink()
    result = edgebench("report", str(run_dir))
    assert result.returncode == 0
    err = result.stderr.splitlines()
    assert err[0].startswith(
        f"edgebench report: predictions left out: rpi-4-2gb/minilm-l6/mezo/b16/s0 ({lost.cell_id})"
    )
    html = _text(run_dir / "report.html")
    assert 'id="predictions"' in html and "1 predictions file is missing, altered" in html
    assert f"({lost.cell_id}): {run_dir / lost.metrics.predictions.file}: cannot read" in html
    assert "2 vs 2 seeds" in html  # the two seeds whose files are intact are paired


def test_accuracy_vs_energy_and_the_joules_each_arm_needs_to_reach_the_others(tmp_path):
    report = write_report(write_run(tmp_path, accuracy_run(energy=True))).read_text()
    assert (tmp_path / "plot-accuracy-energy.png").exists() and "Test accuracy vs device energy" in report
    table = report.split('id="reach-table"')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 4 * 3  # the header, then every arm against the 3 others
    assert "accuracy vs device energy" not in report.split("Not drawn, for lack of data")[-1]


def test_records_without_energy_render_as_before_with_a_plain_note(tmp_path):
    report = write_report(write_run(tmp_path, accuracy_run())).read_text()
    assert 'id="reach-table"' not in report and 'id="reach-no-energy"' in report
    assert "No device energy: these records carry no joules" in report
    assert "accuracy vs device energy (no finished cell of a chosen recipe carries device joules" in report
    assert not (tmp_path / "plot-accuracy-energy.png").exists()
    assert (tmp_path / "plot-accuracy-time.png").exists()


def test_cells_under_the_rlimit_fallback_are_flagged_as_not_capped_by_the_kernel(tmp_path):
    """The rlimit fallback is a soft cap (issue 26, finding 6): the report says so in its header and in a notice of
    its own, and `edgebench report` warns, besides leaving the cells out of the headline as invalid."""
    soft = [judged(make_record(model=m, method="mezo"), enforcement="rlimit") for m in ("opt-1m", "opt-8m")]
    capped = make_record(model="opt-1m", method="bp")
    run_dir = write_run(tmp_path / "soft", [*soft, capped], enforcement="rlimit")
    html = " ".join(write_report(run_dir).read_text().split())
    assert 'enforcement <strong>rlimit</strong> (<a href="#soft-cap">memory not capped by the kernel</a>)' in html
    notice = html.split('id="soft-cap">', 1)[1].split("</div>", 1)[0]
    assert "2 cells ran under the rlimit fallback" in notice and "N child processes get N caps" in notice
    assert "enforcement rlimit: 2 cells (rpi-4-2gb/opt-1m/mezo" in notice and "/bp" not in notice
    assert not all(r.validity.valid for r in soft) and "cap_by_kernel" in soft[0].validity.failed
    result = edgebench("report", str(run_dir))
    assert result.returncode == 0
    assert "edgebench report: warning: memory not capped by the kernel: enforcement rlimit: 2 cells" in (
        result.stderr
    )
    kernel = " ".join(write_report(write_run(tmp_path / "kernel", [capped])).read_text().split())
    assert 'id="soft-cap"' not in kernel and "not capped by the kernel" not in kernel
