"""Builds valid CellRecords and run infos for tests that exercise storage and reporting without running cells."""

from __future__ import annotations

from typing import Any

from devices.profile import DeviceProfile
from harness.record.cells import Cell
from harness.record.records import SCHEMA_VERSION, CellRecord, MemoryFigures, judged, now_iso
from harness.record.runinfo import HostFacts, RunInfo, RunSpec
from workloads.metrics import FLAT_NAMES, CellMetrics
from workloads.params import WorkloadParams

#: The groups of CellMetrics whose fields `merged` merges rather than replaces.
GROUPS = {*FLAT_NAMES, "device_clock"}


def make_record(status: str = "ok", peak: int | None = 300 << 20, **params: Any) -> CellRecord:
    """A record every validity check passes (on a status that measured something), judged by harness.record.records."""
    device = DeviceProfile(name=params.pop("device", "rpi-4-2gb"), memory=params.pop("memory", "2GB"), cpus=4)
    workload = WorkloadParams(**{"model": "opt-8m", "max_steps": 3, **params})
    cell = Cell(device, workload)
    steps = 3 if status == "ok" else 0
    dataset = {"name": workload.task, "content_sha256": "0123456789abcdef"}
    metrics = {"versions": {"torch": "2.13.0"}, "dataset": dataset} if status == "ok" else {}
    record = CellRecord(
        cell_id=cell.id,
        device=device,
        params=workload,
        status=status,
        peak_memory_bytes=peak,
        peak_memory_source="rss" if peak else None,
        memory=MemoryFigures(rss_peak_bytes=peak),
        clock=cell.clock,
        host_seconds=1.5,
        device_seconds=1.5,
        steps=steps,
        metrics=metrics,
        enforcement="cgroup-v1",
        swap_excluded=True,
        executor="local",
        overlapped=False,
        started_at=now_iso(),
        finished_at=now_iso(),
    )
    return judged(record)


def make_run_info(**fields: Any) -> RunInfo:
    """A run.json as `edgebench run` writes it for a spec of no devices, with `fields` changed."""
    host = HostFacts(hostname="test-host", platform="Linux", cpus=2, memory_bytes=24 << 30)
    info = RunInfo(
        schema_version=SCHEMA_VERSION,
        started_at=now_iso(),
        spec_path="spec.yaml",
        spec_hash="0123456789abcdef",
        spec=RunSpec(name="test"),
        devices=[],
        cells=[],
        executor="local",
        enforcement="cgroup-v1",
        host=host,
        versions={"python": "3.11.2"},
    )
    return RunInfo.model_validate(info.model_dump() | fields)


def merged(metrics: CellMetrics, **changes: Any) -> CellMetrics:
    """`metrics` with `changes`: a group's given as a dict of the fields to change, any other field replaced."""
    data = metrics.model_dump(exclude_unset=True)
    for name, value in changes.items():
        data[name] = {**data.get(name, {}), **value} if name in GROUPS and isinstance(value, dict) else value
    return CellMetrics.model_validate(data)
