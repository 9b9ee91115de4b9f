"""The validity verdict can fail: each check, alone, turns a record invalid and is named; older records are judged
as far as their facts go; the caps report whether swap was excluded; reports leave invalid cells out of every
headline and name them, and warn when a cell ran a model's own code."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from devices.caps import cgroup_v2
from devices.caps.base import excludes_swap
from devices.caps.cgroup_v1 import CgroupV1
from devices.caps.cgroup_v2 import CgroupV2
from devices.caps.container import find_container_cgroup
from devices.profile import DeviceProfile
from harness.record.cells import Cell
from harness.record.records import CHECKS, SCHEMA_VERSION, CellRecord, CpuSharing, Validity, judged, now_iso
from harness.record.store import RunStore, load_records
from harness.run import scheduler
from harness.run.executors.base import ChildOutcome, Executor
from harness.run.scheduler import Scheduler
from reports.accuracy import accuracy_rows
from reports.findings import device_answers
from reports.fits import arm_fits
from reports.html import write_report
from reports.rundata import load_run
from reports.summary import device_headlines
from tests.helpers import edgebench, require_kernel_caps
from tests.records_factory import make_record, merged
from tests.test_reports_fixtures import accuracy_record, accuracy_run, scaled_clock, sweep, write_run

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def failed(record: CellRecord) -> list[str]:
    assert record.validity.valid is not bool(record.validity.failed)
    return record.validity.failed


def test_the_factory_record_passes_every_check_so_each_negative_below_isolates_one():
    record = make_record()
    assert record.validity.valid and set(record.validity.checks) == set(CHECKS)


def overlapped(record: CellRecord, demand: float, **facts) -> CellRecord:
    return judged(record, overlapped=True, cpu_sharing=CpuSharing(demand_cores=demand, host_cores=2), **facts)


def untrained_time_budget() -> CellRecord:
    record = make_record(max_steps=None, max_seconds=600.0)
    # 98% of the budget: the verdict before this one let 95% pass
    return judged(record, metrics=merged(record.metrics, timing={"train_seconds": 590.0}))


def with_metrics(**metrics) -> CellRecord:
    record = make_record()
    return judged(record, metrics=merged(record.metrics, **metrics))


NEGATIVES = {
    "rlimit is no kernel memory cap": ("cap_by_kernel", lambda: judged(make_record(), enforcement="rlimit")),
    "swap could hold memory": ("swap_excluded", lambda: judged(make_record(), swap_excluded=False)),
    "swap not recorded": ("swap_excluded", lambda: judged(make_record(), swap_excluded=None)),
    "steps short of max_steps": ("budget_or_cap_reached", lambda: judged(make_record(), steps=2)),
    "time short of max_seconds": ("budget_or_cap_reached", untrained_time_budget),
    "timeout": ("budget_or_cap_reached", lambda: make_record("timeout")),
    "error": ("budget_or_cap_reached", lambda: make_record("error")),
    "ratio not the calibration's": (
        "clock_calibrated",
        lambda: judged(make_record(), clock=scaled_clock().model_copy(update={"ratio": 3.0})),
    ),
    "host calibration missing": (
        "clock_calibrated",
        lambda: judged(make_record(), clock=scaled_clock().model_copy(update={"host_gflops_per_core": None})),
    ),
    "no versions": ("versions_recorded", lambda: with_metrics(versions={})),
    "torch missing": ("versions_recorded", lambda: with_metrics(versions={"torch": "missing"})),
    "no dataset": ("data_hashed", lambda: with_metrics(dataset=None)),
    "real data without its hash": ("data_hashed", lambda: with_metrics(dataset={"name": "reviews.csv"})),
    "hub model without a weights hash": ("model_pinned", lambda: make_record(model="facebook/opt-125m")),
    "overlap not recorded": ("isolated", lambda: judged(make_record(), overlapped=None)),
    "overlapped, CPU sharing not recorded": ("isolated", lambda: judged(make_record(), overlapped=True)),
    "overlapped past the host's cores": ("isolated", lambda: overlapped(make_record(), demand=3.0)),
    "overlapped in one container's cgroup": (
        "isolated",
        lambda: overlapped(make_record(), demand=2.0, enforcement="container"),
    ),
}


@pytest.mark.parametrize("case", NEGATIVES)
def test_each_check_alone_makes_a_record_invalid_and_is_named(case):
    check, build = NEGATIVES[case]
    assert failed(build()) == [check]


@pytest.mark.parametrize(
    "record",
    [
        make_record("oom"),  # the cap stopped it: what an OOM measures
        judged(
            make_record(max_steps=None, max_seconds=600.0),
            metrics=merged(make_record().metrics, timing={"train_seconds": 600.0}),
        ),
        judged(make_record(), clock=scaled_clock()),
        with_metrics(dataset={"name": "synthetic", "seed": 0, "synthetic": True}),
        make_record(model="minilm-l6"),
        judged(make_record(model="org/model"), metrics=merged(make_record().metrics, model_sha256="ab" * 32)),
        overlapped(make_record(), demand=2.0),
        overlapped(make_record(), demand=2.0, enforcement="container", executor="docker"),  # a container each
        judged(make_record(), enforcement="cgroup-v2"),
    ],
    ids=[
        "oom",
        "time-budget",
        "scaled-clock",
        "synthetic-data",
        "bundled-model",
        "hashed-hub-model",
        "fitting-overlap",
        "docker",
        "v2",
    ],
)
def test_what_each_check_accepts(record):
    assert record.validity.valid, record.validity


def schema_2_line(record: CellRecord, **changes) -> str:
    """The record as schema 2 wrote it: no swap or CPU-sharing facts, the old verdict that always passed."""
    old = {"valid": True, "checks": {"cap_enforced": True, "no_error": True, "seed_recorded": True}}
    data = record.model_dump(mode="json", exclude={"swap_excluded", "cpu_sharing"})
    return json.dumps(data | {"schema_version": 2, "validity": old} | changes)


def test_an_older_record_is_judged_by_the_checks_its_facts_allow_and_names_the_rest_unchecked():
    kept = CellRecord.model_validate_json(schema_2_line(make_record(), overlapped=True))
    assert kept.validity.valid and kept.validity.unchecked == ["swap_excluded", "isolated"]
    rlimit = CellRecord.model_validate_json(schema_2_line(make_record(), enforcement="rlimit"))
    assert failed(rlimit) == ["cap_by_kernel"] and rlimit.validity.unchecked == ["swap_excluded"]
    assert make_record().schema_version == SCHEMA_VERSION and not make_record().validity.unchecked


def test_the_committed_reference_runs_still_load_and_only_lack_the_new_facts():
    records = [r for run in ("paper-fit", "paper-accuracy") for r in load_records(REFERENCE / run)]
    assert records and all(r.validity.valid for r in records)
    assert {c for r in records for c in r.validity.unchecked} == {"swap_excluded", "isolated"}


def test_a_record_never_judged_is_not_valid():
    record = make_record().model_dump(exclude={"validity"})
    assert not CellRecord.model_validate(record).validity.valid


class Finished(Executor):
    """An executor whose child always trained its budget; the cap's word on swap is the test's."""

    name = "local"
    enforcement = "cgroup-v1"
    throttles = False

    def __init__(self, run_dir: Path, swap_excluded: bool | None) -> None:
        super().__init__(run_dir, timeout_s=60)
        self.swap_excluded = swap_excluded

    def execute(self, cell, progress):
        metrics = make_record().metrics.model_dump()
        result = {"status": "ok", "steps": cell.params.max_steps, "metrics": metrics}
        return ChildOutcome(now_iso(), 0.3, 0, False, False, result, swap_excluded=self.swap_excluded)


@pytest.mark.parametrize("swap", [True, False, None])
def test_the_executor_records_the_caps_word_on_swap_and_leaves_the_verdict_to_the_scheduler(tmp_path, swap):
    cell = Cell(DeviceProfile(name="pi", memory="1GB"), make_record().params)
    record = Finished(tmp_path, swap).run(cell, lambda *_: None)
    assert record.swap_excluded is swap and record.validity == Validity(valid=False, checks={})  # not judged yet
    alone = judged(record, overlapped=False)
    assert alone.validity.valid is (swap is True)


def test_swap_is_excluded_by_a_swap_limit_or_a_host_without_swap(tmp_path):
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    assert excludes_swap(False, swaps) and excludes_swap(True, tmp_path / "absent")
    swaps.write_text(swaps.read_text() + "/swapfile\tfile\t1048572\t0\t-2\n")
    assert not excludes_swap(False, swaps) and not excludes_swap(False, tmp_path / "absent")


@pytest.mark.parametrize("swap_accounted", [True, False])
def test_cgroup_v2_limits_swap_where_the_kernel_accounts_it_and_says_when_not(
    tmp_path, monkeypatch, swap_accounted
):
    mount, base = tmp_path / "cg", tmp_path / "cg/jobs/me"
    base.mkdir(parents=True)
    for directory in (mount, base):
        (directory / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text("cpu memory pids\n")
    files = ["memory.max", "cpu.max", "memory.events", "pids.max", *(["memory.swap.max"] if swap_accounted else [])]
    real_mkdir = type(base).mkdir

    def mkdir(self, *args, **kwargs):  # a cgroupfs makes a new group's interface files
        real_mkdir(self, *args, **kwargs)
        for name in files:
            (self / name).write_text("")

    monkeypatch.setattr(type(base), "mkdir", mkdir)
    monkeypatch.setattr(cgroup_v2, "excludes_swap", lambda limited: limited)  # as on a host with swap
    backend = CgroupV2(
        DeviceProfile(name="pi", memory="1GB"), "c", mounts=(mount,), proc_cgroup="0::/jobs/me\n"
    )
    backend.create()
    assert backend.reading().swap_excluded is swap_accounted
    assert (backend.directory / "memory.swap.max").exists() is swap_accounted


@pytest.mark.parametrize(
    ("layout", "excluded"),
    [
        (
            {
                "memory/memory.limit_in_bytes": "1073741824",
                "memory/memory.memsw.limit_in_bytes": "1073741824",
            },
            True,
        ),
        (
            {
                "memory/memory.limit_in_bytes": "1073741824",
                "memory/memory.memsw.limit_in_bytes": "2147483648",
            },
            False,
        ),
        ({"memory/memory.limit_in_bytes": "1073741824"}, False),  # the kernel does not account swap
        ({"memory.max": "1073741824", "memory.swap.max": "0"}, True),
        ({"memory.max": "1073741824", "memory.swap.max": "max"}, False),
    ],
    ids=["v1-memsw-equal", "v1-memsw-larger", "v1-no-memsw", "v2-swap-0", "v2-swap-max"],
)
def test_a_container_limits_swap_only_when_its_engine_set_memswap_to_the_limit(tmp_path, layout, excluded):
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert find_container_cgroup(tmp_path).limits_swap() is excluded


def test_cgroup_v1_reports_swap_excluded_when_memsw_is_there():
    if require_kernel_caps() != "cgroup-v1":
        pytest.skip("this host's kernel backend is cgroup v2 (covered by the fake-tree test)")
    with CgroupV1(DeviceProfile(name="pi", memory="256MiB"), "swap") as cap:
        memsw = (cap.memory_dir / "memory.memsw.limit_in_bytes").exists()
        assert cap.reading().swap_excluded is (memsw or excludes_swap(False))


# Reports: invalid cells are named with their failed checks and left out of every headline.


def text_of(html_path: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_path.read_text()))


def test_an_invalid_cell_is_left_out_of_the_headline_and_named_with_its_failed_check(tmp_path):
    records = sweep(devices=("rpi-4-2gb",))
    largest = next(r for r in records if (r.params.model, r.params.method) == ("opt-125m", "mezo"))
    records[records.index(largest)] = judged(largest, swap_excluded=False)
    run = load_run(write_run(tmp_path, records))
    (headline,) = device_headlines(run)
    mezo = next(f for f in headline.fits if f.method == "mezo")
    assert mezo.measured.model == "opt-30m"
    html = text_of(write_report(run.run_dir))
    assert "Invalid cells, left out of the answer, the largest-model fits and the headline: 1 cell" in html
    assert "swap_excluded: 1 cell (rpi-4-2gb/opt-125m/mezo/b8/s0)" in html and "no: swap_excluded" in html


def test_invalid_accuracy_cells_leave_the_answer_and_the_cli_names_them(tmp_path):
    records = accuracy_run()
    bad = [
        i for i, r in enumerate(records) if r.params.method == "bp-checkpointed" and r.params.tuning == "full"
    ]
    for i in bad:
        records[i] = judged(records[i], enforcement="rlimit")
    run = load_run(write_run(tmp_path, records))
    rows = accuracy_rows(run)
    assert {(r.method, r.tuning) for r in rows} == {
        ("mezo", "full"),
        ("mezo", "head"),
        ("bp-checkpointed", "head"),
    }
    (answer,) = device_answers(run, rows)
    assert answer.sentence().endswith(
        f"; left out, invalid (cap_by_kernel): BP (checkpointed) on minilm-l6 in {len(bad)} cells."
    )
    result = edgebench("report", str(run.run_dir))
    assert result.returncode == 0
    answer_line = result.stderr.strip().splitlines()[-1]
    assert answer_line.startswith("edgebench report: answer: rpi-4-2gb: MeZO on minilm-l6")
    assert "left out, invalid (cap_by_kernel): BP (checkpointed) on minilm-l6" in answer_line


def test_a_device_with_only_invalid_cells_still_says_so(tmp_path):
    records = [judged(accuracy_record("mezo", 1e-5, seed, 70.0, 70.0), overlapped=None) for seed in range(2)]
    run = load_run(write_run(tmp_path, records))
    (answer,) = device_answers(run, accuracy_rows(run))
    assert (
        answer.sentence()
        == "no valid accuracy measurement; left out, invalid (isolated): MeZO on minilm-l6 in 2 cells."
    )


def test_a_fit_decided_by_an_invalid_probe_is_left_out(tmp_path):
    probe = judged(make_record(model="opt-8m"), role="probe")
    bad = judged(make_record(model="opt-30m", method="bp-checkpointed"), role="probe", swap_excluded=False)

    def entry(record: CellRecord) -> dict:
        return {
            "device": record.device.name,
            "params": {"method": record.params.method, "task": "synthetic"},
            "candidates": [record.params.model],
            "model": record.params.model,
            "predicted": record.params.model,
            "reason": "probed",
            "probes": [{"model": record.params.model, "cell_id": record.cell_id, "status": "ok"}],
        }

    run = load_run(write_run(tmp_path, [probe, bad], resolutions=[entry(probe), entry(bad)]))
    assert [f.method for f in arm_fits(run)] == ["mezo"]


def test_the_report_warns_which_cells_ran_remote_code(tmp_path):
    trusted = make_record(model="opt-8m", trust_remote_code=True)
    html = write_report(write_run(tmp_path, [trusted, make_record(model="opt-1m")])).read_text()
    warning = re.sub(r"\s+", " ", re.search(r'id="remote-code">(.*?)</div>', html, re.S).group(1))
    assert "Remote code ran:</strong> 1 cell loaded a model with <code>trust_remote_code</code>" in warning
    assert "rpi-4-2gb/opt-8m/mezo/b8/s0" in warning and "opt-1m" not in warning
    assert "Remote code ran" not in write_report(write_run(tmp_path / "plain", [make_record()])).read_text()


def test_a_report_of_older_records_says_which_checks_could_not_run(tmp_path):
    run_dir = write_run(tmp_path, [make_record()])
    line = schema_2_line(make_record(model="opt-1m"), overlapped=False)
    (run_dir / "results.jsonl").write_text(line + "\n")
    html = text_of(write_report(run_dir))
    assert "Not every check ran: 1 cell was recorded before edgebench kept the facts some checks need" in html
    assert "swap_excluded: 1 cell (rpi-4-2gb/opt-1m/mezo/b8/s0)" in html
    assert "yes; not checked: swap_excluded" in html


class Sharing(Finished):
    """Cells that take a moment, so that with --jobs 2 they overlap."""

    def execute(self, cell, progress):
        time.sleep(0.3)
        return super().execute(cell, progress)


def two_cells() -> list[Cell]:
    params = make_record().params
    return [Cell(DeviceProfile(name=f"d{i}", memory="100MiB"), params) for i in range(2)]


def test_the_scheduler_records_how_overlapping_cells_shared_the_cpus_and_judges_after(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1 << 40)
    monkeypatch.setattr(scheduler, "host_cores", lambda: 2)
    Scheduler(Sharing(tmp_path, swap_excluded=True), RunStore(tmp_path), jobs=2).run(two_cells())
    records = load_records(tmp_path)
    assert [r.overlapped for r in records] == [True, True]
    assert all(r.cpu_sharing == CpuSharing(demand_cores=2, host_cores=2) for r in records)
    assert all(r.validity.valid for r in records), [r.validity for r in records]


def test_cells_admitted_past_the_hosts_cores_are_not_isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1 << 40)
    monkeypatch.setattr(scheduler, "host_cores", lambda: 1)
    monkeypatch.setattr(scheduler, "_fits", lambda *args: True)  # an admission bug the verdict must catch
    Scheduler(Sharing(tmp_path, swap_excluded=True), RunStore(tmp_path), jobs=2).run(two_cells())
    assert [failed(r) for r in load_records(tmp_path)] == [["isolated"], ["isolated"]]
