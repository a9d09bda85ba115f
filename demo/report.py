"""The demo's figures, timeline picture and report."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import joblib
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from modelops.api.modeldeployment import ModelDeploymentSpec  # noqa: E402
from tests.unit.window_sim import Samples, rollouts  # noqa: E402

from .drift import brightness  # noqa: E402
from .models import SlowAndBrittle, dataset  # noqa: E402
from .run import AGREEMENT_MIN, DRIFT_MAX, RPS, _epoch, deployment_spec  # noqa: E402

WINDOW = "10s"
SIMULATED_ROLLOUTS = 400
"""Rollouts per simulated figure: a few seconds for the report, a figure's standard error at most 2.5 points."""
SIMULATED = {"error-rate": (Samples.answered, "errors"), "accuracy": (Samples.users, "accuracy"),
             "agreement": (Samples.copies, "agreement")}
"""The demo's checks of proportions: which of the candidate's requests each counts, and which offline rate."""
NOT_SIMULATED = {
    "p95-latency": "a quantile of the model servers' real latencies, which no model here describes: not simulated",
    "drift": "driftTest fails a candidate without drift in at most 1 - confidence (5 %) of rollouts over its first "
             "`looks` (60) analyses, by its construction (Bonferroni; 4.5 % measured by tests/unit/drift_sim.py)",
}


def operator_usage(pid: int, wall_seconds: float) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    peak_kib = int(status["VmHWM"].split()[0])
    return {"cpu_seconds": cpu, "cpu_percent": 100 * cpu / wall_seconds, "peak_rss_mib": peak_kib / 1024}


def breach_to_stable(demo, traffic) -> tuple[float, str] | None:
    """Seconds from the first scrape showing a failed request of the candidate (a user's or a copy's) to all
    traffic off it for good: no share of the requests and no copies of them from then on."""
    series = demo.prometheus.query('http_request_duration_seconds_count{namespace="demo", code="500"}[30m]')
    if not series:
        return None
    service = series[0]["metric"]["service"]
    breach = min(float(t) for s in series for t, v in s["values"] if float(v) > 0)
    published = (traffic.splits_seen, traffic.mirrors_seen)
    back = None
    for t in sorted((t for seen in published for t, _ in seen), reverse=True):
        if any(service in published_at(seen, t) for seen in published):
            break
        back = t
    return (back - breach, service) if back is not None and back > breach else None


def published_at(seen: list[tuple[float, dict[str, float]]], when: float) -> dict[str, float]:
    """The split or mirror (unit -> percent) the traffic followed at `when`, {} before any was published."""
    return next((percents for t, percents in reversed(seen) if t <= when), {})


def shadow_agreement(demo, version: str, since: float) -> tuple[int, int]:
    """(agreed, compared) mirrored requests of `version` since `since`, as its queue-proxy counted them. A version
    gets copies only while it is the candidate, so these are the ones of its shadow step."""
    seconds = math.ceil(time.time() - since)
    counted = demo.prometheus.query(
        f'sum by (outcome) (max_over_time(model_shadow_comparisons_total{{namespace="demo", version="{version}"}}[{seconds}s]))')
    by_outcome = {s["metric"]["outcome"]: int(float(s["value"][1])) for s in counted}
    return by_outcome.get("agree", 0), sum(by_outcome.values())


def phase_figures(demo, traffic, version: str, phase: dict[str, Any]) -> dict[str, Any]:
    """What users and the candidate `version` saw while it was rolled out. A version gets copies only while it is
    the candidate, so all the copies it ever got are its rollout's (complete once the traffic stopped)."""
    units = {unit for unit, v in traffic.unit_versions.items() if v == version}
    requests, copies = phase["requests"], traffic.mirrored
    agreed, compared = shadow_agreement(demo, version, phase["started"])
    return {
        "user_requests": sum(requests.values()),
        "candidate_answers": sum(n for (unit, code), n in requests.items() if unit in units and code == 200),
        "candidate_errors": sum(n for (unit, code), n in requests.items() if unit in units and code != 200),
        "copies": sum(n for (unit, code), n in copies.items() if unit in units),
        "copies_failed": sum(n for (unit, code), n in copies.items() if unit in units and code != 200),
        "compared": compared, "agreement": agreed / compared if compared else None,
        "lost": sum(n for (unit, code), n in requests.items() if code == 0),
        "drift": highest_drift(demo, version, phase["started"]),
    }


def highest_drift(demo, version: str, since: float) -> float | None:
    """The highest drift score the detector exported for `version` since `since`."""
    seconds = math.ceil(time.time() - since)
    scored = demo.prometheus.query(f'max(max_over_time(model_drift_score{{namespace="demo", version="{version}"}}[{seconds}s]))')
    return float(scored[0]["value"][1]) if scored else None


def series_by_version(demo, traffic, promql: str, label: str, start: float, end: float) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in demo.prometheus.query_range(promql, start, end, 1.0):
        key = s["metric"].get(label, "")
        version = traffic.unit_versions.get(key, key)
        points = out.setdefault(version, [])
        points.extend((float(t) - start, float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf"))
    return out


def plot(demo, traffic, history: list[dict[str, Any]], path: Path) -> None:
    start, end = demo.timeline.start, demo.timeline.points[-1]["t"]
    requests = 'http_request_duration_seconds_count{namespace="demo"'
    panels = [
        ("error rate (users' and copies')", series_by_version(demo, traffic,
            # A Service without any 5xx has no such series: its error rate is 0, not missing.
            f'(sum by (service) (rate({requests}, code=~"5.."}}[{WINDOW}]))'
            f' or 0 * sum by (service) (rate({requests}}}[{WINDOW}])))'
            f' / sum by (service) (rate({requests}}}[{WINDOW}]))',
            "service", start, end)),
        ("p95 latency (s)", series_by_version(demo, traffic,
            f'histogram_quantile(0.95, sum by (le, service) (rate(http_request_duration_seconds_bucket{{namespace="demo"}}[{WINDOW}])))',
            "service", start, end)),
        ("accuracy", series_by_version(demo, traffic,
            f'sum by (version) (rate(model_predictions_aged_total{{namespace="demo", grade="correct"}}[{WINDOW}]))'
            f' / sum by (version) (rate(model_predictions_aged_total{{namespace="demo", grade=~"correct|wrong"}}[{WINDOW}]))',
            "version", start, end)),
        ("input drift (PSI)", series_by_version(demo, traffic, 'max by (version) (model_drift_score{namespace="demo"})',
                                                "version", start, end)),
    ]
    fig, axes = plt.subplots(5, 1, figsize=(11, 13), sharex=True)
    times = [p["t"] - start for p in demo.timeline.points]
    axes[0].step(times, [p["weight"] for p in demo.timeline.points], where="post", color="tab:blue",
                 label="weight (users' requests)")
    axes[0].step(times, [p["mirror"] for p in demo.timeline.points], where="post", color="tab:orange",
                 linestyle=":", label="mirror (copies, answers discarded)")
    axes[0].set_ylabel("candidate %")
    axes[0].legend(loc="center left", fontsize=8)
    axes[0].set_ylim(-5, 105)
    for ax, (title, by_version) in zip(axes[1:], panels):
        for version, points in sorted(by_version.items()):
            if points:
                ax.plot(*zip(*sorted(points)), label=version, marker=".", markersize=3, linewidth=1)
        ax.set_ylabel(title)
        ax.legend(loc="upper left", fontsize=8)
    colours = {"RolledBack": "tab:red", "Promoted": "tab:green", "RolloutStarted": "tab:gray", "StepAdvanced": "silver",
               "DrillStarted": "tab:purple", "DrillCompleted": "tab:purple"}
    for entry in history:
        when = _epoch(entry["time"]) - start
        if entry["action"] in colours and when >= 0:
            for ax in axes:
                ax.axvline(when, color=colours[entry["action"]], linestyle="--", linewidth=1)
            axes[0].annotate(f"{entry['action']} {entry['version']}", (when, 100), rotation=90, fontsize=7,
                             va="top", ha="right")
    axes[-1].set_xlabel("seconds")
    fig.suptitle("modelops demo: v2 rolled back in its shadow step, unseen by users; v3 shadow -> 20% -> 50% -> "
                 "promoted; a rollback drill")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mttr_lines(breach: tuple[float, str] | None, drill: dict[str, Any]) -> list[str]:
    """Time to recover, measured here, beside the figures usually quoted for the ways of rolling back."""
    last = drill["status"]
    lost = last.get("requestsLost")
    operator_lost = str(lost) if lost is not None else last.get("requestsLostNote") or "not measured"
    rows = ["## Time to recover (MTTR)", "",
            "| how traffic went back to a known-good version | time to 100 % on it | requests failed |",
            "|---|---|---|",
            "| hot swap by hand (usually quoted) | 2-5 min | |",
            "| canary auto-rollback (usually quoted) | 30-90 s | |"]
    if breach is not None:
        rows.append(f"| modelops automatic rollback of v2 (first failed answer in Prometheus -> 100 % stable) "
                    f"| **{breach[0]:.1f} s** | 0 user-visible (shadow step) |")
    rows += [f"| modelops rollback drill to {last['fallbackVersion']} (request -> 100 % on it), as the operator "
             f"saw the backend carry it / as the data plane followed it | **{last['secondsToFallback']:.1f} s** / "
             f"**{drill['data_plane_to_fallback']:.1f} s** | {drill['failed']} of {drill['requests']} |",
             f"| ... and back to {last['returnedTo']} | {last['secondsBack']:.1f} s / {drill['data_plane_back']:.1f} s "
             "| (same drill) |", "",
             f"The drill: {last['result']}, {last['message']}. Requests lost as the operator measured them: "
             f"{operator_lost}; "
             "the failed requests above are the load generator's own count over the whole drill.", ""]
    return rows


def offline_rates(trained: list[Any]) -> dict[str, dict[str, float]]:
    """Version -> its share of failed requests ("errors"), its accuracy on the requests it answers ("accuracy") and
    how often its answer equals v1's there ("agreement"), on the held-out split the traffic replays."""
    _, x, _, y = dataset()
    predictions, answered = {}, {}
    for t in trained:
        model = joblib.load(t.path)
        inner = model.model if isinstance(model, SlowAndBrittle) else model  # one batch, without its delay
        predictions[t.version] = inner.predict(x)
        answered[t.version] = (brightness(x) <= model.max_brightness if isinstance(model, SlowAndBrittle)
                               else np.ones(len(y), dtype=bool))
    first = predictions[trained[0].version]
    return {v: {"errors": 1 - float(ok.mean()), "accuracy": float((predictions[v][ok] == y[ok]).mean()),
                "agreement": float((predictions[v][ok] == first[ok]).mean())} for v, ok in answered.items()}


def check_statistics(spec: ModelDeploymentSpec, rates: dict[str, dict[str, float]], stable: str, healthy: str,
                     worse: str, *, per_second: float, count: int = SIMULATED_ROLLOUTS) -> list[str]:
    """The report's section on each check's false-rollback rate and time to detection, by simulation
    (tests.unit.window_sim) at the demo's traffic and the versions' offline `rates`: a healthy candidate is as
    good as `stable` (for agreement: `healthy`'s agreement with it), a worse one has `worse`'s rates."""
    lines = ["## The checks' error rates (simulated)", "",
             f"Each check alone, in {count} simulated rollouts per figure of this ModelDeployment's steps, interval, "
             f"window and limits at {per_second:g} requests/s, judged by the operator's own functions "
             "(tests/unit/window_sim.py), with the versions' rates on the held-out split the traffic replays. "
             "Seconds count from the candidate's first traffic.", "",
             "| check | healthy candidate | false rollbacks | worse candidate | rolled back | median seconds to "
             "rollback |", "|---|---|---|---|---|---|"]
    for check in spec.analysis.checks:
        if check.name not in SIMULATED:
            lines.append(f"| {check.name} | {NOT_SIMULATED[check.name]} | | | | |")
            continue
        samples, rate = SIMULATED[check.name]
        base = rates[stable][rate]
        good = rates[healthy][rate] if rate == "agreement" else base
        bad = rates[worse][rate]
        false = rollouts(spec, check, samples, per_second, base, good, count=count, seed=1)
        caught = rollouts(spec, check, samples, per_second, base, bad, count=count, seed=2)
        median = "-" if caught.median_seconds is None else f"{caught.median_seconds:g}"
        lines.append(f"| {check.name} | {rate} {good:.3g} (stable {base:.3g}) | {false.rolled_back:.1%} "
                     f"| {rate} {bad:.3g} ({worse}) | {caught.rolled_back:.1%} | {median} |")
    return lines + [""]


def write_report(demo, traffic, phases: dict[str, Any], drill: dict[str, Any], trained: list[Any]) -> dict[str, Any]:
    wall = demo.timeline.points[-1]["t"] - demo.timeline.start
    usage = operator_usage(demo.operator.process.proc.pid, wall)
    breach = breach_to_stable(demo, traffic)
    png = demo.out / "timeline.png"
    plot(demo, traffic, drill["history"], png)
    figures = {version: phase_figures(demo, traffic, version, p) for version, p in phases.items()}
    lines = ["# modelops demo report", "",
             "v1 serves behind a Gateway API HTTPRoute. Each new version starts in a shadow step: the Gateway copies "
             "every user request to it and discards its answers, while its side counts how often its prediction "
             "agrees with the one the user got. v2 is rolled back by the operator on its own during that step, "
             "before any user got an answer from it; v3 walks shadow -> 20 % -> 50 % and is promoted. Then a rollback "
             "drill sends all traffic to the fallback version and back.", "",
             "| change | outcome | user requests | requests mirrored to the candidate | copies the candidate failed "
             "| agreement with stable (shadow step) | user-visible answers from the candidate "
             "| user-visible errors from the candidate | lost to switching | candidate's input drift (highest PSI) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for version, p in phases.items():
        f = figures[version]
        agreement = "-" if f["agreement"] is None else f"{f['agreement']:.1%} of {f['compared']}"
        drift = "-" if f["drift"] is None else f"{f['drift']:.2f}"
        lines.append(f"| spec.version -> {version} | {p['phase']} (stable {p['stable']}) | {f['user_requests']} "
                     f"| {f['copies']} | {f['copies_failed']} | {agreement} | {f['candidate_answers']} "
                     f"| {f['candidate_errors']} | {f['lost']} | {drift} |")
    lines += ["", "Agreement: the share of mirrored requests, among those the candidate answered, on which its "
              "prediction equals the one stable answered (model_shadow_comparisons_total); the analysis requires "
              f"at least {AGREEMENT_MIN:.0%}. Input drift: the drift detector's population stability index of the "
              "live inputs against the version's training data (model_drift_score), over "
              f"{DRIFT_MAX} a significant shift by a common rule of thumb; the analysis tests the binned inputs "
              "against the training data's instead (driftTest, 95 % confidence).", "", "## Figures", ""]
    if breach is not None:
        lines.append(f"- first failed answer of {breach[1]} visible in Prometheus -> 100 % stable (no share, no copies): "
                     f"**{breach[0]:.2f} s** "
                     "(the first verdict waits for a full 10 s window of the candidate's traffic, then failureLimit 2 "
                     "at a 2 s interval, scrape interval 1 s: goal <= 10 s + 2 x 2 s + 1 s = 15 s)")
    lines += [f"- operator CPU: {usage['cpu_seconds']:.1f} s over {wall:.0f} s of demo ({usage['cpu_percent']:.1f} % of one core)",
              f"- operator peak memory (VmHWM): {usage['peak_rss_mib']:.0f} MiB", ""]
    lines += mttr_lines(breach, drill)
    lines += check_statistics(ModelDeploymentSpec.model_validate(deployment_spec([t.version for t in trained])),
                              offline_rates(trained), "1.0.0", "3.0.0", "2.0.0", per_second=RPS)
    lines += ["## Decisions (status.history)", ""]
    lines += [f"- {h['time']} **{h['action']}** {h['version']}: {h['reason']}" for h in drill["history"]]
    lines += ["", "![timeline](timeline.png)", ""]
    report = demo.out / "report.md"
    report.write_text("\n".join(lines))
    return {"report": report, "png": png, "phases": phases, "figures": figures, "timeline": demo.timeline.points,
            "breach_seconds": breach[0] if breach else None, "drill": drill,
            "lost": sum(f["lost"] for f in figures.values()), "operator": usage}
