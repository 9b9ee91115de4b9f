"""The scheduler: parallel cells only while their caps fit, records stored as cells finish, Ctrl-C stops all."""

from __future__ import annotations

import threading
import time

import pytest

from devices.profile import DeviceProfile
from harness import scheduler
from harness.cells import Cell
from harness.executors.base import ChildOutcome, Executor
from harness.records import now_iso
from harness.store import RunStore, load_records
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


def cells(caps_mib: list[int]) -> list[Cell]:
    return [
        Cell(DeviceProfile(name=f"d{i}", memory=f"{mib}MiB"), WorkloadParams(model="opt-1m", max_steps=1))
        for i, mib in enumerate(caps_mib)
    ]


def run(tmp_path, executor, matrix, jobs):
    store = RunStore(tmp_path)
    store.prepare({"spec_hash": "h"}, fresh=False)
    return scheduler.Scheduler(executor, store, jobs).run(matrix)


def test_parallel_cells_run_while_their_caps_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1000 << 20)
    executor = SleepyExecutor(tmp_path)
    records = run(tmp_path, executor, cells([400, 400, 400, 400]), jobs=4)
    assert executor.most == 2  # three 400 MiB caps do not fit in 1000 MiB
    assert len(records) == 4 and len(load_records(tmp_path)) == 4


def test_a_cell_larger_than_the_budget_still_runs_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 100 << 20)
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([400, 400]), jobs=2)
    assert executor.most == 1 and executor.started == 2


def test_jobs_bounds_parallelism(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1 << 40)
    executor = SleepyExecutor(tmp_path)
    run(tmp_path, executor, cells([100] * 6), jobs=3)
    assert executor.most == 3


def test_interrupt_stops_running_cells_and_records_only_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "host_budget_bytes", lambda: 1 << 40)
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
