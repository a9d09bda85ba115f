"""The demo's figures, timeline picture and report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW = "10s"


def operator_usage(pid: int, wall_seconds: float) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    peak_kib = int(status["VmHWM"].split()[0])
    return {"cpu_seconds": cpu, "cpu_percent": 100 * cpu / wall_seconds, "peak_rss_mib": peak_kib / 1024}


def breach_to_stable(demo, traffic) -> tuple[float, str] | None:
    """Seconds from the first scrape showing a failed request of the candidate to all traffic off it."""
    failed = ('kn_serving_invocation_duration_seconds_count{k8s_namespace_name="demo", '
              'http_response_status_code="500"}')
    series = demo.prometheus.query(f"{failed}[30m]")
    if not series:
        return None
    revision = series[0]["metric"]["kn_revision_name"]
    breach = min(float(t) for s in series for t, v in s["values"] if float(v) > 0)
    back = next((t for t, split in traffic.splits_seen if t > breach and split and revision not in split), None)
    return (back - breach, revision) if back is not None else None


def series_by_version(demo, traffic, promql: str, label: str, start: float, end: float) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in demo.prometheus.query_range(promql, start, end, 1.0):
        key = s["metric"].get(label, "")
        version = traffic.unit_versions.get(key, key)
        points = out.setdefault(version, [])
        points.extend((float(t) - start, float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf"))
    return out


def plot(demo, traffic, phases: dict[str, Any], path: Path) -> None:
    start, end = demo.timeline.start, demo.timeline.points[-1]["t"]
    ns = 'k8s_namespace_name="demo"'
    panels = [
        ("error rate", series_by_version(demo, traffic,
            # A revision without any 5xx has no such series: its error rate is 0, not missing.
            f'(sum by (kn_revision_name) (rate(kn_serving_invocation_duration_seconds_count{{{ns}, http_response_status_code=~"5.."}}[{WINDOW}]))'
            f' or 0 * sum by (kn_revision_name) (rate(kn_serving_invocation_duration_seconds_count{{{ns}}}[{WINDOW}])))'
            f' / sum by (kn_revision_name) (rate(kn_serving_invocation_duration_seconds_count{{{ns}}}[{WINDOW}]))',
            "kn_revision_name", start, end)),
        ("p95 latency (s)", series_by_version(demo, traffic,
            f'histogram_quantile(0.95, sum by (le, kn_revision_name) (rate(kn_serving_invocation_duration_seconds_bucket{{{ns}}}[{WINDOW}])))',
            "kn_revision_name", start, end)),
        ("accuracy", series_by_version(demo, traffic,
            f'sum by (version) (rate(model_correct_total{{namespace="demo"}}[{WINDOW}]))'
            f' / sum by (version) (rate(model_graded_total{{namespace="demo"}}[{WINDOW}]))', "version", start, end)),
    ]
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    times = [p["t"] - start for p in demo.timeline.points]
    axes[0].step(times, [p["weight"] for p in demo.timeline.points], where="post", color="tab:blue")
    axes[0].set_ylabel("candidate weight %")
    axes[0].set_ylim(-5, 105)
    for ax, (title, by_version) in zip(axes[1:], panels):
        for version, points in sorted(by_version.items()):
            if points:
                ax.plot(*zip(*sorted(points)), label=version, marker=".", markersize=3, linewidth=1)
        ax.set_ylabel(title)
        ax.legend(loc="upper left", fontsize=8)
    colours = {"RolledBack": "tab:red", "Promoted": "tab:green", "RolloutStarted": "tab:gray", "StepAdvanced": "silver"}
    history = phases[max(phases, key=lambda v: phases[v]["ended"])]["history"]
    for entry in history:
        when = _epoch(entry["time"]) - start
        if entry["action"] in colours and when >= 0:
            for ax in axes:
                ax.axvline(when, color=colours[entry["action"]], linestyle="--", linewidth=1)
            axes[0].annotate(f"{entry['action']} {entry['version']}", (when, 100), rotation=90, fontsize=7,
                             va="top", ha="right")
    axes[-1].set_xlabel("seconds")
    fig.suptitle("modelops demo: v2 rolled back by the operator, v3 promoted")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _epoch(text: str) -> float:
    from modelops.rollout.engine import parse_rfc3339

    return parse_rfc3339(text).timestamp()


def write_report(demo, traffic, phases: dict[str, Any]) -> dict[str, Any]:
    wall = demo.timeline.points[-1]["t"] - demo.timeline.start
    usage = operator_usage(demo.operator.process.proc.pid, wall)
    breach = breach_to_stable(demo, traffic)
    png = demo.out / "timeline.png"
    plot(demo, traffic, phases, png)
    lines = ["# modelops demo report", "",
             "v1 serves; v2 is rolled back by the operator on its own; v3 walks every step and is promoted.", "",
             "| change | outcome | requests served | failed by the model (5xx) | lost to switching |", "|---|---|---|---|---|"]
    lost_total = 0
    for version, p in phases.items():
        served = sum(n for (unit, code), n in p["requests"].items() if code == 200)
        model_failed = sum(n for (unit, code), n in p["requests"].items() if code == 500)
        lost = sum(n for (unit, code), n in p["requests"].items() if code not in (200, 500))
        lost_total += lost
        lines.append(f"| spec.version -> {version} | {p['phase']} (stable {p['stable']}) | {served} | {model_failed} | {lost} |")
    lines += ["", "## Figures", ""]
    if breach is not None:
        lines.append(f"- first failed request of {breach[1]} visible in Prometheus -> 100 % stable: **{breach[0]:.2f} s** "
                     "(analysis interval 2 s, scrape interval 1 s, failureLimit 2; goal <= 2 x 2 s + 1 s = 5 s)")
    lines += [f"- operator CPU: {usage['cpu_seconds']:.1f} s over {wall:.0f} s of demo ({usage['cpu_percent']:.1f} % of one core)",
              f"- operator peak memory (VmHWM): {usage['peak_rss_mib']:.0f} MiB",
              "", "## Decisions (status.history)", ""]
    history = phases[max(phases, key=lambda v: phases[v]["ended"])]["history"]
    lines += [f"- {h['time']} **{h['action']}** {h['version']}: {h['reason']}" for h in history]
    lines += ["", "![timeline](timeline.png)", ""]
    report = demo.out / "report.md"
    report.write_text("\n".join(lines))
    return {"report": report, "png": png, "phases": phases, "breach_seconds": breach[0] if breach else None,
            "lost": lost_total, "operator": usage}
