"""The answer per device as a table (reports.answers): each arm's final accuracy with its interval, the plateau rule
on its validation curve (reports.plateau), the time to reach another arm's interval, and the cells killed."""

from __future__ import annotations

import numpy as np
import pytest

from reports.accuracy import accuracy_rows
from reports.answers import MARKDOWN_HEAD, answer_lines, answer_table
from reports.findings import device_answers, reaches
from reports.paired import PairingError, Scored, accuracy_interval
from reports.plateau import PLATEAU_POINTS, arm_plateau, plateau
from reports.rundata import load_run
from tests.records_factory import make_record, merged
from tests.test_reports_fixtures import accuracy_run, write_run

RISING = [(0.0, 80.0), (450.0, 82.0), (900.0, 84.0), (1800.0, 85.0), (3600.0, 86.0)]


def test_a_curve_that_gained_a_point_over_its_last_doubling_is_still_rising():
    found = plateau(RISING)
    assert (found.since, found.until, found.gain, found.flat) == (1800.0, 3600.0, 1.0, False)
    assert found.text() == "still rising: +1.0 points from 1,800 to 3,600 device s"


def test_under_half_a_point_over_the_last_doubling_is_flat_and_a_loss_is_flat_too():
    assert plateau([*RISING[:-1], (3600.0, 85.0 + PLATEAU_POINTS - 0.1)]).flat is True
    assert plateau([*RISING[:-1], (3600.0, 85.0 + PLATEAU_POINTS)]).flat is False
    assert plateau([*RISING[:-1], (3600.0, 83.0)]).text() == "falling: -2.0 points from 1,800 to 3,600 device s"
    assert plateau([*RISING[:-1], (3600.0, 84.8)]).text() == "flat: -0.2 points from 1,800 to 3,600 device s"


def test_evaluations_a_step_late_still_span_one_doubling():
    """A 36 s step puts the half-budget evaluation at 329 s and the last at 658 s, not 300 and 600."""
    found = plateau([(0.0, 80.0), (160.0, 81.0), (329.0, 82.0), (658.0, 82.2)])
    assert (found.since, found.until) == (329.0, 658.0) and found.flat


@pytest.mark.parametrize(
    "curve",
    [[], [(600.0, 80.0)], [(0.0, 80.0), (600.0, 85.0)], [(0.0, 80.0), (100.0, 81.0), (600.0, 85.0)]],
    ids=["empty", "one point", "step 0 and the end", "no point near half"],
)
def test_a_curve_without_a_doubling_to_measure_is_not_judged(curve):
    found = plateau(curve)
    assert found.flat is None and found.text().startswith("not judged")


def _curve_record(seed: int, points: list[tuple[float, float]]):
    record = make_record(seed=seed, task="rotten_tomatoes")
    curve = [{"seconds": t, "step": i, "accuracy": 50.0, "val_accuracy": v} for i, (t, v) in enumerate(points)]
    return record.model_copy(update={"metrics": merged(record.metrics, accuracy={"curve": curve})})


def test_the_rule_reads_the_seeds_mean_validation_curve():
    """One seed rising by 1.0, the other flat: the mean gained 0.5 over the last doubling, so not flat."""
    rising = _curve_record(0, [(0.0, 80.0), (300.0, 84.0), (600.0, 85.0)])
    flat = _curve_record(1, [(0.0, 80.0), (300.0, 84.0), (600.0, 84.0)])
    assert arm_plateau([flat]).flat is True
    both = arm_plateau([rising, flat])
    assert both.gain == pytest.approx(0.5) and both.flat is False


def test_an_arms_interval_covers_the_binomial_one_for_one_seed():
    """870 of 1,000 right: the bootstrap's 95 % interval is about the binomial 87.0 +/- 2.1."""
    correct = np.zeros(1000, dtype=bool)
    correct[:870] = True
    interval = accuracy_interval([Scored(np.arange(1000), correct)])
    assert interval.mean == pytest.approx(87.0) and interval.seeds == 1
    half = 1.96 * 100 * (0.87 * 0.13 / 1000) ** 0.5
    assert interval.low == pytest.approx(87.0 - half, abs=0.3) and interval.high == pytest.approx(87.0 + half, abs=0.3)
    assert interval.describe() == f"87.0 (95% CI {interval.low:.1f} to {interval.high:.1f}, n=1)"


def test_seeds_that_scored_other_examples_have_no_interval():
    one = Scored(np.arange(10), np.ones(10, dtype=bool))
    other = Scored(np.arange(1, 11), np.ones(10, dtype=bool))
    with pytest.raises(PairingError):
        accuracy_interval([one, other])


def _killed(record, model: str, tuning: str | None = None):
    """The record as a cell of `model` (and `tuning`) the kernel killed at the cap: another cell, another id."""
    params = record.params.model_copy(update={"model": model, "tuning": tuning or record.params.tuning})
    return record.model_copy(update={"status": "oom", "params": params, "cell_id": f"{record.cell_id}-{model}-{params.tuning}"})


def test_answer_lines_give_each_arm_its_interval_its_plateau_and_its_killed_cells(tmp_path):
    arms = {("bp-checkpointed", "full"): {1e-4: (84.0, 83.1)}, ("mezo", "full"): {2e-5: (76.0, 75.2)}}
    records = accuracy_run(arms=arms)
    bp = [r for r in records if r.params.method == "bp-checkpointed"]
    same_model = [_killed(bp[0], "minilm-l6")]  # one seed of the measured arm and model killed too
    larger = [_killed(r, "mpnet-l12") for r in bp[:2]]  # the larger model the arm was resolved down from
    lora = [_killed(r, "mpnet-l12", "lora") for r in bp]
    run = load_run(write_run(tmp_path, records + same_model + larger + lora))
    (answer,) = device_answers(run, accuracy_rows(run))
    best, mezo, down, none = answer_lines(answer)
    assert [(line.arm, line.model) for line in (best, down, none)] == [
        ("BP (checkpointed)", "minilm-l6 (22.6M)"),
        ("BP (checkpointed)", "mpnet-l12 (109M)"),
        ("BP (checkpointed) + lora", "mpnet-l12 (109M)"),
    ]
    assert best.final.startswith("83.1 (95% CI ") and best.final.endswith(", n=3)")
    assert best.killed == "1 (oom)" and mezo.killed == "-"
    assert down.final == "none measured: oom (2 cells)" and none.final == "none measured: oom (3 cells)"
    assert best.plateau.startswith(("flat: ", "still rising: ")) and " device s" in best.plateau
    assert mezo.versus.startswith("-7.9 (paired 95% CI ") and mezo.versus.endswith(": BP (checkpointed) on minilm-l6 wins")
    table = answer_table(run, accuracy_rows(run))
    assert table.startswith(MARKDOWN_HEAD) and table.count("\n| rpi-4-2gb |") == 4


def test_the_time_to_reach_another_arm_comes_with_the_times_to_its_intervals_ends(tmp_path):
    arms = {("bp-checkpointed", "full"): {1e-4: (84.0, 83.1)}, ("mezo", "full"): {2e-5: (76.0, 75.2)}}
    run = load_run(write_run(tmp_path, accuracy_run(arms=arms)))
    found = {(r.arm.method, r.target.method): r for r in reaches(device_answers(run, accuracy_rows(run)))}
    bp_to_mezo, mezo_to_bp = found["bp-checkpointed", "mezo"], found["mezo", "bp-checkpointed"]
    early, late = bp_to_mezo.interval
    assert early is not None and late is not None and early <= bp_to_mezo.seconds <= late
    assert bp_to_mezo.after_seconds == (
        f"{bp_to_mezo.seconds:,.0f} ({early:,.0f} to {late:,.0f} across the target's 95% CI)"
    )
    last = f"{mezo_to_bp.last_seconds:,.0f}"
    assert mezo_to_bp.interval == (None, None) and mezo_to_bp.after_seconds == f"not within {last} s"


def test_an_inference_cell_is_the_zero_shot_arm(tmp_path):
    arms = {("inference", "full"): {1e-3: (70.0, 69.0)}, ("mezo", "full"): {2e-5: (76.0, 75.2)}}
    run = load_run(write_run(tmp_path, accuracy_run(arms=arms)))
    (answer,) = device_answers(run, accuracy_rows(run))
    assert [line.arm for line in answer_lines(answer)] == ["MeZO", "zero-shot (no training)"]


def test_every_recipe_tried_has_its_validation_gain_over_step_0_paired(tmp_path):
    """The learning check of a sweep: each recipe's final validation accuracy over its own step 0, seed by seed."""
    from reports.paired import PairedDifference

    arms = {("mezo", "full"): {1e-5: (60.0, 59.0), 2e-5: (76.0, 75.2)}}
    run = load_run(write_run(tmp_path, accuracy_run(arms=arms)))
    (row,) = accuracy_rows(run)
    assert [s.recipe["lr"] for s in row.choice.ranked] == [2e-5, 1e-5]
    best, worse = row.val_gains
    assert isinstance(best, PairedDifference) and isinstance(worse, PairedDifference)
    assert best.difference > worse.difference > 0 and best.decisive and best.seeds_a == 3


def test_log_spaced_curves_get_a_log_time_axis_and_short_ones_a_linear_one():
    from reports.plots.accuracy import log_threshold

    budget = 7200.0
    assert log_threshold([0.0] + [budget / 2**k for k in range(7)]) == budget / 64
    assert log_threshold([0.0, 300.0, 600.0]) is None
