"""Simulated rollouts for the sequential tests: how often a healthy candidate is rolled back, how soon a worse one is.

Each simulated rollout looks at its check every interval, as the operator does, with the counts accumulated since
the candidate began serving: the candidate gets `per_look` samples an interval and stable four times as many (a
20 % step). A rollout ends at its first verdict that is not "not enough evidence yet", or after `looks` intervals.

`python -m tests.unit.sequential_sim` prints the report.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from modelops.analysis.sequential import (MIN_SAMPLES, Finding, Proportion, compare_proportions, fold,
                                          nearest_bound, proportion_contrast, samples_to_locate, tail_above)

ROLLOUTS = 1000
LOOKS = 60
PER_LOOK = 50
STABLE_SHARE = 4
PROMETHEUS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
"""The default buckets of Prometheus client libraries."""


@dataclass(frozen=True)
class Summary:
    scenario: str
    rolled_back: float
    """Share of the rollouts whose check failed."""
    passed: float
    """Share whose check passed (confident the candidate is within the tolerance)."""
    median_samples: float | None
    """Median candidate samples at the failure, over the rollouts that failed."""

    def line(self) -> str:
        median = "-" if self.median_samples is None else f"{self.median_samples:,.0f}"
        return f"| {self.scenario} | {self.rolled_back:.1%} | {self.passed:.1%} | {median} |"


def _summarise(scenario: str, findings: list[tuple[Finding, int]]) -> Summary:
    failed = [n for f, n in findings if f is Finding.worse]
    passed = sum(1 for f, _ in findings if f is Finding.within)
    return Summary(scenario, len(failed) / len(findings), passed / len(findings),
                   statistics.median(failed) if failed else None)


def proportions(scenario: str, stable_rate: float, candidate_rate: float, *, tolerance: float,
                higher_is_better: bool, confidence: float = 0.95, seed: int = 1) -> Summary:
    rng = np.random.default_rng(seed)
    per_c, per_s = PER_LOOK, PER_LOOK * STABLE_SHARE
    hits_c = rng.binomial(per_c, candidate_rate, size=(ROLLOUTS, LOOKS)).cumsum(axis=1)
    hits_s = rng.binomial(per_s, stable_rate, size=(ROLLOUTS, LOOKS)).cumsum(axis=1)
    findings = []
    for r in range(ROLLOUTS):
        finding, n, intervals_c, intervals_s = Finding.undecided, 0, None, None
        for look in range(LOOKS):
            n, n_s = per_c * (look + 1), per_s * (look + 1)
            # As the operator does: every look's counts go into the intervals, judged or not.
            intervals_c = fold(intervals_c, float(hits_c[r, look]), n)
            intervals_s = fold(intervals_s, float(hits_s[r, look]), n_s)
            if n < MIN_SAMPLES:
                continue
            finding = compare_proportions(Proportion(float(hits_c[r, look]), n, intervals_c),
                                          Proportion(float(hits_s[r, look]), n_s, intervals_s),
                                          tolerance=tolerance, higher_is_better=higher_is_better,
                                          confidence=confidence).finding
            if finding is not Finding.undecided:
                break
        findings.append((finding, n))
    return _summarise(scenario, findings)


@dataclass(frozen=True)
class Decisions:
    """Many simulated rollouts of `checks` independent proportion checks, each judged every look, vectorised."""

    rolled_back: float
    """Share of the rollouts in which some check was found worse before being found within."""
    passed: float
    """Share in which every check was found within before any was found worse."""
    samples: np.ndarray
    """Candidate samples at each rollout's first "worse" (its rollback), NaN where there was none."""
    passed_samples: np.ndarray
    """Candidate samples when every check was found within (its promotion), NaN where that did not come first."""


def decisions(stable_rate: float, candidate_rate: float, *, tolerance: float, higher_is_better: bool, alpha: float,
              looks: int, per_look: int = PER_LOOK, checks: int = 1, rollouts: int = 4000, seed: int = 1) -> Decisions:
    """Each check at 1 - `alpha` confidence split over the `checks` (Bonferroni, as evaluate splits it), the
    candidate `per_look` samples a look and stable STABLE_SHARE times as many; a check stops at its first finding.
    Every count is the operator's arithmetic (proportion_contrast) on arrays of rollouts."""
    rng = np.random.default_rng(seed)
    shape = (rollouts, checks)
    hits_c, hits_s = np.zeros(shape), np.zeros(shape)
    worse_at, within_at = np.full(shape, np.inf), np.full(shape, np.inf)
    for look in range(1, looks + 1):
        hits_c += rng.binomial(per_look, candidate_rate, size=shape)
        hits_s += rng.binomial(per_look * STABLE_SHARE, stable_rate, size=shape)
        n = per_look * look
        if n < MIN_SAMPLES:
            continue
        c = proportion_contrast(Proportion(hits_c, n), Proportion(hits_s, n * STABLE_SHARE), tolerance=tolerance,
                                higher_is_better=higher_is_better, alpha=alpha / checks)
        undecided = np.isinf(worse_at) & np.isinf(within_at)
        worse_at[undecided & c.worse] = n
        within_at[undecided & c.within] = n
    rollback, promotion = worse_at.min(axis=1), within_at.max(axis=1)  # any check worse; every check within
    rolled = rollback < promotion
    promoted = promotion < rollback
    return Decisions(rolled.mean(), promoted.mean(), np.where(rolled, rollback, np.nan),
                     np.where(promoted, promotion, np.nan))


FINE_BUCKETS = tuple(round(0.05 * 1.1 ** i, 6) for i in range(20)) + (math.inf,)
"""Bucket bounds 10 % apart from 50 ms to 306 ms: a layout that resolves narrow latency distributions."""


def bucket_probabilities(bounds: tuple[float, ...], median: float, sigma: float, *, tail: float = 0.0,
                          tail_factor: float = 1.0) -> np.ndarray:
    """Chance of a log-normal latency landing in each bucket; with `tail`, that share of requests takes
    `tail_factor` times as long (a regression of the slowest requests only)."""
    def cdf(m: float) -> np.ndarray:
        with np.errstate(divide="ignore"):
            z = (np.log(np.array(bounds)) - math.log(m)) / sigma
        return np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) if math.isfinite(v) else 1.0 for v in z])
    mixed = (1 - tail) * cdf(median) + tail * cdf(median * tail_factor)
    return np.diff(np.concatenate([[0.0], mixed]))


def tail_scaled(probabilities: np.ndarray, factor: float) -> np.ndarray:
    """Bucket probabilities whose share above every bound is `factor` times that of `probabilities` (capped at all
    requests): a candidate exactly at a tolerance of `factor` - 1 whichever bound a latency check picks."""
    above = np.clip(factor * (1 - probabilities.cumsum()), 0, 1)
    return np.diff(np.concatenate([[0.0], 1 - above]))


def tails(below_c: np.ndarray, below_s: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What tail_above reads, for arrays of rollouts' cumulative bucket counts (a row each, +Inf last): the index of
    the bound nearest stable's `quantile` (nearest_bound) and each version's requests above it."""
    n_c, n_s = below_c[:, -1], below_s[:, -1]
    finite = below_s.shape[1] - 1  # +Inf holds every request: never a bound to test at
    chosen = nearest_bound([n_s - below_s[:, i] for i in range(finite)], n_s, quantile)
    at = chosen[:, None]
    return (chosen, n_c - np.take_along_axis(below_c, at, axis=1)[:, 0],
            n_s - np.take_along_axis(below_s, at, axis=1)[:, 0])


def latency_decisions(stable: np.ndarray, candidate: np.ndarray, *, quantile: float, tolerance: float, alpha: float,
                      looks: int, per_look: int = PER_LOOK, rollouts: int = 4000, seed: int = 1) -> Decisions:
    """Rollouts of a sequential latency check on `quantile`, the versions' requests landing in the buckets with the
    chances `stable` and `candidate`, the candidate `per_look` requests a look and stable STABLE_SHARE times as
    many; a rollout stops at its first finding. As evaluate judges: no look before MIN_SAMPLES and
    samples_to_locate, the bound nearest stable's quantile (nearest_bound, what tail_above picks) and the shares
    above it compared (proportion_contrast, what compare_proportions decides on), on arrays of rollouts. A bound
    too far from the quantile is not modelled (evaluate's Error there is no verdict), so the passes counted are at
    least the operator's and the rollbacks the same."""
    rng = np.random.default_rng(seed)
    below_c, below_s = np.zeros((rollouts, len(stable))), np.zeros((rollouts, len(stable)))
    worse_at, within_at = np.full(rollouts, np.inf), np.full(rollouts, np.inf)
    for look in range(1, looks + 1):
        below_c += rng.multinomial(per_look, candidate, size=rollouts).cumsum(axis=1)
        below_s += rng.multinomial(per_look * STABLE_SHARE, stable, size=rollouts).cumsum(axis=1)
        n, n_s = per_look * look, per_look * STABLE_SHARE * look
        if n < MIN_SAMPLES or n_s < samples_to_locate(quantile):
            continue
        _, above_c, above_s = tails(below_c, below_s, quantile)
        c = proportion_contrast(Proportion(above_c, n), Proportion(above_s, n_s), tolerance=tolerance,
                                higher_is_better=False, alpha=alpha)
        undecided = np.isinf(worse_at) & np.isinf(within_at)
        worse_at[undecided & c.worse] = n
        within_at[undecided & c.within] = n
    return Decisions(float(np.isfinite(worse_at).mean()), float(np.isfinite(within_at).mean()),
                     np.where(np.isfinite(worse_at), worse_at, np.nan),
                     np.where(np.isfinite(within_at), within_at, np.nan))


def latencies(scenario: str, stable_median: float, candidate_median: float, *, tolerance: float, quantile: float,
              sigma: float = 0.5, bounds: tuple[float, ...] = PROMETHEUS_BUCKETS, tail: float = 0.0,
              tail_factor: float = 1.0, confidence: float = 0.95, seed: int = 2) -> Summary:
    """Rollouts of a sequential latency check on `quantile` (latencyP50: 0.5, latencyP95: 0.95)."""
    rng = np.random.default_rng(seed)
    per_c, per_s = PER_LOOK, PER_LOOK * STABLE_SHARE
    counts_c = rng.multinomial(per_c, bucket_probabilities(bounds, candidate_median, sigma, tail=tail,
                                                            tail_factor=tail_factor), size=(ROLLOUTS, LOOKS))
    counts_s = rng.multinomial(per_s, bucket_probabilities(bounds, stable_median, sigma), size=(ROLLOUTS, LOOKS))
    # Cumulative over looks (the window grows), then over buckets (Prometheus' `le` counts).
    cum_c = counts_c.cumsum(axis=1).cumsum(axis=2)
    cum_s = counts_s.cumsum(axis=1).cumsum(axis=2)
    findings = []
    for r in range(ROLLOUTS):
        finding, n = Finding.undecided, 0
        for look in range(LOOKS):
            n = per_c * (look + 1)
            if per_s * (look + 1) < samples_to_locate(quantile):
                continue
            tail_counts = tail_above(tuple(zip(bounds, cum_c[r, look].tolist())),
                                     tuple(zip(bounds, cum_s[r, look].tolist())), quantile)
            finding = compare_proportions(tail_counts.candidate, tail_counts.stable, tolerance=tolerance,
                                          higher_is_better=False, confidence=confidence).finding
            if finding is not Finding.undecided:
                break
        findings.append((finding, n))
    return _summarise(scenario, findings)


def report() -> list[Summary]:
    return [
        proportions("accuracy 0.90 = 0.90, tolerance 0 %", 0.90, 0.90, tolerance=0, higher_is_better=True),
        proportions("accuracy 0.90 = 0.90, tolerance 0 %, confidence 0.99", 0.90, 0.90, tolerance=0,
                    higher_is_better=True, confidence=0.99),
        proportions("accuracy 0.90 = 0.90, tolerance 2 %", 0.90, 0.90, tolerance=0.02, higher_is_better=True),
        proportions("error rate 1 % = 1 %, tolerance 0 %", 0.01, 0.01, tolerance=0, higher_is_better=False),
        proportions("accuracy 0.90 -> 0.855 (5 % drop), tolerance 0 %", 0.90, 0.855, tolerance=0,
                    higher_is_better=True),
        proportions("accuracy 0.90 -> 0.855 (5 % drop), tolerance 1 %", 0.90, 0.855, tolerance=0.01,
                    higher_is_better=True),
        proportions("error rate 1 % -> 2 %, tolerance 10 %", 0.01, 0.02, tolerance=0.10, higher_is_better=False),
        latencies("latency p50 100 ms = 100 ms, tolerance 10 %", 0.1, 0.1, tolerance=0.10, quantile=0.5),
        latencies("latency p95, median 100 ms = 100 ms, tolerance 10 %", 0.1, 0.1, tolerance=0.10, quantile=0.95),
        latencies("latency p95, narrow (sigma 0.1, buckets 10 % apart), 100 ms = 100 ms, tolerance 10 %", 0.1, 0.1,
                  tolerance=0.10, quantile=0.95, sigma=0.1, bounds=FINE_BUCKETS),
        latencies("latency p50 100 ms -> 120 ms, tolerance 10 %", 0.1, 0.12, tolerance=0.10, quantile=0.5),
        latencies("latency p95, narrow (sigma 0.1, buckets 10 % apart), 100 ms -> 130 ms, tolerance 10 %", 0.1, 0.13,
                  tolerance=0.10, quantile=0.95, sigma=0.1, bounds=FINE_BUCKETS),
        latencies("latency p95, slowest 10 % of requests 3x slower (median unchanged), tolerance 10 %", 0.1, 0.1,
                  tolerance=0.10, quantile=0.95, tail=0.10, tail_factor=3.0),
    ]


if __name__ == "__main__":
    print(f"{ROLLOUTS} simulated rollouts each, a look every interval for {LOOKS} intervals, candidate {PER_LOOK} "
          f"samples an interval, stable {PER_LOOK * STABLE_SHARE}, confidence 0.95 unless said")
    print("| scenario | rolled back | passed | median candidate samples to roll back |")
    print("|---|---|---|---|")
    for summary in report():
        print(summary.line())
