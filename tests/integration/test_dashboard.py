"""The chart's Grafana dashboard against the real Prometheus, scraping the real operator, through a
KServe rollout that has everything the dashboard shows: a version bumped before its ModelVersion
exists (reconcile errors), a candidate failing a check (rolled back) and one promoted.

Every variable's label_values and every panel's every query, with Grafana's variables filled in
as Grafana would, must return data; one that returns nothing fails the test, naming the panel.
Finally the ModelDeployment is deleted and every series of it must be gone from the operator.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .. import dashboard as dash
from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
STEP = 2.0  # seconds between the points of a range query, as a Grafana panel a few hundred pixels wide would ask
RATE_INTERVAL = "30s"


def label_values(prometheus, selector: str | None, label: str, start: float, end: float) -> list[str]:
    """What Grafana's label_values(selector, label) asks Prometheus: the label's values in the time range."""
    params = [("start", f"{start:.3f}"), ("end", f"{end:.3f}")] + ([("match[]", selector)] if selector else [])
    url = f"{prometheus.url}/api/v1/label/{urllib.parse.quote(label)}/values?" + urllib.parse.urlencode(params)
    body = json.load(urllib.request.urlopen(url, timeout=10))
    assert body["status"] == "success", body
    return sorted(body["data"])


def finite(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The series that have at least one number (histogram_quantile of nothing is NaN)."""
    def values(r):
        return r["values"] if "values" in r else [r["value"]]
    return [r for r in result if any(math.isfinite(float(v)) for _, v in values(r))]


def operator_series(operator, namespace: str, deployment: str) -> list[str]:
    text = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
    return [f"{s.name}{s.labels}" for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("namespace") == namespace and s.labels.get("deployment") == deployment]


def test_every_dashboard_query_returns_data_during_a_rollout(control_plane, namespace, kserve, operator, prometheus):
    began = time.monotonic()
    target = f"127.0.0.1:{operator.port}"
    prometheus.add_target(target)
    scenario = Scenario(control_plane, namespace, kserve)
    selected = {"namespace": namespace, "deployment": "fraud"}
    try:
        start = time.time()
        scenario.version("1.0.0", **GOOD)
        scenario.serve("1.0.0", fast_spec(prometheus.url), prometheus)
        prometheus.wait_for(f'modelops_phase{{namespace="{namespace}", phase="Stable"}} == 1')

        # GitOps bumps the version before its ModelVersion exists: rounds fail with ModelVersionMissing.
        scenario.patch({"version": "1.1.0"})
        prometheus.wait_for(f'increase(modelops_reconcile_errors_total{{namespace="{namespace}", '
                            f'reason="ModelVersionMissing"}}[{RATE_INTERVAL}]) > 0', 40)
        # It appears, failing its error-rate check: rolled back by the operator.
        scenario.version("1.1.0", error_rate=0.3, accuracy=0.95)
        status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 60, "1.1.0 rolled back")
        assert status["failedVersion"] == "1.1.0"
        prometheus.wait_for(f'modelops_phase{{namespace="{namespace}", phase="RolledBack"}} == 1')
        time.sleep(2 * STEP)  # it stays rolled back a while, as it would until somebody ships a fix
        # A good one: promoted after every step.
        scenario.version("1.2.0", **GOOD)
        scenario.patch({"version": "1.2.0"})
        scenario.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.2.0", 90,
                      "1.2.0 promoted")
        prometheus.wait_for(f'modelops_promotions_total{{namespace="{namespace}", reason="automatic"}} > 0')
        time.sleep(2)  # a scrape or two of the settled state
        end = time.time()
        rollout = time.monotonic() - began

        # The variables, in order, each from the ones before it, as Grafana resolves them.
        values: dict[str, str] = {"__rate_interval": RATE_INTERVAL, "__interval": f"{STEP:g}s",
                                  "__interval_ms": str(int(STEP * 1000)), "__range": f"{math.ceil(end - start)}s",
                                  "__range_s": str(math.ceil(end - start)), "__range_ms": str(math.ceil((end - start) * 1000))}
        options: dict[str, list[str]] = {}
        for variable in dash.variables(dash.load()):
            if variable["type"] == "datasource":
                continue  # the one Prometheus: it names no query
            selector, label = dash.label_values(variable)
            found = label_values(prometheus, dash.substitute(selector, values) if selector else None, label, start, end)
            assert found, f"variable ${variable['name']} ({variable['query']['query']}) has no values"
            chosen = [selected[variable["name"]]] if variable["name"] in selected else found
            assert set(chosen) <= set(found), f"${variable['name']}: {chosen} not among {found}"
            options[variable["name"]] = chosen
            values[variable["name"]] = dash.regex_of(chosen)
        assert set(options["check"]) == {"errors", "accuracy"}, options["check"]

        # Every query of every panel (of every copy of a repeated one), over the whole rollout.
        empty, shown = [], {}
        for target_ in dash.targets(dash.load()):
            for value in options[target_.repeat] if target_.repeat else [None]:
                filled = {**values, **({target_.repeat: value} if target_.repeat else {})}
                expr = dash.substitute(target_.expr, filled)
                if target_.instant:
                    result = finite(instant(prometheus, expr, end))
                else:
                    result = finite(prometheus.query_range(expr, start, end, STEP))
                where = f"{target_}" + (f" (${target_.repeat}={value})" if value else "")
                if not result:
                    empty.append(f"{where}: {expr}")
                shown[where] = result
        print(f"\n{len(shown)} queries of {len({t.panel for t in dash.targets(dash.load())})} panels over "
              f"{end - start:.0f} s of rollouts; variables: {options}")
        assert not empty, "queries that returned nothing:\n" + "\n".join(empty)

        # And what they show is what happened.
        def of(panel: str, ref: str, repeat: str | None = None) -> list[dict[str, Any]]:
            return shown[f"panel {panel!r}, query {ref}" + (f" ($check={repeat})" if repeat else "")]

        outcomes = {(r["metric"]["reason"], ref): float(r["value"][1])
                    for ref in "AB" for r in of("Rollbacks and promotions", ref)}
        print("rollbacks (A) and promotions (B) in range:", outcomes)
        assert outcomes[("automatic", "A")] >= 0.5 and outcomes[("automatic", "B")] >= 0.5
        errors = of("$check: value and limit", "A", "errors")
        failing = max(float(v) for r in errors if r["metric"]["version"] == "1.1.0" for _, v in r["values"])
        limit = {r["metric"]["bound"]: float(r["values"][-1][1]) for r in of("$check: value and limit", "B", "errors")}
        print(f"errors check: 1.1.0 reached {failing:.3f} against max {limit}")
        assert limit == {"max": 0.05} and failing > 0.05
        accuracy = {r["metric"]["bound"]: float(r["values"][-1][1]) for r in of("$check: value and limit", "B", "accuracy")}
        print(f"accuracy check: limit {accuracy} (5% below stable's accuracy of about 0.95)")
        assert set(accuracy) == {"min"} and 0.85 < accuracy["min"] < 0.95  # relative: computed from stable's value
        assert {r["metric"]["version"] for r in of("Traffic weight per version", "A")} >= {"1.0.0", "1.1.0", "1.2.0"}
        assert {r["metric"]["phase"] for r in of("Phase", "A")} >= {"Stable", "Progressing", "RolledBack"}
        assert "ModelVersionMissing" in {r["metric"]["reason"] for r in of("Reconcile errors by reason", "A")}
        print(f"rollouts {rollout:.1f} s, variables and queries {time.monotonic() - began - rollout:.2f} s")

        # Deleted: every series of the deployment goes from the operator's metrics.
        deleting = time.monotonic()
        control_plane.kubectl("delete", "mdep", "fraud", "-n", namespace, "--wait=false")
        deadline = time.monotonic() + 60
        while operator_series(operator, namespace, "fraud") or scenario.cp.kubectl(
                "get", "mdep", "fraud", "-n", namespace, check=False).returncode == 0:
            assert time.monotonic() < deadline, operator_series(operator, namespace, "fraud")[:20]
            time.sleep(0.5)
        time.sleep(1)  # a round that was under way when it went would show up by now
        assert operator_series(operator, namespace, "fraud") == []
        print(f"deleted: no series of it left after {time.monotonic() - deleting:.1f} s")
    finally:
        scenario.stop_load()
        prometheus.remove_target(target)


def instant(prometheus, expr: str, at: float) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    body = json.load(urllib.request.urlopen(url, timeout=10))
    assert body["status"] == "success", body
    return body["data"]["result"]
