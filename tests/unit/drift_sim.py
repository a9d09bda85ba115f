"""Simulated rollouts for the drift checks: how often a version without drift fails, how soon a drifted one does.

A rollout is an hour of analyses every minute (LOOKS), each over its own minute of inputs: 10 inputs a second,
PER_WINDOW a window. Inputs have FEATURES features, each standard normal and binned at its reference's deciles
(the exporter's bins; the reference shares are then 1/BINS each). Drift moves one feature's mean by `shift`
standard deviations.

driftTest is judged by `judge_drift` itself. A rollout fails when any of its looks does; the p-value falls as the
statistic grows (every feature has BINS bins), so that is when its look with the largest statistic does, and only
that look is judged. The same rollouts judged with Pearson's X^2 (the statistic's power 1) against the same
critical value show why the test uses the power 2/3.

driftScore (a threshold on a detector's score) is simulated as the demo's detector computes it: the population
stability index of the last `recent` inputs against each version's reference deciles, from a training sample of
REFERENCE_SAMPLES inputs of its own, scored every 20 inputs; a look takes its window's highest score.

`python -m tests.unit.drift_sim` prints the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from modelops.analysis.drift import LAMBDA, DriftFinding, chi_square_sf, judge_drift, power_divergence

ROLLOUTS = 10000
LOOKS = 60
PER_WINDOW = 600
FEATURES = 2
BINS = 10
CONFIDENCE = 0.95
REFERENCE_SAMPLES = 2000
SCORE_EVERY = 20
PSI_FLOOR = 1e-4
"""The demo detector's floor on a bin's share (an empty bin would make the logarithm infinite)."""

_DECILES = [NormalDist().inv_cdf(i / BINS) for i in range(1, BINS)]
REFERENCE = {(f"f{f}", str(b)): 1 / BINS for f in range(FEATURES) for b in range(BINS)}


def bin_probabilities(shift: float) -> np.ndarray:
    """Each bin's share of inputs drawn from N(shift, 1), the bins the deciles of N(0, 1)."""
    cdf = [0.0] + [NormalDist(shift).cdf(edge) for edge in _DECILES] + [1.0]
    return np.diff(cdf)


def live_counts(rng: np.random.Generator, rollouts: int, looks: int, shift: float = 0.0) -> np.ndarray:
    """(rollouts, looks, FEATURES, BINS) counts of each window's inputs; feature 0 shifted by `shift`."""
    features = [rng.multinomial(PER_WINDOW, bin_probabilities(shift if f == 0 else 0.0), size=(rollouts, looks))
                for f in range(FEATURES)]
    return np.stack(features, axis=2)


@dataclass(frozen=True)
class Judge:
    """How a look's counts are judged: the operator's test, or a deliberately broken variant of it."""

    looks: int = LOOKS
    """The looks alpha is spread over (1: none, the broken variant that forgets repeated looks)."""
    per_feature: bool = False
    """Each feature judged on its own (the broken variant that forgets there are several)."""

    def drifted(self, counts: np.ndarray) -> bool:
        """`counts`: (FEATURES, BINS) of one look."""
        live = {(f"f{f}", str(b)): float(counts[f, b]) for f in range(FEATURES) for b in range(BINS)}
        groups = [[f"f{f}"] for f in range(FEATURES)] if self.per_feature else [[f"f{f}" for f in range(FEATURES)]]
        for group in groups:
            evidence = judge_drift({k: v for k, v in live.items() if k[0] in group},
                                   {k: v for k, v in REFERENCE.items() if k[0] in group},
                                   confidence=CONFIDENCE, looks=self.looks)
            if evidence.finding is DriftFinding.drifted:
                return True
        return False


def statistics(counts: np.ndarray, power: float = LAMBDA) -> np.ndarray:
    """(rollouts, looks) the largest statistic of each look's features."""
    return power_divergence(counts.astype(float), PER_WINDOW / BINS, power).sum(axis=3).max(axis=2)


def rolled_back(counts: np.ndarray, judge: Judge) -> np.ndarray:
    """Per rollout, whether any of its looks fails: judged at its look with the largest statistic."""
    worst = statistics(counts).argmax(axis=1)
    return np.array([judge.drifted(counts[r, worst[r]]) for r in range(len(counts))])


def failed_share(seed: int, shift: float, judge: Judge, looks: int = LOOKS, rollouts: int = ROLLOUTS) -> float:
    """Share of `rollouts` rollouts of `looks` looks that fail."""
    return float(rolled_back(live_counts(np.random.default_rng(seed), rollouts, looks, shift), judge).mean())


def critical_value(alpha: float, df: int) -> float:
    """The statistic whose chi-square p-value is `alpha`, by bisection."""
    low, high = 0.0, 1000.0
    while high - low > 1e-9:
        middle = (low + high) / 2
        low, high = (middle, high) if chi_square_sf(middle, df) > alpha else (low, middle)
    return high


def pearson_rolled_back(counts: np.ndarray) -> np.ndarray:
    """Per rollout, whether Pearson's X^2 fails any look at driftTest's alpha per look and feature."""
    alpha = (1 - CONFIDENCE) / (LOOKS * FEATURES)
    return (statistics(counts, 1.0) > critical_value(alpha, BINS - 1)).any(axis=1)


def _psi(counts: np.ndarray, n: int) -> np.ndarray:
    live = np.clip(counts / n, PSI_FLOOR, None)
    expected = 1 / BINS
    return ((live - expected) * np.log(live / expected)).sum(axis=-1)


def score_rollouts(seed: int, recent: int, maximum: float, increase_percent: float | None = None,
                   rollouts: int = 200) -> float:
    """Share of rollouts without drift that a driftScore check with `max` (and `maxIncreasePercent` relative to
    stable's score) fails within LOOKS looks, the detector scoring the last `recent` inputs."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((rollouts, LOOKS * PER_WINDOW))
    blocks = LOOKS * PER_WINDOW // SCORE_EVERY
    per_block = recent // SCORE_EVERY

    def window_scores(reference: np.ndarray) -> np.ndarray:
        """(rollouts, looks) highest score in each look's window against each rollout's `reference` sample."""
        edges = np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1], axis=1).T  # (rollouts, BINS - 1)
        bins = np.stack([np.searchsorted(edges[r], inputs[r]) for r in range(rollouts)])
        block = np.arange(inputs.shape[1]) // SCORE_EVERY
        flat = (np.arange(rollouts)[:, None] * blocks + block[None, :]) * BINS + bins
        counts = np.bincount(flat.ravel(), minlength=rollouts * blocks * BINS).reshape(rollouts, blocks, BINS)
        running = np.concatenate([np.zeros((rollouts, 1, BINS)), counts.cumsum(axis=1)], axis=1)
        recent_counts = running[:, per_block:] - running[:, :-per_block]  # scored once `recent` inputs are in
        scores = np.full((rollouts, blocks), -np.inf)
        scores[:, per_block - 1:] = _psi(recent_counts, recent)
        return scores.reshape(rollouts, LOOKS, -1).max(axis=2)

    candidate = window_scores(rng.standard_normal((rollouts, REFERENCE_SAMPLES)))
    fails = candidate > maximum
    if increase_percent is not None:
        stable = window_scores(rng.standard_normal((rollouts, REFERENCE_SAMPLES)))
        fails |= candidate > stable * (1 + increase_percent / 100)
    return float(fails.any(axis=1).mean())


def report(batches: int = 5) -> str:
    no_drift = [live_counts(np.random.default_rng(seed), ROLLOUTS, LOOKS) for seed in range(1, batches + 1)]
    lines = [f"{batches} x {ROLLOUTS:,} rollouts of {LOOKS} one-minute looks at {PER_WINDOW} inputs a window, "
             f"{FEATURES} features of {BINS} bins, confidence {CONFIDENCE}", "",
             "| check | no drift: rollouts failed | feature 0 shifted 0.2 sd: failed within 10 looks |", "|---|---|---|"]
    for words, judge in (("driftTest", Judge()), ("broken: no correction for looks", Judge(looks=1)),
                         ("broken: no correction for features", Judge(per_feature=True))):
        failed = np.mean([rolled_back(counts, judge).mean() for counts in no_drift])
        lines.append(f"| {words} | {failed:.2%} | {failed_share(0, 0.2, judge, looks=10, rollouts=2000):.1%} |")
    pearson = np.mean([pearson_rolled_back(counts).mean() for counts in no_drift])
    aimed = 1 - (1 - (1 - CONFIDENCE) / (LOOKS * FEATURES)) ** (LOOKS * FEATURES)
    lines += [f"| Pearson's X^2 in its place | {pearson:.2%} | |",
              f"| (exact tests at that alpha, independent windows) | {aimed:.2%} | |"]
    lines += ["", "| driftScore (demo detector, no drift), 200 rollouts | failed within an hour |", "|---|---|"]
    for words, args in (("last 400 inputs, max 0.25", (400, 0.25)),
                        ("last 400 inputs, max 0.3 and maxIncreasePercent 50", (400, 0.3, 50.0)),
                        ("last 100 inputs, max 0.3", (100, 0.3))):
        lines.append(f"| {words} | {score_rollouts(3, *args):.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
