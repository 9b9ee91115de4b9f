"""run.json: what a run was, on what, with which versions; written by each writer (a `--device` slice writes
its own run.DEVICE.json, see harness.record.store) at its start."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from devices.environment import library_versions
from harness.plan.spec import LoadedSpec
from harness.record.cells import Cell
from harness.record.records import SCHEMA_VERSION, now_iso
from harness.run.executors.base import Executor
from workloads.host_memory import host_memory_facts

#: Set by `edgebench compose` in each device service: the device slice that ran before this one ("" for the first).
#: Device containers run one after another, never beside each other, so no slice's step times are measured while
#: another device competes for the host's cores; run.DEVICE.json records the order.
ENV_SLICE_AFTER = "EDGEBENCH_SLICE_AFTER"
PACKAGES = ("edgebench", "torch", "transformers", "datasets", "peft", "pydantic", "docker", "ray")


def host_facts() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "in_ci": os.environ.get("CI") == "true",
    }


def describe_run(
    loaded: LoadedSpec, executor: Executor, jobs: int, devices: list[str] | None, cells: list[Cell]
) -> dict[str, Any]:
    """`jobs` and the slice's `devices` say how the cells shared the host (see `overlapped` in each record);
    `cells` are those the run expects (the spec's, and once probing is done, its largest-fitting ones)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "started_at": now_iso(),
        "spec_path": loaded.path,
        "spec_hash": loaded.hash,
        "spec": loaded.spec.model_dump(),
        "devices": [d.model_dump() for d in loaded.devices],
        "cells": [c.id for c in cells],
        "cell_labels": {c.id: c.label for c in cells},
        # The key keeps its name so that committed runs load; a report names the cells still missing from it.
        "largest_fitting_arms": [search.label for search in loaded.fit_searches],
        "clock": loaded.spec.clock,
        "host_speed": loaded.host.model_dump() if loaded.host else None,
        "clocks": {name: clock.model_dump() for name, clock in loaded.clocks.items()},
        "executor": executor.name,
        "enforcement": executor.enforcement,
        "cell_user": executor.cells_run_as,
        "jobs": jobs,
        "slice": sorted(devices) if devices else None,
        "slice_after": os.environ.get(ENV_SLICE_AFTER),  # None outside compose; "" for compose's first slice
        "host": host_facts(),
        # the memory model's measured terms (runtime baseline, allocator), per thread count the run's cells use
        "memory_model": [host_memory_facts(n) for n in sorted({clock.threads for clock in loaded.clocks.values()})],
        "versions": library_versions(PACKAGES),
    }
