"""A paired comparison of two sides, A and B, on the same examples of one split (two arms, an arm and its own
step 0, or a cell and its baseline: reports.pairs): the difference in accuracy, its 95 % interval and a p-value
(numpy and scipy only).

Why paired. Two sides scored on the same examples share their hard examples: comparing the two accuracies as if
they were independent counts that shared variance twice and cannot tell a 3-point change on 1,275 examples from
noise. Compared example by example, only the examples the sides disagree on carry information.

Why over examples *and* seeds. The seeds of a side are scored on one evaluation set, so their spread is the
training noise alone: it says nothing about which examples happened to be drawn, which is usually the larger
uncertainty (a binomial standard error of 1 point at 87 % on 1,066 examples). A two-level bootstrap resamples
both: each resample draws the seeds of each side with replacement (one draw for both sides when they are the same
training runs, as an arm against its own step 0 is), averages each example's correctness over the drawn seeds,
then draws the examples with replacement and takes the mean difference. The 2.5th and 97.5th percentiles of
RESAMPLES such differences are the interval (a percentile bootstrap); the generator's seed is fixed, so a
report is reproducible. It is vectorised: a resample's seed draw is a weight per seed and its example draw a
count per example, so every resample is one matrix product.

The p-value. With one seed per side, McNemar's exact test (scipy.stats.binomtest): under no difference each of
the m examples the sides disagree on is as likely to favour either, so the count favouring A is Binomial(m, 1/2),
exact at any m. With several seeds an example's correctness is a share, not a bit, so the p-value is the
bootstrap's: twice the share of resampled differences on the far side of zero ((count + 1) / (resamples + 1),
so never 0).

The verdict (`decisive`): the interval excludes zero, strictly (identical predictions give [0, 0], which does
not), *and* p < ALPHA. From one bootstrap the two agree; with one seed they can disagree when few examples
differ (5 examples flipped one way: no resample draws one against A, so the interval excludes zero, while
McNemar's p is 2 / 2^5 = 0.0625), and requiring both keeps the verdict on the exact test there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

ALPHA = 0.05
CONFIDENCE = 0.95
RESAMPLES = 5000
RNG_SEED = 20261223  # fixed: the same predictions always give the same interval
CHUNK = 1000  # resamples drawn at once (bounds memory: CHUNK x examples counts)
MCNEMAR = "McNemar exact test; paired bootstrap interval over examples"
BOOTSTRAP = "paired bootstrap over seeds and examples"


class PairingError(ValueError):
    """Evaluations that cannot be paired: none, or not of the same examples."""


@dataclass(frozen=True, eq=False)
class Scored:
    """One evaluation of one seed on one split: the examples' positions and whether each was classified right."""

    examples: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus that of B, in percentage points, with its interval and p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    method: str
    examples: int
    seeds_a: int
    seeds_b: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def decisive(self) -> bool:
        """A real difference: the interval excludes zero and p < ALPHA (see the module's docstring)."""
        return self.excludes_zero and self.p_value < ALPHA

    def interval(self) -> str:
        """`95% CI +2.1 to +3.9`."""
        return f"{CONFIDENCE:.0%} CI {self.low:+.1f} to {self.high:+.1f}"

    def p_text(self) -> str:
        return "p<0.001" if self.p_value < 0.001 else f"p={self.p_value:.3f}"

    def figures(self) -> str:
        """`paired 95% CI +2.1 to +3.9, McNemar p<0.001, 1,275 examples`: what stands beside a stated difference."""
        test = "McNemar" if self.method == MCNEMAR else "bootstrap"
        seeds = "" if self.seeds_a == self.seeds_b == 1 else f", {self.seeds_a} vs {self.seeds_b} seeds"
        return f"paired {self.interval()}, {test} {self.p_text()}, {self.examples:,} examples{seeds}"

    def describe(self) -> str:
        """`+3.0 points (paired 95% CI +2.1 to +3.9, McNemar p<0.001, 1,275 examples)`."""
        return f"{self.difference:+.1f} points ({self.figures()})"


def _matrix(scored: Sequence[Scored], examples: np.ndarray, side: str) -> np.ndarray:
    rows = []
    for i, s in enumerate(scored):
        if not np.array_equal(np.asarray(s.examples), examples):
            raise PairingError(f"{side}'s seed {i + 1} scored other examples than the first seed of A")
        correct = np.asarray(s.correct)
        if correct.shape != examples.shape:
            raise PairingError(f"{side}'s seed {i + 1}: {correct.size} results for {examples.size} examples")
        rows.append(correct.astype(bool))
    return np.asarray(rows, dtype=np.float64)


def _seed_weights(rng: np.random.Generator, resamples: int, seeds: int) -> np.ndarray:
    """Per resample, each seed's weight in a draw of `seeds` seeds with replacement (rows sum to 1)."""
    if seeds == 1:
        return np.ones((resamples, 1))
    return rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=resamples) / seeds


def _example_accuracy(rng: np.random.Generator, resamples: int, *matrices: np.ndarray) -> list[np.ndarray]:
    """Per resample of the examples (with replacement), every seed's accuracy of each side (resamples x seeds)."""
    n = matrices[0].shape[1]
    out: list[list[np.ndarray]] = [[] for _ in matrices]
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        drawn = rng.integers(0, n, size=(rows, n))
        counts = np.bincount((drawn + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n)
        counts = counts.reshape(rows, n).astype(np.float64)
        for side, matrix in zip(out, matrices, strict=True):
            side.append(counts @ matrix.T / n)
    return [np.concatenate(side) for side in out]


def _mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    favour_a = int(np.sum((a > 0) & (b == 0)))
    discordant = favour_a + int(np.sum((a == 0) & (b > 0)))
    return 1.0 if discordant == 0 else float(binomtest(favour_a, discordant, 0.5).pvalue)


def paired_difference(
    a: Sequence[Scored],
    b: Sequence[Scored],
    same_seeds: bool = False,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> PairedDifference:
    """Accuracy of side A minus side B over the same examples, per seed the evaluations in `a` and `b`.

    `same_seeds`: a[i] and b[i] are one training run (an arm's final evaluation against its own step 0), so
    seeds are drawn once for both; otherwise each side's seeds are drawn on their own. PairingError when a side
    has no evaluation, the evaluations score different examples (positions, in order), or `same_seeds` is
    asked of sides with different numbers of seeds.
    """
    if not a or not b:
        raise PairingError("a side has no evaluation to pair")
    examples = np.asarray(a[0].examples)
    if examples.ndim != 1 or examples.size == 0:
        raise PairingError("no examples to pair")
    try:
        matrix_a = _matrix(a, examples, "A")
        matrix_b = _matrix(b, examples, "B")
    except PairingError as exc:
        raise PairingError(f"not the same examples: {exc}") from None
    if same_seeds and len(a) != len(b):
        raise PairingError(f"paired seeds need as many in each side ({len(a)} vs {len(b)})")
    rng = np.random.default_rng(seed)
    accuracy_a, accuracy_b = _example_accuracy(rng, resamples, matrix_a, matrix_b)
    weights_a = _seed_weights(rng, resamples, len(a))
    weights_b = weights_a if same_seeds else _seed_weights(rng, resamples, len(b))
    resampled = 100 * ((weights_a * accuracy_a).sum(axis=1) - (weights_b * accuracy_b).sum(axis=1))
    low, high = np.quantile(resampled, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    if len(a) == len(b) == 1:
        method, p_value = MCNEMAR, _mcnemar(matrix_a[0], matrix_b[0])
    else:
        far_side = min(int(np.sum(resampled <= 0)), int(np.sum(resampled >= 0)))
        method, p_value = BOOTSTRAP, min(1.0, 2 * (far_side + 1) / (resamples + 1))
    return PairedDifference(
        difference=float(100 * (matrix_a.mean() - matrix_b.mean())),
        low=float(low),
        high=float(high),
        p_value=p_value,
        method=method,
        examples=int(examples.size),
        seeds_a=len(a),
        seeds_b=len(b),
    )


@dataclass(frozen=True)
class Interval:
    """One side's accuracy (percent) over its seeds and examples, with the same two-level bootstrap's interval."""

    mean: float
    low: float
    high: float
    seeds: int

    def describe(self) -> str:
        """`87.4 (95% CI 86.0 to 88.9, n=3)`."""
        return f"{self.mean:.1f} ({CONFIDENCE:.0%} CI {self.low:.1f} to {self.high:.1f}, n={self.seeds})"


def accuracy_interval(scored: Sequence[Scored], resamples: int = RESAMPLES, seed: int = RNG_SEED) -> Interval:
    """The accuracy of these seeds' evaluations on the same examples, with the percentile interval of the bootstrap
    that draws seeds and examples (PairingError as `paired_difference`)."""
    if not scored:
        raise PairingError("no evaluation to score")
    examples = np.asarray(scored[0].examples)
    if examples.ndim != 1 or examples.size == 0:
        raise PairingError("no examples to score")
    matrix = _matrix(scored, examples, "A")
    rng = np.random.default_rng(seed)
    (accuracy,) = _example_accuracy(rng, resamples, matrix)
    resampled = 100 * (_seed_weights(rng, resamples, len(scored)) * accuracy).sum(axis=1)
    low, high = np.quantile(resampled, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(float(100 * matrix.mean()), float(low), float(high), len(scored))
