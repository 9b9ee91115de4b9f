"""The results store: durable appends, a cut partial tail, resume, and clear errors on corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from harness.record.errors import UserError
from harness.record.records import record_json_schema
from harness.record.runinfo import HostFacts, run_info_json_schema
from harness.record.store import (
    RESULTS,
    RUN_INFO,
    RunStore,
    iter_records,
    load_records,
    read_run_info,
    read_run_slices,
)
from tests.records_factory import make_record, make_run_info

ROOT = Path(__file__).parents[1]
INFO = make_run_info(spec_hash="abc")


def test_append_then_resume_sees_finished_cells(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.prepare(INFO, fresh=False) == set()
    first, second = make_record(seed=1), make_record(seed=2)
    store.append(first)
    store.append(second)
    assert RunStore(tmp_path / "run").prepare(INFO, fresh=False) == {first.cell_id, second.cell_id}
    assert [r.cell_id for r in load_records(tmp_path / "run")] == [first.cell_id, second.cell_id]


def test_partial_last_line_is_cut_on_prepare(tmp_path):
    store = RunStore(tmp_path)
    store.prepare(INFO, fresh=False)
    record = make_record()
    store.append(record)
    with open(tmp_path / RESULTS, "ab") as handle:  # a writer killed mid-line
        handle.write(record.model_dump_json().encode()[:40])
    assert [r.cell_id for r in iter_records(tmp_path)] == [record.cell_id]
    store.prepare(INFO, fresh=False)
    assert (tmp_path / RESULTS).read_bytes() == (record.model_dump_json() + "\n").encode()


def test_corrupted_line_names_the_line_and_the_fix(tmp_path):
    RunStore(tmp_path).prepare(INFO, fresh=False)
    (tmp_path / RESULTS).write_text(make_record().model_dump_json() + "\n{not json}\n")
    with pytest.raises(
        UserError, match=r"results\.jsonl line 2 is not a valid result record; delete that line"
    ):
        load_records(tmp_path)


def test_fresh_keeps_old_results_as_backup(tmp_path):
    store = RunStore(tmp_path)
    store.prepare(INFO, fresh=False)
    store.append(make_record())
    assert store.prepare(INFO, fresh=True) == set()
    backups = list(tmp_path.glob(f"{RESULTS}.*.bak"))
    assert len(backups) == 1 and backups[0].read_text().strip()
    assert not (tmp_path / RESULTS).exists()


def test_other_spec_in_same_directory_is_refused(tmp_path):
    RunStore(tmp_path).prepare(INFO, fresh=False)
    with pytest.raises(UserError, match="different spec; pass --fresh"):
        RunStore(tmp_path).prepare(make_run_info(spec_hash="other"), fresh=False)


def test_unwritable_directory_is_refused_before_writing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK) and os.geteuid() == 0:
            target = tmp_path / "file"  # root can write anywhere: use a path under a regular file instead
            target.write_text("x")
            locked = target
        with pytest.raises(UserError, match="not (writable|a directory)"):
            RunStore(locked / "run").prepare(INFO, fresh=False)
    finally:
        os.chmod(tmp_path / "locked", 0o700)


def test_run_info_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_run_info(tmp_path)
    (tmp_path / RUN_INFO).write_text("{trunc")
    with pytest.raises(UserError, match="corrupted"):
        read_run_info(tmp_path)


def test_records_match_the_committed_json_schema(tmp_path):
    committed = json.loads((Path(__file__).parents[1] / "harness/schemas/result.schema.json").read_text())
    assert committed == record_json_schema(), (
        "regenerate: python -m harness.record.records > harness/schemas/result.schema.json"
    )
    for status in ("ok", "oom"):
        jsonschema.validate(json.loads(make_record(status).model_dump_json()), committed)


def test_run_info_matches_the_committed_json_schema(tmp_path):
    committed = json.loads((ROOT / "harness/schemas/run.schema.json").read_text())
    assert committed == run_info_json_schema(), (
        "regenerate: python -m harness.record.runinfo > harness/schemas/run.schema.json"
    )
    RunStore(tmp_path).prepare(INFO, fresh=False)
    jsonschema.validate(json.loads((tmp_path / RUN_INFO).read_text()), committed)


@pytest.mark.parametrize("folder", sorted(p.parent for p in ROOT.glob("*/*/*/run.json") if p.parts[-3] in ("reference", "fixtures")))
def test_every_committed_run_json_loads(folder):
    """Fields added since a file was written read as their defaults; an arm's params written without their model
    get its largest candidate."""
    info = read_run_info(folder)
    assert info.spec_hash and info.host.hostname and info.versions
    assert all(entry.params.model == entry.candidates[-1] for entry in info.resolutions)


def test_an_older_run_json_reads_with_the_fields_it_lacks_empty():
    info = read_run_info(ROOT / "tests/fixtures/older-schema")
    assert (info.schema_version, info.host.machine, info.host.in_ci) == (1, "", False)
    assert (info.cell_labels, info.resolutions, info.clocks, info.host_speed) == ({}, [], {}, None)


def test_a_field_no_writer_writes_is_refused(tmp_path):
    RunStore(tmp_path).prepare(INFO, fresh=False)
    info = json.loads((tmp_path / RUN_INFO).read_text()) | {"slice_host": "pi"}
    (tmp_path / RUN_INFO).write_text(json.dumps(info))
    with pytest.raises(UserError, match="slice_host is not as `edgebench run` writes it"):
        read_run_info(tmp_path)


def test_a_record_from_before_device_clocks_reads_as_host_seconds(tmp_path):
    line = json.loads(make_record().model_dump_json())
    line |= {"schema_version": 1, "wall_seconds": line.pop("host_seconds")}
    for key in ("clock", "device_seconds", "cpu_seconds"):
        line.pop(key)
    (tmp_path / "results.jsonl").write_text(json.dumps(line) + "\n")
    (record,) = load_records(tmp_path)
    assert record.clock.kind == "host" and "schema 1" in record.clock.source
    assert record.host_seconds == record.device_seconds == 1.5


def test_an_append_after_a_writer_killed_mid_line_cuts_its_fragment_first(tmp_path):
    store = RunStore(tmp_path)
    store.prepare(INFO, fresh=False)
    first, second = make_record(seed=1), make_record(seed=2)
    store.append(first)
    with open(tmp_path / RESULTS, "ab") as handle:  # another writer, SIGKILLed halfway through its line
        handle.write(make_record(seed=3).model_dump_json().encode()[:100])
    store.append(second)
    assert [r.cell_id for r in iter_records(tmp_path)] == [first.cell_id, second.cell_id]


def test_slices_keep_their_own_run_info_and_readers_merge_them(tmp_path):
    for device, started in (("pi", "2026-01-02"), ("jetson", "2026-01-01")):
        host = HostFacts(hostname=device, platform="Linux", cpus=2, memory_bytes=1 << 30)
        info = make_run_info(spec_hash="abc", started_at=started, cells=[f"{device}-cell", "shared"], host=host)
        RunStore(tmp_path, [device]).prepare(info, fresh=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jetson.json", "run.pi.json"]
    merged = read_run_info(tmp_path)
    assert merged.host.hostname == "jetson"  # the earliest writer's; each writer's own is in its file
    assert {name: info.host.hostname for name, info in read_run_slices(tmp_path).items()} == {
        "run.jetson.json": "jetson",
        "run.pi.json": "pi",
    }
    assert merged.cells == ["jetson-cell", "shared", "pi-cell"]


def test_a_slice_of_another_spec_is_refused(tmp_path):
    RunStore(tmp_path, ["pi"]).prepare(INFO, fresh=False)
    with pytest.raises(UserError, match="different spec; pass --fresh"):
        RunStore(tmp_path, ["jetson"]).prepare(make_run_info(spec_hash="other"), fresh=False)
    assert not (tmp_path / "run.jetson.json").exists()


def test_fresh_sets_every_writers_run_info_aside(tmp_path):
    RunStore(tmp_path, ["pi"]).prepare(INFO, fresh=False)
    RunStore(tmp_path).prepare(make_run_info(spec_hash="new"), fresh=True)
    assert read_run_slices(tmp_path).keys() == {RUN_INFO}
    assert len(list(tmp_path.glob("run.pi.json.*.bak"))) == 1


def test_run_info_temp_files_are_unique_even_with_one_pid(tmp_path, monkeypatch):
    """Containers under `init: true` all give the harness the same pid."""
    monkeypatch.setattr(os, "getpid", lambda: 1)
    names = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst, **fds: names.append(Path(src).name) or real_replace(src, dst, **fds)
    )
    RunStore(tmp_path, ["pi"]).prepare(INFO, fresh=False)
    RunStore(tmp_path, ["pi"]).prepare(INFO, fresh=False)
    assert len(set(names)) == 2


def test_retry_errors_leaves_failed_cells_out_of_the_done_ones(tmp_path):
    store = RunStore(tmp_path)
    store.prepare(INFO, fresh=False)
    records = [make_record(status, seed=i) for i, status in enumerate(("ok", "oom", "error", "timeout"))]
    for record in records:
        store.append(record)
    assert store.prepare(INFO, fresh=False) == {r.cell_id for r in records}
    assert store.prepare(INFO, fresh=False, retry_errors=True) == {records[0].cell_id, records[1].cell_id}
    store.append(make_record("ok", seed=2))  # a retried cell that now succeeded is done
    assert records[2].cell_id in store.prepare(INFO, fresh=False, retry_errors=True)


def test_a_grid_that_grew_resumes_and_one_that_changed_is_refused(tmp_path):
    """A sweep whose choice sat at the edge of its grid extends the grid: its finished cells resume. A spec that
    dropped or changed a cell, or only changed something else, is another spec."""
    RunStore(tmp_path).prepare(make_run_info(spec_hash="abc", cells=["a", "b"]), fresh=False)
    RunStore(tmp_path).append(make_record(seed=1))
    done = RunStore(tmp_path).prepare(make_run_info(spec_hash="grown", cells=["a", "b", "c"]), fresh=False)
    assert len(done) == 1 and read_run_info(tmp_path).spec_hash == "grown"
    for cells in (["a", "b", "d"], ["a", "b", "c"], ["a"]):  # changed, the same cells, fewer
        with pytest.raises(UserError, match="different spec; pass --fresh"):
            RunStore(tmp_path).prepare(make_run_info(spec_hash="other", cells=cells), fresh=False)
    searched = make_run_info(spec_hash="searched", cells=["a", "b", "c", "e"], largest_fitting_arms=["arm"])
    with pytest.raises(UserError, match="different spec"):
        RunStore(tmp_path).prepare(searched, fresh=False)
