"""Sequential comparisons of a candidate with stable that stay valid when looked at every interval.

Pure: counts in, evidence out. A fixed threshold on a noisy window, checked every interval, rolls back a healthy
candidate sooner or later; a classical test checked every interval does too (each look is another chance of a
false alarm). These tests use always-valid one-sided confidence bounds instead, from the one-sided normal mixture
of Howard, Ramdas, McAuliffe and Sekhon (2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences").
For a sum `S` of centred increments with variance process `V`, mixing exp(l S - l^2 V / 2) over l >= 0 with a
half-normal of precision `rho` gives

    2 sqrt(rho / (V + rho)) exp(S^2 / (2 (V + rho))) Phi(S / sqrt(V + rho)),

a nonnegative supermartingale, so (Ville) the chance that it ever reaches 1/alpha is at most alpha. Since
1 - Phi(x) <= exp(-x^2 / 2) / 2 for x >= 0, it has reached 1/alpha once

    S >= u(V) = sqrt(2 (V + rho) log(sqrt((V + rho) / rho) / (2 alpha) + 1)):

a closed-form boundary that the sum crosses, at any look however many there are, with chance at most alpha.
Counting time in the candidate's samples (the sum standardised by the contrast's variance per candidate sample,
so V = n) and dividing by n, it bounds an estimate of variance `v` after n samples by `sqrt(v) * z(n)` with
z(n) = sqrt(2 (1 + rho / n) log(sqrt(1 + n / rho) / (2 alpha) + 1)). `rho` is a constant of each bound
(WORSE_MIXING, WITHIN_MIXING): a mixture over a parameter chosen from the data would not be one. The variance is the plug-in estimate at each look, which
makes the bound asymptotic (Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas 2021, "Time-uniform central limit
theory and asymptotic confidence sequences").

A check's verdict takes two one-sided bounds, each at alpha: the candidate is worse when the upper bound of its
contrast with the tolerated edge lies below the edge, within when the lower bound lies above it, and otherwise "not
enough evidence yet".

Two comparisons:
- proportions built from counts (accuracy = correct / graded, error rate = errors / requests): the contrast
  `p_candidate - (1 - tolerance) * p_stable` (higher is better) or `(1 + tolerance) * p_stable - p_candidate`
  (lower is better), with the binomial variance of each side (the candidate's the larger of its own and the one
  it would have at the edge);
- latency from Prometheus histogram buckets, as a proportion too: the share of each version's requests slower
  than the bucket bound nearest stable's p50, p95 or p99 (the tail the check is named for), read as exact counts
  at a bound both histograms have, never interpolated within a bucket (a bucket spans a factor of 2 to 2.5 in
  the usual layouts, far more than the tolerances users set on latency itself).

Both rest on the normal approximation of the estimate, which needs a few dozen samples on each side: below
MIN_SAMPLES per version there is no verdict.

A proportion's variance is the binomial one unless its counts vary more from one interval to the next than
independent samples would (errors that come in bursts, a bad minute of labels): then the spread between intervals
(batch means, see Intervals) stands for it. It is never below the binomial form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ..api.base import StatusModel

MIN_SAMPLES = 30
"""Samples each version needs before the normal approximation, and so any verdict, is trusted."""
MAX_SAMPLES = 2**53
"""Sample counts above this are clamped: exact in JSON, and far beyond any minSamples or maxSamples."""
WORSE_MIXING = 50
"""The worse bound's `rho`, in the candidate's samples. A constant, so the same at every look and after a restart.
Chosen by simulation for detection speed on differences of the size these checks exist to catch, which take a few
hundred samples: an accuracy of 0.97 against 0.92 and an error rate of 1 % against 3 %, each with a 4x larger
stable (25 to 100 came out within 6 % of each other there; 400 was 15 to 35 % slower). Against Wald's SPRT at the
same looks (bench.stats) 50 was the fastest tried, 35 and 70 within 3 %; 200 was up to 20 % slower and let a candidate
at the edge be rolled back more than alpha / 2 of the time over 1,000 looks."""
WITHIN_MIXING = 500
"""The within bound's `rho`: proving a healthy candidate within the tolerance takes thousands of samples, where a
larger `rho` is tighter (the documented healthy rollouts of the errors check were promoted in 23 minutes rather than
28 with 50)."""


class Finding(str, Enum):
    worse = "worse"
    """Worse than the tolerated degradation, with the confidence asked for: a failure."""
    within = "within"
    """Within the tolerated degradation, with that confidence: a pass."""
    undecided = "undecided"
    """Not enough evidence yet either way: the check is undecided (not missing data)."""


@dataclass(frozen=True)
class Evidence:
    finding: Finding
    estimate: float
    """The compared quantity's estimate (see the comparison)."""
    low: float
    high: float
    """Its one-sided bounds, each at the confidence asked for."""


def boundary(samples: float, alpha: float, rho: float) -> float:
    """z(n): the one-sided bound after `samples` samples, in standard errors of the estimate (see above)."""
    ratio = samples / rho
    return math.sqrt(2 * (1 + 1 / ratio) * math.log(math.sqrt(1 + ratio) / (2 * alpha) + 1))


@dataclass(frozen=True)
class Contrast:
    """A contrast with the tolerated edge (0 is the edge, worse is below it) and its one-sided bounds. Arithmetic
    and comparisons only, so that arrays of counts (one per simulated rollout) work as well as numbers."""

    estimate: float
    high: float
    """The upper bound: below 0, the candidate is worse."""
    low: float
    """The lower bound: above 0, the candidate is within."""

    @property
    def worse(self) -> bool:
        return self.high < 0

    @property
    def within(self) -> bool:
        return self.low > 0


def _confidence_alpha(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return 1 - confidence


class Intervals(StatusModel):
    """One version's counts between consecutive analyses, kept as sums: a fixed size however long the rollout, and
    enough for the spread of its rate from one interval to the next."""

    looks: int = 0
    """Intervals counted."""
    hits: float = 0.0
    """Hits since the rollout began, as of the last analysis: where the next interval starts."""
    total: float = 0.0
    """Samples since the rollout began, as of the last analysis."""
    sum_hits: float = 0.0
    """Sum over the intervals of their hits h."""
    sum_total: float = 0.0
    """Sum of their samples n."""
    sum_hits_squared: float = 0.0
    """Sum of h^2."""
    sum_hits_total: float = 0.0
    """Sum of h n."""
    sum_total_squared: float = 0.0
    """Sum of n^2."""

    def rate_variance(self, total: float) -> float | None:
        """The variance of the rate over `total` samples (the cumulative count) as the intervals' spread shows it:
        the batch-means (ratio estimator) form k/(k-1) * sum((h - p n)^2) / (sum(n) * total), p = sum(h) / sum(n).
        It grows with bursts however they are spread, and is about the binomial variance when there are none.
        None before two intervals."""
        if self.looks < 2 or self.sum_total <= 0 or total <= 0:
            return None
        p = self.sum_hits / self.sum_total
        residuals = self.sum_hits_squared - 2 * p * self.sum_hits_total + p * p * self.sum_total_squared
        return self.looks / (self.looks - 1) * max(residuals, 0.0) / (self.sum_total * total)


def fold(intervals: Intervals | None, hits: float, total: float) -> Intervals:
    """`intervals` with the one that ends at a look counting `hits` of `total` since the rollout began (None: the
    first look, whose interval starts at 0). A look with no new samples, or fewer than the last one counted, adds
    no interval and only moves the start of the next."""
    base = intervals or Intervals()
    h, n = hits - base.hits, total - base.total
    if n <= 0:
        return base.model_copy(update={"hits": hits, "total": total})
    return Intervals(looks=base.looks + 1, hits=hits, total=total, sum_hits=base.sum_hits + h,
                     sum_total=base.sum_total + n, sum_hits_squared=base.sum_hits_squared + h * h,
                     sum_hits_total=base.sum_hits_total + h * n, sum_total_squared=base.sum_total_squared + n * n)


@dataclass(frozen=True)
class Proportion:
    hits: float
    """Events counted (correct predictions, errors); a query's ratio times its count may make it fractional."""
    total: float
    intervals: Intervals | None = None
    """How the counts came in, look by look: their spread raises the variance above the binomial one."""

    @property
    def rate(self) -> float:
        return self.hits / self.total

    @property
    def variance_term(self) -> float:
        """p (1 - p) / n with p pulled off 0 and 1 (Agresti-Coull style), so that a version without a single error
        yet does not look certain; or the intervals' spread (Intervals.rate_variance) where that is larger."""
        p = (self.hits + 1) / (self.total + 2)
        binomial = p * (1 - p) / self.total
        spread = self.intervals.rate_variance(self.total) if self.intervals is not None else None
        return binomial if spread is None else max(binomial, spread)


def proportion_contrast(candidate: Proportion, stable: Proportion, *, tolerance: float, higher_is_better: bool,
                        alpha: float) -> Contrast:
    """`candidate` against `stable` allowed `tolerance` (a fraction of stable's rate) of degradation, each bound
    one-sided at `alpha`. The candidate's total must be a number; its hits and stable's counts may be arrays."""
    scale = (1 - tolerance) if higher_is_better else (1 + tolerance)
    contrast = candidate.rate - scale * stable.rate
    if not higher_is_better:
        contrast = -contrast
    edge = scale * stable.rate
    edge = (edge + 1 - abs(edge - 1)) / 2  # min(edge, 1), arithmetic only: a rate cannot pass 1
    # The larger of the candidate's variance as seen and as it is at the edge (the hypothesis both bounds test):
    # the one seen alone narrows the bounds whenever chance makes the candidate look better (fewer errors, more
    # accuracy), so "within" comes too often; the edge's alone, when it looks worse, so rollbacks do.
    seen, at_edge = candidate.variance_term, Proportion(edge * candidate.total, candidate.total).variance_term
    variance = (seen + at_edge + abs(seen - at_edge)) / 2 + scale * scale * stable.variance_term
    error = variance ** 0.5
    return Contrast(contrast, contrast + error * boundary(candidate.total, alpha, WORSE_MIXING),
                    contrast - error * boundary(candidate.total, alpha, WITHIN_MIXING))


def samples_to_within(stable: Proportion, *, tolerance: float, higher_is_better: bool, alpha: float,
                      stable_per_candidate: float) -> float:
    """About how many candidate samples prove a candidate with stable's rate within `tolerance`: the fewest at
    which the contrast's expected value, `tolerance` times stable's rate, clears proportion_contrast's lower bound
    at `alpha`, with `stable_per_candidate` of stable's samples per candidate sample and each sample's variance
    as in `stable` (its intervals' spread included), the candidate's never below the binomial one at the edge.
    The contrast wanders about its expected value and so crosses the bound sooner in some rollouts: simulated
    (tests/unit/test_budget_warning.py), half of such candidates were proven within by 0.75 to 1 times this.
    inf when no count up to MAX_SAMPLES does (no tolerance, a rate of 0)."""
    rate = stable.rate
    contrast = tolerance * rate
    if contrast <= 0 or stable_per_candidate <= 0:
        return math.inf
    scale = (1 - tolerance) if higher_is_better else (1 + tolerance)
    edge = min(scale * rate, 1.0)
    per_sample = stable.variance_term * stable.total
    variance = max(per_sample, edge * (1 - edge)) + scale * scale * per_sample / stable_per_candidate

    def proven(n: float) -> bool:
        return contrast * math.sqrt(n) > math.sqrt(variance) * boundary(n, alpha, WITHIN_MIXING)

    low, high = float(MIN_SAMPLES), float(MAX_SAMPLES)
    if proven(low):
        return low
    if not proven(high):
        return math.inf
    while high - low > max(1.0, low * 1e-3):  # sqrt(n) / z(n) grows with n: bisection on a ratio
        middle = math.sqrt(low * high)
        low, high = (low, middle) if proven(middle) else (middle, high)
    return high


def compare_proportions(candidate: Proportion, stable: Proportion, *, tolerance: float, higher_is_better: bool,
                        confidence: float) -> Evidence:
    """Evidence on `candidate` against `stable` allowed `tolerance` (a fraction of stable's rate) of degradation,
    each one-sided bound at 1 - `confidence`. The estimate is the contrast with stable's tolerated edge, so 0 is
    that edge and worse is below it; `low` and `high` are the two one-sided bounds."""
    c = proportion_contrast(candidate, stable, tolerance=tolerance, higher_is_better=higher_is_better,
                            alpha=_confidence_alpha(confidence))
    finding = Finding.worse if c.worse else Finding.within if c.within else Finding.undecided
    return Evidence(finding, c.estimate, c.low, c.high)


Buckets = tuple[tuple[float, float], ...]
"""A histogram as Prometheus has it: (upper bound `le`, cumulative count) pairs, +Inf the last bound."""


def bucket_total(buckets: Buckets) -> float:
    return max((count for _, count in buckets), default=0.0)


def _clean(buckets: Buckets) -> Buckets:
    """Sorted by bound, negative and NaN counts dropped, cumulative counts made non-decreasing: a bucket's series
    whose counter reset is counted by increase(), which extrapolates each bucket on its own, so neighbours can come
    out a hair out of order."""
    ordered = sorted((le, c) for le, c in buckets if not math.isnan(le) and not math.isnan(c) and c >= 0 and le >= 0)
    cleaned: list[tuple[float, float]] = []
    running = 0.0
    for le, count in ordered:
        running = max(running, count)
        cleaned.append((le, running))
    return tuple(cleaned)


NEAR = 3
"""How far (as a ratio of shares above it) the bucket bound a latency check tests at may lie from stable's quantile:
the usual layouts (1, 2.5, 5, 10 ...) have one within that of any p95 or p99 once a few hundred requests are counted."""


TAIL_SAMPLES = 30
"""Stable's requests expected beyond its quantile before a bucket bound is chosen near it: 600 for a p95, 3,000
for a p99 (fewer locate it by chance, and the bound chosen would move from one look to the next)."""


def samples_to_locate(quantile: float) -> int:
    """Stable's requests needed before a latency check on `quantile` compares anything."""
    return max(MIN_SAMPLES, math.ceil(TAIL_SAMPLES / min(quantile, 1 - quantile) - 1e-9))


class Unresolvable(ValueError):
    """The two histograms cannot answer the question asked of them (why, in words): never a verdict."""


@dataclass(frozen=True)
class Tail:
    bound: float
    """The bucket bound (`le`, seconds) nearest stable's quantile."""
    candidate: Proportion
    stable: Proportion
    """Each version's requests slower than `bound`, of all its requests: exact bucket counts."""
    too_far: str | None = None
    """Why `bound` is too far from stable's quantile to stand for it, None when it is near: its share of stable's
    requests above it must lie within a factor NEAR of the quantile's (at most halfway to the other side for the
    median), give or take three standard errors of that share."""


def nearest_bound(above: list, total, quantile: float):
    """The index in `above` (stable's requests above each bucket bound, of `total`) of the bound whose share lies
    nearest 1 - `quantile` in log-odds, the first of equals; a share of 0 or 1 counts as half a request off it.
    Arithmetic and comparisons only, so that arrays of counts (one per simulated rollout) work as well as numbers."""
    share = 1 - quantile

    def distance(count):  # 2 cosh of the log-odds difference: ordered as that difference's size, no log needed
        at_least = (count + 0.5 + abs(count - 0.5)) / 2  # max(count, 0.5)
        clamped = (at_least + total - 0.5 - abs(at_least - total + 0.5)) / 2  # min(that, total - 0.5)
        ratio = clamped / (total - clamped) * (1 - share) / share
        return ratio + 1 / ratio

    best, nearest = 0, distance(above[0])
    for i, count in enumerate(above[1:], start=1):
        d = distance(count)
        closer = d < nearest
        best, nearest = best + closer * (i - best), nearest + closer * (d - nearest)
    return best


def tail_above(candidate: Buckets, stable: Buckets, quantile: float) -> Tail:
    """The requests of each version slower than the bucket bound nearest stable's `quantile` (0.95: the bound
    with about 5 % of stable's requests above it). Counts are read at a bound both histograms have, never
    interpolated within a bucket. Raises Unresolvable when the histograms' bounds differ (other units, another
    metric generation)."""
    candidate, stable = _clean(candidate), _clean(stable)
    bounds = [le for le, _ in stable if math.isfinite(le)]
    if bounds != [le for le, _ in candidate if math.isfinite(le)]:
        raise Unresolvable(f"the versions' histograms have different buckets ({_bounds_words(candidate)} vs "
                           f"stable's {_bounds_words(stable)}): other units or another metric generation cannot be "
                           "compared")
    if not bounds:
        raise Unresolvable("the histograms have no finite bucket bound")
    n_c, n_s = bucket_total(candidate), bucket_total(stable)
    share = 1 - quantile
    below_s, below_c = dict(stable), dict(candidate)
    bound = bounds[nearest_bound([n_s - below_s[le] for le in bounds], n_s, quantile)]
    above = (n_s - below_s[bound]) / n_s
    slack = 3 * math.sqrt(above * (1 - above) / n_s)  # three standard errors: chance alone is never "too far"
    too_far = None
    if above + slack < share / NEAR or above - slack > min(NEAR * share, 1 - quantile / 2):
        too_far = (f"no bucket bound lies near stable's {percentile_name(quantile)}: the nearest, le={bound:g}, has "
                   f"{above:.1%} of stable's requests above it where {share:.1%} would be; add bucket bounds around "
                   "that latency")
    return Tail(bound, Proportion(n_c - below_c[bound], n_c), Proportion(n_s - below_s[bound], n_s), too_far)


def _bounds_words(buckets: Buckets) -> str:
    finite = [f"{le:g}" for le, _ in buckets if math.isfinite(le)]
    return "le " + ", ".join(finite[:4]) + (", ..." if len(finite) > 4 else "") if finite else "no finite le"


def percentile_name(quantile: float) -> str:
    """0.95 -> p95."""
    return f"p{quantile * 100:g}"
