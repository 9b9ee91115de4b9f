"""The scheduler: parallel cells only while their caps fit, records stored as cells finish, Ctrl-C stops all."""

from __future__ import annotations

import threading
import time

import pytest

from devices.profile import DeviceProfile
from harness.record.cells import Cell
from harness.record.records import now_iso
from harness.record.store import RunStore, load_records
from harness.run import scheduler
from harness.run.executors.base import ChildOutcome, Executor, cpu_need
from tests.records_factory import make_run_info
from workloads.params import WorkloadParams


class SleepyExecutor(Executor):
    """Stands in for a real executor to observe how many cells run at once."""

    name = "sleepy"
    enforcement = "none"
    throttles = False

    def __init__(self, run_dir):
        super().__init__(run_dir, timeout_s=60)
        self.lock = threading.Lock()
        self.active = self.most = self.started = 0

    def execute(self, cell, progress):
        with self.lock:
            self.active += 1
            self.started += 1
            self.most = max(self.most, self.active)
        try:
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                if self.stop.is_set():
                    raise KeyboardInterrupt
                time.sleep(0.01)
        finally:
            with self.lock:
                self.active -= 1
        result = {"status": "ok", "steps": cell.params.max_steps, "metrics": {"versions": {"torch": "x"}}}
        return ChildOutcome(now_iso(), 0.3, 0, False, False, result)


def cells(caps_mib: list[int], cpus: float = 1.0, quota: float | None = None) -> list[Cell]:
    """One cell per cap; `quota` puts each on a device-throttled clock with that CFS quota in cores."""
    made = []
    for i, mib in enumerate(caps_mib):
        cell = Cell(
            DeviceProfile(name=f"d{i}", memory=f"{mib}MiB", cpus=cpus),
            WorkloadParams(model="opt-1m", max_steps=1),
        )
        if quota is not None:
            clock = cell.clock.model_copy(
                update={"kind": "device-throttled", "cpu_quota_cores": quota, "threads": 1}
            )
            cell = Cell(cell.device, cell.params, clock)
        made.append(cell)
    return made


@pytest.fixture
def roomy_host(monkeypatch):
    """Memory and cores for any number of cells, unless a test narrows one of them."""
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1 << 40)
    monkeypatch.setattr(scheduler, "host_cores", lambda: 64)


def run(tmp_path, executor, matrix, jobs):
    store = RunStore(tmp_path)
    store.prepare(make_run_info(spec_hash="h"), fresh=False)
    return scheduler.Scheduler(executor, store, jobs).run(matrix)


def test_parallel_cells_run_while_their_caps_fit(tmp_path, monkeypatch, roomy_host):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1000 << 20)
    executor = SleepyExecutor(tmp_path)
    records = run(tmp_path, executor, cells([400, 400, 400, 400]), jobs=4)
    assert executor.most == 2  # three 400 MiB caps do not fit in 1000 MiB
    assert len(records) == 4 and len(load_records(tmp_path)) == 4


def test_a_cell_larger_than_the_budget_still_runs_alone(tmp_path, monkeypatch, roomy_host):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 100 << 20)
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([400, 400]), jobs=2)
    assert executor.most == 1 and executor.started == 2


def test_jobs_bounds_parallelism(tmp_path, roomy_host):
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([100] * 6), jobs=3)
    assert executor.most == 3


def test_interrupt_stops_running_cells_and_records_only_finished_ones(tmp_path, monkeypatch, roomy_host):
    executor = SleepyExecutor(tmp_path)
    original = RunStore.append

    def append_then_interrupt(self, record):
        original(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "append", append_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, executor, cells([100] * 4), jobs=2)
    assert executor.stop.is_set() and executor.active == 0
    assert len(load_records(tmp_path)) == 1


def test_cells_run_together_only_while_their_cores_fit_the_host(tmp_path, monkeypatch, roomy_host):
    monkeypatch.setattr(scheduler, "host_cores", lambda: 2)
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([100] * 4), jobs=4)
    assert executor.most == 2


def test_a_cell_wanting_more_cores_than_the_host_runs_alone(tmp_path, monkeypatch, roomy_host):
    monkeypatch.setattr(scheduler, "host_cores", lambda: 2)
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([100] * 3, cpus=4), jobs=2)
    assert executor.most == 1 and executor.started == 3


def test_throttled_cells_need_only_their_quota(tmp_path, monkeypatch, roomy_host):
    monkeypatch.setattr(scheduler, "host_cores", lambda: 2)
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([100] * 4, cpus=4, quota=0.5), jobs=4)
    assert executor.most == 4


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_record_says_whether_its_cell_overlapped_others(tmp_path, roomy_host, jobs):
    run(tmp_path, SleepyExecutor(tmp_path), cells([100] * 2), jobs=jobs)
    assert [r.overlapped for r in load_records(tmp_path)] == [jobs > 1] * 2


def test_a_scaled_cell_needs_the_cores_its_threads_use_not_its_devices():
    """A 4-core device on a scaled clock runs torch on ceil(quota) threads: one here, so two fit a 2-core host."""
    (cell,) = cells([100], cpus=4.0)
    scaled = cell.clock.model_copy(update={"kind": "device-scaled", "cpu_quota_cores": 4.0, "threads": 1})
    assert cpu_need(Cell(cell.device, cell.params, scaled)) == 1
    throttled = scaled.model_copy(update={"kind": "device-throttled", "cpu_quota_cores": 0.17})
    assert cpu_need(Cell(cell.device, cell.params, throttled)) == 0.17
