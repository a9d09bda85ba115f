"""Simulated canary rollouts of the README's sequential checks, judged by the operator's own pure parts.

Each rollout walks the default steps (10 %, 25 %, 50 %; pauses 1m, 2m, 2m) with an analysis every minute, as the
engine does: the check's evidence is everything since the candidate began serving (`evaluate`, the one-sided bounds of
`analysis.sequential`), an Undecided check is held against its budget (`spend_budget`), the analysis' outcome is
`outcome`'s, and the engine counts it (`count_analysis`) toward failureLimit and noDataLimit. A step passes after
its pause on a passed analysis; failureLimit failures in a row roll back.

Traffic: `rate` requests (or labels) a second over both versions, split by the step's weight. Labels arrive
`gradingDelay` after the prediction they grade, so the versions' labelled counts follow the weights of that much
earlier (stable had everything before the rollout), and the check waits for its first verdict as the engine
makes it (window and delay), without counting toward any limit.

`python -m tests.unit.undecided_sim` prints the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from modelops.analysis.evaluate import Measurement, evaluate, outcome, spend_budget
from modelops.api.modeldeployment import BudgetPolicy, Check, ModelDeploymentSpec, Outcome
from modelops.api.types import duration_seconds
from modelops.rollout.plan import Streaks, count_analysis

README = Path(__file__).resolve().parents[2] / "README.md"
AT = "2026-01-01T00:00:00.000Z"
MINUTE = 60.0
SPEC = ModelDeploymentSpec.model_validate({"model": "m", "version": "1.1.0", "serving": {"backend": "kserve"}})
"""The defaults: steps, interval 1m, failureLimit 2, noDataLimit 3."""


def readme_check(name: str) -> Check:
    """The check of that name in the README's example of sequential checks, as a user copies it."""
    line = re.search(rf"^- (\{{name: {name}, .*sequential.*\}})$", README.read_text(), re.MULTILINE)
    assert line is not None, f"the README has no sequential check {name}"
    return Check.model_validate(yaml.safe_load(line.group(1)))


@dataclass(frozen=True)
class Ending:
    rolled_back: bool
    """Rolled back (else promoted)."""
    minutes: int
    """Minutes since the candidate began serving."""
    samples: int
    """The candidate's samples judged at the end (graded ones, for a check with a grading delay)."""


def roll_out(check: Check, rate: float, stable_p: float, candidate_p: float, rng: np.random.Generator, *,
             undecided_is_missing: bool = False) -> Ending:
    """One rollout; `undecided_is_missing` counts an Undecided analysis as inconclusive (missing data), as the
    operator once did."""
    analysis, steps = SPEC.analysis, SPEC.strategy.steps
    assert analysis.interval == "1m" and analysis.window is None, "one look a minute over the minute"
    delay = round(duration_seconds(check.grading_delay or "0s") / MINUTE)
    first = 1 + delay  # the window, then the grading delay (rollout.plan.grading_until)
    last = round(duration_seconds(check.sequential.max_duration) / MINUTE) + sum(
        round(duration_seconds(s.pause) / MINUTE) + 1 for s in steps)
    per_minute = rate * MINUTE
    weights: list[float] = []
    hits_c = n_c = hits_s = n_s = 0
    streaks, step, in_step = Streaks(), 0, 0
    for minute in range(1, last + 1):
        weights.append(steps[step].weight / 100)
        graded = minute - 1 - delay  # the minute whose predictions are graded in this one
        share = weights[graded] if graded >= 0 else 0.0
        c, s = round(per_minute * share), round(per_minute * (1 - share))
        hits_c += rng.binomial(c, candidate_p) if c else 0
        hits_s += rng.binomial(s, stable_p)
        n_c, n_s, in_step = n_c + c, n_s + s, in_step + 1
        if minute < first:
            continue  # waiting for labels: nothing passes, nothing counts
        measured = Measurement(hits_c / n_c if n_c else None, hits_s / n_s, n_c, baseline_samples=n_s)
        judged = spend_budget(check, evaluate(check, measured, AT), minute * MINUTE)
        result = outcome([check], [judged])
        if undecided_is_missing and result is Outcome.Undecided:
            result = Outcome.Inconclusive
        streaks, result = count_analysis(streaks, result, analysis.no_data_limit, no_data_counts=True)
        if result is Outcome.Failed and streaks.failures >= analysis.failure_limit:
            return Ending(True, minute, n_c)
        if result is Outcome.Passed and in_step * MINUTE >= duration_seconds(steps[step].pause):
            step, in_step = step + 1, 0
            if step == len(steps):
                return Ending(False, minute, n_c)
    raise AssertionError(f"a rollout neither promoted nor rolled back in {last} minutes")


@dataclass(frozen=True)
class Scenario:
    name: str
    check: str
    rate: float
    stable_p: float
    candidate_p: float

    def run(self, rollouts: int, seed: int, *, on_budget: BudgetPolicy | None = None, **options) -> list[Ending]:
        """`on_budget`: instead of the README's."""
        check, rng = readme_check(self.check), np.random.default_rng(seed)
        if on_budget is not None:
            assert check.sequential is not None
            check = check.model_copy(update={"sequential": check.sequential.model_copy(update={"on_budget": on_budget})})
        return [roll_out(check, self.rate, self.stable_p, self.candidate_p, rng, **options) for _ in range(rollouts)]


HEALTHY = [
    Scenario("errors 1 % = 1 %, 1,000 req/s", "errors", 1000, 0.01, 0.01),
    Scenario("accuracy 0.97 = 0.97, 80 labels/s", "accuracy", 80, 0.97, 0.97),
    Scenario("accuracy 0.97 = 0.97, 10 labels/s", "accuracy", 10, 0.97, 0.97),
]
BAD = [
    Scenario("errors 1 % -> 3 %, 1,000 req/s", "errors", 1000, 0.01, 0.03),
    Scenario("accuracy 0.97 -> 0.92, 80 labels/s", "accuracy", 80, 0.97, 0.92),
    Scenario("accuracy 0.97 -> 0.92, 10 labels/s", "accuracy", 10, 0.97, 0.92),
]


def rolled_back(endings: list[Ending]) -> float:
    return sum(e.rolled_back for e in endings) / len(endings)


def report(rollouts: int = 4000) -> list[str]:
    rows: list[tuple[str, Scenario, dict]] = [(scenario.name, scenario, {}) for scenario in HEALTHY + BAD]
    for scenario in HEALTHY:
        rows.append((f"{scenario.name}, onBudget Fail", scenario, {"on_budget": BudgetPolicy.Fail}))
        rows.append((f"{scenario.name}, undecided counted as missing data", scenario, {"undecided_is_missing": True}))
    lines = []
    for seed, (name, scenario, options) in enumerate(rows):
        endings = scenario.run(rollouts, seed, **options)
        lines.append(f"| {name} | {rolled_back(endings):.1%} | {np.median([e.minutes for e in endings]):.0f} |")
    return lines


if __name__ == "__main__":
    print("| scenario | rolled back | median minutes to promotion or rollback |")
    print("|---|---|---|")
    print("\n".join(report()))
