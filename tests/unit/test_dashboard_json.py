"""The chart's Grafana dashboard, read without Grafana: its variables are defined before use, each
panel queries the operator's real metric names through the `datasource` variable. Whether the
queries return data is tests/integration/test_dashboard.py's business."""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY

from modelops import leader, metrics  # noqa: F401 - they register the operator's metrics

from .. import dashboard as dash

DASHBOARD = dash.load()
EXPORTED = {family.name for family in REGISTRY.collect() if family.name.startswith("modelops_")}


def test_it_is_a_grafana_dashboard_with_a_prometheus_datasource_variable():
    assert DASHBOARD["schemaVersion"] >= 39 and DASHBOARD["uid"] and DASHBOARD["title"]
    names = [v["name"] for v in dash.variables(DASHBOARD)]
    assert names[0] == "datasource" and len(names) == len(set(names))
    datasource = dash.variables(DASHBOARD)[0]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for variable in dash.variables(DASHBOARD)[1:]:
        assert variable["type"] == "query" and variable["datasource"]["uid"] == "${datasource}"
        dash.label_values(variable)  # parses
    assert {"namespace", "deployment"} <= set(names)


def test_every_variable_is_defined_before_it_is_used():
    defined = set(dash.BUILTINS)
    for variable in dash.variables(DASHBOARD):
        selector, _ = dash.label_values(variable) if variable["type"] == "query" else (None, None)
        assert dash.references(selector or "") <= defined, variable["name"]
        defined.add(variable["name"])
    for panel in dash.panels(DASHBOARD):
        used = dash.references(panel["title"]) | {v for t in panel["targets"] for v in dash.references(t["expr"])}
        assert used <= defined, (panel["title"], used - defined)
        assert panel.get("repeat") in (None, *defined)


def test_every_panel_queries_through_the_datasource_variable():
    ids = [p["id"] for p in DASHBOARD["panels"]] + [p["id"] for r in DASHBOARD["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids))
    for panel in dash.panels(DASHBOARD):
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bmodelops_\w+", expr))


def family(name: str) -> str:
    return re.sub(r"_(bucket|count|sum|total|created)$", "", name)


def test_queries_use_only_metrics_the_operator_exports():
    exported = {family(n) for n in EXPORTED} | EXPORTED
    for target in dash.targets(DASHBOARD):
        for name in metric_names(target.expr):
            assert family(name) in exported, f"{target}: {name} is not a metric of the operator"


@pytest.mark.parametrize("metric", [
    "modelops_traffic_weight_percent", "modelops_phase", "modelops_check_value", "modelops_check_limit",
    "modelops_check_verdicts_total", "modelops_rollbacks_total", "modelops_promotions_total",
    "modelops_analysis_duration_seconds_bucket", "modelops_reconcile_errors_total", "modelops_leader",
])
def test_the_dashboard_shows(metric):
    assert any(metric in metric_names(t.expr) for t in dash.targets(DASHBOARD))


def test_each_check_is_shown_against_its_limit_on_one_panel():
    repeated = [p for p in dash.panels(DASHBOARD) if p.get("repeat") == "check"]
    assert len(repeated) == 1
    exprs = " ".join(t["expr"] for t in repeated[0]["targets"])
    assert {"modelops_check_value", "modelops_check_limit"} <= metric_names(exprs) and 'check="$check"' in exprs


def test_analysis_duration_is_shown_as_p50_and_p95_of_the_histogram():
    exprs = [t.expr for t in dash.targets(DASHBOARD) if "modelops_analysis_duration_seconds" in t.expr]
    assert {re.search(r"histogram_quantile\((0\.\d+)", e)[1] for e in exprs} == {"0.5", "0.95"}


def test_panels_do_not_overlap():
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, (panel["title"], taken.get((x, y)))
                taken[(x, y)] = panel["title"]


def test_substitution_fills_every_syntax_and_names_a_missing_variable():
    assert dash.substitute('a{ns="$ns", d=~"${d}", x="[[x]]"}[$__rate_interval]',
                           {"ns": "prod", "d": "(a|b)", "x": "1", "__rate_interval": "30s"}) == \
        'a{ns="prod", d=~"(a|b)", x="1"}[30s]'
    with pytest.raises(KeyError, match=r"\$nope"):
        dash.substitute("up{a=\"$nope\"}", {})
    assert dash.regex_of(["a"]) == "a" and dash.regex_of(["a.b", "c"]) == r"(a\.b|c)"
