"""Where a cell may run on a Ray cluster: the resources it asks Ray for, and why no node could ever hold it."""

from __future__ import annotations

import math
from typing import Any

from devices.profile import format_bytes
from harness.record.cells import Cell
from harness.run.executors.base import cpu_need

#: Ray counts resources in steps of 1/10000.
RESOURCE_STEP = 10_000


def placement(cell: Cell) -> dict[str, float]:
    """The Ray resources a cell needs: the cores it keeps busy under its clock, its memory cap, a whole GPU when it
    has GPU memory (Ray counts GPUs, not their bytes, and the node's card is known only in the cell) and the
    custom resources its device profile names (which pin it to the nodes that offer them)."""
    request = {
        "CPU": math.ceil(cpu_need(cell) * RESOURCE_STEP) / RESOURCE_STEP,
        "memory": cell.device.memory_bytes,
        **cell.device.resources,
    }
    if cell.device.gpu_cap_bytes is not None:
        request["GPU"] = 1
    return request


def task_options(request: dict[str, float]) -> dict[str, Any]:
    """Ray's spelling of a placement; retries are the driver's, so that it can count and report them."""
    options: dict[str, Any] = {"num_cpus": request["CPU"], "memory": request["memory"], "max_retries": 0}
    if "GPU" in request:
        options["num_gpus"] = request["GPU"]
    custom = {name: amount for name, amount in request.items() if name not in ("CPU", "memory", "GPU")}
    if custom:
        options["resources"] = custom
    return options


def fits(request: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(name, 0) >= amount for name, amount in request.items())


def placement_problem(cell: Cell, nodes: list[dict[str, float]]) -> str | None:
    """Why no node of the cluster can ever run the cell (one line), or None when one can."""
    request = placement(cell)
    if any(fits(request, node) for node in nodes):
        return None
    largest = {name: max((node.get(name, 0) for node in nodes), default=0) for name in request}
    return (
        f"device {cell.device.name} needs {_amounts(request)} on one Ray node, but the cluster's largest offer "
        f"{_amounts(largest)}; add a larger node, or lower the device's memory or cpus"
    )


def _amounts(resources: dict[str, float]) -> str:
    return ", ".join(
        f"{format_bytes(amount)} memory" if name == "memory" else f"{amount:g} {name}"
        for name, amount in resources.items()
    )
