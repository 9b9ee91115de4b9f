"""Which recipe a report shows: the one with the best mean validation accuracy over its seeds.

Choosing on test accuracy and then reporting test accuracy flatters every arm that tried more recipes, so
this module never reads a test figure: a setting whose recipes recorded no validation accuracy gets no
choice (unless it tried a single recipe, which needs none).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.record.cells import canonical_json
from harness.record.records import CellRecord
from reports.spread import Spread, spread

#: The knobs a person tunes per arm, chosen on validation; everything else in the params (and the device and clock)
#: is the setting. The head and the batch are chosen too: a sweep compares them under one device-time budget.
RECIPE_AXES = (
    "lr",
    "head",
    "batch",
    "weight_decay",
    "eps",
    "n_queries",
    "lr_schedule",
    "warmup_steps",
    "zo_variant",
    "zo_noise",
)
SEED_AXIS = "seed"
#: Recipe axes on a continuous scale, where a choice at either end of the values tried may have its optimum beyond
#: them (a sweep's rule: such a grid extends once). The head, the batch and the query count are settings, not scales.
CONTINUOUS_AXES = ("lr", "eps", "weight_decay")


def setting_key(record: CellRecord, leave_out: Sequence[str]) -> str:
    """The cell's identity without some axes: records with equal keys differ only in those axes."""
    params = {k: v for k, v in record.params.model_dump().items() if k not in leave_out}
    return canonical_json({"device": record.device.name, "clock": record.clock.kind, "params": params})


def seedless_key(record: CellRecord) -> str:
    """Cells that differ only in their seed: repetitions of one experiment."""
    return setting_key(record, (SEED_AXIS,))


def group_key(record: CellRecord) -> str:
    """Cells that differ only in recipe and seed: the arms a recipe is chosen among."""
    return setting_key(record, (*RECIPE_AXES, SEED_AXIS))


def recipe_of(record: CellRecord) -> dict[str, Any]:
    """The recipe axes this record's params have (older records lack newer axes), lr as it really ran."""
    params = record.params.model_dump()
    recipe = {axis: params[axis] for axis in RECIPE_AXES if axis in params}
    return recipe | {"lr": record.params.learning_rate}


def format_value(value: Any) -> str:
    """Numbers as people write recipes: 1e-4, 0.001, 512; an unset value as `none`."""
    if value is None:
        return "none"
    if isinstance(value, float) and value != 0 and not 1e-3 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def varying_axes(settings: Iterable[dict[str, Any]]) -> list[str]:
    """The keys whose values differ between the settings, in first-seen order."""
    settings = list(settings)
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if len({canonical_json(s.get(k)) for s in settings}) > 1]


def describe(setting: dict[str, Any], axes: Iterable[str]) -> str:
    return ", ".join(f"{axis.replace('_', ' ')} {format_value(setting.get(axis))}" for axis in axes)


def is_accuracy_record(record: CellRecord) -> bool:
    """The workload evaluated: fit-sweep cells of tasks without an evaluation are not recipes to choose, and a
    probe's few steps (harness.plan.resolve) only measure memory."""
    if record.role == "probe":
        return False
    accuracy = record.metrics.accuracy
    return bool(accuracy.curve) or accuracy.final_val is not None


@dataclass(frozen=True)
class RecipeScore:
    recipe: dict[str, Any]
    label: str
    records: list[CellRecord]  # its finished cells, one per seed
    val: Spread | None  # final validation accuracy over the seeds that recorded it
    missing: int  # seeds of its group it has no validation figure for

    def over(self) -> str:
        """`3 seeds`, or `2 of 3 seeds` when some failed or recorded no validation accuracy."""
        n = self.val.n if self.val else 0
        total = n + self.missing
        return f"{n} of {total} seeds" if self.missing else f"{n} seed{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class GroupChoice:
    """One setting (device, model, arm, task, batch, budget...) and the recipe the report shows for it."""

    key: str
    ranked: list[RecipeScore]  # ranked on validation, best first; recipes without validation last
    chosen: RecipeScore | None
    sentence: str

    @property
    def sample(self) -> CellRecord:
        """A record of the group, for the setting's own figures (device, model, method, task...)."""
        return (self.chosen or self.ranked[0]).records[0]

    @property
    def shown(self) -> list[CellRecord]:
        """The records whose test figures the report shows: the chosen recipe's seeds, or none."""
        return self.chosen.records if self.chosen else []


def _score(recipe: dict[str, Any], label: str, records: list[CellRecord], seeds: int) -> RecipeScore:
    val = spread(v for r in records if (v := r.metrics.accuracy.final_val) is not None)
    return RecipeScore(recipe, label, records, val, seeds - (val.n if val else 0))


def _rank_key(score: RecipeScore) -> tuple:
    """Best mean validation first; ties go to fewer missing seeds, then to the recipe's canonical text. Only
    recipes with a validation figure are ranked."""
    return (-score.val.mean, score.missing, canonical_json(score.recipe))


def grid_edges(chosen: RecipeScore, ranked: list[RecipeScore]) -> list[str]:
    """The continuous axes whose chosen value is the smallest or the largest of two or more values tried (by the
    group's finished cells) at the chosen recipe's settings (head, batch, queries...), said as `lr 1e-5 is the
    largest tried`; a weight decay of 0 has nothing below it."""
    settings = [a for a in RECIPE_AXES if a not in CONTINUOUS_AXES]
    line = [s for s in ranked if all(s.recipe.get(a) == chosen.recipe.get(a) for a in settings)]
    edges = []
    for axis in CONTINUOUS_AXES:
        tried = sorted({v for s in line if (v := s.recipe.get(axis)) is not None})
        value = chosen.recipe.get(axis)
        if len(tried) < 2 or value not in (tried[0], tried[-1]) or (axis == "weight_decay" and value == 0 == tried[0]):
            continue
        end = "smallest" if value == tried[0] else "largest"
        edges.append(f"{axis.replace('_', ' ')} {format_value(value)} is the {end} tried")
    return edges


def _sentence(ranked: list[RecipeScore], chosen: RecipeScore | None) -> str:
    unranked = [s for s in ranked if s.val is None]
    if chosen is None:
        return (
            f"no recipe chosen: validation not recorded for its {len(ranked)} recipes "
            "(test accuracy never chooses); not shown"
        )
    if chosen.val is None:
        return f"one recipe tried ({chosen.label}), validation not recorded; test shown"
    lead = "recipe chosen on validation accuracy" if len(ranked) > 1 else "one recipe tried"
    note = (
        f"; {len(unranked)} recipe{'s' if len(unranked) > 1 else ''} without validation not ranked"
        if unranked
        else ""
    )
    edges = grid_edges(chosen, ranked)
    edge = f"; at the edge of its grid ({', '.join(edges)}): extend the grid" if edges else ""
    return f"{lead}: {chosen.label} (mean val {chosen.val.mean:.1f} over {chosen.over()}){note}{edge}; test shown"


def choose_group(key: str, records: list[CellRecord]) -> GroupChoice:
    """Rank one setting's recipes on their finished cells' validation accuracy; `records` are finished."""
    recipes: dict[str, list[CellRecord]] = defaultdict(list)
    for record in records:
        recipes[canonical_json(recipe_of(record))].append(record)
    settings = [recipe_of(rs[0]) for rs in recipes.values()]
    axes = varying_axes(settings) or ["lr"]
    seeds = len({r.params.seed for r in records})
    scores = [
        _score(s, describe(s, axes), rs, seeds) for s, rs in zip(settings, recipes.values(), strict=True)
    ]
    scored = sorted((s for s in scores if s.val), key=_rank_key)
    ranked = scored + sorted((s for s in scores if not s.val), key=lambda s: canonical_json(s.recipe))
    chosen = scored[0] if scored else (scores[0] if len(scores) == 1 else None)
    return GroupChoice(key, ranked, chosen, _sentence(ranked, chosen))


def choose_recipes(records: Iterable[CellRecord]) -> list[GroupChoice]:
    """Every setting with a finished accuracy cell, in first-recorded order, each with its chosen recipe."""
    groups: dict[str, list[CellRecord]] = defaultdict(list)
    for record in records:
        if record.status == "ok" and is_accuracy_record(record):
            groups[group_key(record)].append(record)
    return [choose_group(key, rs) for key, rs in groups.items()]
