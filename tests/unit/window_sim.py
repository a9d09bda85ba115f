"""Simulated rollouts of one proportion check held against its limits over a sliding window, as the demo's
analysis does it, judged by the operator's own pure parts.

Each rollout walks the spec's steps: the first analysis one window after the candidate began serving, then one
every interval, each over the last window's counts (`evaluate`), the analysis' outcome `outcome`'s over the checks
in effect at the step (`Check.applies_to`: an analysis without one passes), counted by `count_analysis` toward
failureLimit and noDataLimit. A step passes on a passed analysis once its pause is over; failureLimit failures in a
row roll back.

Traffic: `per_second` requests a second, as a Poisson process, each second's split by the step: a weight step
sends that share to the candidate and the rest to stable, a mirror step copies that share of stable's requests to
the candidate. Each of a version's samples is a hit with its chance (an error, a right prediction, an agreement).
Which requests are a check's samples is the check's: `Samples`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from enum import Enum

import numpy as np

from modelops.analysis.evaluate import Measurement, evaluate, outcome
from modelops.api.modeldeployment import Check, ModelDeploymentSpec, Outcome, Step, StepKind
from modelops.api.types import duration_seconds
from modelops.rollout.plan import Streaks, count_analysis

AT = "2026-01-01T00:00:00.000Z"


class Samples(str, Enum):
    """Which of the candidate's requests a check counts."""

    answered = "answered"
    """Every request it answers, its users' and the copies (an error rate)."""
    users = "users"
    """Its users' requests only (graded answers: nobody grades a discarded copy)."""
    copies = "copies"
    """The copies only (agreement with stable's answer)."""


@dataclass(frozen=True)
class Ending:
    rolled_back: bool
    seconds: float
    """Since the candidate began serving, to the analysis that rolled it back or promoted it."""


def _candidate_share(step: Step, samples: Samples) -> float:
    if step.kind is StepKind.mirror:
        return 0.0 if samples is Samples.users else (step.mirror or 0) / 100
    return 0.0 if samples is Samples.copies else (step.weight or 0) / 100


def _stable_share(step: Step) -> float:
    return 1.0 if step.kind is StepKind.mirror else 1 - (step.weight or 0) / 100


def roll_out(spec: ModelDeploymentSpec, check: Check, samples: Samples, per_second: float, stable_p: float,
             candidate_p: float, rng: np.random.Generator) -> Ending:
    """One rollout judged by `check` alone."""
    analysis, steps = spec.analysis, spec.strategy.steps
    window = round(duration_seconds(analysis.window or analysis.interval))
    interval = round(duration_seconds(analysis.interval))
    pauses = [duration_seconds(s.pause) for s in steps]
    last = window + (analysis.failure_limit + analysis.no_data_limit + 1) * interval * len(steps) + sum(pauses)
    counts = np.zeros((0, 4))  # a row a second: candidate hits, candidate samples, stable hits, stable samples
    streaks, step, started = Streaks(), 0, 0.0
    for second in range(1, math.ceil(last) + 1):
        n_c = rng.poisson(per_second * _candidate_share(steps[step], samples))
        n_s = rng.poisson(per_second * _stable_share(steps[step]))
        counts = np.vstack([counts, [rng.binomial(n_c, candidate_p), n_c, rng.binomial(n_s, stable_p), n_s]])
        if second < window or (second - window) % interval:
            continue
        hits_c, n_c, hits_s, n_s = counts[-window:].sum(axis=0)
        measured = Measurement(hits_c / n_c if n_c else None, hits_s / n_s if n_s else None, int(n_c),
                               baseline_samples=int(n_s))
        judged = [check] if check.applies_to(steps[step].kind) else []
        result = outcome(judged, [evaluate(c, measured, AT) for c in judged])
        streaks, result = count_analysis(streaks, result, analysis.no_data_limit, no_data_counts=True)
        if result is Outcome.Failed and streaks.failures >= analysis.failure_limit:
            return Ending(True, second)
        if result is Outcome.Passed and second - started >= pauses[step]:
            step, started = step + 1, second
            if step == len(steps):
                return Ending(False, second)
    raise AssertionError(f"a rollout neither promoted nor rolled back in {last} s")


@dataclass(frozen=True)
class Rates:
    rolled_back: float
    """Share of the rollouts rolled back."""
    median_seconds: float | None
    """Median seconds from the candidate's first traffic to its rollback, over those rolled back."""


def rollouts(spec: ModelDeploymentSpec, check: Check, samples: Samples, per_second: float, stable_p: float,
             candidate_p: float, *, count: int, seed: int) -> Rates:
    rng = np.random.default_rng(seed)
    endings = [roll_out(spec, check, samples, per_second, stable_p, candidate_p, rng) for _ in range(count)]
    back = [e.seconds for e in endings if e.rolled_back]
    return Rates(len(back) / count, statistics.median(back) if back else None)
