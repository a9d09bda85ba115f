"""Input drift judged as a test: binned counts of a version's live inputs against its reference's counts.

Pure: counts in, evidence out. For each feature, the live inputs and the reference (training) inputs are two
samples binned alike, a 2 x bins table; a cell's expected count is its row's total times its bin's share of both
rows. The reference is a sample too, so it is a row of the table rather than exact shares: a live window far
larger than the reference cannot find its sampling noise to be drift. The Cressie-Read power-divergence statistic
with lambda = 2/3,

    9/5 * sum over cells observed * ((observed / expected)^(2/3) - 1),

has (without drift) about a chi-square distribution with bins - 1 degrees of freedom once every cell expects a few
inputs; its p-value is that distribution's upper tail at the statistic. Cressie and Read recommend lambda = 2/3 for
how closely it follows the chi-square distribution in the tail, where a test at a small alpha decides. Bins without
an input on either side say nothing and are left out.

A rollout looks many times (one analysis per interval) at several features, and each look at each feature is one
more chance of a false alarm. The test spends its alpha = 1 - confidence up front over both (Bonferroni): each
look at each feature is tested at alpha / (looks * features). The chance that a version without drift fails any of
its first `looks` analyses is then at most alpha, however the windows overlap; past them it grows by at most alpha
per further `looks` analyses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .sequential import Unresolvable

Binned = Mapping[tuple[str, str], float]
"""(feature, bin) -> a count of inputs."""

MIN_EXPECTED = 5.0
"""Inputs every cell of a feature's table must expect before its chi-square p-value is trusted (Cochran's rule)."""
LAMBDA = 2 / 3


def power_divergence(observed: float, expected: float, power: float = LAMBDA) -> float:
    """One bin's term of the Cressie-Read statistic (expected > 0): 0 when nothing was observed. Over the bins,
    power 1 sums to Pearson's X^2. Arithmetic alone, so arrays of bins work too."""
    return 2 / (power * (power + 1)) * observed * ((observed / expected) ** power - 1)


def chi_square_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X chi-square with `df` degrees of freedom: the regularised upper incomplete gamma
    function Q(df / 2, statistic / 2), by its series below a + 1 and its continued fraction above."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if statistic <= 0:
        return 1.0
    a, x = df / 2, statistic / 2
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        n = a
        while abs(term) > abs(total) * 1e-15:
            n += 1
            term *= x / n
            total += term
        return max(0.0, 1 - total * math.exp(log_front))
    # Lentz's evaluation of the continued fraction for Q.
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    fraction = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * fraction)


class DriftFinding(str, Enum):
    drifted = "drifted"
    """Some feature's live inputs differ from the reference, with the confidence asked for: a failure."""
    same = "same"
    """No feature's inputs differ detectably: a pass."""
    undecided = "undecided"
    """Some feature's cells expect too few inputs for the test: no verdict."""


@dataclass(frozen=True)
class FeatureTest:
    feature: str
    inputs: float
    """Live inputs counted in the window."""
    statistic: float
    bins: int
    """Bins with an input on either side."""
    smallest_expected: float
    """The fewest inputs any cell expects: below MIN_EXPECTED the p-value is not computed."""
    p_value: float | None


@dataclass(frozen=True)
class DriftEvidence:
    finding: DriftFinding
    alpha: float
    """What each feature's p-value is held against: (1 - confidence) / (looks * features)."""
    features: tuple[FeatureTest, ...]

    @property
    def inputs(self) -> float:
        """The window's live inputs: each feature bins every input, so the most any feature counted."""
        return max((f.inputs for f in self.features), default=0.0)


def _by_feature(binned: Binned, side: str) -> dict[str, dict[str, float]]:
    features: dict[str, dict[str, float]] = {}
    for (feature, bin_), value in binned.items():
        if not math.isfinite(value) or value < 0:
            raise Unresolvable(f"the {side}'s feature {feature!r} bin {bin_!r} is {value:g}, not a count")
        features.setdefault(feature, {})[bin_] = value
    return features


def _names(names: set[str]) -> str:
    shown = sorted(names)
    return ", ".join(repr(n) for n in shown[:5]) + (", ..." if len(shown) > 5 else "")


def judge_drift(live: Binned, reference: Binned, *, confidence: float, looks: int) -> DriftEvidence:
    """Whether the `live` counts differ from the `reference` counts, feature by feature. Raises Unresolvable when
    the two do not bin the same features into the same bins (every bin counted on both sides, at 0 if need be),
    or a feature's reference has no input."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    counted, known = _by_feature(live, "live inputs"), _by_feature(reference, "reference")
    if set(counted) != set(known):
        only_live, only_reference = set(counted) - set(known), set(known) - set(counted)
        words = [f"features {_names(only_live)} have live counts but no reference counts"] if only_live else []
        words += [f"features {_names(only_reference)} have reference counts but no live counts"] if only_reference else []
        raise Unresolvable("; ".join(words))
    alpha = (1 - confidence) / (looks * len(known))
    tests = [_feature_test(feature, counted[feature], known[feature]) for feature in sorted(known)]
    if any(t.p_value is not None and t.p_value < alpha for t in tests):
        finding = DriftFinding.drifted
    elif any(t.p_value is None for t in tests):
        finding = DriftFinding.undecided
    else:
        finding = DriftFinding.same
    return DriftEvidence(finding, alpha, tuple(tests))


def _feature_test(feature: str, observed: dict[str, float], reference: dict[str, float]) -> FeatureTest:
    if set(observed) != set(reference):
        only_live, only_reference = set(observed) - set(reference), set(reference) - set(observed)
        words = [f"bins {_names(only_live)} have no reference count"] if only_live else []
        words += [f"bins {_names(only_reference)} have no live count"] if only_reference else []
        raise Unresolvable(f"feature {feature!r}: " + "; ".join(words) + " (every bin must be published on "
                           "both sides, a bin without inputs at 0)")
    if len(reference) < 2:
        raise Unresolvable(f"feature {feature!r} has {len(reference)} bin: at least 2 are needed to compare")
    inputs, known = sum(observed.values()), sum(reference.values())
    if known <= 0:
        raise Unresolvable(f"feature {feature!r}: its reference counts no input")
    both = {b: observed[b] + reference[b] for b in reference if observed[b] + reference[b] > 0}
    if inputs <= 0:
        return FeatureTest(feature, inputs, 0.0, len(both), 0.0, None)
    if len(both) < 2:  # every input of both sides in one bin: nothing differs
        return FeatureTest(feature, inputs, 0.0, len(both), math.inf, 1.0)
    total = inputs + known
    statistic = 0.0
    smallest = math.inf
    for b, count in both.items():
        for seen, row in ((observed[b], inputs), (reference[b], known)):
            expected = row * count / total
            smallest = min(smallest, expected)
            statistic += power_divergence(seen, expected)
    p_value = chi_square_sf(statistic, len(both) - 1) if smallest >= MIN_EXPECTED else None
    return FeatureTest(feature, inputs, statistic, len(both), smallest, p_value)
