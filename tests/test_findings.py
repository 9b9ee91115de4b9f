"""The report's answers (reports.findings): the best arm per device on test accuracy; and the probed fits (reports.fits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.record.runinfo import ArmResolution
from reports.accuracy import accuracy_rows
from reports.answers import answer_table
from reports.findings import (
    device_answers,
    energy_table,
    first_reaching,
    mean_curve,
    passing_table,
)
from reports.fits import arm_fits, size_ratios
from reports.rundata import RunData
from reports.summary import device_headlines, fit_rows, ladder_headlines
from tests.records_factory import make_record, make_run_info, merged
from tests.test_reports_fixtures import with_energy
from workloads.metrics import CurvePoint
from workloads.params import WorkloadParams
from workloads.registry import model_shape


def accuracy_record(model: str, method: str, seed: int, test: float, val: float, curve=((0, 50.0),)):
    record = make_record(model=model, method=method, seed=seed, task="rotten_tomatoes", lr=1e-3)
    points = [{"seconds": t, "step": i, "accuracy": a, "val_accuracy": a} for i, (t, a) in enumerate(curve)]
    metrics = merged(record.metrics, accuracy={"final": test, "final_val": val, "curve": points})
    return record.model_copy(update={"metrics": metrics})


def test_each_device_names_its_best_arm_with_the_spread_and_the_gap_to_the_others():
    records = [
        *(accuracy_record("mpnet-l12", "mezo", s, t, 80.0) for s, t in enumerate((83.0, 84.0, 85.0))),
        *(
            accuracy_record("minilm-l6", "bp-checkpointed", s, t, 78.0)
            for s, t in enumerate((75.0, 76.0, 77.0))
        ),
    ]
    run = RunData(Path("run"), make_run_info(), records)
    (answer,) = device_answers(run, accuracy_rows(run))
    assert (answer.best.method, answer.best.model) == ("mezo", "mpnet-l12")
    sentence = answer.sentence()
    assert sentence.startswith("MeZO on mpnet-l12 (109M) reaches 84.0 ± 1.0 % (n=3) test accuracy after")
    assert (
        "; BP (checkpointed) on minilm-l6 (22.6M) 76.0 ± 1.0 % (n=3) (from 50.0 % at step 0; no paired interval "
        "(no predictions)), 8.0 points lower, no paired interval (no predictions)."
    ) in sentence


def entry(device: str, method: str, measured: str | None, predicted: str | None, **params) -> ArmResolution:
    return ArmResolution(
        device=device,
        params=WorkloadParams(model="opt-350m", method=method, **params),
        candidates=["opt-1m", "opt-350m"],
        model=measured or "opt-1m",
        trained=measured is not None,
        predicted=predicted,
        reason="probed",
    )


def test_probed_fits_give_mezos_size_ratio_measured_and_predicted_per_device():
    resolutions = [
        entry("a", "mezo", "opt-350m", "opt-350m"),
        entry("a", "mezo", "opt-350m", "opt-350m", seed=1),  # a twin arm: shown once
        entry("a", "bp-checkpointed", "opt-60m", "opt-125m"),
        entry("a", "bp-checkpointed", "opt-30m", "opt-60m", optimizer="sgd"),
        entry("b", "mezo", "opt-1m", "opt-1m"),
        entry("b", "bp-checkpointed", None, None),
    ]
    run = RunData(Path("run"), make_run_info(resolutions=resolutions), [])
    fits = arm_fits(run)
    assert len(fits) == 5
    assert [f.arm for f in fits if f.device == "a"] == [
        "MeZO",
        "BP (checkpointed) + AdamW",
        "BP (checkpointed) + SGD",
    ]
    ratio_a, ratio_b = size_ratios(fits)
    params = {m: model_shape(m).params for m in ("opt-350m", "opt-60m", "opt-125m")}
    assert ratio_a.measured.value == pytest.approx(params["opt-350m"] / params["opt-60m"])
    assert ratio_a.predicted.value == pytest.approx(params["opt-350m"] / params["opt-125m"])
    assert ratio_b.measured is None and ratio_b.predicted is None  # BP trained nothing there


def test_the_fit_table_takes_a_probed_arm_from_its_probes_and_any_other_from_its_ladder():
    """One fit row per arm: the probes decide a probed arm (its own cells are not read again as a ladder), a
    ladder of cells decides the rest, and the size ratio pairs the two kinds of row."""
    records = [
        make_record(model=model, method=method, task="synthetic")
        for model in ("opt-1m", "opt-8m")
        for method in ("mezo", "bp-checkpointed")
    ]
    run = RunData(Path("run"), make_run_info(resolutions=[entry("rpi-4-2gb", "mezo", "opt-30m", "opt-60m")]), records)
    headlines = device_headlines(run)
    rows = fit_rows(arm_fits(run), headlines)
    assert [(f.method, f.measured.model, f.predicted and f.predicted.model) for f in rows] == [
        ("mezo", "opt-30m", "opt-60m"),
        ("bp-checkpointed", "opt-8m", None),  # these records carry no prediction
    ]
    assert rows[0].reason == "probed" and "valid cells" in rows[1].reason and rows[1].measured.at_least
    assert ladder_headlines(arm_fits(run), headlines) == headlines  # checkpointed BP was read off its ladder
    (ratio,) = size_ratios(rows)
    assert ratio.measured.value == pytest.approx(rows[0].measured.params / rows[1].measured.params)
    assert not ratio.measured.at_least  # MeZO's fit was probed, not the top of a ladder


def test_the_device_time_mezo_needs_to_pass_each_backprop_arm_is_read_off_its_mean_curve():
    curves = [((0, 70.0), (300, 74.0), (600, 78.0)), ((0, 72.0), (300, 76.0), (600, 80.0))]
    records = [accuracy_record("mpnet-l12", "mezo", s, c[-1][1], 75.0, c) for s, c in enumerate(curves)]
    records += [
        accuracy_record("minilm-l6", "bp-checkpointed", s, t, 70.0) for s, t in enumerate((74.5, 75.5))
    ]
    records += [accuracy_record("minilm-l6", "bp", s, t, 70.0) for s, t in enumerate((90.0, 91.0))]
    run = RunData(Path("run"), make_run_info(), records)
    (answer,) = device_answers(run, accuracy_rows(run))
    mezo = next(r for r in answer.ranked if r.method == "mezo")
    curve = mean_curve(mezo)
    assert curve == [(0, 71.0), (300, 75.0), (600, 79.0)]
    assert first_reaching(curve, 75.0) == 300 and first_reaching(curve, 71.0) == 0
    table = passing_table([answer])
    assert "| BP (checkpointed) on minilm-l6 (22.6M): 75.0 % | 300 |" in table
    assert "| BP on minilm-l6 (22.6M): 90.5 % | not within 600 s |" in table


# Paired intervals (reports.paired): records that kept per-example predictions, written through the real store.


def _paired_run(tmp_path, arms, seeds=(0, 1, 2)):
    from reports.rundata import load_run
    from tests.test_reports_fixtures import accuracy_run, write_run

    return load_run(write_run(tmp_path, accuracy_run(seeds=seeds, arms=arms)))


def test_an_arm_wins_only_when_the_paired_interval_of_the_gap_excludes_zero(tmp_path):
    run = _paired_run(
        tmp_path,
        {
            ("bp-checkpointed", "full"): {1e-4: (84.0, 83.1)},
            ("mezo", "full"): {2e-5: (76.0, 75.2)},  # 7.9 points lower: a real gap
            ("mezo", "head"): {2.0: (82.0, 82.6)},  # 0.5 points lower: within the examples' noise
        },
    )
    (answer,) = device_answers(run, accuracy_rows(run))
    near, far = answer.gaps  # ranked: MeZO + head (82.6) before MeZO (75.2)
    assert far.high < 0 and far.decisive and near.low < 0 < near.high and not near.decisive
    sentence = answer.sentence()
    assert sentence.startswith(
        "BP (checkpointed) on minilm-l6 (22.6M) reaches 83.1 ± 0.9 % (n=3) test accuracy after 900 s (from 50.0 % "
        f"at step 0; +33.1 points, paired 95% CI {answer.best.gain.low:+.1f} to"
    )
    assert (
        f"7.9 points lower (paired 95% CI {far.low:+.1f} to {far.high:+.1f}, bootstrap p<0.001, 400 examples, "
        "3 vs 3 seeds: BP (checkpointed) on minilm-l6 wins)"
    ) in sentence
    assert (
        f"0.5 points lower (paired 95% CI {near.low:+.1f} to {near.high:+.1f}, bootstrap {near.p_text()}, "
        "400 examples, 3 vs 3 seeds: no winner)"
    ) in sentence
    assert sentence.count(" wins") == 1 and sentence.count(": a gain") == 3
    table = answer_table(run, accuracy_rows(run))
    assert f"| -7.9 (paired 95% CI {far.low:+.1f} to {far.high:+.1f}, bootstrap p<0.001" in table
    assert "no paired interval" not in table


def test_a_gain_over_step_0_within_the_noise_is_no_clear_change(tmp_path):
    """A head that starts at 50 % and ends at 50.5 % after training: no gain to claim (the arm's gain is paired
    seed by seed with its own step 0)."""
    run = _paired_run(tmp_path, {("mezo", "head"): {2.0: (50.0, 50.5)}}, seeds=(0,))
    (row,) = accuracy_rows(run)
    assert row.gain.seeds_a == row.gain.seeds_b == 1 and row.gain.method.startswith("McNemar")
    assert not row.gain.decisive
    (answer,) = device_answers(run, [row])
    assert answer.sentence().endswith(f"{row.gain.figures()}: no clear change).")


def test_missing_or_altered_predictions_are_named_and_left_out_of_the_intervals(tmp_path):
    import subprocess
    import sys

    run = _paired_run(
        tmp_path, {("bp-checkpointed", "full"): {1e-4: (84.0, 83.1)}, ("mezo", "full"): {2e-5: (76.0, 75.2)}}
    )
    mezo = [r for r in run.records if r.params.method == "mezo"]
    bp = [r for r in run.records if r.params.method != "mezo"]
    (tmp_path / mezo[0].metrics.predictions.file).unlink()  # one seed's file lost
    altered = tmp_path / mezo[1].metrics.predictions.file
    data = altered.read_bytes()
    altered.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # another's changed
    for record in bp:  # and every BP seed's
        (tmp_path / record.metrics.predictions.file).unlink()
    from reports.rundata import load_run

    run = load_run(tmp_path)
    problems = run.predictions.problems
    assert len(problems) == 5
    assert any(mezo[0].cell_id in p and "cannot read" in p and "left out" in p for p in problems)
    assert any(mezo[1].cell_id in p and "does not match the sha256" in p for p in problems)
    rows = accuracy_rows(run)
    mezo_row = next(r for r in rows if r.method == "mezo")
    assert (mezo_row.gain.seeds_a, mezo_row.gain.seeds_b) == (1, 1)  # the seed whose file is intact
    (answer,) = device_answers(run, rows)
    assert answer.sentence().endswith("points lower, no paired interval (no predictions).")  # BP kept none
    captured = subprocess.run(
        [sys.executable, "-m", "reports.findings", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    assert captured.stderr.count("reports.findings: predictions left out: ") == 5
    assert "rpi-4-2gb: BP (checkpointed) on minilm-l6 (22.6M) reaches" in captured.stdout
    assert "| no paired interval (no predictions) |" in captured.stdout


def _last(curve: list[CurvePoint], key: str, by: float) -> list[CurvePoint]:
    return [*curve[:-1], curve[-1].model_copy(update={key: getattr(curve[-1], key) + by})]


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda curve: curve[:-1], "4 evaluations for 3 points of the accuracy curve"),
        (lambda curve: _last(curve, "accuracy", 0.5), "evaluation 3 scores"),
        (lambda curve: _last(curve, "val_accuracy", -0.5), "on validation"),
        (lambda curve: _last(curve, "accuracy", 0.2), None),  # within one example
    ],
)
def test_predictions_that_do_not_score_their_records_curve_are_left_out(tmp_path, edit, problem):
    """A file is its record's when evaluation k scores curve point k, to within one example (400 here: 0.25)."""
    from reports.rundata import load_run
    from tests.test_reports_fixtures import accuracy_record, write_run

    record = accuracy_record("mezo", 2e-5, 0, 76.0, 75.2)
    curve = edit(record.metrics.accuracy.curve)
    edited = record.model_copy(update={"metrics": merged(record.metrics, accuracy={"curve": curve})})
    run = load_run(write_run(tmp_path, [edited]))
    if problem is None:
        assert run.predictions.problems == [] and record.cell_id in run.predictions.by_cell
    else:
        (line,) = run.predictions.problems
        assert problem in line and record.cell_id in line and record.cell_id not in run.predictions.by_cell


def test_a_malformed_reference_is_named_not_fatal(tmp_path):
    from reports.rundata import load_run
    from tests.test_reports_fixtures import accuracy_record, write_run

    record = accuracy_record("mezo", 2e-5, 0, 76.0, 75.2)
    ref = record.metrics.predictions
    outside = ref.model_copy(update={"file": "../x.npz"})
    escaping = record.model_copy(update={"metrics": merged(record.metrics, predictions=outside)})
    fewer = ref.model_copy(update={"evaluations": 3})
    miscounted = record.model_copy(update={"metrics": merged(record.metrics, predictions=fewer)})
    for edited, text in (
        (escaping, "must lie inside the run directory"),
        (miscounted, "4 evaluations, its record says 3"),
    ):
        run = load_run(write_run(tmp_path / text[:8], [edited]))
        (line,) = run.predictions.problems
        assert text in line
        (row,) = accuracy_rows(run)
        assert row.gain.figures() == "no paired interval (no predictions)"


def test_an_accuracy_of_a_truncated_rung_is_labelled_truncated_wherever_the_findings_show_it():
    from reports.findings import accuracy_model

    assert accuracy_model("mpnet-l8", "sst2") == "mpnet-l8 (80.5M; truncated: first 8 of 12 layers)"
    assert accuracy_model("mpnet-l12", "sst2") == "mpnet-l12 (109M)"


def test_the_joules_each_arm_needs_to_reach_each_other_arm_are_read_off_its_energy_curve():
    curves = [((0, 70.0), (300, 74.0), (600, 78.0)), ((0, 72.0), (300, 76.0), (600, 80.0))]
    mezo = [accuracy_record("mpnet-l12", "mezo", s, c[-1][1], 75.0, c) for s, c in enumerate(curves)]
    bp = [accuracy_record("minilm-l6", "bp-checkpointed", s, t, 70.0) for s, t in enumerate((74.5, 75.5))]
    # 600 device seconds each; MeZO at 5.85 W (half way from idle to load), backprop at full load 7.2 W
    mezo = [with_energy(r.model_copy(update={"device_seconds": 600.0}), 0.5) for r in mezo]
    bp = [with_energy(r.model_copy(update={"device_seconds": 600.0})) for r in bp]
    run = RunData(Path("run"), make_run_info(), mezo + bp)
    answers = device_answers(run, accuracy_rows(run))
    (row,) = (r for r in answers[0].ranked if r.method == "mezo")
    assert mean_curve(row, "joules") == pytest.approx([(0, 71.0), (300 * 4.95, 75.0), (600 * 4.95, 79.0)])
    table = energy_table(answers)
    assert "| MeZO on mpnet-l12 (109M) | BP (checkpointed) on minilm-l6 (22.6M): 75.0 % | 300 | 1,485 |" in table
    assert "| BP (checkpointed) on minilm-l6 (22.6M) | MeZO on mpnet-l12 (109M): 79.0 % | not within the budget |" in table
    # One seed without energy leaves its arm without a joules figure, never a figure from the other seed alone.
    run = RunData(Path("run"), make_run_info(), [mezo[0], mezo[1].model_copy(update={"energy": None}), *bp])
    assert (
        "| MeZO on mpnet-l12 (109M) | BP (checkpointed) on minilm-l6 (22.6M): 75.0 % | 300 | no energy figures |"
        in energy_table(device_answers(run, accuracy_rows(run)))
    )
    # Records written before energy: a plain note instead of the table.
    legacy = RunData(Path("run"), make_run_info(), [r.model_copy(update={"energy": None}) for r in mezo + bp])
    assert energy_table(device_answers(legacy, accuracy_rows(legacy))).startswith("No device energy")
