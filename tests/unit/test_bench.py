"""The benchmark's pure parts (bench/): quantiles from histogram buckets, metric text, request rates by
verb, the table and the comparison with a previous run, the objects it creates, and the ideal SPRT that
`make bench-stats` compares with. The benchmarks themselves are never run here."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from bench import figures as fig
from bench.kube import resource_of
from bench.run import GC_PAUSE_SAMPLES, http_route, model_deployment, model_version
from bench.standins import Exporter, accepted, checks, endpoint_slice, route_status
from bench.stats import BETA, sprt_at_looks, sprt_samples
from modelops.api.modeldeployment import ModelDeploymentSpec
from modelops.api.modelversion import ModelVersionSpec

INF = math.inf

# --- histogram_quantile, as Prometheus computes it ------------------------------------------------


def test_quantile_interpolates_within_the_bucket_holding_the_rank():
    buckets = {0.1: 10, 0.5: 30, 1.0: 40, INF: 40}
    assert fig.histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)  # 0.3
    assert fig.histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert fig.histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (39.6 - 30) / 10)
    assert fig.histogram_quantile(0.1, buckets) == pytest.approx(0.04)  # the first bucket starts at 0


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert fig.histogram_quantile(0.99, {0.1: 5, 1.0: 5, INF: 10}) == 1.0


def test_quantile_of_an_empty_histogram_is_none_and_bad_input_is_refused():
    assert fig.histogram_quantile(0.5, {0.1: 0, INF: 0}) is None
    with pytest.raises(ValueError):
        fig.histogram_quantile(0.5, {0.1: 3})  # no +Inf
    with pytest.raises(ValueError):
        fig.histogram_quantile(1.5, {INF: 3})


def test_quantile_skips_empty_buckets_below_the_rank():
    # Everything in (0.25, 0.5]: the median is interpolated there, not at an empty bucket's edge.
    assert fig.histogram_quantile(0.5, {0.1: 0, 0.25: 0, 0.5: 8, INF: 8}) == pytest.approx(0.375)


def test_bucket_deltas_summed_over_deployments_give_the_window_only():
    text_before = _lag({"a": (4, 4, 4), "b": (0, 2, 2)})
    text_after = _lag({"a": (4, 4, 6), "b": (10, 12, 12)})
    before = fig.buckets(fig.samples(text_before, ["modelops_analysis_lag_seconds_bucket"]),
                         "modelops_analysis_lag_seconds")
    after = fig.buckets(fig.samples(text_after, ["modelops_analysis_lag_seconds_bucket"]),
                        "modelops_analysis_lag_seconds")
    window = fig.delta(after, before)
    assert window == {0.1: 10, 1.0: 10, INF: 12}
    assert fig.histogram_quantile(0.5, window) == pytest.approx(0.06)


def _lag(per_deployment: dict[str, tuple[int, int, int]]) -> str:
    lines = ["# HELP modelops_analysis_lag_seconds x", "# TYPE modelops_analysis_lag_seconds histogram"]
    for name, counts in per_deployment.items():
        for le, count in zip(("0.1", "1.0", "+Inf"), counts):
            lines.append(f'modelops_analysis_lag_seconds_bucket{{deployment="{name}",le="{le}",namespace="b"}} {count}')
        lines.append(f'modelops_analysis_lag_seconds_count{{deployment="{name}",namespace="b"}} {counts[-1]}')
    return "\n".join(lines) + "\n"


# --- metric text and request rates ------------------------------------------------------------------


APISERVER = """# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="namespaces",scope="cluster",subresource="",verb="LIST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="modelops.io",resource="modeldeployments",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 40
apiserver_request_total{code="409",component="apiserver",dry_run="",group="modelops.io",resource="modeldeployments",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 2
apiserver_request_total_other{verb="PATCH"} 1000
apiserver_request_duration_seconds_count{verb="PATCH"} 1000
"""


def test_samples_reads_only_the_named_metric():
    found = fig.samples(APISERVER, ["apiserver_request_total"])
    assert {n for n, _, _ in found} == {"apiserver_request_total"}
    assert fig.by_label(found, "apiserver_request_total", "verb") == {"LIST": 7, "PATCH": 42}
    assert fig.total(found, "apiserver_request_total", code="409") == 2


def gc_text(full: dict[float, int], seconds: float) -> str:
    """modelops_gc_pause_seconds as the operator exposes it: generation 0 always paused 1 s, generation 2 as given."""
    lines = [f'modelops_gc_pause_seconds_bucket{{generation="0",le="{b}"}} 1.0' for b in ("0.5", "1.0", "+Inf")]
    lines += [f'modelops_gc_pause_seconds_bucket{{generation="2",le="{b}"}} {c}' for b, c in full.items()]
    count = max(full.values())
    lines += ['modelops_gc_pause_seconds_count{generation="0"} 1.0', 'modelops_gc_pause_seconds_sum{generation="0"} 1.0',
              f'modelops_gc_pause_seconds_count{{generation="2"}} {count}',
              f'modelops_gc_pause_seconds_sum{{generation="2"}} {seconds}']
    return "\n".join(lines) + "\n"


def pauses(full: dict[float, int], seconds: float) -> dict:
    return fig.gc_pauses(fig.samples(gc_text({("+Inf" if b == INF else str(b)): c for b, c in full.items()}, seconds),
                                     GC_PAUSE_SAMPLES))


def test_gc_pauses_between_two_reads_give_the_longest_full_collections_bucket():
    before = pauses({1.0: 2, 2.5: 3, 5.0: 3, INF: 3}, 4.0)
    after = pauses({1.0: 3, 2.5: 4, 5.0: 5, INF: 5}, 12.0)
    assert fig.paused(after, before) == (8.0, 2.0, 5.0)  # one new pause under 1 s, one in (2.5, 5]
    assert fig.paused(before, before) == (0.0, 0.0, None)
    assert fig.paused(pauses({1.0: 2, 2.5: 3, 5.0: 3, INF: 4}, 30.0), before)[2] == INF


def test_requests_by_verb_take_out_the_benchmarks_own_and_never_go_negative():
    rates = fig.requests_by_verb({"PATCH": 120, "GET": 10, "LIST": 3, "POST": 6},
                                 {"PATCH": 20, "GET": 12, "POST": 6, "WATCH": 2}, seconds=10)
    assert rates == {"LIST": 0.3, "PATCH": 10.0}  # GET below the own count and POST all own: none left
    assert list(fig.requests_by_verb({"PATCH": 1, "GET": 1, "APPLY": 1, "LIST": 1}, {}, 1)) == [
        "GET", "LIST", "PATCH", "APPLY"]  # the verbs' usual order


def test_requests_by_resource_name_the_subresource_and_match_the_benchmarks_own_paths():
    found = fig.samples(APISERVER, ["apiserver_request_total"])
    assert fig.by_resource(found) == {"LIST namespaces": 7, "PATCH modeldeployments/status": 42}
    assert resource_of("/apis/modelops.io/v1alpha1/namespaces/ns/modeldeployments/m1/status") == \
        "modeldeployments/status"
    assert resource_of("/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes?watch=1") == "httproutes"
    assert resource_of("/api/v1/namespaces/ns/services") == "services"
    assert resource_of("/api/v1/namespaces") == resource_of("/api/v1/namespaces/ns") == "namespaces"
    assert resource_of("/apis/modelops.io/v1alpha1/clustermetricproviders/default") == "clustermetricproviders"
    assert resource_of("/metrics") == ""


def test_requests_per_deployment_take_out_the_benchmarks_own_largest_first():
    each = fig.per_deployment({"PATCH modeldeployments/status": 420, "GET httproutes": 700, "POST events": 30,
                               "PATCH httproutes/status": 300, "GET leases": 2},
                              {"PATCH httproutes/status": 300, "POST events": 10}, deployments=100)
    assert each == {"GET httproutes": 7.0, "PATCH modeldeployments/status": 4.2, "POST events": 0.2}
    assert list(each) == ["GET httproutes", "PATCH modeldeployments/status", "POST events"]
    assert fig.per_deployment({"GET httproutes": 7}, {}, deployments=0) == {}


def test_nearest_rank_quantile_of_raw_values():
    assert fig.quantile([], 0.5) is None
    assert fig.quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert fig.quantile(range(1, 101), 0.99) == 99
    assert fig.quantile([5.0], 0.99) == 5.0


# --- formatting, the table, the comparison -----------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (None, "-"), (math.nan, "-"), (0, "0"), (0.0, "0"), (1234.5, "1,234"), (12.345, "12.3"), (1.2345, "1.23"),
    (0.012345, "0.0123"), (0.0012345, "0.0012"), (-3.5, "-3.5"),
])
def test_fmt(value, text):
    assert fig.fmt(value) == text


def test_change_is_relative_and_missing_when_it_has_no_meaning():
    assert fig.change(110, 100) == pytest.approx(0.1)
    assert fig.change(50, 100) == pytest.approx(-0.5)
    assert fig.change(0, 0) == 0.0
    assert fig.change(1, 0) is None
    assert fig.change(None, 1) is None and fig.change(1, None) is None
    assert fig.fmt_change(0.1234) == "+12.3 %" and fig.fmt_change(-0.5) == "-50.0 %" and fig.fmt_change(None) == "-"
    assert fig.fmt_change(-0.0001) == "+0.0 %"


FIGURES = {"create_to_stable_s": 30.0, "idle_cpu_percent": 1.5,
           "idle_api_requests_per_s": {"total": 2.0, "GET": 0.5, "PATCH": 1.5}, "status_patches_per_step": None}


def test_flat_names_nested_figures_by_verb():
    assert fig.flat(FIGURES) == {"create_to_stable_s": 30.0, "idle_cpu_percent": 1.5,
                                 "idle_api_requests_per_s.total": 2.0, "idle_api_requests_per_s.GET": 0.5,
                                 "idle_api_requests_per_s.PATCH": 1.5, "status_patches_per_step": None}


def test_table_without_a_previous_run():
    lines = fig.table(FIGURES).splitlines()
    assert lines[0].split() == ["figure", "unit", "this", "run"]
    assert set(lines[1]) <= {"-", " "}
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in lines[2:])}
    assert rows["creating all N to all Stable"] == ["s", "30.0"]
    assert rows["API requests, idle (operator)"] == ["req/s", "2"]
    assert rows["GET"] == ["req/s", "0.5"]  # by verb, indented under their total
    assert rows["status patches per step"] == ["-"]


def test_table_and_comparison_with_a_previous_run():
    previous = {"create_to_stable_s": 40.0, "idle_cpu_percent": 1.5,
                "idle_api_requests_per_s": {"total": 1.0, "GET": 0.5, "LIST": 0.5}, "gone": 3.0}
    assert fig.comparison(FIGURES, previous) == {
        "create_to_stable_s": pytest.approx(-0.25), "idle_cpu_percent": 0.0, "idle_api_requests_per_s.total": 1.0,
        "idle_api_requests_per_s.GET": 0.0}
    header, _, *rows = fig.table(FIGURES, previous).splitlines()
    assert header.split()[-3:] == ["run", "previous", "change"]
    creating = next(r for r in rows if r.startswith("creating all N"))
    assert creating.split()[-4:] == ["30.0", "40.0", "-25.0", "%"]
    listed = next(i for i, r in enumerate(rows) if r.strip().startswith("LIST"))
    assert rows[listed].split()[1:] == ["req/s", "-", "0.5", "-"]  # only in the previous run: in its group
    assert rows[listed - 1].strip().startswith("PATCH") and rows[listed + 1].startswith("status patches")
    patches = next(r for r in rows if r.startswith("status patches per step"))
    assert patches.split()[-3:] == ["-", "-", "-"]
    assert any(r.startswith("gone") for r in rows)


# --- what the benchmark creates is valid ------------------------------------------------------------


def test_the_benchmarks_objects_are_valid_for_the_operator():
    spec = ModelDeploymentSpec.model_validate(model_deployment("m0001")["spec"])
    assert spec.serving.gateway_api.route == "m0001"
    assert [c.name for c in spec.analysis.checks] == ["errors", "throughput"]
    assert ModelVersionSpec.model_validate(model_version("m0001", "2.0.0")["spec"]).version == "2.0.0"
    route = http_route("m0001")
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == spec.serving.gateway_api.services["1.0.0"]
    assert "{{revision}}" in checks()[0]["query"] and "{{window}}" in checks()[0]["query"]


def test_route_status_accepts_the_current_generation_only():
    route = {"metadata": {"name": "m", "generation": 3}, "spec": {"parentRefs": [{"name": "gw"}]}}
    assert not accepted(route)
    route["status"] = route_status(route)
    assert accepted(route)
    assert [c["type"] for c in route["status"]["parents"][0]["conditions"]] == ["Accepted", "ResolvedRefs"]
    route["metadata"]["generation"] = 4  # the operator moved the weights: not accepted until written again
    assert not accepted(route)


def test_endpoint_slice_has_one_ready_endpoint_for_its_service():
    eps = endpoint_slice("m0001-v1-0-0", 256)
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "m0001-v1-0-0"
    assert eps["endpoints"] == [{"addresses": ["10.0.1.1"], "conditions": {"ready": True, "serving": True,
                                                                            "terminating": False}}]


def test_exporter_counts_requests_from_when_a_service_was_added():
    exporter = Exporter()
    try:
        exporter.services[("bench", "a")] = 100.0
        text = exporter.render(102.5)
    finally:
        exporter.server.server_close()
    found = fig.samples(text, ["bench_requests_total", "bench_errors_total"])
    assert fig.total(found, "bench_requests_total", service="a") == 25
    assert fig.total(found, "bench_errors_total", namespace="bench") == 0


# --- bench-stats: the ideal SPRT simulated at given looks ----------------------------------------


@pytest.mark.parametrize("stable, candidate, tolerance, higher", [(0.97, 0.92, 0.01, True), (0.01, 0.03, 0.10, False)])
def test_the_sprt_simulated_with_a_look_per_sample_is_walds(stable, candidate, tolerance, higher):
    """It rejects the edge about 1 - beta of the time, after about Wald's expected samples (a little more: the
    overshoot his approximation leaves out)."""
    expected = sprt_samples(stable, candidate, tolerance=tolerance, higher_is_better=higher, stable_per_candidate=4)
    stops = sprt_at_looks(stable, candidate, tolerance=tolerance, higher_is_better=higher, candidate_per_look=1,
                          stable_per_look=4, poisson=False, looks=math.ceil(6 * expected), rollouts=4000, seed=3)
    rejected = stops.samples[~np.isnan(stops.samples)]
    assert 1 - BETA <= len(rejected) / len(stops.samples) <= 1 - BETA / 2
    assert expected <= rejected.mean() <= 1.2 * expected
    assert (stops.looks[~np.isnan(stops.looks)] == rejected).all()  # a look per candidate sample
