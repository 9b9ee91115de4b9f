"""`edgebench compare` through the real CLI: exit 1 naming regressed cells, 0 when none, 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from reports.compare import parse_fraction
from tests.test_reports_fixtures import sweep, write_run

DEVICES = ("rpi-zero-2w", "rpi-4-2gb")


def _runs(tmp_path: Path, change=None, baseline_records=None, **info) -> tuple[Path, Path, list]:
    """A baseline and a current run of the same sweep; `change(records)` edits the current one."""
    records = baseline_records or sweep(devices=DEVICES, models=("opt-1m", "opt-8m", "opt-30m"))
    base = write_run(tmp_path / "base", records)
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


def test_identical_runs_exit_0(tmp_path, capsys):
    base, cur, records = _runs(tmp_path)
    assert main(["compare", str(base), str(cur)]) == 0
    out = capsys.readouterr().out
    assert f"{len(records)} shared cells: 0 regressed, 0 listed" in out


def test_ten_percent_more_peak_memory_exits_1_and_names_the_cell(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m", "opt-30m"))
    index = _ok_index(records)
    target = records[index]
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(target.peak_memory_bytes * 1.10)),
        baseline_records=records,
    )
    assert main(["compare", str(base), str(cur)]) == 1
    captured = capsys.readouterr()
    assert f"REGRESSION {_label(target)} ({target.cell_id}): peak memory +10.0% (limit 5.0%)" in captured.err
    assert captured.err.count("REGRESSION") == 1
    assert _label(target) in captured.out  # and the table shows it


def test_compare_runs_as_a_subprocess_like_ci(tmp_path):
    from tests.helpers import edgebench

    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    index = _ok_index(records, "bp-checkpointed")
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(records[index].peak_memory_bytes * 1.10)),
        baseline_records=records,
    )
    proc = edgebench("compare", str(base), str(cur), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert records[index].cell_id in proc.stderr
    assert edgebench("compare", str(base), str(base), timeout=120).returncode == 0


def test_status_ok_to_oom_is_a_regression_whatever_the_limits(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    index = _ok_index(records, "bp")
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, status="oom", error="killed by the kernel"),
        baseline_records=records,
    )
    assert main(["compare", str(base), str(cur), "--max-memory-regression", "100%"]) == 1
    assert f"{records[index].cell_id}): status ok -> oom" in capsys.readouterr().err


def test_oom_to_ok_is_an_improvement_not_a_regression(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-30m",))
    index = next(i for i, r in enumerate(records) if r.status == "oom")
    fixed = records[index].model_copy(update={"status": "ok", "error": None})
    base, cur, _ = _runs(tmp_path, lambda rs: rs.__setitem__(index, fixed), baseline_records=records)
    assert main(["compare", str(base), str(cur)]) == 0
    assert "status oom -> ok" in capsys.readouterr().out


def test_step_time_and_accuracy_thresholds(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-1m", "opt-8m"))
    slow, worse = _ok_index(records, "mezo"), _ok_index(records, "bp")

    def change(rs):
        _bump(rs, slow, metrics=rs[slow].metrics | {"step_time_s": rs[slow].metrics["step_time_s"] * 1.25})
        _bump(
            rs,
            worse,
            metrics=rs[worse].metrics | {"final_accuracy": rs[worse].metrics["final_accuracy"] - 2.0},
        )

    base, cur, _ = _runs(tmp_path, change, baseline_records=records)
    assert main(["compare", str(base), str(cur)]) == 1
    err = capsys.readouterr().err
    assert f"{records[slow].cell_id}): step_time_s +25.0% (limit 20.0%)" in err
    assert f"{records[worse].cell_id}): final accuracy -2.00 points (limit 1)" in err
    # Looser limits on the command line let both pass.
    assert (
        main(["compare", str(base), str(cur), "--max-time-regression", "0.3", "--max-accuracy-drop", "2.5"])
        == 0
    )


@pytest.mark.parametrize("current_device_seconds, metric", [(13.0, "device_seconds"), (None, "host_seconds")])
def test_without_step_times_the_cells_device_seconds_are_compared(
    tmp_path, capsys, current_device_seconds, metric
):
    """Device seconds (what the run simulates) when both records have them, else host seconds."""
    records = [
        r.model_copy(update={"metrics": r.metrics | {"step_time_s": None}, "device_seconds": 10.0})
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
    assert main(["compare", str(base), str(cur), "--json"]) == 1
    change = next(
        c for c in json.loads(capsys.readouterr().out)["changes"] if c["cell_id"] == records[index].cell_id
    )
    assert change["time_metric"] == metric
    assert change["time_change"] == pytest.approx(0.3)
    assert main(["compare", str(base), str(cur)]) == 1
    assert f"{records[index].cell_id}): {metric} +30.0% (limit 20.0%)" in capsys.readouterr().err


def test_thresholds_come_from_the_current_spec_unless_given(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    index = _ok_index(records)
    spec = {"name": "s", "thresholds": {"max_memory_regression": 0.15}}
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(records[index].peak_memory_bytes * 1.10)),
        baseline_records=records,
        spec=spec,
    )
    assert main(["compare", str(base), str(cur)]) == 0  # the spec allows 15 %
    out = capsys.readouterr().out
    assert (
        "limits: peak memory +15.0%" in out and _label(records[index]) in out
    )  # listed: over half its limit
    assert main(["compare", str(base), str(cur), "--max-memory-regression", "5%"]) == 1
    assert main(["compare", str(base), str(cur), "--max-memory-regression", "0.05"]) == 1


def test_setup_changes_are_reported(tmp_path, capsys):
    versions = {"python": "3.11.2", "torch": "2.14.0", "transformers": "5.0.0"}
    base, cur, _ = _runs(tmp_path, enforcement="rlimit", versions=versions)
    assert main(["compare", str(base), str(cur)]) == 0
    assert "setup changed since the baseline: enforcement cgroup-v1 -> rlimit, torch 2.13.0 -> 2.14.0" in (
        capsys.readouterr().out
    )


def test_a_cell_without_a_current_record_is_a_regression(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    dropped = records[0]
    base, cur, _ = _runs(tmp_path, lambda rs: rs.pop(0), baseline_records=records)
    assert main(["compare", str(base), str(cur)]) == 1
    assert f"{dropped.cell_id}): no record in the current run" in capsys.readouterr().err


def test_json_output_lists_regressed_cells(tmp_path, capsys):
    records = sweep(devices=DEVICES, models=("opt-1m",))
    index = _ok_index(records)
    base, cur, _ = _runs(
        tmp_path,
        lambda rs: _bump(rs, index, peak_memory_bytes=int(records[index].peak_memory_bytes * 1.2)),
        baseline_records=records,
    )
    assert main(["compare", str(base), str(cur), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
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
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    base, cur, _ = _runs(tmp_path)
    other = write_run(tmp_path / "other", sweep(devices=("rpi-3b-plus",), models=("opt-1m",)))
    args = [a.format(base=base, cur=cur, other=other, tmp=tmp_path) for a in argv]
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_corrupted_results_exit_2(tmp_path, capsys):
    base, cur, _ = _runs(tmp_path)
    with open(cur / "results.jsonl", "a") as handle:
        handle.write("{not json}\n")
    assert main(["compare", str(base), str(cur)]) == 2
    assert "is not a valid result record" in capsys.readouterr().err


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), (0.2, 0.2), ("150%", 1.5), ("0", 0.0)])
def test_parse_fraction(text, value):
    assert parse_fraction(text, "--x") == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "-1%", "abc", "%"])
def test_parse_fraction_rejects(text):
    with pytest.raises(UserError):
        parse_fraction(text, "--x")
