"""The counts a sequential check weighs, as Prometheus computes them from scraped counters: `observed` against
series with a known history, evaluated by promtool's rule unit tests (Prometheus' own PromQL engine)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from modelops.analysis.promql import Subject, observed, render
from modelops.api.modeldeployment import CheckTemplate
from modelops.routers import kserve, seldon

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) absent")

WINDOW = "5m"
"""Evaluated at 10m: the window runs from 5m to 10m, the series' samples one a minute from 0m."""


def expect(tmp_path, series: dict[str, str], expressions: list[tuple[str, dict[str, float]]],
           at: str = "10m") -> None:
    """Each expression (with {{window}} = WINDOW) evaluates at `at` to those values by label set."""
    tests = [{"expr": expr.replace("{{window}}", WINDOW), "eval_time": at,
              "exp_samples": [{"labels": labels, "value": value} for labels, value in values.items()]}
             for expr, values in expressions]
    path = tmp_path / "counts.yaml"
    path.write_text(yaml.safe_dump({"evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": tests}]}))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("history", "counted", "extrapolated"), [
    ("0+10x10", 50, 50),  # 50 at the start, 100 at the end
    ("_ _ _ _ _ _ _ 50 60 70 80", 80, 35),  # born within the window (first scraped at 7m): counted from 0
    ("0+10x6", 10, 15),  # gone after 6m: 60 less 50, where increase() stretches its minute over the window's first half
    ("0 10 20 30 40 50 60 5 15 25 35", 45, 45),  # reset at 7m: increase()'s 10 + 5 + 10 + 10 + 10
])
def test_a_series_counts_what_its_samples_show_and_resets_are_allowed_for(tmp_path, history, counted, extrapolated):
    """`extrapolated`: what increase() makes of the same samples."""
    expect(tmp_path, {'x{job="j", pod="p"}': history, 'x{job="other", pod="p"}': "0+1000x10"},
           [(observed('x{job="j"}'), {"{}": counted}),
            ('sum(increase(x{job="j"}[{{window}}]))', {"{}": extrapolated})])


@pytest.mark.parametrize(("history", "counted"), [
    ("1000+10x9 stale 1110+10x10", 60),  # a failed scrape at 10m, before the window (10m30s-15m30s): counted from
    # the last sample before it (9m); 1150 if its staleness marker hid the start and the series counted from 0
    ("1000+10x10 5+10x10", 50),  # reset between the start (10m) and the window's first sample (11m): -1055 if taken
    # as last less start; increase()'s 5 + 40, extrapolated half a minute at each end
])
def test_a_staleness_marker_or_a_reset_at_the_windows_start_is_no_lifetime_or_negative_count(tmp_path, history,
                                                                                             counted):
    expect(tmp_path, {'x{job="j"}': history}, [(observed('x{job="j"}'), {"{}": counted})], at="15m30s")


def test_series_are_counted_each_on_its_own_then_summed(tmp_path):
    """A pod that vanished beside one that reset: no series' start is subtracted from another's end."""
    expect(tmp_path, {'x{pod="steady"}': "0+10x10", 'x{pod="born"}': "_ _ _ _ _ _ _ 50 60 70 80",
                      'x{pod="gone"}': "0+10x6", 'x{pod="reset"}': "0 10 20 30 40 50 60 5 15 25 35"},
           [(observed("x"), {"{}": 50 + 80 + 10 + 45})])


def test_histogram_buckets_keep_their_bounds(tmp_path):
    expect(tmp_path, {'h_bucket{le="0.1", pod="a"}': "0+3x10", 'h_bucket{le="+Inf", pod="a"}': "0+5x10",
                      'h_bucket{le="0.1", pod="b"}': "_ _ _ _ _ _ _ _ 1 2 3", 'h_bucket{le="+Inf", pod="b"}':
                      "_ _ _ _ _ _ _ _ 2 4 6"},
           [(observed("h_bucket", "le"), {'{le="0.1"}': 15 + 3, '{le="+Inf"}': 25 + 6})])


SUBJECT = Subject("prod", "fraud", "1.2.0", "fraud-00002", "fraud", WINDOW)


def test_kserve_error_rate_is_errors_over_requests_as_counted(tmp_path):
    new = 'k8s_namespace_name="prod", kn_revision_name="fraud-00002"'
    template = kserve.TEMPLATES[CheckTemplate.errorRate]
    series = {f'kn_serving_invocation_duration_seconds_count{{{new}, http_response_status_code="200", pod="a"}}':
              "0+97x10",
              f'kn_serving_invocation_duration_seconds_count{{{new}, http_response_status_code="503", pod="a"}}':
              "_ _ _ _ _ _ _ 1 2 3 4"}
    requests = 97 * 5 + 4
    expect(tmp_path, series, [(render(template.value, SUBJECT), {"{}": 4 / requests}),
                              (render(template.samples, SUBJECT), {"{}": requests})])


def test_seldon_accuracy_is_correct_over_graded_as_counted(tmp_path):
    labels = 'namespace="prod", deployment_name="fraud", predictor_name="fraud-00002"'
    template = seldon.TEMPLATES[CheckTemplate.accuracy]
    series = {f"seldon_api_model_feedback_total{{{labels}}}": "0+10x10",
              f"seldon_api_model_feedback_reward_total{{{labels}}}": "0+9x10"}
    expect(tmp_path, series, [(render(template.value, SUBJECT), {"{}": 0.9}),
                              (render(template.samples, SUBJECT), {"{}": 50})])
