"""How soon the sequential checks roll a worse candidate back, against Wald's sequential probability ratio test.

`make bench-stats` (a benchmark, not a test: it prints, it asserts nothing). The ideal is Wald's SPRT of "the
candidate at the tolerated edge" against "the candidate at its true rate" with alpha = beta = 0.05, on the contrast
with the edge (normal approximation, stable's noise included: a two-sample test). Its expected candidate samples
with a look per sample are Wald's approximation, without overshoot:

    E[N] = ((1 - beta) log((1 - beta) / alpha) + beta log(beta / (1 - alpha))) / (delta^2 / (2 sigma^2))

with delta the contrast's distance from the edge and sigma^2 = p_c (1 - p_c) + scale^2 p_s (1 - p_s) / k per
candidate sample, k stable samples to each candidate one.

Looks make the comparison fair: at high traffic the operator's first look already holds thousands of samples, more
than the SPRT needs. So every row also runs the SPRT at the same looks as the operator (its log-likelihood ratio
checked only at each look, stopping at the first past either boundary, log((1 - beta) / alpha) or
log(beta / (1 - alpha))), on simulated counts of the same traffic, and compares medians over the rollouts that end
in a rollback: candidate samples and, in whole rollouts, looks.

Two kinds of looks: one per candidate sample (the boundary alone, `tests.unit.sequential_sim.decisions`), and the
documented checks in whole rollouts with the defaults (`tests.unit.undecided_sim`: the default steps, an analysis a
minute, failureLimit 2). A whole rollout's looks are its analyses from the first with evidence (a check with a
`gradingDelay` has none before it); its statistics decide at the first failed analysis, and failureLimit adds the
looks from there to the rollback. The SPRT of whole rollouts sees the first step's split (10 %: k = 9) throughout,
where a worse candidate's rollouts stay.
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


def _scale(tolerance: float, higher_is_better: bool) -> float:
    return (1 - tolerance) if higher_is_better else (1 + tolerance)


def sprt_samples(stable_rate: float, candidate_rate: float, *, tolerance: float, higher_is_better: bool,
                 stable_per_candidate: float, alpha: float = ALPHA, beta: float = BETA) -> float:
    """Wald's expected candidate samples to reject the tolerated edge when the candidate is at `candidate_rate`."""
    scale = _scale(tolerance, higher_is_better)
    delta = candidate_rate - scale * stable_rate
    sigma2 = (candidate_rate * (1 - candidate_rate)
              + scale * scale * stable_rate * (1 - stable_rate) / stable_per_candidate)
    evidence = (1 - beta) * math.log((1 - beta) / alpha) + beta * math.log(beta / (1 - alpha))
    return evidence / (delta * delta / (2 * sigma2))


@dataclass(frozen=True)
class Stops:
    """Where simulated SPRTs rejected the edge (a rollback), NaN where they did not."""

    looks: np.ndarray
    """The look (from 1) at the rejection."""
    samples: np.ndarray
    """The candidate's samples then."""


def sprt_at_looks(stable_rate: float, candidate_rate: float, *, tolerance: float, higher_is_better: bool,
                  candidate_per_look: float, stable_per_look: float, poisson: bool, looks: int, rollouts: int,
                  seed: int, alpha: float = ALPHA, beta: float = BETA) -> Stops:
    """Wald's SPRT of the edge against `candidate_rate`, its log-likelihood ratio checked only at each look: each
    version's samples a look are its `*_per_look` (Poisson-distributed with that mean when `poisson`), each a hit
    with its rate. The contrast is observed as the difference of the versions' rates, whose variance under the true
    rates, p_c (1 - p_c) / n_c + scale^2 p_s (1 - p_s) / n_s, makes the ratio exact for normal observations."""
    rng = np.random.default_rng(seed)
    scale = _scale(tolerance, higher_is_better)
    sign = -1 if higher_is_better else 1  # the contrast measured towards worse
    delta = sign * (candidate_rate - scale * stable_rate)
    var_c, var_s = candidate_rate * (1 - candidate_rate), scale * scale * stable_rate * (1 - stable_rate)
    reject, accept = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    hits_c, n_c, hits_s, n_s = (np.zeros(rollouts) for _ in range(4))
    stopped = np.zeros(rollouts, dtype=bool)
    at_look, at_samples = np.full(rollouts, np.nan), np.full(rollouts, np.nan)
    for look in range(1, looks + 1):
        new_c = rng.poisson(candidate_per_look, rollouts) if poisson else np.full(rollouts, candidate_per_look)
        new_s = rng.poisson(stable_per_look, rollouts) if poisson else np.full(rollouts, stable_per_look)
        hits_c += rng.binomial(new_c.astype(np.int64), candidate_rate)
        hits_s += rng.binomial(new_s.astype(np.int64), stable_rate)
        n_c += new_c
        n_s += new_s
        seen = (n_c > 0) & (n_s > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            observed = sign * (hits_c / n_c - scale * hits_s / n_s)
            ratio = np.where(seen, (delta * observed - delta * delta / 2) / (var_c / n_c + var_s / n_s), 0.0)
        rejected = ~stopped & (ratio >= reject)
        at_look[rejected], at_samples[rejected] = look, n_c[rejected]
        stopped |= rejected | (ratio <= accept)
        if stopped.all():
            break
    return Stops(at_look, at_samples)


@dataclass(frozen=True)
class Row:
    name: str
    samples: float
    """Median candidate samples at the rollback."""
    sprt: float
    """The SPRT's median candidate samples at its rejection, at the same looks."""
    wald: float
    """Wald's expected samples with a look per sample."""
    seconds: float
    """What the row took to simulate."""
    looks: tuple[float, float, float, float] | None = None
    """Whole rollouts: median looks to the first failed analysis, to the rollback, the SPRT's to its rejection, and
    the looks failureLimit adds (from the first failed analysis to the rollback)."""
    minutes: tuple[float, float] | None = None
    """Whole rollouts: median minutes to the rollback, and to the SPRT's rejection."""

    def line(self) -> str:
        cells = [self.name, f"{self.samples:,.0f}", f"{self.sprt:,.0f}", f"{self.samples / self.sprt:.2f}",
                 f"{self.wald:,.0f}", f"{self.samples / self.wald:.2f}"]
        if self.looks is None or self.minutes is None:
            cells += ["-"] * 5
        else:
            first, rollback, sprt, added = self.looks
            cells += [f"{first:.0f} / {sprt:.0f} = {first / sprt:.2f}", f"{rollback:.0f} / {sprt:.0f} = "
                      f"{rollback / sprt:.2f}", f"{added:.0f}", f"{self.minutes[0]:.0f}", f"{self.minutes[1]:.0f}"]
        return "| " + " | ".join(cells + [f"{self.seconds:.1f}"]) + " |"


HEADER = ("| row | median samples to rollback | SPRT at the same looks | ratio | Wald's E[N], a look per sample "
          "| ratio | looks to first Fail / SPRT's | looks to rollback / SPRT's | looks failureLimit adds | minutes to rollback "
          "| SPRT's minutes | seconds |")

# The documented examples' tolerances: accuracy maxDropPercent 1, errors maxIncreasePercent 10.
PER_SAMPLE = [("accuracy 0.97 -> 0.92", 0.97, 0.92, 0.01, True), ("errors 1 % -> 3 %", 0.01, 0.03, 0.10, False)]


def per_sample(rollouts: int) -> list[Row]:
    rows = []
    for seed, (name, stable, candidate, tolerance, higher) in enumerate(PER_SAMPLE):
        share = sequential_sim.STABLE_SHARE
        ideal = sprt_samples(stable, candidate, tolerance=tolerance, higher_is_better=higher,
                             stable_per_candidate=share)
        started = time.process_time()
        looks = math.ceil(10 * ideal)
        found = sequential_sim.decisions(stable, candidate, tolerance=tolerance, higher_is_better=higher, alpha=ALPHA,
                                         looks=looks, per_look=1, rollouts=rollouts, seed=seed)
        sprt = sprt_at_looks(stable, candidate, tolerance=tolerance, higher_is_better=higher, candidate_per_look=1,
                             stable_per_look=share, poisson=False, looks=looks, rollouts=rollouts, seed=seed)
        rows.append(Row(f"{name}, a look per candidate sample, stable {share}x", float(np.nanmedian(found.samples)),
                        float(np.nanmedian(sprt.samples)), ideal, time.process_time() - started))
    return rows


def whole_rollouts(rollouts: int) -> list[Row]:
    first_split = undecided_sim.SPEC.strategy.steps[0].weight / 100
    rows = []
    for seed, scenario in enumerate(undecided_sim.BAD):
        assert scenario.labels == undecided_sim.AT_ONCE, "the SPRT's looks see every label at once"
        check = undecided_sim.documented_check(scenario.check)
        percent = check.max_drop_percent if check.max_drop_percent is not None else check.max_increase_percent
        higher = check.max_drop_percent is not None
        ideal = sprt_samples(scenario.stable_p, scenario.candidate_p, tolerance=percent / 100, higher_is_better=higher,
                             stable_per_candidate=(1 - first_split) / first_split)
        delay = round(duration_seconds(check.grading_delay or "0s") / undecided_sim.MINUTE)
        started = time.process_time()
        endings = [e for e in scenario.run(rollouts, seed) if e.rolled_back]
        per_minute = scenario.rate * undecided_sim.MINUTE
        sprt = sprt_at_looks(scenario.stable_p, scenario.candidate_p, tolerance=percent / 100, higher_is_better=higher,
                             candidate_per_look=per_minute * first_split,
                             stable_per_look=per_minute * (1 - first_split), poisson=True, looks=240,
                             rollouts=rollouts, seed=seed)
        sprt_looks = float(np.nanmedian(sprt.looks))
        # A look's minute is the grading delay and then one a look (undecided_sim: the first evidence at 1 + delay).
        looks = (float(np.median([e.first_failed - delay for e in endings])),
                 float(np.median([e.minutes - delay for e in endings])), sprt_looks,
                 float(np.median([e.minutes - e.first_failed for e in endings])))
        rows.append(Row(f"{scenario.name}, `{check.name}` check, 1-minute looks",
                        float(np.median([e.samples for e in endings])), float(np.nanmedian(sprt.samples)), ideal,
                        time.process_time() - started, looks,
                        (float(np.median([e.minutes for e in endings])), delay + sprt_looks)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    rollouts = parser.parse_args().rollouts
    print(f"{rollouts} simulated rollouts per row; the ideal: Wald's two-sample SPRT, alpha = beta = {ALPHA}; "
          "medians over the rollouts rolled back (the SPRT's: over those that rejected the edge)")
    print(HEADER)
    print("|---" * HEADER.count(" | ") + "|---|")
    for row in per_sample(rollouts) + whole_rollouts(rollouts):
        print(row.line(), flush=True)


if __name__ == "__main__":
    main()
