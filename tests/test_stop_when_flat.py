"""A cell that stops once its validation curve is flat (`stop_when_flat`, workloads.doubling): the rule on curves,
the spec's check, and a real cell through the harness."""

from __future__ import annotations

import json

import pytest

from tests.helpers import edgebench, write_spec
from tests.test_resume import needs_data, spec_text
from workloads.doubling import flat_stop, last_doubling


def curve(*points: tuple[float, float]) -> list[dict[str, float]]:
    return [{"seconds": t, "step": i, "accuracy": 50.0, "val_accuracy": v} for i, (t, v) in enumerate(points)]


def test_two_flat_doublings_stop_a_cell_and_one_does_not():
    rising = curve((0, 70.0), (100, 72.0), (200, 74.0), (400, 74.3))
    assert flat_stop(0.5, rising, 0.5) is None  # 200 -> 400 is flat, 100 -> 200 gained 2 points
    flat = curve((0, 70.0), (100, 72.0), (200, 72.4), (400, 72.1))
    why = flat_stop(0.5, flat, 0.5)
    assert why == (
        "validation gained under 0.5 points over each of the last 2 doublings "
        "(-0.30 from 200 to 400 s, +0.40 from 100 to 200 s)"
    )
    assert flat_stop(None, flat, 0.5) is None  # no stop_when_flat: the whole budget
    assert flat_stop(0.5, flat, 0.2) is None  # before a quarter of the budget: never


def test_step_0_and_points_far_from_half_start_no_doubling():
    assert last_doubling([(0.0, 70.0), (400.0, 71.0)]) is None
    assert last_doubling([(0.0, 70.0), (50.0, 70.0), (400.0, 71.0)]) is None  # 3 doublings back
    assert last_doubling([(0.0, 70.0), (160.0, 70.0), (329.0, 71.0), (658.0, 71.0)]) == 2  # a step late
    assert flat_stop(0.5, curve((0, 70.0), (400, 70.1)), 1.0) is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (('  eval_at: "log:2"\n', ""), "stop_when_flat needs eval_at: log"),
        (("  eval_examples: 32\n", "  eval_examples: 32\n  eval_every: 4\n"), "drop eval_every and eval_seconds"),
    ],
    ids=["no log evaluations", "other evaluations"],
)
def test_stop_when_flat_beside_the_wrong_evaluations_is_one_line_and_exit_2(tmp_path, change, said):
    text = spec_text("flat", "mezo", 1e-9, every=60).replace(*change) + "  stop_when_flat: 0.5\n"
    result = edgebench("run", str(write_spec(tmp_path, text)), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr_lines) == 1
    assert said in result.stderr


@needs_data
@pytest.mark.integration
def test_a_cell_whose_validation_curve_is_flat_stops_before_its_budget(tmp_path):
    """MeZO at a rate too small to move anything: after evaluations at steps 6, 12 and 24 of 48 (log:3) the curve
    has been flat for two doublings, so the cell stops at step 24 and says why."""
    text = spec_text("flat", "mezo", 1e-12, steps=48, every=600).replace('"log:2"', '"log:3"') + "  stop_when_flat: 0.5\n"
    out = tmp_path / "out"
    result = edgebench("run", str(write_spec(tmp_path, text)), "--out", str(out), "--no-report")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["steps"] == 24
    assert record["metrics"]["timing"]["stopped_flat"].startswith("validation gained under 0.5 points")
    assert [p["step"] for p in record["metrics"]["accuracy"]["curve"]] == [0, 6, 12, 24]
    assert record["validity"]["valid"], record["validity"]  # the rule's own end of the budget
