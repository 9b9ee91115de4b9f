"""The paired test of reports.paired on synthetic predictions: it flags a 3-point change on 1,275 examples (38
examples flipped one way) and flags neither identical predictions nor 20 flips each way; seeds, refusals,
determinism and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from reports.paired import BOOTSTRAP, MCNEMAR, PairedDifference, PairingError, Scored, paired_difference

N = 1275
EXAMPLES = np.arange(3, 3 + 2 * N, 2)


def _base(seed: int = 0, accuracy: float = 0.87) -> np.ndarray:
    return np.random.default_rng(seed).random(N) < accuracy


def _flipped(correct: np.ndarray, up: int = 0, down: int = 0) -> np.ndarray:
    """`correct` with `up` wrong examples made right and `down` right ones made wrong."""
    out = correct.copy()
    out[np.flatnonzero(~correct)[:up]] = True
    out[np.flatnonzero(correct)[:down]] = False
    return out


def _one(correct: np.ndarray, examples: np.ndarray = EXAMPLES) -> list[Scored]:
    return [Scored(examples, correct)]


def test_38_examples_flipped_one_way_is_a_3_point_change_it_flags():
    base = _base()
    result = paired_difference(_one(_flipped(base, up=38)), _one(base))
    assert result.difference == pytest.approx(100 * 38 / N)  # 2.98 points
    assert 0 < result.low < result.difference < result.high
    assert result.p_value < 0.05 and result.method == MCNEMAR
    assert result.p_value == pytest.approx(2 * 0.5**38)  # McNemar exact: 38 discordant pairs, all one way
    assert result.excludes_zero and result.decisive
    assert (result.examples, result.seeds_a, result.seeds_b) == (N, 1, 1)
    # The same change the other way is as decisive, with the interval below zero.
    reverse = paired_difference(_one(base), _one(_flipped(base, up=38)))
    assert reverse.high < 0 and reverse.decisive and reverse.difference == pytest.approx(-result.difference)


def test_identical_predictions_are_not_flagged():
    base = _base()
    result = paired_difference(_one(base), _one(base.copy()))
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not result.excludes_zero and not result.decisive  # [0, 0] does not exclude zero


def test_20_flips_each_way_are_not_flagged():
    base = _base()
    result = paired_difference(_one(_flipped(base, up=20, down=20)), _one(base))
    assert result.difference == 0.0
    assert result.low < 0 < result.high and result.p_value == pytest.approx(1.0)
    assert not result.excludes_zero and not result.decisive


def test_few_flips_one_way_exclude_zero_but_mcnemar_is_not_significant():
    """5 flips one way: no bootstrap resample goes against A (its interval excludes zero), but McNemar's exact p is
    2/2^5 = 0.0625: the verdict needs both."""
    base = _base()
    result = paired_difference(_one(_flipped(base, up=5)), _one(base))
    assert result.excludes_zero and result.p_value == pytest.approx(0.0625)
    assert not result.decisive
    assert paired_difference(_one(_flipped(base, up=12)), _one(base)).decisive  # p = 2/2^12


def test_several_seeds_per_arm_a_real_change_and_no_change():
    seeds = [_base(s) for s in range(3)]
    better = [_flipped(c, up=38) for c in seeds]
    result = paired_difference([Scored(EXAMPLES, c) for c in better], [Scored(EXAMPLES, c) for c in seeds])
    assert result.method == BOOTSTRAP and (result.seeds_a, result.seeds_b) == (3, 3)
    assert result.difference == pytest.approx(100 * 38 / N)
    assert result.decisive and result.low > 0 and result.p_value < 0.05
    # Drawn on their own, the seeds of two arms add their spread to the interval; paired (the same training
    # runs, as an arm against its own step 0) they do not.
    paired = paired_difference(
        [Scored(EXAMPLES, c) for c in better], [Scored(EXAMPLES, c) for c in seeds], same_seeds=True
    )
    assert paired.high - paired.low < result.high - result.low and paired.decisive
    # Seeds that differ only in which examples they get right, at the same accuracy: no difference.
    swapped = [_flipped(c, up=20, down=20) for c in seeds]
    noise = paired_difference([Scored(EXAMPLES, c) for c in swapped], [Scored(EXAMPLES, c) for c in seeds])
    assert noise.low < 0 < noise.high and noise.p_value > 0.05 and not noise.decisive
    same = paired_difference([Scored(EXAMPLES, c) for c in seeds], [Scored(EXAMPLES, c) for c in seeds])
    assert same.p_value == 1.0 and not same.decisive


def test_the_seeds_spread_widens_the_interval():
    """Two seeds of one arm far apart (one 6 points better) make the arm's mean uncertain, although every example
    of each seed is paired."""
    base = _base()
    steady = paired_difference(
        [Scored(EXAMPLES, _flipped(base, up=38))] * 2, [Scored(EXAMPLES, base)] * 2
    )
    spread = paired_difference(
        [Scored(EXAMPLES, base), Scored(EXAMPLES, _flipped(base, up=76))], [Scored(EXAMPLES, base)] * 2
    )
    assert steady.difference == pytest.approx(spread.difference)
    assert spread.high - spread.low > 2 * (steady.high - steady.low)


@pytest.mark.parametrize(
    "a, b, same_seeds, message",
    [
        ([], [EXAMPLES], False, "no evaluation"),
        ([EXAMPLES], [EXAMPLES[::-1]], False, "not the same examples: B's seed 1"),  # same set, other order
        ([EXAMPLES], [EXAMPLES + 1], False, "not the same examples"),
        ([EXAMPLES, EXAMPLES[:-1]], [EXAMPLES], False, "A's seed 2"),
        ([EXAMPLES, EXAMPLES], [EXAMPLES], True, "as many in each side (2 vs 1)"),
        ([EXAMPLES[:0]], [EXAMPLES[:0]], False, "no examples"),
    ],
)
def test_evaluations_of_other_examples_are_refused(a, b, same_seeds, message):
    def side(positions):
        return [Scored(e, np.ones(len(e), dtype=bool)) for e in positions]

    with pytest.raises(PairingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        paired_difference(side(a), side(b), same_seeds=same_seeds)
    # The control: the same shapes over matching examples pair.
    assert isinstance(paired_difference(side([EXAMPLES]), side([EXAMPLES])), PairedDifference)


def test_a_correct_vector_of_the_wrong_length_is_refused():
    with pytest.raises(PairingError, match="1274 results for 1275 examples"):
        paired_difference(_one(_base()), [Scored(EXAMPLES, _base()[:-1])])


def test_the_same_predictions_always_give_the_same_interval():
    base = _base()
    a, b = _one(_flipped(base, up=30, down=10)), _one(base)
    first, second = paired_difference(a, b), paired_difference(a, b)
    assert first == second
    other_seed = paired_difference(a, b, seed=1)
    assert (other_seed.low, other_seed.high) != (first.low, first.high)  # the generator's seed is what fixes it
    assert other_seed.low == pytest.approx(first.low, abs=0.3) and other_seed.difference == first.difference


def test_1275_examples_3_seeds_2_arms_take_well_under_a_second():
    seeds = [_base(s) for s in range(3)]
    a = [Scored(EXAMPLES, _flipped(c, up=38)) for c in seeds]
    b = [Scored(EXAMPLES, c) for c in seeds]
    paired_difference(a, b)  # warm up (scipy, numpy's first allocations)
    start = time.perf_counter()
    paired_difference(a, b)
    assert time.perf_counter() - start < 0.5


def test_descriptions_carry_the_interval_and_the_test():
    base = _base()
    result = paired_difference(_one(_flipped(base, up=38)), _one(base))
    assert result.describe() == (
        f"+3.0 points (paired 95% CI {result.low:+.1f} to {result.high:+.1f}, McNemar p<0.001, 1,275 examples)"
    )
    seeds = paired_difference([Scored(EXAMPLES, base)] * 2, [Scored(EXAMPLES, base)] * 3)
    assert seeds.figures() == "paired 95% CI +0.0 to +0.0, bootstrap p=1.000, 1,275 examples, 2 vs 3 seeds"
