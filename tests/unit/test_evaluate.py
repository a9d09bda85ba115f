import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelops.analysis.evaluate import Measurement, evaluate, outcome
from modelops.api.modeldeployment import Check, Outcome, Verdict

AT = "2026-01-01T00:00:00Z"


def check(**kw):
    samples = {"sampleQuery": "count_over_time(up[1m])"} if kw.get("minSamples") else {}
    return Check.model_validate({"name": "c", "query": "up", **samples, **kw})


@pytest.mark.parametrize(
    "limits, measured, verdict, words",
    [
        ({"max": 0.05}, Measurement(0.01), Verdict.Pass, "within <= 0.05"),
        ({"max": 0.05}, Measurement(0.2), Verdict.Fail, "0.2 breaks the limit <= 0.05"),
        ({"min": 0.9}, Measurement(0.85), Verdict.Fail, "breaks the limit >= 0.9"),
        ({"min": 0.9, "max": 1}, Measurement(0.95), Verdict.Pass, ">= 0.9; <= 1"),
        ({"max": 0.05}, Measurement(None), Verdict.NoData, "no data for the candidate"),
        ({"max": 0.05}, Measurement(math.nan), Verdict.NoData, "no data"),
        ({"max": 0.05, "minSamples": 100}, Measurement(0.0, samples=12), Verdict.NoData, "12 samples, 100 needed"),
        ({"max": 0.05, "minSamples": 100}, Measurement(0.0, samples=100), Verdict.Pass, "within"),
        ({"max": 0.05}, Measurement(0.0, error="connection refused"), Verdict.Error, "connection refused"),
        # Relative to stable: the "accuracy must not drop more than 5 %" rule.
        ({"maxDropPercent": 5}, Measurement(0.90, baseline=0.93), Verdict.Pass, "at most 5% below stable 0.93"),
        ({"maxDropPercent": 5}, Measurement(0.85, baseline=0.93), Verdict.Fail, ">= 0.8835"),
        ({"maxIncreasePercent": 50}, Measurement(0.30, baseline=0.10), Verdict.Fail, "<= 0.15"),
        ({"maxIncreasePercent": 50}, Measurement(0.12, baseline=0.10), Verdict.Pass, "within"),
        ({"maxDropPercent": 5}, Measurement(0.9, baseline=None), Verdict.NoData, "stable version"),
        ({"maxIncreasePercent": 10}, Measurement(0.01, baseline=0.0), Verdict.Fail, "<= 0"),
        ({"maxDropPercent": 10}, Measurement(-1.1, baseline=-1.0), Verdict.Pass, "within"),
        ({"maxDropPercent": 10}, Measurement(-1.2, baseline=-1.0), Verdict.Fail, ">= -1.1"),
        # On the bound up to float rounding: Prometheus' rate ratio for exactly 95 % right answers.
        ({"maxDropPercent": 5}, Measurement(0.9499999999999998, baseline=1.0), Verdict.Pass, "within"),
        ({"min": 0.3}, Measurement(0.2999999), Verdict.Fail, "breaks the limit >= 0.3"),
        ({"max": 0.3}, Measurement(0.1 + 0.2), Verdict.Pass, "within <= 0.3"),
    ],
)
def test_verdicts_explain_themselves(limits, measured, verdict, words):
    result = evaluate(check(**limits), measured, AT)
    assert result.verdict is verdict
    assert words in result.message or words in result.limit, (result.message, result.limit)
    assert result.time == AT


def test_relative_limit_words_without_baseline():
    result = evaluate(check(maxDropPercent=5, maxIncreasePercent=3), Measurement(1.0), AT)
    assert result.limit == "at most 5% below stable; at most 3% above stable"


def result(verdict, name="c"):
    return evaluate(check(max=1), Measurement(0.5), AT).model_copy(update={"verdict": verdict, "name": name})


@pytest.mark.parametrize(
    "policy, verdict, expected",
    [
        ("Hold", Verdict.NoData, Outcome.Inconclusive),
        ("Fail", Verdict.NoData, Outcome.Failed),
        ("Pass", Verdict.NoData, Outcome.Passed),
        ("Pass", Verdict.Error, Outcome.Inconclusive),  # an unreachable provider is never a pass
        ("Hold", Verdict.Pass, Outcome.Passed),
        ("Pass", Verdict.Fail, Outcome.Failed),
    ],
)
def test_outcome_applies_no_data_policy(policy, verdict, expected):
    assert outcome([check(max=1, noData=policy)], [result(verdict)]) is expected


def test_any_failure_fails_the_analysis():
    checks = [check(max=1).model_copy(update={"name": n}) for n in "ab"]
    assert outcome(checks, [result(Verdict.Pass, "a"), result(Verdict.Fail, "b")]) is Outcome.Failed
    assert outcome(checks, [result(Verdict.NoData, "a"), result(Verdict.Fail, "b")]) is Outcome.Failed
    assert outcome([], []) is Outcome.Passed


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(value=finite, baseline=finite, drop=st.floats(min_value=0, max_value=100))
def test_relative_drop_verdict_matches_its_definition(value, baseline, drop):
    verdict = evaluate(check(maxDropPercent=drop), Measurement(value, baseline=baseline), AT).verdict
    floor = baseline - abs(baseline) * drop / 100
    assert verdict is (Verdict.Fail if value < floor else Verdict.Pass)


# What the Prometheus provider relies on: it passes +Inf and -Inf on as values (NaN is no data), and a sample count
# it could not read as a count is 0.
@pytest.mark.parametrize(
    "limits, measured, verdict",
    [
        ({"max": 0.05}, Measurement(math.inf), Verdict.Fail),
        ({"min": 0.9}, Measurement(-math.inf), Verdict.Fail),
        ({"min": 0.9, "max": 1}, Measurement(math.inf), Verdict.Fail),
        ({"min": 0.9, "max": 1}, Measurement(-math.inf), Verdict.Fail),
        ({"maxIncreasePercent": 50}, Measurement(math.inf, baseline=0.1), Verdict.Fail),
        ({"maxDropPercent": 5}, Measurement(-math.inf, baseline=0.93), Verdict.Fail),
        ({"max": 0.05, "minSamples": 1}, Measurement(0.0, samples=0), Verdict.NoData),
        ({"max": 0.05}, Measurement(math.inf, error="timed out"), Verdict.Error),
    ],
)
def test_infinite_values_break_limits(limits, measured, verdict):
    assert evaluate(check(**limits), measured, AT).verdict is verdict


@pytest.mark.parametrize(
    "limits, measured",
    [
        ({"maxDropPercent": 5}, Measurement(0.5, baseline=math.inf)),
        ({"maxIncreasePercent": 5}, Measurement(0.5, baseline=-math.inf)),
        ({"maxDropPercent": 5}, Measurement(math.inf, baseline=math.inf)),
        ({"min": 0.9}, Measurement(math.inf)),
    ],
)
def test_an_infinity_is_never_a_pass(limits, measured):
    assert evaluate(check(**limits), measured, AT).verdict is not Verdict.Pass
