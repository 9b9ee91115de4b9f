"""The report's answers (reports.findings): the best arm per device on test accuracy, and the probed fits."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports.accuracy import accuracy_rows
from reports.findings import arm_fits, device_answers, mean_curve, passing_table, size_ratios, time_to_reach
from reports.rundata import RunData
from tests.records_factory import make_record
from workloads.registry import model_shape


def accuracy_record(model: str, method: str, seed: int, test: float, val: float, curve=((0, 50.0),)):
    record = make_record(model=model, method=method, seed=seed, task="rotten_tomatoes", lr=1e-3)
    metrics = {
        **record.metrics,
        "final_accuracy": test,
        "final_val_accuracy": val,
        "accuracy_curve": [
            {"seconds": t, "step": i, "accuracy": a, "val_accuracy": a} for i, (t, a) in enumerate(curve)
        ],
    }
    return record.model_copy(update={"metrics": metrics})


def test_each_device_names_its_best_arm_with_the_spread_and_the_gap_to_the_others():
    records = [
        *(accuracy_record("mpnet-l12", "mezo", s, t, 80.0) for s, t in enumerate((83.0, 84.0, 85.0))),
        *(accuracy_record("minilm-l6", "bp-checkpointed", s, t, 78.0) for s, t in enumerate((75.0, 76.0, 77.0))),
    ]
    run = RunData(Path("run"), {}, records)
    (answer,) = device_answers(run, accuracy_rows(run))
    assert (answer.best.method, answer.best.model) == ("mezo", "mpnet-l12")
    sentence = answer.sentence()
    assert sentence.startswith("MeZO on mpnet-l12 (109M) reaches 84.0 ± 1.0 % (n=3) test accuracy after")
    assert "; BP (checkpointed) on minilm-l6 (22.6M) 76.0 ± 1.0 % (n=3), 8.0 points lower (from 50.0 % at step 0)." in sentence


def entry(device: str, method: str, measured: str | None, predicted: str | None, **params) -> dict:
    return {
        "device": device,
        "params": {"method": method, "task": "synthetic", "tuning": "full", "optimizer": "adamw", **params},
        "model": measured or "opt-1m",
        "trained": measured is not None,
        "predicted": predicted,
        "reason": "probed",
    }


def test_probed_fits_give_mezos_size_ratio_measured_and_predicted_per_device():
    info = {
        "resolutions": [
            entry("a", "mezo", "opt-350m", "opt-350m"),
            entry("a", "mezo", "opt-350m", "opt-350m", seed=1),  # a twin arm: shown once
            entry("a", "bp-checkpointed", "opt-60m", "opt-125m"),
            entry("a", "bp-checkpointed", "opt-30m", "opt-60m", optimizer="sgd"),
            entry("b", "mezo", "opt-1m", "opt-1m"),
            entry("b", "bp-checkpointed", None, None),
            "not an entry",  # a foreign run.json is read as far as it is readable
        ]
    }
    run = RunData(Path("run"), info, [])
    fits = arm_fits(run)
    assert len(fits) == 5
    assert [f.arm for f in fits if f.device == "a"] == ["MeZO", "BP (checkpointed) + AdamW", "BP (checkpointed) + SGD"]
    ratio_a, ratio_b = size_ratios(fits)
    params = {m: model_shape(m).params for m in ("opt-350m", "opt-60m", "opt-125m")}
    assert ratio_a.measured == pytest.approx(params["opt-350m"] / params["opt-60m"])
    assert ratio_a.predicted == pytest.approx(params["opt-350m"] / params["opt-125m"])
    assert ratio_b.measured is None and ratio_b.predicted is None  # BP trained nothing there


def test_the_device_time_mezo_needs_to_pass_each_backprop_arm_is_read_off_its_mean_curve():
    curves = [((0, 70.0), (300, 74.0), (600, 78.0)), ((0, 72.0), (300, 76.0), (600, 80.0))]
    records = [accuracy_record("mpnet-l12", "mezo", s, c[-1][1], 75.0, c) for s, c in enumerate(curves)]
    records += [accuracy_record("minilm-l6", "bp-checkpointed", s, t, 70.0) for s, t in enumerate((74.5, 75.5))]
    records += [accuracy_record("minilm-l6", "bp", s, t, 70.0) for s, t in enumerate((90.0, 91.0))]
    run = RunData(Path("run"), {}, records)
    (answer,) = device_answers(run, accuracy_rows(run))
    mezo = next(r for r in answer.ranked if r.method == "mezo")
    assert mean_curve(mezo) == [(0, 71.0), (300, 75.0), (600, 79.0)]
    assert time_to_reach(mezo, 75.0) == 300 and time_to_reach(mezo, 71.0) == 0
    table = passing_table([answer])
    assert "| BP (checkpointed) on minilm-l6: 75.0 % | 300 |" in table
    assert "| BP on minilm-l6: 90.5 % | not within the budget |" in table
