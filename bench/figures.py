"""The pure half of the benchmark: reading metrics text, quantiles from histogram buckets,
request rates by verb, the printed table and the comparison with a previous run. No I/O."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]

# name -> (unit, what); every figure is better when lower. The order is the table's.
FIGURES: dict[str, tuple[str, str]] = {
    "create_to_stable_s": ("s", "creating all N to all Stable"),
    "create_to_stable_p50_s": ("s", "  per deployment, p50"),
    "create_to_stable_p99_s": ("s", "  per deployment, p99"),
    "create_gc_pause_s": ("s", "operator paused for GC, creating"),
    "create_gc_full_pause_max_s": ("s", "  longest full collection (bucket bound)"),
    "idle_cpu_percent": ("% core", "operator CPU, idle"),
    "idle_rss_mib": ("MiB", "operator RSS, idle (mean)"),
    "idle_rss_max_mib": ("MiB", "operator RSS, idle (max)"),
    "idle_api_requests_per_s": ("req/s", "API requests, idle (operator)"),
    "idle_prometheus_cpu_percent": ("% core", "Prometheus CPU, idle (scrapes)"),
    "rollout_s": ("s", "simultaneous rollout of all N"),
    "rollout_p50_s": ("s", "  per deployment, p50"),
    "rollout_p99_s": ("s", "  per deployment, p99"),
    "rollout_cpu_percent": ("% core", "operator CPU, rollout"),
    "rollout_apiserver_cpu_percent": ("% core", "kube-apiserver CPU, rollout"),
    "rollout_etcd_cpu_percent": ("% core", "etcd CPU, rollout"),
    "rollout_gc_pause_s": ("s", "operator paused for GC, rollout"),
    "rollout_gc_full_pause_max_s": ("s", "  longest full collection (bucket bound)"),
    "rollout_api_requests_per_s": ("req/s", "API requests, rollout (operator)"),
    "analysis_lag_p50_s": ("s", "analysis lag p50"),
    "analysis_lag_p99_s": ("s", "analysis lag p99"),
    "prometheus_queries_per_s": ("q/s", "Prometheus queries, rollout"),
    "rollout_prometheus_cpu_percent": ("% core", "Prometheus CPU, rollout"),
    "status_patches_per_step": ("", "status patches per step"),
}
VERBS = ("GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "APPLY", "DELETE")


def samples(text: str, names: Iterable[str]) -> Samples:
    """The samples of these metric names (histogram parts by their full names, e.g. x_bucket) in a
    Prometheus text exposition; only their lines are parsed, so a large scrape stays cheap."""
    wanted = tuple(names)
    lines = [line for line in text.splitlines() if line.startswith(wanted)
             and any(line.startswith(n) and line[len(n):len(n) + 1] in ("{", " ") for n in wanted)]
    out: Samples = []
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        out.extend((s.name, dict(s.labels), s.value) for s in family.samples if s.name in wanted)
    return out


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum of one metric's samples whose labels include `labels`."""
    return sum(v for n, ls, v in found if n == name and all(ls.get(k) == x for k, x in labels.items()))


def by_label(found: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, ls, v in found:
        if n == name and all(ls.get(k) == x for k, x in labels.items()):
            out[ls.get(label, "")] += v
    return dict(out)


def buckets(found: Samples, name: str) -> dict[float, float]:
    """A histogram's cumulative buckets (upper bound -> count), summed over all its label sets."""
    out: dict[float, float] = defaultdict(float)
    for n, ls, v in found:
        if n == f"{name}_bucket":
            out[float(ls["le"])] += v
    return dict(out)


def by_resource(found: Samples, name: str = "apiserver_request_total") -> dict[str, float]:
    """The API server's request counts by "VERB resource[/subresource]" (e.g. "PATCH httproutes/status")."""
    out: dict[str, float] = defaultdict(float)
    for n, ls, v in found:
        if n == name:
            sub = ls.get("subresource")
            out[f"{ls.get('verb', '')} {ls.get('resource', '')}{'/' + sub if sub else ''}"] += v
    return dict(out)


def per_deployment(apiserver: Mapping[str, float], own: Mapping[str, float], deployments: int,
                   smallest: float = 0.05) -> dict[str, float]:
    """Counter increases by key, minus the benchmark's own, per deployment, largest first; keys under
    `smallest` a deployment are left out (the API server's own calls, a Lease)."""
    each = {k: max(0.0, v - own.get(k, 0.0)) / deployments for k, v in apiserver.items()} if deployments else {}
    return dict(sorted(((k, v) for k, v in each.items() if v >= smallest), key=lambda kv: (-kv[1], kv[0])))


def delta(after: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    """Counter increase per key; a key absent before counts from 0."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def gc_pauses(found: Samples, name: str = "modelops_gc_pause_seconds") -> dict[str, Any]:
    """The operator's collector pauses so far: seconds over every generation, and generation 2's (full
    collections) count and cumulative buckets."""
    return {"seconds": total(found, f"{name}_sum"), "full": total(found, f"{name}_count", generation="2"),
            "full_buckets": {float(ls["le"]): v for n, ls, v in found
                             if n == f"{name}_bucket" and ls.get("generation") == "2"}}


def paused(after: Mapping[str, Any], before: Mapping[str, Any]) -> tuple[float, float, float | None]:
    """Between two `gc_pauses`: seconds paused, full collections, and the bucket bound of the longest full one
    (None when there was none)."""
    grew = delta(after["full_buckets"], before["full_buckets"])
    full = after["full"] - before["full"]
    longest = min((bound for bound, count in grew.items() if count >= full), default=None) if full else None
    return after["seconds"] - before["seconds"], full, longest


def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets (upper bound -> count): linear within
    the bucket holding the rank; the highest finite bound when the rank falls in +Inf; None when empty."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    bounds = sorted(cumulative)
    if not bounds or not math.isinf(bounds[-1]):
        raise ValueError("a histogram needs its +Inf bucket")
    count = cumulative[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        here = cumulative[bound]
        if here >= rank and here > below:
            if math.isinf(bound):
                return bounds[-2] if len(bounds) > 1 else None
            if bound <= 0:
                return bound
            return lower + (bound - lower) * (rank - below) / (here - below)
        lower, below = bound, here
    return bounds[-2] if len(bounds) > 1 else None


def quantile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank quantile of raw values; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def requests_by_verb(apiserver: Mapping[str, float], own: Mapping[str, float], seconds: float) -> dict[str, float]:
    """Requests per second by verb from the API server's own counter increases, minus the benchmark's own
    requests (what is left is the operator's, and the API server's own loopback calls); verbs left with
    none are not listed."""
    verbs = sorted(set(apiserver) | set(own), key=lambda v: (VERBS.index(v) if v in VERBS else len(VERBS), v))
    rates = {v: max(0.0, apiserver.get(v, 0.0) - own.get(v, 0.0)) / seconds for v in verbs if seconds > 0}
    return {v: rate for v, rate in rates.items() if rate > 0}


def flat(figures: Mapping[str, Any]) -> dict[str, float | None]:
    """Nested figures (by-verb tables) as one level: {"a": {"GET": 1}} -> {"a.GET": 1}."""
    out: dict[str, float | None] = {}
    for key, value in figures.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
        else:
            out[key] = value
    return out


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2g}"


def change(new: float | None, old: float | None) -> float | None:
    """Relative change new against old (0.1 = 10 % more); None when either is missing or old is 0
    while new is not (no finite ratio)."""
    if new is None or old is None:
        return None
    if old == 0:
        return 0.0 if new == 0 else None
    return (new - old) / abs(old)


def fmt_change(ratio: float | None) -> str:
    return "-" if ratio is None else f"{round(ratio * 100, 1) + 0.0:+.1f} %"  # + 0.0: no "-0.0"


def describe(key: str) -> tuple[str, str]:
    """(what, unit) of a flat figure name."""
    base, _, verb = key.partition(".")
    unit, what = FIGURES.get(base, ("", base))
    return (f"  {verb}" if verb and verb != "total" else what), unit


def table(figures: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> str:
    """The printed table; with `previous` (another run's figures) its values and the change per figure."""
    now, before = flat(figures), flat(previous or {})
    keys: list[str] = []
    for key in [*now, *(k for k in before if k not in now)]:  # a previous run's own by-verb rows join their group
        base = key.partition(".")[0]
        last = max((i for i, k in enumerate(keys) if k.partition(".")[0] == base), default=None)
        keys.insert(len(keys) if last is None else last + 1, key)
    rows = [("figure", "unit", "this run") + (("previous", "change") if previous is not None else ())]
    for key in keys:
        what, unit = describe(key)
        row = (what, unit, fmt(now.get(key)))
        if previous is not None:
            row += (fmt(before.get(key)), fmt_change(change(now.get(key), before.get(key))))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison(figures: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, float | None]:
    """Relative change per flat figure present in both runs."""
    now, before = flat(figures), flat(previous)
    return {k: change(now[k], before[k]) for k in now if k in before}
