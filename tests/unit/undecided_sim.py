"""Simulated canary rollouts of the documented sequential checks (docs/concepts/statistics.md), judged by the operator's own pure parts.

Each rollout walks the default steps (10 %, 25 %, 50 %; pauses 1m, 2m, 2m) with an analysis every minute, as the
engine does: the check's evidence is everything since the candidate began serving (`evaluate`, the one-sided bounds of
`analysis.sequential`), an Undecided check is held against its budget (`spend_budget`), the analysis' outcome is
`outcome`'s, and the engine counts it (`count_analysis`) toward failureLimit and noDataLimit. A step passes after
its pause on a passed analysis; failureLimit failures in a row roll back.

Traffic: predictions (or requests) arrive as a Poisson process of `rate` a second over both versions, split by the
step's weight; stable had everything before the rollout. Labels come as `Labels` says, at once unless said. As the
accuracy contract counts them, each prediction is counted once when it is `gradingDelay` old, graded if its label
came by then: the versions' counts follow the weights of that much earlier, so the check waits for its first
verdict (window and delay) without counting toward any limit, its evidence starts one delay after the candidate
began serving (`rollout.plan.check_window`), and a step passes only once a window of its own predictions is counted
(the engine's `graded_own_traffic`). `Labels.on_arrival` models the contract before: labels counted when they
arrive, read as the operator read them then.

`python -m tests.unit.undecided_sim` prints the report.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from modelops.analysis.evaluate import Measurement, evaluate, outcome, spend_budget
from modelops.api.modeldeployment import BudgetPolicy, Check, ModelDeploymentSpec, Outcome
from modelops.api.types import duration_seconds
from modelops.rollout.plan import Streaks, count_analysis

STATISTICS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "statistics.md"
AT = "2026-01-01T00:00:00.000Z"
MINUTE = 60.0
SPEC = ModelDeploymentSpec.model_validate({"model": "m", "version": "1.1.0", "serving": {"backend": "kserve"}})
"""The defaults: steps, interval 1m, failureLimit 2, noDataLimit 3."""


def documented_check(name: str) -> Check:
    """The check of that name in the documentation's example of sequential checks (docs/concepts/statistics.md), as a user copies it."""
    line = re.search(rf"^- (\{{name: {name}, .*sequential.*\}})$", STATISTICS_PAGE.read_text(), re.MULTILINE)
    assert line is not None, f"docs/concepts/statistics.md has no sequential check {name}"
    return Check.model_validate(yaml.safe_load(line.group(1)))


@dataclass(frozen=True)
class Ending:
    rolled_back: bool
    """Rolled back (else promoted)."""
    minutes: int
    """Minutes since the candidate began serving."""
    samples: int
    """The candidate's samples judged at the end (graded ones, for a check with a grading delay)."""
    first_failed: int | None = None
    """Minutes since the candidate began serving at the first failed analysis, None without one: a rollback waits
    for failureLimit of them."""


@dataclass(frozen=True)
class Bursts:
    """Minutes whose rate is `factor` times the usual one, each minute of each version on its own with chance
    `chance` (capped at 1: a rate of 1 % bursts to 10 %)."""

    chance: float = 0.01
    factor: float = 10.0


@dataclass(frozen=True)
class Labels:
    """When the labels of predictions come, each after an exponential delay of its own: a wrong prediction's may come
    sooner than a right one's (a complaint comes at once, the absence of one is known only later)."""

    right_minutes: float = 0.0
    """Mean delay of a right prediction's label; 0: at once."""
    wrong_minutes: float = 0.0
    on_arrival: bool = False
    """Counted when the label arrives (the contract before), and read as the operator read it then: evidence since
    the candidate began serving, a step passing after its pause however late its predictions' labels."""

    def by_age(self, minutes: float) -> tuple[float, float]:
        """The chance that a right and a wrong prediction are labelled by that age."""
        return tuple(1.0 if mean == 0 else -math.expm1(-minutes / mean)
                     for mean in (self.right_minutes, self.wrong_minutes))

    def came_by(self, minutes: float) -> tuple[float, float]:
        """The chance that a right and a wrong prediction made in a minute (uniformly within it) have their label
        `minutes` after that minute began: P(u + delay < minutes), u uniform on [0, 1)."""
        def chance(mean: float) -> float:
            if mean == 0:
                return min(minutes, 1.0)
            if minutes < 1:
                return minutes + mean * math.expm1(-minutes / mean)
            return 1 - mean * math.exp(-minutes / mean) * math.expm1(1 / mean)
        return chance(self.right_minutes), chance(self.wrong_minutes)


AT_ONCE = Labels()


def roll_out(check: Check, rate: float, stable_p: float, candidate_p: float, rng: np.random.Generator, *,
             labels: Labels = AT_ONCE, undecided_is_missing: bool = False, bursts: Bursts | None = None,
             binomial_only: bool = False) -> Ending:
    """One rollout; `undecided_is_missing` counts an Undecided analysis as inconclusive (missing data), as the
    operator once did; `binomial_only` judges every look without the last one's intervals, so with the binomial
    variance alone, as the operator once did. `stable_p` and `candidate_p`: the share of right predictions (or of
    errors)."""
    analysis, steps = SPEC.analysis, SPEC.strategy.steps
    assert analysis.interval == "1m" and analysis.window is None, "one look a minute over the minute"
    delay = round(duration_seconds(check.grading_delay or "0s") / MINUTE)
    first = 1 + delay  # the window, then the grading delay (rollout.plan.grading_until)
    own = 1 if labels.on_arrival else first  # a window of the step's own predictions counted (graded_own_traffic)
    since = 1 if labels.on_arrival else first  # the first minute whose counts are evidence (check_window)
    pauses = [round(duration_seconds(s.pause) / MINUTE) for s in steps]
    last = round(duration_seconds(check.sequential.max_duration) / MINUTE) + sum(max(p, own) + 1 for p in pauses)
    per_minute = rate * MINUTE
    kept_right, kept_wrong = labels.by_age(delay)
    changes: list[tuple[int, float]] = []  # (the first minute of a new candidate share, by how much it rose)
    hits_c = n_c = hits_s = n_s = 0
    streaks, step, in_step = Streaks(), 0, 0
    judged, first_failed = None, None

    def p_of(p: float) -> float:
        return min(1.0, p * bursts.factor) if bursts is not None and rng.random() < bursts.chance else p

    for minute in range(1, last + 1):
        if not changes or steps[step].weight / 100 != sum(d for _, d in changes):
            changes.append((minute, steps[step].weight / 100 - sum(d for _, d in changes)))
        if labels.on_arrival:  # this minute's labels, of predictions made in it or before (stable had all of those)
            came = [sum(d * labels.came_by(minute - began + 1)[i] for began, d in changes) for i in (0, 1)]
            candidate, stable = came, [1 - c for c in came]
        else:  # predictions made `delay` minutes ago, old enough now, and labelled by now
            share = sum(d for began, d in changes if began <= minute - delay)
            candidate, stable = [share * kept_right, share * kept_wrong], [(1 - share) * kept_right, (1 - share) * kept_wrong]
        p_c, p_s = p_of(candidate_p), p_of(stable_p)
        right_c, wrong_c, right_s, wrong_s = rng.poisson([
            per_minute * p_c * candidate[0], per_minute * (1 - p_c) * candidate[1],
            per_minute * p_s * stable[0], per_minute * (1 - p_s) * stable[1]])
        if minute >= since:
            hits_c, n_c, hits_s, n_s = hits_c + right_c, n_c + right_c + wrong_c, hits_s + right_s, n_s + right_s + wrong_s
        in_step += 1
        if minute < first:
            continue  # waiting for labels: nothing passes, nothing counts
        measured = Measurement(hits_c / n_c if n_c else None, hits_s / n_s, int(n_c), baseline_samples=int(n_s))
        judged = spend_budget(check, evaluate(check, measured, AT, None if binomial_only else judged), minute * MINUTE)
        result = outcome([check], [judged])
        if undecided_is_missing and result is Outcome.Undecided:
            result = Outcome.Inconclusive
        streaks, result = count_analysis(streaks, result, analysis.no_data_limit, no_data_counts=True)
        if result is Outcome.Failed and first_failed is None:
            first_failed = minute
        if result is Outcome.Failed and streaks.failures >= analysis.failure_limit:
            return Ending(True, minute, int(n_c), first_failed)
        if result is Outcome.Passed and in_step >= max(pauses[step], own):
            step, in_step = step + 1, 0
            if step == len(steps):
                return Ending(False, minute, int(n_c), first_failed)
    raise AssertionError(f"a rollout neither promoted nor rolled back in {last} minutes")


@dataclass(frozen=True)
class Scenario:
    name: str
    check: str
    rate: float
    stable_p: float
    candidate_p: float
    labels: Labels = AT_ONCE

    def run(self, rollouts: int, seed: int, *, on_budget: BudgetPolicy | None = None, **options) -> list[Ending]:
        """`on_budget`: instead of the documented one."""
        check, rng = documented_check(self.check), np.random.default_rng(seed)
        if on_budget is not None:
            assert check.sequential is not None
            check = check.model_copy(update={"sequential": check.sequential.model_copy(update={"on_budget": on_budget})})
        return [roll_out(check, self.rate, self.stable_p, self.candidate_p, rng, labels=self.labels, **options)
                for _ in range(rollouts)]


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

LATE = Labels(right_minutes=8, wrong_minutes=2)
"""Late labels, a wrong prediction's sooner: with gradingDelay 10m, 99 % of the wrong ones and 71 % of the right ones
are labelled by their grading age."""
LATE_HEALTHY = Scenario("accuracy 0.97 = 0.97, 80 predictions/s, wrong ones labelled sooner (2 vs 8 min)", "accuracy",
                        80, 0.97, 0.97, LATE)
LATE_BAD = Scenario("accuracy 0.97 -> 0.92, 80 predictions/s, wrong ones labelled sooner (2 vs 8 min)", "accuracy",
                    80, 0.97, 0.92, LATE)
ON_ARRIVAL = Scenario(f"{LATE_HEALTHY.name}, counted on arrival (the contract before)", "accuracy", 80, 0.97, 0.97,
                      Labels(right_minutes=8, wrong_minutes=2, on_arrival=True))


def rolled_back(endings: list[Ending]) -> float:
    return sum(e.rolled_back for e in endings) / len(endings)


def report(rollouts: int = 4000) -> list[str]:
    rows: list[tuple[str, Scenario, dict]] = [(scenario.name, scenario, {}) for scenario in HEALTHY + BAD]
    for scenario in HEALTHY:
        rows.append((f"{scenario.name}, onBudget Fail", scenario, {"on_budget": BudgetPolicy.Fail}))
        rows.append((f"{scenario.name}, undecided counted as missing data", scenario, {"undecided_is_missing": True}))
    bursty = "errors in bursts (10x in 1 % of minutes)"
    for scenario in (HEALTHY[0], BAD[0]):
        rows.append((f"{scenario.name}, {bursty}", scenario, {"bursts": Bursts()}))
    rows.append((f"{HEALTHY[0].name}, {bursty}, binomial variance only", HEALTHY[0],
                 {"bursts": Bursts(), "binomial_only": True}))
    rows += [(scenario.name, scenario, {}) for scenario in (LATE_HEALTHY, LATE_BAD, ON_ARRIVAL)]
    lines = []
    for seed, (name, scenario, options) in enumerate(rows):
        endings = scenario.run(rollouts, seed, **options)
        lines.append(f"| {name} | {rolled_back(endings):.1%} | {np.median([e.minutes for e in endings]):.0f} |")
    return lines


if __name__ == "__main__":
    print("| scenario | rolled back | median minutes to promotion or rollback |")
    print("|---|---|---|")
    print("\n".join(report()))
