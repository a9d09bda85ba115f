"""The documented sequential checks over simulated rollouts (see undecided_sim): a healthy candidate is rolled back
at most 1 - confidence of the time, a clearly worse one at least `confidence` of the time within its budget, and
counting an undecided check as missing data again breaks the first promise."""

import pytest

from modelops.api.types import duration_seconds

from . import undecided_sim as sim

pytestmark = pytest.mark.statistics

HEALTHY_ROLLOUTS = 1400
"""Per scenario: 4,200 healthy rollouts in all."""
BAD_ROLLOUTS = 500


@pytest.mark.parametrize("scenario", sim.HEALTHY, ids=[s.name for s in sim.HEALTHY])
def test_a_healthy_candidate_is_rolled_back_at_most_one_minus_confidence_of_the_time(scenario):
    confidence = sim.documented_check(scenario.check).sequential.confidence
    endings = scenario.run(HEALTHY_ROLLOUTS, seed=11)
    assert sim.rolled_back(endings) <= 1 - confidence


@pytest.mark.parametrize("scenario", sim.BAD, ids=[s.name for s in sim.BAD])
def test_a_clearly_worse_candidate_is_rolled_back_within_the_budget(scenario):
    check = sim.documented_check(scenario.check)
    budget = duration_seconds(check.sequential.max_duration) / sim.MINUTE
    endings = scenario.run(BAD_ROLLOUTS, seed=12)
    within = sum(e.rolled_back and e.minutes <= budget for e in endings) / len(endings)
    assert within >= check.sequential.confidence


@pytest.mark.parametrize("scenario", sim.HEALTHY, ids=[s.name for s in sim.HEALTHY])
def test_counted_as_missing_data_undecided_analyses_roll_healthy_candidates_back(scenario):
    """The defect this simulation guards against: the first test fails on such counting."""
    confidence = sim.documented_check(scenario.check).sequential.confidence
    endings = scenario.run(300, seed=13, undecided_is_missing=True)
    assert sim.rolled_back(endings) > 1 - confidence
