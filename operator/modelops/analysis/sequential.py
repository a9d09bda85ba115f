"""Sequential comparisons of a candidate with stable that stay valid when looked at every interval.

Pure: counts in, evidence out. A fixed threshold on a noisy window, checked every interval, rolls back a healthy
candidate sooner or later; a classical test checked every interval does too (each look is another chance of a
false alarm). These tests use always-valid confidence sequences instead: the normal-mixture sequential
probability ratio test (mSPRT; Robbins 1970, as Johari, Pekelis and Walsh apply it to A/B tests). For an estimate
`theta` with variance `V` and a normal mixing distribution of variance `tau^2` around the tested value, the
mixture likelihood ratio is

    sqrt(V / (V + tau^2)) * exp((theta - theta0)^2 * tau^2 / (2 V (V + tau^2)))

and the set of `theta0` where it stays below 1/alpha is a confidence sequence: the chance that it ever excludes
the true value, over every look however many there are, is at most alpha. A check's verdict follows from where
the sequence lies against the tolerated degradation: wholly beyond it is a failure, wholly within it a pass, and
astride it "not enough evidence yet".

Two comparisons:
- proportions built from counts (accuracy = correct / graded, error rate = errors / requests): the contrast
  `p_candidate - (1 - tolerance) * p_stable` (higher is better) or `(1 + tolerance) * p_stable - p_candidate`
  (lower is better), with the binomial variance of each side;
- latency distributions from Prometheus histogram buckets: the Mann-Whitney probability that a candidate's
  request is slower than a stable one's whose latency is scaled by `1 + tolerance` (0.5 when they are alike),
  with each version's latencies spread evenly within a bucket (as histogram_quantile assumes) and the Hanley and
  McNeil variance of that probability.

Both rest on the normal approximation of the estimate, which needs a few dozen samples on each side: below
MIN_SAMPLES per version there is no verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

MIN_SAMPLES = 30
"""Samples each version needs before the normal approximation, and so any verdict, is trusted."""
MAX_SAMPLES = 2**53
"""Sample counts above this are clamped: exact in JSON, and far beyond any minSamples or maxSamples."""
PROPORTION_TAU = 0.5
"""Mixing standard deviation of the proportion contrast, as a share of the rarer outcome's rate (stable's and the
candidate's pooled): differences of the size these checks exist to catch, an accuracy of 0.90 against 0.855 (0.045
of the errors' 0.10) as much as an error rate of 1 % against 2 %."""
SLOWER_TAU = 0.05
"""Mixing standard deviation of the probability of being slower: 0.55 instead of 0.5 is a clear shift."""


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
    """The confidence sequence's current interval for it."""


def half_width(variance: float, tau: float, alpha: float) -> float:
    """Half the width of the mSPRT confidence sequence around an estimate of the given variance."""
    if variance <= 0:
        return 0.0
    tau2 = tau * tau
    total = variance + tau2
    return math.sqrt(2 * variance * total / tau2 * math.log(math.sqrt(total / variance) / alpha))


def _verdict(estimate: float, width: float, worse_below: bool) -> Evidence:
    """`estimate` compared with 0, the edge of the tolerated degradation; worse lies below it when `worse_below`."""
    low, high = estimate - width, estimate + width
    if (high < 0) if worse_below else (low > 0):
        finding = Finding.worse
    elif (low > 0) if worse_below else (high < 0):
        finding = Finding.within
    else:
        finding = Finding.undecided
    return Evidence(finding, estimate, low, high)


def _confidence_alpha(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return 1 - confidence


@dataclass(frozen=True)
class Proportion:
    hits: float
    """Events counted (correct predictions, errors); Prometheus' increase() may make it fractional."""
    total: float

    @property
    def rate(self) -> float:
        return self.hits / self.total

    @property
    def variance_term(self) -> float:
        """p (1 - p) / n with p pulled off 0 and 1 (Agresti-Coull style), so that a version without a single error
        yet does not look certain."""
        p = (self.hits + 1) / (self.total + 2)
        return p * (1 - p) / self.total


def usable(count: float | None) -> bool:
    return count is not None and math.isfinite(count) and count >= MIN_SAMPLES


def compare_proportions(candidate: Proportion, stable: Proportion, *, tolerance: float, higher_is_better: bool,
                        confidence: float) -> Evidence:
    """Evidence on `candidate` against `stable` allowed `tolerance` (a fraction of stable's rate) of degradation.
    The estimate is the contrast with stable's tolerated edge, so 0 is that edge and worse is below it."""
    alpha = _confidence_alpha(confidence)
    scale = (1 - tolerance) if higher_is_better else (1 + tolerance)
    contrast = candidate.rate - scale * stable.rate
    if not higher_is_better:
        contrast = -contrast
    variance = candidate.variance_term + scale * scale * stable.variance_term
    pooled = (candidate.hits + stable.hits + 1) / (candidate.total + stable.total + 2)
    tau = PROPORTION_TAU * min(pooled, 1 - pooled)
    return _verdict(contrast, half_width(variance, tau, alpha), worse_below=True)


Buckets = tuple[tuple[float, float], ...]
"""A histogram as Prometheus has it: (upper bound `le`, cumulative count) pairs, +Inf the last bound."""


def bucket_total(buckets: Buckets) -> float:
    return max((count for _, count in buckets), default=0.0)


def _cdf_at(buckets: Buckets, x: float) -> float:
    """Cumulative count at `x`, spreading each bucket's count evenly over it (the first bucket starts at 0)."""
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if x < le:
            if math.isinf(le):
                return below
            return below + (count - below) * (x - lower) / (le - lower) if le > lower else below
        lower, below = le, count
    return below


def _clean(buckets: Buckets) -> Buckets:
    """Sorted by bound, negative and NaN counts dropped, cumulative counts made non-decreasing: increase()
    extrapolates each bucket on its own, so neighbours can come out a hair out of order."""
    ordered = sorted((le, c) for le, c in buckets if not math.isnan(le) and not math.isnan(c) and c >= 0 and le >= 0)
    cleaned: list[tuple[float, float]] = []
    running = 0.0
    for le, count in ordered:
        running = max(running, count)
        cleaned.append((le, running))
    return tuple(cleaned)


def probability_slower(candidate: Buckets, stable: Buckets, stable_scale: float = 1.0) -> float:
    """P(a candidate request is slower than a stable one scaled by `stable_scale`), ties counted half: the
    Mann-Whitney statistic divided by the product of the counts."""
    candidate, stable = _clean(candidate), _clean(tuple((le * stable_scale, c) for le, c in stable))
    n_c, n_s = bucket_total(candidate), bucket_total(stable)
    edges = sorted({0.0} | {le for le, _ in candidate + stable if math.isfinite(le)})
    slower, stable_below = 0.0, 0.0
    prev_c = prev_s = 0.0
    for edge in edges[1:] + [math.inf]:
        at_c = n_c if math.isinf(edge) else _cdf_at(candidate, edge)
        at_s = n_s if math.isinf(edge) else _cdf_at(stable, edge)
        mass_c, mass_s = (at_c - prev_c) / n_c, (at_s - prev_s) / n_s
        # Within one interval both are spread evenly, so either is slower half the time.
        slower += mass_c * (stable_below + mass_s / 2)
        stable_below += mass_s
        prev_c, prev_s = at_c, at_s
    return slower


def _auc_variance(a: float, n_c: float, n_s: float) -> float:
    """Hanley and McNeil's variance of a Mann-Whitney probability `a` from samples of n_c and n_s."""
    a = min(max(a, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (n_c - 1) * (q1 - a * a) + (n_s - 1) * (q2 - a * a)) / (n_c * n_s)


def compare_latencies(candidate: Buckets, stable: Buckets, *, tolerance: float, confidence: float) -> Evidence:
    """Evidence on the candidate's latencies against stable's allowed `tolerance` (a fraction) slower. The estimate
    is 0.5 minus the probability of being slower than stable scaled by 1 + tolerance: 0 is the tolerated edge,
    worse is below it, as for proportions."""
    alpha = _confidence_alpha(confidence)
    a = probability_slower(candidate, stable, 1 + tolerance)
    variance = _auc_variance(a, bucket_total(_clean(candidate)), bucket_total(_clean(stable)))
    return _verdict(0.5 - a, half_width(variance, SLOWER_TAU, alpha), worse_below=True)
