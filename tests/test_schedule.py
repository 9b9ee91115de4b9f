"""The lr schedule every method shares: warm-up, then constant / linear / cosine decay over the budget."""

from __future__ import annotations

import math

import pytest

from workloads.params import WorkloadParams
from workloads.schedule import lr_factor, progress


def _params(**fields) -> WorkloadParams:
    return WorkloadParams(model="opt-1m", **fields)


@pytest.mark.parametrize(
    ("schedule", "at_warmup_end", "midpoint"),
    [("constant", 1.0, 1.0), ("linear", 0.9, 0.5), ("cosine", 0.5 * (1 + math.cos(0.1 * math.pi)), 0.5)],
)
def test_warmup_then_decay_over_a_step_budget(schedule, at_warmup_end, midpoint):
    params = _params(lr_schedule=schedule, warmup_steps=10, max_steps=100)
    assert lr_factor(params, 0, 0.0) == 0.0
    assert lr_factor(params, 10, 0.0) == pytest.approx(at_warmup_end)
    assert lr_factor(params, 50, 0.0) == pytest.approx(midpoint)
    assert lr_factor(params, 100, 0.0) == pytest.approx(1.0 if schedule == "constant" else 0.0, abs=1e-12)


@pytest.mark.parametrize(("schedule", "midpoint"), [("constant", 1.0), ("linear", 0.5), ("cosine", 0.5)])
def test_no_warmup_starts_at_the_full_lr(schedule, midpoint):
    params = _params(lr_schedule=schedule, max_steps=20)
    assert lr_factor(params, 0, 0.0) == 1.0
    assert lr_factor(params, 10, 0.0) == pytest.approx(midpoint)


def test_a_seconds_budget_decays_over_its_seconds():
    params = _params(lr_schedule="linear", max_steps=None, max_seconds=60.0)
    assert [lr_factor(params, 1000, s) for s in (0.0, 15.0, 30.0, 60.0, 75.0)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.0, 0.0]
    )
    cosine = _params(lr_schedule="cosine", warmup_steps=4, max_steps=None, max_seconds=60.0)
    assert lr_factor(cosine, 0, 0.0) == 0.0 and lr_factor(cosine, 2, 0.0) == 0.5  # warm-up counts steps
    assert lr_factor(cosine, 4, 30.0) == pytest.approx(0.5)


def test_with_both_budgets_whichever_is_further_spent_sets_the_progress():
    params = _params(lr_schedule="linear", max_steps=100, max_seconds=10.0)
    assert progress(params, 20, 5.0) == 0.5 and progress(params, 80, 5.0) == 0.8
    assert lr_factor(params, 20, 5.0) == pytest.approx(0.5)
