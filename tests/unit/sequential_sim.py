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

from modelops.analysis.sequential import (MIN_SAMPLES, Finding, Proportion, compare_latencies, compare_proportions)

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
        finding, n = Finding.undecided, 0
        for look in range(LOOKS):
            n = per_c * (look + 1)
            if n < MIN_SAMPLES:
                continue
            finding = compare_proportions(Proportion(float(hits_c[r, look]), n),
                                          Proportion(float(hits_s[r, look]), per_s * (look + 1)),
                                          tolerance=tolerance, higher_is_better=higher_is_better,
                                          confidence=confidence).finding
            if finding is not Finding.undecided:
                break
        findings.append((finding, n))
    return _summarise(scenario, findings)


def _bucket_probabilities(median: float, sigma: float) -> np.ndarray:
    """Chance of a log-normal latency landing in each bucket."""
    bounds = np.array(PROMETHEUS_BUCKETS)
    with np.errstate(divide="ignore"):
        z = (np.log(bounds) - math.log(median)) / sigma
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) if math.isfinite(v) else 1.0 for v in z])
    return np.diff(np.concatenate([[0.0], cdf]))


def latencies(scenario: str, stable_median: float, candidate_median: float, *, tolerance: float,
              confidence: float = 0.95, sigma: float = 0.5, seed: int = 2) -> Summary:
    rng = np.random.default_rng(seed)
    per_c, per_s = PER_LOOK, PER_LOOK * STABLE_SHARE
    counts_c = rng.multinomial(per_c, _bucket_probabilities(candidate_median, sigma), size=(ROLLOUTS, LOOKS))
    counts_s = rng.multinomial(per_s, _bucket_probabilities(stable_median, sigma), size=(ROLLOUTS, LOOKS))
    # Cumulative over looks (the window grows), then over buckets (Prometheus' `le` counts).
    cum_c = counts_c.cumsum(axis=1).cumsum(axis=2)
    cum_s = counts_s.cumsum(axis=1).cumsum(axis=2)
    findings = []
    for r in range(ROLLOUTS):
        finding, n = Finding.undecided, 0
        for look in range(LOOKS):
            n = per_c * (look + 1)
            finding = compare_latencies(tuple(zip(PROMETHEUS_BUCKETS, cum_c[r, look].tolist())),
                                        tuple(zip(PROMETHEUS_BUCKETS, cum_s[r, look].tolist())),
                                        tolerance=tolerance, confidence=confidence).finding
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
        latencies("latency median 100 ms = 100 ms, tolerance 0 %", 0.1, 0.1, tolerance=0),
        latencies("latency median 100 ms = 100 ms, tolerance 10 %", 0.1, 0.1, tolerance=0.10),
        latencies("latency median 100 ms -> 120 ms, tolerance 5 %", 0.1, 0.12, tolerance=0.05),
    ]


if __name__ == "__main__":
    print(f"{ROLLOUTS} simulated rollouts each, a look every interval for {LOOKS} intervals, candidate {PER_LOOK} "
          f"samples an interval, stable {PER_LOOK * STABLE_SHARE}, confidence 0.95 unless said")
    print("| scenario | rolled back | passed | median candidate samples to roll back |")
    print("|---|---|---|---|")
    for summary in report():
        print(summary.line())
