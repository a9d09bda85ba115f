"""Simulated rollouts for the drift checks: how often a version without drift fails, how soon a drifted one does.

A rollout is an hour of analyses every minute (LOOKS), each over its own minute of inputs: 10 inputs a second,
PER_WINDOW a window. Inputs have FEATURES features, each standard normal. Each rollout's version has a reference of
REFERENCE_SAMPLES training inputs of its own, and the exporter bins each feature at its reference's deciles (as the
demo's does), so the reference counts are fixed and the live inputs' shares of the bins are near, not exactly,
1/BINS. Drift moves one feature's mean by `shift` standard deviations.

driftTest is judged by `judge_drift` itself. A rollout fails when any of its looks does; the p-value falls as the
statistic grows (every feature has BINS bins), so that is when its look with the largest statistic does, and only
that look is judged.

driftScore (a threshold on a detector's score) is simulated as the demo's detector computes it: the population
stability index of the last `recent` inputs against each version's reference deciles, from a training sample of
REFERENCE_SAMPLES inputs of its own, scored every 20 inputs; a look takes its window's highest score.

`python -m tests.unit.drift_sim` prints the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from modelops.analysis.drift import LAMBDA, DriftFinding, judge_drift, power_divergence

ROLLOUTS = 10000
LOOKS = 60
PER_WINDOW = 600
FEATURES = 2
BINS = 10
CONFIDENCE = 0.95
REFERENCE_SAMPLES = 2000
SHIFT = 0.25
"""The drift the detection figures are for, in standard deviations of the feature."""
SCORE_EVERY = 20
PSI_FLOOR = 1e-4
"""The demo detector's floor on a bin's share (an empty bin would make the logarithm infinite)."""



@dataclass(frozen=True)
class Rollouts:
    live: np.ndarray
    """(rollouts, looks, FEATURES, BINS) counts of each window's inputs."""
    reference: np.ndarray
    """(rollouts, FEATURES, BINS) counts of each rollout's reference inputs."""


def rollouts(seed: int, count: int, looks: int, shift: float = 0.0) -> Rollouts:
    """`count` rollouts of `looks` looks; feature 0 of the live inputs shifted by `shift`."""
    rng = np.random.default_rng(seed)
    training = rng.standard_normal((count, FEATURES, REFERENCE_SAMPLES))
    edges = np.quantile(training, np.linspace(0, 1, BINS + 1)[1:-1], axis=2).transpose(1, 2, 0)  # (count, F, B - 1)
    # Bins at a sample's own deciles hold the same counts of it whatever the sample: those of the first.
    first = np.bincount(np.searchsorted(edges[0, 0], training[0, 0]), minlength=BINS)
    reference = np.broadcast_to(first, (count, FEATURES, BINS))
    moved = np.where(np.arange(FEATURES) == 0, shift, 0.0)[None, :, None]
    cdf = np.vectorize(NormalDist().cdf)(edges - moved)
    probabilities = np.diff(cdf, prepend=0.0, append=1.0, axis=2)  # (count, F, B)
    live = rng.multinomial(PER_WINDOW, probabilities[:, None], size=(count, looks, FEATURES))
    return Rollouts(live, reference)


def _key(f: int, b: int) -> tuple[str, str]:
    return f"f{f}", str(b)


@dataclass(frozen=True)
class Judge:
    """How a look's counts are judged: the operator's test, or a deliberately broken variant of it."""

    looks: int = LOOKS
    """The looks alpha is spread over (1: none, the broken variant that forgets repeated looks)."""
    per_feature: bool = False
    """Each feature judged on its own (the broken variant that forgets there are several)."""

    def drifted(self, live: np.ndarray, reference: np.ndarray) -> bool:
        """`live`, `reference`: (FEATURES, BINS) of one look."""
        groups = [[f] for f in range(FEATURES)] if self.per_feature else [list(range(FEATURES))]
        for group in groups:
            evidence = judge_drift({_key(f, b): float(live[f, b]) for f in group for b in range(BINS)},
                                   {_key(f, b): float(reference[f, b]) for f in group for b in range(BINS)},
                                   confidence=CONFIDENCE, looks=self.looks)
            if evidence.finding is DriftFinding.drifted:
                return True
        return False


def statistics(simulated: Rollouts, power: float = LAMBDA) -> np.ndarray:
    """(rollouts, looks) the largest statistic of each look's features (no bin is empty on both sides here)."""
    live = simulated.live.astype(float)
    reference = np.broadcast_to(simulated.reference[:, None].astype(float), live.shape)
    both = live + reference
    n, m = live.sum(axis=3, keepdims=True), reference.sum(axis=3, keepdims=True)
    terms = (power_divergence(live, n * both / (n + m), power) + power_divergence(reference, m * both / (n + m), power))
    return terms.sum(axis=3).max(axis=2)


def rolled_back(simulated: Rollouts, judge: Judge) -> np.ndarray:
    """Per rollout, whether any of its looks fails: judged at its look with the largest statistic."""
    worst = statistics(simulated).argmax(axis=1)
    return np.array([judge.drifted(simulated.live[r, worst[r]], simulated.reference[r])
                     for r in range(len(worst))])


def failed_share(seed: int, shift: float, judge: Judge, looks: int = LOOKS, count: int = ROLLOUTS) -> float:
    """Share of `count` rollouts of `looks` looks that fail."""
    return float(rolled_back(rollouts(seed, count, looks, shift), judge).mean())


def _psi(counts: np.ndarray, n: int) -> np.ndarray:
    live = np.clip(counts / n, PSI_FLOOR, None)
    expected = 1 / BINS
    return ((live - expected) * np.log(live / expected)).sum(axis=-1)


def score_rollouts(seed: int, recent: int, maximum: float, increase_percent: float | None = None,
                   count: int = 200) -> float:
    """Share of rollouts without drift that a driftScore check with `max` (and `maxIncreasePercent` relative to
    stable's score) fails within LOOKS looks, the detector scoring the last `recent` inputs."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((count, LOOKS * PER_WINDOW))
    blocks = LOOKS * PER_WINDOW // SCORE_EVERY
    per_block = recent // SCORE_EVERY

    def window_scores(reference: np.ndarray) -> np.ndarray:
        """(count, looks) highest score in each look's window against each rollout's `reference` sample."""
        edges = np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1], axis=1).T  # (count, BINS - 1)
        bins = np.stack([np.searchsorted(edges[r], inputs[r]) for r in range(count)])
        block = np.arange(inputs.shape[1]) // SCORE_EVERY
        flat = (np.arange(count)[:, None] * blocks + block[None, :]) * BINS + bins
        counts = np.bincount(flat.ravel(), minlength=count * blocks * BINS).reshape(count, blocks, BINS)
        running = np.concatenate([np.zeros((count, 1, BINS)), counts.cumsum(axis=1)], axis=1)
        recent_counts = running[:, per_block:] - running[:, :-per_block]  # scored once `recent` inputs are in
        scores = np.full((count, blocks), -np.inf)
        scores[:, per_block - 1:] = _psi(recent_counts, recent)
        return scores.reshape(count, LOOKS, -1).max(axis=2)

    candidate = window_scores(rng.standard_normal((count, REFERENCE_SAMPLES)))
    fails = candidate > maximum
    if increase_percent is not None:
        stable = window_scores(rng.standard_normal((count, REFERENCE_SAMPLES)))
        fails |= candidate > stable * (1 + increase_percent / 100)
    return float(fails.any(axis=1).mean())


def report(batches: int = 5) -> str:
    no_drift = [rollouts(seed, ROLLOUTS, LOOKS) for seed in range(1, batches + 1)]
    lines = [f"{batches} x {ROLLOUTS:,} rollouts of {LOOKS} one-minute looks at {PER_WINDOW} inputs a window, "
             f"{FEATURES} features of {BINS} bins, references of {REFERENCE_SAMPLES:,} inputs, confidence {CONFIDENCE}", "",
             f"| check | no drift: rollouts failed | feature 0 shifted {SHIFT} sd: failed within 10 looks |", "|---|---|---|"]
    for words, judge in (("driftTest", Judge()), ("broken: no correction for looks", Judge(looks=1)),
                         ("broken: no correction for features", Judge(per_feature=True))):
        failed = np.mean([rolled_back(counts, judge).mean() for counts in no_drift])
        lines.append(f"| {words} | {failed:.2%} | {failed_share(0, SHIFT, judge, looks=10, count=2000):.1%} |")
    lines += ["", "| driftScore (demo detector, no drift), 200 rollouts | failed within an hour |", "|---|---|"]
    for words, args in (("last 400 inputs, max 0.25", (400, 0.25)),
                        ("last 400 inputs, max 0.3 and maxIncreasePercent 50", (400, 0.3, 50.0)),
                        ("last 100 inputs, max 0.3", (100, 0.3))):
        lines.append(f"| {words} | {score_rollouts(3, *args):.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
