"""How far the memory model was off on shapes drawn at random, per family and method: the range `edgebench estimate`
states beside a prediction.

benchmarks/bench_memory_random.py writes VALIDATION_FILE (one entry per validation seed it ran: every ok cell's
family, method and predicted / measured peak) and this module reads it back, torch-free. Nothing here is typed in
by hand: a family and method no seed drew has no range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VALIDATION_FILE = Path(__file__).with_name("memory_validation.json")
#: predicted / measured within this band counts as a hit (the issue's acceptance band).
BAND = (0.90, 1.10)


@dataclass(frozen=True)
class ValidatedRange:
    """predicted / measured over the validation cells of one family and method."""

    cells: int
    low: float
    high: float
    within: int  # cells inside BAND
    seeds: tuple[int, ...]

    def describe(self) -> str:
        seeds = ", ".join(map(str, self.seeds))
        return (
            f"predicted / measured {self.low:.3f}..{self.high:.3f} over {self.cells} random-shape cells "
            f"(seeds {seeds}), {self.within} within {BAND[0]:.2f}..{BAND[1]:.2f}"
        )


def family_of_model(name: str) -> str:
    """The family a validation cell is filed under: a registry name's prefix (opt, bert, minilm, mpnet)."""
    return name.split("-", 1)[0].lower()


def load(path: Path = VALIDATION_FILE) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"seeds": {}}
    return data if isinstance(data, dict) and isinstance(data.get("seeds"), dict) else {"seeds": {}}


def record_seed(seed: int, host: dict[str, Any], cells: list[dict[str, Any]], path: Path = VALIDATION_FILE) -> None:
    """Store (or replace) one seed's cells: each a dict with model, method, predicted and measured bytes."""
    data = load(path)
    data["seeds"][str(seed)] = {"host": host, "cells": cells}
    data["seeds"] = dict(sorted(data["seeds"].items(), key=lambda item: int(item[0])))
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def validated_range(model: str, method: str, path: Path = VALIDATION_FILE) -> ValidatedRange | None:
    """The range of predicted / measured over the stored cells of `model`'s family and `method`; None if none."""
    family = family_of_model(model)
    ratios, seeds = [], set()
    for seed, entry in load(path)["seeds"].items():
        for cell in entry.get("cells", []):
            if family_of_model(cell["model"]) == family and cell["method"] == method:
                ratios.append(cell["predicted"] / cell["measured"])
                seeds.add(int(seed))
    if not ratios:
        return None
    within = sum(BAND[0] <= r <= BAND[1] for r in ratios)
    return ValidatedRange(len(ratios), min(ratios), max(ratios), within, tuple(sorted(seeds)))
