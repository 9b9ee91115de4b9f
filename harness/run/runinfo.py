"""run.json (harness.record.runinfo.RunInfo) as this writer describes its run at its start (a `--device` slice
writes its own run.DEVICE.json, see harness.record.store)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

import psutil

from devices.environment import library_versions
from harness.plan.resolve import FitSearch
from harness.plan.spec import LoadedSpec
from harness.record.cells import Cell
from harness.record.records import SCHEMA_VERSION, ModelResolution, now_iso
from harness.record.runinfo import ArmResolution, HostFacts, RunInfo, RunSpec
from harness.run.executors.base import Executor
from workloads.host_memory import host_memory_facts

#: Set by `edgebench compose` in each device service: the device slice that ran before this one ("" for the first).
#: Device containers run one after another, never beside each other, so no slice's step times are measured while
#: another device competes for the host's cores; run.DEVICE.json records the order.
ENV_SLICE_AFTER = "EDGEBENCH_SLICE_AFTER"
PACKAGES = ("edgebench", "torch", "transformers", "datasets", "peft", "pydantic", "docker", "ray")


def host_facts() -> HostFacts:
    return HostFacts(
        hostname=platform.node(),
        platform=platform.platform(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
        memory_bytes=psutil.virtual_memory().total,
        in_ci=os.environ.get("CI") == "true",
    )


def describe_run(
    loaded: LoadedSpec,
    executor: Executor,
    jobs: int,
    devices: list[str] | None,
    cells: list[Cell],
    resolutions: Sequence[tuple[FitSearch, ModelResolution]] = (),
) -> RunInfo:
    """`jobs` and the slice's `devices` say how the cells shared the host (see `overlapped` in each record);
    `cells` are those the run expects (the spec's, and once probing is done, its largest-fitting ones, whose
    searches' `resolutions` say why)."""
    return RunInfo(
        schema_version=SCHEMA_VERSION,
        started_at=now_iso(),
        spec_path=loaded.path,
        spec_hash=loaded.hash,
        spec=RunSpec.model_validate(loaded.spec.model_dump(mode="json")),
        devices=loaded.devices,
        cells=[c.id for c in cells],
        cell_labels={c.id: c.label for c in cells},
        largest_fitting_arms=[search.label for search in loaded.fit_searches],  # the key keeps its name: committed runs load
        clock=loaded.spec.clock,
        host_speed=loaded.host,
        clocks=loaded.clocks,
        executor=executor.name,
        enforcement=executor.enforcement,
        cell_user=executor.cells_run_as,
        jobs=jobs,
        slice=sorted(devices) if devices else None,
        slice_after=os.environ.get(ENV_SLICE_AFTER),  # None outside compose; "" for compose's first slice
        host=host_facts(),
        memory_model=[host_memory_facts(n) for n in sorted({clock.threads for clock in loaded.clocks.values()})],
        versions=library_versions(PACKAGES),
        resolutions=[resolution_entry(search, r) for search, r in resolutions],
    )


def resolution_entry(search: FitSearch, resolution: ModelResolution) -> ArmResolution:
    """run.json's account of one fit search: which device and workload, and which model it resolved to and why."""
    return ArmResolution(arm=search.label, device=search.device.name, params=search.params, **dict(resolution))
