"""A spec's matrix blocks expanded into workloads: the Cartesian product of each block's axes, a block's
`largest_fitting` models, and twin cells listed by overlapping blocks merged into one."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from devices.validation import validation_message
from harness.plan.resolve import LargestFitting
from harness.record.cells import Cell
from harness.record.errors import UserError
from workloads.checks import check_params
from workloads.params import WorkloadParams


def expand_matrix(matrix: dict[str, Any], origin: Path | str) -> list[WorkloadParams]:
    """Cartesian product of the axes (a scalar is a one-value axis), in spec order."""
    axes = list(matrix)
    values = [v if isinstance(v, list) else [v] for v in matrix.values()]
    combos = []
    for combo in itertools.product(*values):
        data = dict(zip(axes, combo, strict=True))
        try:
            combos.append(WorkloadParams.model_validate(data))
        except ValidationError as exc:
            raise UserError(validation_message(exc, str(origin), "matrix", data)) from None
    for params in {p.model_dump_json(): p for p in combos}.values():
        try:
            check_params(params)
        except ValueError as exc:
            raise UserError(f"{origin}: {exc}") from None
    return combos


def largest_fitting(model: Any, origin: Path) -> LargestFitting | None:
    """The block's `model: {largest_fitting: [...]}`, validated; None for a plain model axis."""
    if not isinstance(model, dict):
        return None
    try:
        fitting = LargestFitting.model_validate(model)
    except ValidationError as exc:
        raise UserError(validation_message(exc, str(origin), "matrix.model")) from None
    if len(set(fitting.largest_fitting)) != len(fitting.largest_fitting):
        raise UserError(f"{origin}: matrix.model.largest_fitting: a model is listed twice; list each once")
    return fitting


def merge_duplicates(cells: list[Cell]) -> tuple[list[Cell], dict[str, int]]:
    """Each cell once, where it first appears, and how often each repeated one was listed: overlapping blocks
    are easy to write, and twins run at once would measure each other and share one cgroup."""
    counts = Counter(c.id for c in cells)
    return list({c.id: c for c in cells}.values()), {cell_id: n for cell_id, n in counts.items() if n > 1}
