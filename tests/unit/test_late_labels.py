"""Labels that come late, a wrong prediction's sooner than a right one's (see undecided_sim): counted once at the
grading age, the documented sequential accuracy check rolls a healthy candidate back at most 1 - confidence of the
time and a clearly worse one at least `confidence` of the time; counted on arrival, as the contract before said,
the healthy one is rolled back far more often (the defect this guards against)."""

import pytest

from . import undecided_sim as sim

pytestmark = pytest.mark.statistics

ROLLOUTS = 4000
CONFIDENCE = sim.documented_check("accuracy").sequential.confidence


def test_counted_at_the_grading_age_a_healthy_candidate_is_rarely_rolled_back():
    assert sim.rolled_back(sim.LATE_HEALTHY.run(ROLLOUTS, seed=21)) <= 1 - CONFIDENCE


def test_counted_at_the_grading_age_a_worse_candidate_is_rolled_back():
    assert sim.rolled_back(sim.LATE_BAD.run(ROLLOUTS, seed=22)) >= CONFIDENCE


def test_counted_on_arrival_a_healthy_candidate_is_rolled_back_too_often():
    assert sim.rolled_back(sim.ON_ARRIVAL.run(ROLLOUTS, seed=23)) > 1 - CONFIDENCE
