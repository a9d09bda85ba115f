"""bench.png: deployments reaching Stable over time, the operator's CPU and RSS, API requests by verb."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, figures = result["series"], result["figures"]
    fig, (reach, process, verbs) = plt.subplots(1, 3, figsize=(15, 4.2))
    fig.suptitle(f"modelops benchmark: {result['deployments']} ModelDeployments (gatewayAPI)")

    for key, label in (("create_reached_s", "created -> Stable"), ("rollout_reached_s", "rollout -> Stable")):
        times = series.get(key) or []
        if times:
            reach.step(times, range(1, len(times) + 1), where="post", label=label)
    reach.set_xlabel("seconds since the phase began")
    reach.set_ylabel("deployments done")
    reach.set_title("reaching Stable")
    reach.legend(loc="lower right")
    reach.grid(alpha=0.3)

    samples = series.get("operator") or []
    if samples:
        t = [s["t"] for s in samples]
        process.plot(t, [s["cpu_percent"] for s in samples], color="tab:red", label="CPU % of a core")
        process.set_ylabel("CPU %", color="tab:red")
        rss = process.twinx()
        rss.plot(t, [s["rss_mib"] for s in samples], color="tab:blue", label="RSS MiB")
        rss.set_ylabel("RSS MiB", color="tab:blue")
        for name, colour in (("idle", "tab:green"), ("rollout", "tab:orange")):
            window = series.get("windows", {}).get(name)
            if window:
                process.axvspan(window[0], window[1], color=colour, alpha=0.12, label=name)
        process.legend(loc="upper left", fontsize="small")
    process.set_xlabel("seconds since the operator took the lead")
    process.set_title("operator process")
    process.grid(alpha=0.3)

    phases = [("idle", figures.get("idle_api_requests_per_s") or {}),
              ("rollout", figures.get("rollout_api_requests_per_s") or {})]
    names = [v for v in dict.fromkeys(k for _, rates in phases for k in rates) if v != "total"]
    width = 0.4
    for offset, (phase, rates) in enumerate(phases):
        verbs.bar([i + offset * width for i in range(len(names))], [rates.get(n) or 0 for n in names], width,
                  label=phase)
    verbs.set_xticks([i + width / 2 for i in range(len(names))], names)
    verbs.set_ylabel("requests/s")
    verbs.set_title("API requests by verb (operator)")
    verbs.legend()
    verbs.grid(alpha=0.3, axis="y")

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
