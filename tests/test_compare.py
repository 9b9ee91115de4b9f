"""`edgebench compare` through the real CLI: exit 1 naming regressed cells, 0 when none, 2 on bad input;
cells with 3 seeds in both runs are judged over their seeds (threshold on the means and Mann-Whitney U); with
per-example predictions in both runs, an accuracy drop is judged by the paired test (reports.paired)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.record.errors import UserError
from harness.record.records import MemoryFigures, judged
from harness.record.thresholds import Thresholds
from reports.compare.cells import compare_cell
from reports.compare.limits import parse_fraction
from reports.compare.runs import compare_runs
from tests.helpers import edgebench
from tests.records_factory import make_record, merged
from tests.test_reports_fixtures import accuracy_record, accuracy_run, sweep, with_predictions, write_run
from workloads.metrics import Accuracy, CellMetrics

DEVICES = ("rpi-zero-2w", "rpi-4-2gb")


def _runs(
    tmp_path: Path, change=None, baseline_records=None, baseline_info=None, **info
) -> tuple[Path, Path, list]:
    """A baseline and a current run of the same sweep; `change(records)` edits the current one."""
    records = baseline_records or sweep(devices=DEVICES, models=("opt-1m", "opt-8m", "opt-30m"))
    base = write_run(tmp_path / "base", records, **(baseline_info or {}))
    current = [r.model_copy(deep=True) for r in records]
    if change:
        change(current)
    cur = write_run(tmp_path / "cur", current, expected=[r.cell_id for r in records], **info)
    return base, cur, records


def _ok_index(records, method="mezo") -> int:
    return next(i for i, r in enumerate(records) if r.status == "ok" and r.params.method == method)


def _bump(records, index: int, **update) -> None:
    records[index] = records[index].model_copy(update=update)


def _label(record) -> str:
    return f"{record.device.name}/{record.params.model}/{record.params.method}/b{record.params.batch}/s{record.params.seed}"


def test_identical_runs_exit_0(tmp_path):
    base, cur, records = _runs(tmp_path)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 0
    out = result.stdout
    assert f"{len(records)} shared cells: 0 regressed, 0 listed" in out


def test_ten_percent_more_peak_memory_exits_1_and_names_the_cell(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m", "opt-30m"))
    index = _ok_index(records)
    target = records[index]
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(target.peak_memory_bytes * 1.10)),
        baseline_records=records,
    )
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 1
    assert f"REGRESSION {_label(target)} ({target.cell_id}): peak memory +10.0% (limit 5.0%)" in result.stderr
    assert result.stderr.count("REGRESSION") == 1
    assert _label(target) in result.stdout  # and the table shows it


def test_compare_runs_as_a_subprocess_like_ci(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    index = _ok_index(records, "bp-checkpointed")
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(records[index].peak_memory_bytes * 1.10)),
        baseline_records=records,
    )
    proc = edgebench("compare", str(base), str(cur), timeout=120, process=True)
    assert proc.returncode == 1, proc.stderr
    assert records[index].cell_id in proc.stderr
    assert edgebench("compare", str(base), str(base), timeout=120, process=True).returncode == 0


def test_status_ok_to_oom_is_a_regression_whatever_the_limits(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    index = _ok_index(records, "bp")
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, status="oom", error="killed by the kernel"),
        baseline_records=records,
    )
    result = edgebench("compare", str(base), str(cur), "--max-memory-regression", "100%")
    assert result.returncode == 1
    assert f"{records[index].cell_id}): status ok -> oom" in result.stderr


def test_oom_to_ok_is_an_improvement_not_a_regression(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-30m",))
    index = next(i for i, r in enumerate(records) if r.status == "oom")
    fixed = records[index].model_copy(update={"status": "ok", "error": None})
    base, cur, _ = _runs(tmp_path, lambda rs: rs.__setitem__(index, fixed), baseline_records=records)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 0
    assert "status oom -> ok" in result.stdout


def test_step_time_and_accuracy_thresholds(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    slow, worse = _ok_index(records, "mezo"), _ok_index(records, "bp")

    def change(rs):
        slower = rs[slow].metrics.timing.step_time_s * 1.25
        _bump(rs, slow, metrics=merged(rs[slow].metrics, timing={"step_time_s": slower}))
        lower = rs[worse].metrics.accuracy.final - 2.0
        _bump(rs, worse, metrics=merged(rs[worse].metrics, accuracy={"final": lower}))

    base, cur, _ = _runs(tmp_path, change, baseline_records=records)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 1
    err = result.stderr
    assert f"{records[slow].cell_id}): step_time_s +25.0% (limit 20.0%)" in err
    assert f"{records[worse].cell_id}): final accuracy -2.00 points (limit 1)" in err
    # Looser limits on the command line let both pass.
    looser = ("--max-time-regression", "0.3", "--max-accuracy-drop", "2.5")
    assert edgebench("compare", str(base), str(cur), *looser).returncode == 0


@pytest.mark.parametrize("current_device_seconds, metric", [(13.0, "device_seconds"), (None, "host_seconds")])
def test_without_step_times_the_cells_device_seconds_are_compared(
    tmp_path, current_device_seconds, metric
):
    """Device seconds (what the run simulates) when both records have them, else host seconds."""
    records = [
        r.model_copy(update={"metrics": merged(r.metrics, timing={"step_time_s": None}), "device_seconds": 10.0})
        for r in sweep(devices=DEVICES, models=("opt-1m",))
    ]
    index = _ok_index(records)
    host = records[index].host_seconds
    # The figure that is not compared stays put: a comparison of the wrong one finds no regression.
    update = (
        {"device_seconds": 13.0}
        if current_device_seconds
        else {"device_seconds": None, "host_seconds": host * 1.3}
    )
    base, cur, _ = _runs(tmp_path, lambda rs: _bump(rs, index, **update), baseline_records=records)
    result = edgebench("compare", str(base), str(cur), "--json")
    assert result.returncode == 1
    change = next(
        c for c in json.loads(result.stdout)["changes"] if c["cell_id"] == records[index].cell_id
    )
    assert change["time_metric"] == metric
    assert change["time_change"] == pytest.approx(0.3)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 1
    assert f"{records[index].cell_id}): {metric} +30.0% (limit 20.0%)" in result.stderr


def test_thresholds_come_from_the_baseline_spec_unless_given(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    index = _ok_index(records)
    bump = lambda rs: _bump(rs, index, peak_memory_bytes=int(records[index].peak_memory_bytes * 1.10))  # noqa: E731
    strict, lax = ({"name": "s", "thresholds": {"max_memory_regression": v}} for v in (0.05, 0.50))
    base, cur, _ = _runs(tmp_path / "a", bump, records, baseline_info={"spec": strict}, spec=lax)
    assert edgebench("compare", str(base), str(cur)).returncode == 1  # a change cannot relax its own gate
    spec = {"name": "s", "thresholds": {"max_memory_regression": 0.15}}
    base, cur, _ = _runs(tmp_path, bump, records, baseline_info={"spec": spec}, spec=strict)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 0  # the baseline's spec allows 15 %
    out = result.stdout
    assert (
        "limits: peak memory +15.0%" in out and _label(records[index]) in out
    )  # listed: over half its limit
    assert edgebench("compare", str(base), str(cur), "--max-memory-regression", "5%").returncode == 1
    assert edgebench("compare", str(base), str(cur), "--max-memory-regression", "0.05").returncode == 1


def test_setup_changes_are_reported(tmp_path):
    versions = {"python": "3.11.2", "torch": "2.14.0", "transformers": "5.0.0"}
    base, cur, _ = _runs(tmp_path, enforcement="rlimit", versions=versions)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 0
    assert "setup changed since the baseline: enforcement cgroup-v1 -> rlimit, torch 2.13.0 -> 2.14.0" in (
        result.stdout
    )


def test_a_cell_without_a_current_record_is_a_regression(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    dropped = records[0]
    base, cur, _ = _runs(tmp_path, lambda rs: rs.pop(0), baseline_records=records)
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 1
    assert f"{dropped.cell_id}): no record in the current run" in result.stderr


@pytest.mark.parametrize("invalid_in", ["baseline", "current"])
def test_an_invalid_record_in_either_run_is_a_regression_not_a_comparison(tmp_path, invalid_in):
    """Identical figures, but one record's cap was no kernel's: the gate names it and compares nothing of it."""
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    index = _ok_index(records)
    soft = judged(records[index], enforcement="rlimit")
    before, after = (soft, records[index]) if invalid_in == "baseline" else (records[index], soft)
    baseline = [before if i == index else r for i, r in enumerate(records)]
    base, cur, _ = _runs(tmp_path, lambda rs: rs.__setitem__(index, after), baseline_records=baseline)
    result = edgebench("compare", str(base), str(cur), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["regressed"] == [records[index].cell_id]
    (changed,) = (c for c in data["changes"] if c["regressions"])
    assert changed["regressions"] == [
        f"{invalid_in} record invalid (cap_by_kernel): not compared; "
        + ("re-record the baseline" if invalid_in == "baseline" else "fix what failed and re-run")
    ]


def test_invalid_seeds_join_no_group_and_fail_on_their_own(tmp_path):
    base_dir, cur_dir, base, cur = _seed_runs(tmp_path, NOISY_BEFORE, NOISY_BEFORE)
    write_run(cur_dir, [judged(cur[0], overlapped=None), *cur[1:]])
    result = edgebench("compare", str(base_dir), str(cur_dir), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["groups"] == [] and data["regressed"] == [cur[0].cell_id]


def test_json_output_lists_regressed_cells(tmp_path):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    index = _ok_index(records)
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(records[index].peak_memory_bytes * 1.2)),
        baseline_records=records,
    )
    result = edgebench("compare", str(base), str(cur), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["regressed"] == [records[index].cell_id]
    change = next(c for c in data["changes"] if c["cell_id"] == records[index].cell_id)
    assert change["memory_change"] == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{base}", "{tmp}/nowhere"], "not found"),
        (["{base}", "{other}"], "share no cell"),
        (["{base}", "{cur}", "--max-memory-regression", "5"], "ambiguous; write 5%"),
        (["{base}", "{cur}", "--max-time-regression", "fast"], "is not a number"),
        (["{base}", "{cur}", "--max-accuracy-drop", "-1"], "negative"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, argv, message):
    base, cur, _ = _runs(tmp_path)
    other = write_run(tmp_path / "other", sweep(devices=("rpi-3b-plus",), models=("opt-1m",)))
    args = [a.format(base=base, cur=cur, other=other, tmp=tmp_path) for a in argv]
    result = edgebench("compare", *args)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_corrupted_results_exit_2(tmp_path):
    base, cur, _ = _runs(tmp_path)
    with open(cur / "results.jsonl", "a") as handle:
        handle.write("{not json}\n")
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 2
    assert "is not a valid result record" in result.stderr


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), (0.2, 0.2), ("150%", 1.5), ("0", 0.0)])
def test_parse_fraction(text, value):
    assert parse_fraction(text, "--x") == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "-1%", "abc", "%"])
def test_parse_fraction_rejects(text):
    with pytest.raises(UserError):
        parse_fraction(text, "--x")


NOISY_BEFORE, NOISY_AFTER = (70.1, 71.5, 69.4), (71.0, 69.8, 70.3)


def _seed_runs(
    tmp_path: Path, before, after, predictions: bool = False, **update
) -> tuple[Path, Path, list, list]:
    """A baseline and a current run of one accuracy cell, one seed per final test accuracy given; without
    per-example predictions unless asked (records older than them, judged on the figures alone)."""
    base = [
        accuracy_record("mezo", 2e-5, seed, 76.0, acc, predictions=predictions)
        for seed, acc in enumerate(before)
    ]
    cur = [
        accuracy_record("mezo", 2e-5, seed, 76.0, acc, predictions=predictions).model_copy(update=update)
        for seed, acc in enumerate(after)
    ]
    return write_run(tmp_path / "base", base), write_run(tmp_path / "cur", cur), base, cur


def test_seed_noise_is_not_a_regression_when_three_seeds_are_judged_together(tmp_path):
    base_dir, cur_dir, base, cur = _seed_runs(tmp_path, NOISY_BEFORE, NOISY_AFTER)
    # Seed by seed, seed 1 lost 1.7 points: past the 1-point limit.
    assert compare_cell(base[1], cur[1], Thresholds()).regressions == [
        "final accuracy -1.70 points (limit 1)"
    ]
    result = edgebench("compare", str(base_dir), str(cur_dir), "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["regressed"] == []
    (group,) = data["groups"]
    assert group["label"] == "rpi-4-2gb/minilm-l6/mezo/b16/s{0,1,2}" and group["regressions"] == []
    accuracy = next(t for t in group["tests"] if t["metric"] == "final accuracy")
    assert accuracy["p_value"] > 0.05 and not accuracy["regressed"]
    noted = next(c for c in data["changes"] if c["cell_id"] == base[1].cell_id)
    assert noted["regressions"] == []
    assert noted["notes"] == ["final accuracy -1.70 points (limit 1) in this seed; judged over the seeds"]
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 0
    out = " ".join(result.stdout.split())
    assert "1 cells with 3+ seeds in both runs judged over them: 0 regressed, 0 listed" in out
    result = edgebench("compare", str(base_dir), str(cur_dir), "--all")
    assert result.returncode == 0
    out = " ".join(result.stdout.split())
    assert "70.3 ± 1.1 (n=3) -> 70.4 ± 0.6 (n=3)" in out and "final accuracy +0.03 points (limit 1)" in out


def test_with_fewer_than_three_seeds_each_cell_meets_its_threshold(tmp_path):
    base_dir, cur_dir, base, _ = _seed_runs(tmp_path, NOISY_BEFORE[:2], NOISY_AFTER[:2])
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 1
    err = result.stderr
    assert f"{base[1].cell_id}): final accuracy -1.70 points (limit 1)" in err and "Mann-Whitney" not in err


def test_a_real_drop_across_all_seeds_is_a_regression(tmp_path):
    base_dir, cur_dir, base, _ = _seed_runs(tmp_path, NOISY_BEFORE, [a - 10 for a in NOISY_BEFORE])
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert err == [
        "edgebench compare: REGRESSION rpi-4-2gb/minilm-l6/mezo/b16/s{0,1,2}: final accuracy -10.00 points "
        "(limit 1) on the means of 3 vs 3 seeds, Mann-Whitney p=0.050 (significant)"
    ]


def test_a_significant_shift_within_the_threshold_is_not_a_regression(tmp_path):
    base_dir, cur_dir, _, _ = _seed_runs(
        tmp_path, (70.1, 70.3, 70.2), (69.5, 69.6, 69.4)
    )  # -0.7 in every seed
    comparison = compare_runs(base_dir, cur_dir)
    (test,) = [t for t in comparison.groups[0].tests if t.metric == "final accuracy"]
    assert test.p_value <= 0.05 and not test.regressed and comparison.regression_count == 0


def test_memory_growth_in_every_seed_is_judged_over_the_seeds(tmp_path):
    peak = accuracy_record("mezo", 2e-5, 0, 76.0, 70.0).peak_memory_bytes
    base_dir, cur_dir, _, _ = _seed_runs(
        tmp_path, NOISY_BEFORE, NOISY_BEFORE, peak_memory_bytes=int(peak * 1.1)
    )
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 1
    assert "s{0,1,2}: peak memory +10.0% (limit 5.0%) on the means of 3 vs 3 seeds" in result.stderr


def _charged(record, rss: int, cgroup: int | None):
    """`record` with an RSS headline peak and, when given, the cgroup's peak beside it."""
    memory = record.memory.model_copy(update={"rss_peak_bytes": rss, "cgroup_peak_bytes": cgroup})
    return record.model_copy(update={"peak_memory_bytes": rss, "peak_memory_source": "rss", "memory": memory})


@pytest.mark.parametrize(
    "rss_after, cgroup_after, regressed",
    [
        (0.85, 1.01, False),  # RSS fell with the host's page cache
        (1.00, 1.10, False),  # the cgroup was charged for files another cell had not read first
        (1.20, 1.02, False),  # RSS mapped more cached pages; the charge held
        (1.10, 1.10, True),  # both grew: the cell holds more memory
        (1.20, None, True),  # the current run read no cgroup: RSS alone
    ],
)
def test_memory_regresses_when_every_peak_both_runs_read_grew(tmp_path, rss_after, cgroup_after, regressed):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    rss, cgroup = 400 << 20, 350 << 20
    base_records = [_charged(r, rss, cgroup) for r in records]
    index = _ok_index(base_records)
    after = _charged(base_records[index], int(rss * rss_after), cgroup_after and int(cgroup * cgroup_after))
    change = compare_cell(base_records[index], after, Thresholds())
    assert change.regressions == (
        [f"peak memory {rss_after - 1:+.1%}" + (" and cgroup peak memory +10.0%" if cgroup_after else "")
         + " (limit 5.0%)"]
        if regressed
        else []
    )
    base, cur, _ = _runs(tmp_path, lambda rs: rs.__setitem__(index, after), baseline_records=base_records)
    assert edgebench("compare", str(base), str(cur)).returncode == int(regressed)


@pytest.mark.parametrize("rss_after, regressed", [(0.8, False), (1.1, True)])
def test_seeds_judge_memory_on_both_peaks(tmp_path, rss_after, regressed):
    peak = accuracy_record("mezo", 2e-5, 0, 76.0, 70.0).peak_memory_bytes
    base = [_charged(accuracy_record("mezo", 2e-5, s, 76.0, 70.0), peak, peak) for s in range(3)]
    cur = [_charged(r, int(peak * rss_after), int(peak * 1.1)) for r in base]
    result = edgebench("compare", str(write_run(tmp_path / "b", base)), str(write_run(tmp_path / "c", cur)), "--json")
    code = result.returncode
    (group,) = json.loads(result.stdout)["groups"]
    verdicts = {t["metric"]: t["verdict"] for t in group["tests"]}
    assert code == int(regressed)
    assert verdicts["cgroup peak memory"].startswith("cgroup peak memory +10.0% (limit 5.0%) on the means")
    assert verdicts["cgroup peak memory"].endswith("the other memory figure held") != regressed


def test_the_report_shows_the_seed_groups_of_a_comparison(tmp_path):
    from reports.html import write_report

    base_dir, cur_dir, _, _ = _seed_runs(tmp_path, NOISY_BEFORE, NOISY_AFTER)
    html = " ".join(write_report(cur_dir, baseline=base_dir).read_text().split())
    assert "0 regressions" in html and "one-sided Mann-Whitney U test with p ≤ 0.05" in html
    assert 'id="baseline-groups"' in html and "70.3 ± 1.1 (n=3)" in html


def test_groups_of_one_label_are_told_apart_by_their_recipe(tmp_path):
    records = accuracy_run(arms={("mezo", "full"): {2e-5: (76.0, 75.2), 1e-5: (74.0, 76.5)}})
    base, cur, _ = _runs(tmp_path, baseline_records=records)
    labels = [g.label for g in compare_runs(base, cur).groups]
    assert labels == [
        "rpi-4-2gb/minilm-l6/mezo/b16/s{0,1,2} (lr 1e-5)",
        "rpi-4-2gb/minilm-l6/mezo/b16/s{0,1,2} (lr 2e-5)",
    ]


def test_a_probes_accuracy_is_not_judged_but_its_memory_is():
    """Probes evaluate only to hold their cell's memory (harness.plan.resolve): a drop in their few-step accuracy is no
    regression, while the same drop in a cell is, and a probe's memory growth still is."""
    limits = Thresholds(max_memory_regression=0.05, max_time_regression=0.2, max_accuracy_drop=1.0)
    base = make_record().model_copy(update={"metrics": CellMetrics(accuracy=Accuracy(final=80.0))})
    dropped = base.model_copy(update={"metrics": CellMetrics(accuracy=Accuracy(final=70.0))})
    assert compare_cell(base, dropped, limits).regressions
    as_probe = {"role": "probe"}
    probe, probe_dropped = base.model_copy(update=as_probe), dropped.model_copy(update=as_probe)
    assert not compare_cell(probe, probe_dropped, limits).regressions
    more = 400 << 20
    grown = probe_dropped.model_copy(update={"peak_memory_bytes": more, "memory": MemoryFigures(rss_peak_bytes=more)})
    assert compare_cell(probe, grown, limits).regressions


# Paired accuracy judgement: both runs kept per-example predictions (400 test examples in the fixtures).


def _paired_cell_runs(tmp_path: Path, after: float, noise: str | None = None) -> tuple[Path, Path, list]:
    """One seed of one accuracy cell at 75.2 % in the baseline and `after` % now. The current predictions get a
    subset of the baseline's examples right (every flip one way) unless `noise` draws them afresh."""
    base = [accuracy_record("mezo", 2e-5, 0, 76.0, 75.2)]
    cur = accuracy_record("mezo", 2e-5, 0, 76.0, after, predictions=noise is None)
    cur = [with_predictions(cur, noise) if noise else cur]
    return write_run(tmp_path / "base", base), write_run(tmp_path / "cur", cur), base


def test_a_drop_every_flipped_example_confirms_is_a_regression(tmp_path):
    """1.5 points on 400 examples: 6 examples, all flipped the same way (McNemar p = 2/2^6)."""
    base_dir, cur_dir, base = _paired_cell_runs(tmp_path, 73.7)
    result = edgebench("compare", str(base_dir), str(cur_dir), "--json")
    assert result.returncode == 1
    (change,) = json.loads(result.stdout)["changes"]
    paired = change["paired"]
    assert paired["difference"] == pytest.approx(-1.5) and paired["high"] < 0
    assert paired["p_value"] == pytest.approx(2 / 2**6) and paired["method"].startswith("McNemar")
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 1
    err = result.stderr
    assert f"{base[0].cell_id}): final accuracy -1.50 points (limit 1), paired 95% CI -" in err
    assert "McNemar p=0.031, 400 examples" in err


def test_the_same_drop_among_flips_both_ways_is_not_a_regression(tmp_path):
    """The current predictions drawn afresh: many examples flip each way, the net 1.5 points is noise."""
    base_dir, cur_dir, base = _paired_cell_runs(tmp_path, 73.7, noise="another build")
    comparison = compare_runs(base_dir, cur_dir)
    (change,) = comparison.changes
    assert change.accuracy_drop_points == pytest.approx(1.5) and change.paired is not None
    assert change.paired.low < 0 < change.paired.high and change.regressions == []
    assert change.notes == [
        f"final accuracy -1.50 points (limit 1), but {change.paired.figures()} includes no change: not a regression"
    ]
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 0
    assert "includes no change" in " ".join(result.stdout.split())
    # Without predictions in either run the same figures are judged as before: past the limit, a regression.
    plain = [accuracy_record("mezo", 2e-5, 0, 76.0, 75.2, predictions=False)]
    plain_dir = write_run(tmp_path / "plain", plain)
    assert compare_runs(plain_dir, cur_dir).changes[0].regressions == ["final accuracy -1.50 points (limit 1)"]


def test_a_paired_drop_within_the_limit_is_not_judged(tmp_path):
    base_dir, cur_dir, _ = _paired_cell_runs(tmp_path, 74.7)  # 0.5 points, every flip one way
    (change,) = compare_runs(base_dir, cur_dir).changes
    assert change.regressions == [] and change.notes == [] and change.paired is None


def test_seeds_with_predictions_are_judged_by_the_paired_interval(tmp_path):
    base_dir, cur_dir, _, _ = _seed_runs(
        tmp_path, NOISY_BEFORE, [a - 10 for a in NOISY_BEFORE], predictions=True
    )
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "edgebench compare: REGRESSION rpi-4-2gb/minilm-l6/mezo/b16/s{0,1,2}: final accuracy -10.00 points "
        "(limit 1) on the means of 3 vs 3 seeds, paired 95% CI -"
    )
    assert line.endswith("bootstrap p<0.001, 400 examples, 3 vs 3 seeds (a real drop)")
    # Seed noise (+0.03 on the means) with predictions is no regression either.
    noisy_base, noisy_cur, _, _ = _seed_runs(tmp_path / "noise", NOISY_BEFORE, NOISY_AFTER, predictions=True)
    (group,) = compare_runs(noisy_base, noisy_cur).groups
    (test,) = [t for t in group.tests if t.metric == "final accuracy"]
    assert test.paired is not None and test.paired.low < 0 < test.paired.high and not test.regressed
    assert test.verdict.endswith("(not significant)")


def test_a_missing_predictions_file_is_named_and_the_cell_judged_without_it(tmp_path):
    base_dir, cur_dir, base = _paired_cell_runs(tmp_path, 73.7, noise="another build")
    for path in (cur_dir / "predictions").iterdir():  # the current run's file is lost
        path.unlink()
    result = edgebench("compare", str(base_dir), str(cur_dir))
    assert result.returncode == 1  # back to the figures alone: past the limit
    out = " ".join(result.stdout.split())
    assert "predictions left out of the paired tests: current: rpi-4-2gb/minilm-l6/mezo/b16/s0" in out
    assert "cannot read" in out and "its evaluations are left out" in out
    assert f"{base[0].cell_id}): final accuracy -1.50 points (limit 1)\n" in result.stderr
    result = edgebench("compare", str(base_dir), str(cur_dir), "--json")
    assert result.returncode == 1
    (warning,) = json.loads(result.stdout)["warnings"]
    assert warning.startswith("current: rpi-4-2gb/minilm-l6/mezo/b16/s0")
