"""The doubling of training time an accuracy curve is judged over: from the evaluation nearest half the last
one's time to the last. One rule for the cell that stops when its curve is flat (`stop_when_flat`) and for the
report that says whether an arm's mean curve had flattened (reports.plateau)."""

from __future__ import annotations

import math

#: How far from half the last evaluation's time (in doublings) the doubling's first evaluation may be: evaluations
#: land a step after their budgeted time, so half a doubling either way.
HALF_SLACK = 0.5


def last_doubling(curve: list[tuple[float, float]]) -> int | None:
    """Index of the point that starts `curve`'s last doubling (sorted (seconds, accuracy) points): the one nearest
    half the last point's time, after time 0 (step 0 starts no doubling); None when none is near enough."""
    if len(curve) < 2:
        return None
    until = curve[-1][0]
    earlier = [i for i, (x, _) in enumerate(curve[:-1]) if 0 < x < until]
    if not earlier:
        return None
    since = min(earlier, key=lambda i: abs(math.log2(until / curve[i][0]) - 1))
    return since if abs(math.log2(until / curve[since][0]) - 1) <= HALF_SLACK else None


def doubling_gains(curve: list[tuple[float, float]], doublings: int) -> list[tuple[float, float, float]]:
    """The last `doublings` doublings of the curve, latest first, as (since, until, points gained); fewer when the
    curve does not reach back that far."""
    gains = []
    while len(gains) < doublings and (since := last_doubling(curve)) is not None:
        (start, before), (end, after) = curve[since], curve[-1]
        gains.append((start, end, round(after - before, 6)))
        curve = curve[: since + 1]
    return gains


#: The doublings a cell's validation curve must have been flat over before `stop_when_flat` stops it: two, so that
#: one noisy evaluation does not end a cell that is still learning.
STOP_DOUBLINGS = 2
#: The share of its budget a cell trains before `stop_when_flat` may stop it: a method that starts slowly (MeZO
#: barely moves in its first steps) is not judged on its first doublings.
STOP_FROM = 0.25


def flat_stop(points: float | None, curve: list[dict[str, float]], share: float) -> str | None:
    """Why a cell stops now (`points`: its stop_when_flat; `curve`: its evaluations so far; `share`: of its budget
    spent), or None: from STOP_FROM of its budget on, its validation accuracy gained under `points` over each of
    its last STOP_DOUBLINGS doublings of training time."""
    if points is None or share < STOP_FROM:
        return None
    validation = [(p["seconds"], p["val_accuracy"]) for p in curve if p.get("val_accuracy") is not None]
    gains = doubling_gains(validation, STOP_DOUBLINGS)
    if len(gains) < STOP_DOUBLINGS or any(gain >= points for _, _, gain in gains):
        return None
    spans = ", ".join(f"{gain:+.2f} from {start:,.0f} to {end:,.0f} s" for start, end, gain in gains)
    return f"validation gained under {points:g} points over each of the last {STOP_DOUBLINGS} doublings ({spans})"
