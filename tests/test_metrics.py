"""The typed metrics contract: older records' flat metrics load grouped, with every figure where it was, and a
cell whose metrics are not workloads.metrics' is recorded as an error that says so."""

from __future__ import annotations

import json
from pathlib import Path

from devices.profile import DeviceProfile
from harness.record.cells import Cell
from harness.record.records import SCHEMA_VERSION, CellRecord, now_iso
from harness.run.executors.base import ChildOutcome, Executor
from tests.records_factory import make_record
from workloads.metrics import FLAT_NAMES, grouped

CI = Path(__file__).resolve().parents[1] / "results" / "reference" / "ci" / "results.jsonl"


def test_a_schema_4_record_loads_with_each_flat_figure_in_its_group():
    line = json.loads(CI.read_text().splitlines()[-1])
    assert line["schema_version"] == 4 < SCHEMA_VERSION
    flat, record = line["metrics"], CellRecord.model_validate(line)
    loaded = record.metrics.model_dump()
    for group, names in FLAT_NAMES.items():
        for old, new in names.items():
            assert loaded[group][new] == flat[old], (old, group, new)
    assert record.metrics.dataset.content_sha256 == flat["dataset"]["content_sha256"]
    assert record.metrics.device_clock.roofline_extra_s == flat["device_clock"]["roofline_extra_s"]
    assert record.validity == CellRecord.model_validate(line | {"metrics": grouped(flat)}).validity


def test_grouping_leaves_out_a_group_none_of_whose_figures_was_kept():
    assert grouped({"param_count": 3, "step_time_s": 0.5}) == {"param_count": 3, "timing": {"step_time_s": 0.5}}


class Reporting(Executor):
    """An executor whose child reports METRICS as its result's."""

    name = "local"
    enforcement = "cgroup-v1"
    throttles = False
    METRICS: dict = {}

    def execute(self, cell, progress):
        result = {"status": "ok", "steps": cell.params.max_steps, "metrics": self.METRICS}
        return ChildOutcome(now_iso(), 0.3, 0, False, False, result, swap_excluded=True)


def test_a_cell_reporting_metrics_outside_the_contract_is_an_error_naming_the_field(tmp_path):
    cell = Cell(DeviceProfile(name="pi", memory="1GB"), make_record().params)
    Reporting.METRICS = {"timing": {"step_time_s": "slow"}, "versions": {"torch": "2.13.0"}}
    record = Reporting(tmp_path, timeout_s=60).run(cell, lambda *_: None)
    assert record.status == "error" and "timing.step_time_s" in record.error and "metrics" in record.error
    assert record.metrics.param_count is not None  # the registry's count, as for a killed cell
    Reporting.METRICS = {"forks": 3}
    assert "forks: Extra inputs are not permitted" in Reporting(tmp_path, timeout_s=60).run(cell, print).error
    Reporting.METRICS = make_record().metrics.model_dump()
    assert Reporting(tmp_path, timeout_s=60).run(cell, print).status == "ok"
