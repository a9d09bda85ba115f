"""How soon the sequential checks roll a worse candidate back, against Wald's sequential probability ratio test.

`make bench-stats` (a benchmark, not a test: it prints, it asserts nothing). Per row: the median candidate samples
to a rollback, the ideal's, their ratio, and the simulated minutes and the benchmark's own seconds. The ideal is
Wald's SPRT of "the candidate at the tolerated edge" against "the candidate at its true rate" with alpha = beta =
0.05, on the contrast with the edge observed once per candidate sample together with its share of stable's samples
(normal approximation, stable's noise included: a two-sample test); its expected samples under the worse rate are
Wald's approximation, without overshoot:

    E[N] = ((1 - beta) log((1 - beta) / alpha) + beta log(beta / (1 - alpha))) / (delta^2 / (2 sigma^2))

with delta the contrast's distance from the edge and sigma^2 = p_c (1 - p_c) + scale^2 p_s (1 - p_s) / k per
candidate sample, k stable samples to each candidate one.

Two kinds of looks: one per candidate sample (the boundary alone, `tests.unit.sequential_sim.decisions`), and the
README's checks in whole rollouts with the defaults (`tests.unit.undecided_sim`: the default steps, an analysis a
minute, failureLimit 2), whose ideal is taken at the first step's split (10 %: k = 9).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

from modelops.api.types import duration_seconds
from tests.unit import sequential_sim, undecided_sim

ALPHA = BETA = 0.05


def sprt_samples(stable_rate: float, candidate_rate: float, *, tolerance: float, higher_is_better: bool,
                 stable_per_candidate: float, alpha: float = ALPHA, beta: float = BETA) -> float:
    """Wald's expected candidate samples to reject the tolerated edge when the candidate is at `candidate_rate`."""
    scale = (1 - tolerance) if higher_is_better else (1 + tolerance)
    delta = candidate_rate - scale * stable_rate
    sigma2 = (candidate_rate * (1 - candidate_rate)
              + scale * scale * stable_rate * (1 - stable_rate) / stable_per_candidate)
    evidence = (1 - beta) * math.log((1 - beta) / alpha) + beta * math.log(beta / (1 - alpha))
    return evidence / (delta * delta / (2 * sigma2))


@dataclass(frozen=True)
class Row:
    name: str
    samples: float
    """Median candidate samples at the rollback."""
    ideal: float
    minutes: float | None
    """Median simulated minutes to the rollback (whole rollouts only)."""
    ideal_minutes: float | None
    seconds: float
    """What the row took to simulate."""

    def line(self) -> str:
        minutes = "-" if self.minutes is None else f"{self.minutes:.0f}"
        ideal_minutes = "-" if self.ideal_minutes is None else f"{self.ideal_minutes:.1f}"
        return (f"| {self.name} | {self.samples:,.0f} | {self.ideal:,.0f} | {self.samples / self.ideal:.2f} | "
                f"{minutes} | {ideal_minutes} | {self.seconds:.1f} |")


# The README's examples' tolerances: accuracy maxDropPercent 1, errors maxIncreasePercent 10.
PER_SAMPLE = [("accuracy 0.97 -> 0.92", 0.97, 0.92, 0.01, True), ("errors 1 % -> 3 %", 0.01, 0.03, 0.10, False)]


def per_sample(rollouts: int) -> list[Row]:
    rows = []
    for name, stable, candidate, tolerance, higher in PER_SAMPLE:
        ideal = sprt_samples(stable, candidate, tolerance=tolerance, higher_is_better=higher,
                             stable_per_candidate=sequential_sim.STABLE_SHARE)
        started = time.process_time()
        found = sequential_sim.decisions(stable, candidate, tolerance=tolerance, higher_is_better=higher, alpha=ALPHA,
                                         looks=math.ceil(10 * ideal), per_look=1, rollouts=rollouts)
        rows.append(Row(f"{name}, a look per candidate sample, stable {sequential_sim.STABLE_SHARE}x",
                        float(np.nanmedian(found.samples)), ideal, None, None, time.process_time() - started))
    return rows


def whole_rollouts(rollouts: int) -> list[Row]:
    first_split = undecided_sim.SPEC.strategy.steps[0].weight / 100
    rows = []
    for seed, scenario in enumerate(undecided_sim.BAD):
        check = undecided_sim.readme_check(scenario.check)
        percent = check.max_drop_percent if check.max_drop_percent is not None else check.max_increase_percent
        ideal = sprt_samples(scenario.stable_p, scenario.candidate_p, tolerance=percent / 100,
                             higher_is_better=check.max_drop_percent is not None,
                             stable_per_candidate=(1 - first_split) / first_split)
        delay = duration_seconds(check.grading_delay or "0s") / undecided_sim.MINUTE
        started = time.process_time()
        endings = [e for e in scenario.run(rollouts, seed) if e.rolled_back]
        rows.append(Row(f"{scenario.name}, `{check.name}` check, 1-minute looks",
                        float(np.median([e.samples for e in endings])), ideal,
                        float(np.median([e.minutes for e in endings])),
                        delay + ideal / (scenario.rate * first_split * undecided_sim.MINUTE),
                        time.process_time() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    rollouts = parser.parse_args().rollouts
    print(f"{rollouts} simulated rollouts per row; the ideal: Wald's two-sample SPRT, alpha = beta = {ALPHA}")
    print("| row | median samples to rollback | SPRT expected samples | ratio | median minutes | SPRT minutes "
          "| seconds |")
    print("|---|---|---|---|---|---|---|")
    for row in per_sample(rollouts) + whole_rollouts(rollouts):
        print(row.line(), flush=True)


if __name__ == "__main__":
    main()
