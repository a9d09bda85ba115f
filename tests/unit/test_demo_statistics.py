"""The demo report's simulated error rates of its checks: the simulation counts as the operator does, and the
report's section has a row per check of the demo's ModelDeployment, from the demo's own models."""

import math

import pytest
from scipy import stats

from demo.models import train_all
from demo.report import NOT_SIMULATED, SIMULATED, check_statistics, offline_rates
from demo.run import RPS, deployment_spec
from modelops.api.modeldeployment import Check, ModelDeploymentSpec

from .rollout_sim import make_spec
from .window_sim import Samples, rollouts


def test_one_analysis_rolls_back_as_often_as_its_window_breaks_the_limit():
    """One step of 50 %, no pause, failureLimit 1: the first analysis (10 s of 40 requests/s, half to the candidate)
    promotes or rolls back, so the share rolled back is the chance that the window's error rate exceeds 0.02:
    n ~ Poisson(200) requests, Binomial(n, 0.02) errors."""
    spec = make_spec(steps=(50,), pause="0s", analysis={"interval": "2s", "window": "10s", "failureLimit": 1})
    check = Check.model_validate({"name": "errors", "query": "q", "sampleQuery": "s", "max": 0.02, "minSamples": 10})
    mean = RPS * 10 * 0.5
    ns = range(0, 600)
    exact = sum(stats.poisson.pmf(n, mean) * (stats.binom.sf(math.floor(0.02 * n + 1e-9), n, 0.02) if n >= 10 else 0)
                for n in ns)
    count = 4000
    simulated = rollouts(spec, check, Samples.answered, RPS, 0.02, 0.02, count=count, seed=3)
    assert abs(simulated.rolled_back - exact) <= 3.5 * math.sqrt(exact * (1 - exact) / count), (simulated, exact)
    assert simulated.median_seconds == 10


@pytest.fixture(scope="module")
def rates(tmp_path_factory):
    return offline_rates(train_all(tmp_path_factory.mktemp("models")))


def test_the_offline_rates_are_the_demo_models(rates):
    assert rates["1.0.0"]["errors"] == rates["3.0.0"]["errors"] == 0.0 and rates["1.0.0"]["agreement"] == 1.0
    assert 0.05 < rates["2.0.0"]["errors"] < 0.5  # v2 fails bright inputs
    assert rates["3.0.0"]["agreement"] >= 0.95 > 0.9 > rates["2.0.0"]["agreement"]
    assert rates["2.0.0"]["accuracy"] < 0.9 < rates["1.0.0"]["accuracy"]


def test_the_report_states_each_checks_false_rollbacks_and_detection(rates):
    spec = ModelDeploymentSpec.model_validate(deployment_spec(["1.0.0", "2.0.0", "3.0.0"]))
    lines = check_statistics(spec, rates, "1.0.0", "3.0.0", "2.0.0", per_second=RPS, count=200)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    rows = {row[0]: row[1:] for row in cells[1:]}
    assert set(rows) == {c.name for c in spec.analysis.checks} == set(SIMULATED) | set(NOT_SIMULATED)
    for name in SIMULATED:
        healthy, false, worse, caught, median = rows[name][:5]
        assert float(false.rstrip("%")) <= 10 and caught == "100.0%", rows[name]
        # failureLimit 2 at a 2 s interval after a first window of 10 s: 12 s at the soonest
        assert 12 <= float(median) <= 30, rows[name]
    assert rows["error-rate"][1] == rows["agreement"][1] == "0.0%"
    # An accuracy window of 80 to 200 graded answers at a 5 % limit: chance alone rolls some healthy candidates back.
    assert float(rows["accuracy"][1].rstrip("%")) > 0
    assert "200 simulated rollouts" in "\n".join(lines)
