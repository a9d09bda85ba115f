"""`make bench`: how the operator does with many ModelDeployments, on this machine.

Starts the playground's control plane, Prometheus and the operator (as a process, under the
project's RBAC, with leader election, without debug logs), then creates N ModelDeployments on
the Gateway API backend (each with its ModelVersion, HTTPRoute, headless Service and
EndpointSlice; two passing PromQL checks over a synthetic metric; steps 10 % and 50 %, pause
10 s, analysis interval 10 s) and measures:

- the wall time from creating them all to all Stable (and per deployment, p50/p99);
- the operator's CPU (utime+stime from /proc) and RSS (VmRSS) over an idle period;
- API requests/s by verb, from kube-apiserver's own `apiserver_request_total` (which has no user
  label: the counts are the total minus the benchmark's own requests, which it counts itself), and
  in the rollout the requests per deployment by verb and resource (where the requests go);
- the time for all N to finish one simultaneous rollout to a new version, and the CPU the operator,
  kube-apiserver and etcd used meanwhile;
- analysis lag p50/p99 (`modelops_analysis_lag_seconds`), Prometheus queries/s (its own
  `prometheus_http_requests_total{handler="/api/v1/query"}`), status patches per traffic step.
- the operator's pauses for Python's garbage collector while creating and in the rollout
  (`modelops_gc_pause_seconds`): seconds in all, and the longest full collection's bucket.

Prints a table, writes figures.json and bench.png to --out, and with --compare PREVIOUS.json the
change per figure. Everything listens on loopback; nothing is left running.

    python -m bench.run --deployments N --out DIR [--compare PREVIOUS.json] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from playground.controlplane import REPO, ControlPlane
from playground.operator import OperatorProcess
from playground.prometheus import Prometheus
from playground.upstream_crds import GATEWAY_HTTPROUTES, UpstreamCRDsUnavailable, upstream_crds

from . import figures as fig
from .kube import ApiError, Informer, Kube
from .standins import Exporter, RouteStatusWriter, checks, endpoint_slice

NAMESPACE = "bench"
GROUP = "/apis/modelops.io/v1alpha1"
PATHS = {
    "modelversions": f"{GROUP}/namespaces/{NAMESPACE}/modelversions",
    "modeldeployments": f"{GROUP}/namespaces/{NAMESPACE}/modeldeployments",
    "services": f"/api/v1/namespaces/{NAMESPACE}/services",
    "endpointslices": f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
    "httproutes": f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes",
}
OLD, NEW = "1.0.0", "2.0.0"
STEPS, PAUSE, INTERVAL = (10, 50), "10s", "10s"
SCRAPE_INTERVAL, SCRAPE_SECONDS = "2s", 2.0
CLIENT_THREADS = 8
TRAFFIC_STEPS = ("StepAdvanced", "Promoted")
"""Decisions that move traffic: entering each step (the first included), the promotion (3 per rollout here)."""
GC_PAUSE_SAMPLES = tuple(f"modelops_gc_pause_seconds_{part}" for part in ("bucket", "count", "sum"))
API_NOTE = ("kube-apiserver's apiserver_request_total has no user label: these rates are its total minus the "
            "requests the benchmark made itself (counted by its client); they include the API server's own loopback "
            "calls (a few per minute)")
DIGEST = "sha256:" + "0" * 64


def service(model: str, version: str) -> str:
    return f"{model}-v{version.replace('.', '-')}"


def model_version(model: str, version: str) -> dict[str, Any]:
    return {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": f"{model}-{version.replace('.', '-')}"},
            "spec": {"model": model, "version": version,
                     "artifact": {"uri": f"s3://bench/{model}/{version}", "digest": DIGEST, "format": "sklearn"}}}


def headless_service(name: str) -> dict[str, Any]:
    """Headless: no cluster IP, so thousands fit (the playground's service range is a /24)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": "None", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def http_route(model: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": model, "annotations": {"modelops.io/deployment": model}},
            "spec": {"parentRefs": [{"name": "gateway"}],
                     "rules": [{"backendRefs": [{"name": service(model, OLD), "port": 80, "weight": 100}]}]}}


def model_deployment(model: str) -> dict[str, Any]:
    return {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": model},
            "spec": {"model": model, "version": OLD,
                     "serving": {"backend": "gatewayAPI", "gatewayAPI": {
                         "route": model, "services": {OLD: service(model, OLD)}, "port": 80}},
                     "strategy": {"steps": [{"weight": w, "pause": PAUSE} for w in STEPS]},
                     "analysis": {"interval": INTERVAL, "checks": checks()}}}


def stable_on(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status.get("phase") == "Stable" and status.get("stableVersion") == version


def rolled_back(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("RolledBack", "Failed")


class ProcessSampler:
    """The operator's CPU seconds (utime+stime) and RSS, from /proc, once a second in a thread."""

    TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int):
        self.pid, self.start = pid, time.monotonic()
        self.samples: list[tuple[float, float, float]] = []  # (t, cpu seconds, rss MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / self.TICKS  # utime, stime: fields 14 and 15 of stat

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def sample(self) -> tuple[float, float, float]:
        taken = (time.monotonic() - self.start, self.cpu_seconds(), self.rss_mib())
        self.samples.append(taken)
        return taken

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sample()
            except OSError:
                return  # the process is gone

    def begin(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def end(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, t0: float, t1: float) -> list[tuple[float, float, float]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]

    def timeline(self) -> list[dict[str, float]]:
        out = []
        for (t0, c0, _), (t1, c1, rss) in zip(self.samples, self.samples[1:]):
            out.append({"t": round(t1, 2), "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 2),
                        "rss_mib": round(rss, 2)})
        return out


class Bench:
    def __init__(self, deployments: int, idle_seconds: float, work: Path, gateway_crd: Path,
                 operator_args: Sequence[str] = (), profile_seconds: int = 0, out: Path | None = None):
        """`profile_seconds`: kube-apiserver's CPU profile over the rollout's first seconds, into `out`."""
        self.n, self.idle_seconds, self.work, self.gateway_crd = deployments, idle_seconds, work, gateway_crd
        self.operator_args = list(operator_args)
        self.profile_seconds, self.out = profile_seconds, out
        width = max(4, len(str(deployments - 1)))
        self.models = [f"m{i:0{width}d}" for i in range(deployments)]
        self.number = {m: i for i, m in enumerate(self.models)}
        self.parts: list[Any] = []
        self.began = time.monotonic()
        self.durations: dict[str, float] = {}
        self.counts: dict[str, Any] = {}
        self.figures: dict[str, Any] = {}
        self.series: dict[str, Any] = {"windows": {}}

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:7.1f}s] {text}", flush=True)

    # --- the parts -------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self.say("starting etcd and kube-apiserver")
        self.plane = ControlPlane(self.work / "controlplane", profiling=self.profile_seconds > 0).start()
        self.parts.append(self.plane)
        self.plane.install_crds(*sorted((REPO / "crds").glob("*.yaml")), self.gateway_crd)
        self.plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
        self.say(f"starting Prometheus (scrape every {SCRAPE_INTERVAL}) and the synthetic exporter")
        self.prometheus = Prometheus(self.work / "prometheus", scrape_interval=SCRAPE_INTERVAL).start()
        self.parts.append(self.prometheus)
        assert self.prometheus.process is not None
        self.others_cpu = {p.name: ProcessSampler(p.proc.pid)
                           for p in (*self.plane.processes, self.prometheus.process)}
        self.exporter = Exporter().start()
        self.parts.append(self.exporter)
        self.prometheus.add_target(self.exporter.address, role="bench")
        self.plane.apply({"apiVersion": "modelops.io/v1alpha1", "kind": "ClusterMetricProvider",
                          "metadata": {"name": "default"},
                          "spec": {"prometheus": {"address": self.prometheus.url, "timeout": "5s"},
                                   "namespaceSelector": {}}})
        self.kube = Kube(self.plane.url, str(self.plane.ca.cert_path), str(self.plane.admin.cert),
                         str(self.plane.admin.key))
        self.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": NAMESPACE}})
        self.writer = RouteStatusWriter(self.kube, NAMESPACE).start()
        self.parts.append(self.writer)
        self.say("starting the operator")
        self.operator = OperatorProcess(self.plane.kubeconfig_for("modelops-operator"), self.work,
                                        args=self.operator_args, verbose=False).start()
        self.parts.append(self.operator)
        deadline = time.monotonic() + 60
        while not self.operator.is_leader():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator did not lead within 60 s:\n{self.operator.process.tail()}")
            time.sleep(0.2)
        self.sampler = ProcessSampler(self.operator.process.proc.pid).begin()
        self.parts.append(self.sampler)
        self.deployments = Informer(self.kube, PATHS["modeldeployments"]).start()
        self.parts.append(self.deployments)
        self.durations["setup"] = time.monotonic() - started

    def stop(self) -> None:
        for part in reversed(self.parts):
            try:
                part.end() if isinstance(part, ProcessSampler) else part.stop()
            except Exception as error:  # noqa: BLE001 - stop the rest whatever one does
                print(f"stopping {type(part).__name__}: {error}", file=sys.stderr)

    # --- reading metrics ---------------------------------------------------------------------

    def snapshot(self, opening: bool) -> dict[str, Any]:
        """Counters at a window's edge. The benchmark's own request count is read before the API server's
        (so both include that scrape only in the next window). The operator's CPU and the time are read
        outside the window's scrapes (after them when `opening`, before them when closing), so that
        rendering the operator's /metrics is not counted as its work."""
        clock = {}
        if not opening:
            clock = {"t": time.monotonic(), "cpu": self.sampler.cpu_seconds()}
        own, own_by_resource = self.kube.counts(), self.kube.counts_by_resource()
        apiserver = fig.samples(self.kube.metrics(), ["apiserver_request_total"])
        operator = fig.samples(urllib.request.urlopen(self.operator.metrics_url, timeout=30).read().decode(),
                               ["modelops_status_patches_total", "modelops_decisions_total",
                                "modelops_analysis_lag_seconds_bucket", "modelops_analyses_total",
                                "modelops_reconcile_errors_total", *GC_PAUSE_SAMPLES])
        prometheus = fig.samples(urllib.request.urlopen(f"{self.prometheus.url}/metrics", timeout=10).read().decode(),
                                 ["prometheus_http_requests_total"])
        if opening:
            clock = {"t": time.monotonic(), "cpu": self.sampler.cpu_seconds()}
        others = {name: sampler.cpu_seconds() for name, sampler in self.others_cpu.items()}
        return {**clock, "others_cpu": others, "own": own, "own_by_resource": own_by_resource,
                "verbs": fig.by_label(apiserver, "apiserver_request_total", "verb"),
                "resources": fig.by_resource(apiserver),
                "patches": fig.total(operator, "modelops_status_patches_total"),
                "decisions": fig.by_label(operator, "modelops_decisions_total", "reason"),
                "errors": fig.by_label(operator, "modelops_reconcile_errors_total", "reason"),
                "analyses": fig.total(operator, "modelops_analyses_total"),
                "lag": fig.buckets(operator, "modelops_analysis_lag_seconds"),
                "gc": fig.gc_pauses(operator),
                "queries": fig.total(prometheus, "prometheus_http_requests_total", handler="/api/v1/query")}

    def gc_pauses(self) -> dict[str, Any]:
        """The operator's collector pauses so far, where no window's snapshot reads them (creation)."""
        return fig.gc_pauses(fig.samples(urllib.request.urlopen(self.operator.metrics_url, timeout=30).read().decode(),
                                         GC_PAUSE_SAMPLES))

    def note_gc(self, phase: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        seconds, full, longest = fig.paused(after, before)
        self.figures[f"{phase}_gc_pause_s"], self.figures[f"{phase}_gc_full_pause_max_s"] = seconds, longest
        self.counts[f"{phase}_gc_full_collections"] = full

    @staticmethod
    def cpu_percent(process: str, before: dict[str, Any], after: dict[str, Any]) -> float:
        """A process of the control plane's or Prometheus's CPU between two snapshots, in % of a core."""
        return 100 * (after["others_cpu"][process] - before["others_cpu"][process]) / (after["t"] - before["t"])

    @staticmethod
    def api_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        rates = fig.requests_by_verb(fig.delta(after["verbs"], before["verbs"]), fig.delta(after["own"], before["own"]),
                                     after["t"] - before["t"])
        return {"total": sum(rates.values()), **rates}

    # --- the phases ------------------------------------------------------------------------

    def create_all(self, make: Callable[[str], None]) -> dict[str, float]:
        """make(model) for every model, CLIENT_THREADS at a time; returns when each one's was done."""
        done: dict[str, float] = {}

        def one(model: str) -> None:
            make(model)
            done[model] = time.monotonic()

        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            list(pool.map(one, self.models))
        return done

    def wait_all(self, reached: Callable[[dict[str, Any]], bool], timeout: float, what: str,
                 final: Callable[[dict[str, Any]], bool] = lambda status: False) -> dict[str, Any]:
        """Until every deployment's status satisfies `reached` or `final` (e.g. rolled back); when each first did.

        A first version is never rolled back: a deployment that is Failed before it (a round that could not
        finish, e.g. an API server under load answering 429) is retried by the operator, so it is waited for."""
        at: dict[str, float] = {}
        failed: set[str] = set()
        deadline, last_said = time.monotonic() + timeout, time.monotonic()
        while True:
            if not self.operator.process.alive():
                raise RuntimeError(f"the operator exited ({self.operator.process.proc.returncode}):\n"
                                   f"{self.operator.process.tail()}")
            now = time.monotonic()
            for obj in self.deployments.snapshot():
                name, status = obj["metadata"]["name"], obj.get("status") or {}
                if name in at or name in failed:
                    continue
                if reached(status):
                    at[name] = now
                elif final(status):
                    failed.add(name)
            if len(at) + len(failed) >= self.n:
                break
            if now > deadline:
                self.say(f"{what}: {len(at)}/{self.n} after {timeout:.0f} s, giving up")
                break
            if now - last_said >= 10:
                self.say(f"{what}: {len(at)}/{self.n}")
                last_said = now
            time.sleep(0.2)
        return {"at": at, "failed": sorted(failed)}

    def publish(self, model: str, version: str, address: int) -> None:
        """One version of a model: its ModelVersion, Service and EndpointSlice (endpoint number `address`), and
        the Service's series in the exporter."""
        svc = service(model, version)
        self.kube.create(PATHS["modelversions"], model_version(model, version))
        self.kube.create(PATHS["services"], headless_service(svc))
        self.kube.create(PATHS["endpointslices"], endpoint_slice(svc, address))
        self.exporter.add(NAMESPACE, svc)

    def create(self) -> None:
        def everything(model: str) -> None:
            self.publish(model, OLD, 2 * self.number[model] + 1)
            self.kube.create(PATHS["httproutes"], http_route(model))
            self.kube.create(PATHS["modeldeployments"], model_deployment(model))

        self.say(f"creating {self.n} ModelVersions, Services, EndpointSlices, HTTPRoutes and ModelDeployments")
        gc_before = self.gc_pauses()
        started = time.monotonic()
        created = self.create_all(everything)
        self.durations["create_requests"] = time.monotonic() - started
        self.say(f"created in {self.durations['create_requests']:.1f} s; waiting for all Stable on {OLD}")
        result = self.wait_all(stable_on(OLD), 120 + 0.5 * self.n, f"Stable on {OLD}")
        at = result["at"]
        self.durations["create"] = time.monotonic() - started
        self.note_gc("create", gc_before, self.gc_pauses())
        self.counts["create_stable"], self.counts["create_failed"] = len(at), len(result["failed"])
        complete = len(at) == self.n
        self.figures["create_to_stable_s"] = (max(at.values()) - started) if complete else None
        each = [at[m] - created[m] for m in at]
        self.figures["create_to_stable_p50_s"] = fig.quantile(each, 0.5)
        self.figures["create_to_stable_p99_s"] = fig.quantile(each, 0.99)
        self.series["create_reached_s"] = sorted(round(t - started, 3) for t in at.values())
        self.say(f"all Stable in {fig.fmt(self.figures['create_to_stable_s'])} s" if complete
                 else f"only {len(at)}/{self.n} Stable")

    def idle(self) -> None:
        time.sleep(5)  # the last rounds' writes and events settle
        self.say(f"idle for {self.idle_seconds:g} s: operator CPU, RSS and API requests")
        before = self.snapshot(opening=True)
        t0 = before["t"] - self.sampler.start
        time.sleep(self.idle_seconds)
        after = self.snapshot(opening=False)
        t1 = after["t"] - self.sampler.start
        self.series["windows"]["idle"] = [round(t0, 2), round(t1, 2)]
        rss = [s[2] for s in self.sampler.between(t0, t1)] or [self.sampler.rss_mib()]
        self.figures["idle_cpu_percent"] = 100 * (after["cpu"] - before["cpu"]) / (after["t"] - before["t"])
        self.figures["idle_rss_mib"] = sum(rss) / len(rss)
        self.figures["idle_rss_max_mib"] = max(rss)
        self.figures["idle_api_requests_per_s"] = self.api_rates(before, after)
        self.figures["idle_prometheus_cpu_percent"] = self.cpu_percent("prometheus", before, after)
        self.durations["idle"] = after["t"] - before["t"]

    def rollout(self) -> None:
        started = time.monotonic()

        def prepare(model: str) -> None:
            self.publish(model, NEW, 2 * self.number[model] + 2)

        self.say(f"publishing {NEW} of every model (ModelVersion, Service, EndpointSlice)")
        self.create_all(prepare)
        names = {f"{m}-{NEW.replace('.', '-')}" for m in self.models}
        deadline = time.monotonic() + 60 + 0.1 * self.n
        while time.monotonic() < deadline:  # the operator has seen them all (and written their status)
            listed = self.kube.list(PATHS["modelversions"])["items"]
            if sum(1 for v in listed if v["metadata"]["name"] in names and (v.get("status") or {}).get("phase")) == len(names):
                break
            time.sleep(1)
        time.sleep(2 * SCRAPE_SECONDS)  # Prometheus has the new series
        self.durations["rollout_prepare"] = time.monotonic() - started

        self.say(f"rollout: every ModelDeployment to {NEW} at once")
        before = self.snapshot(opening=True)
        profiler = self.profile_apiserver() if self.profile_seconds else None
        started = time.monotonic()
        patched = self.create_all(lambda m: self.kube.merge_patch(
            f"{PATHS['modeldeployments']}/{m}",
            {"spec": {"version": NEW, "serving": {"gatewayAPI": {"services": {NEW: service(m, NEW)}}}}}))
        self.durations["rollout_requests"] = time.monotonic() - started
        self.say(f"bumped in {self.durations['rollout_requests']:.1f} s; waiting for all Stable on {NEW}")
        result = self.wait_all(stable_on(NEW), 180 + 0.5 * self.n, f"Stable on {NEW}", final=rolled_back)
        after = self.snapshot(opening=False)
        if profiler is not None:
            profiler.join()
        at = result["at"]
        self.durations["rollout"] = time.monotonic() - started
        self.note_gc("rollout", before["gc"], after["gc"])
        self.series["windows"]["rollout"] = [round(before["t"] - self.sampler.start, 2),
                                             round(after["t"] - self.sampler.start, 2)]
        complete = len(at) == self.n
        self.counts["rollout_stable"], self.counts["rollout_failed"] = len(at), len(result["failed"])
        self.figures["rollout_s"] = (max(at.values()) - started) if complete else None
        each = [at[m] - patched[m] for m in at]
        self.figures["rollout_p50_s"] = fig.quantile(each, 0.5)
        self.figures["rollout_p99_s"] = fig.quantile(each, 0.99)
        self.series["rollout_reached_s"] = sorted(round(t - started, 3) for t in at.values())
        seconds = after["t"] - before["t"]
        self.figures["rollout_cpu_percent"] = 100 * (after["cpu"] - before["cpu"]) / seconds
        for name, key in (("kube-apiserver", "rollout_apiserver_cpu_percent"), ("etcd", "rollout_etcd_cpu_percent"),
                          ("prometheus", "rollout_prometheus_cpu_percent")):
            self.figures[key] = self.cpu_percent(name, before, after)
        self.figures["rollout_api_requests_per_s"] = self.api_rates(before, after)
        lag = fig.delta(after["lag"], before["lag"])
        self.figures["analysis_lag_p50_s"] = fig.histogram_quantile(0.5, lag) if lag else None
        self.figures["analysis_lag_p99_s"] = fig.histogram_quantile(0.99, lag) if lag else None
        self.figures["prometheus_queries_per_s"] = (after["queries"] - before["queries"]) / seconds
        decisions = fig.delta(after["decisions"], before["decisions"])
        steps = sum(decisions.get(reason, 0) for reason in TRAFFIC_STEPS)
        patches = after["patches"] - before["patches"]
        self.figures["status_patches_per_step"] = patches / steps if steps else None
        self.counts.update({
            "rollout_status_patches": patches, "rollout_traffic_steps": steps,
            "rollout_analyses": after["analyses"] - before["analyses"],
            "rollout_analysis_lag_observations": lag.get(float("inf"), 0),
            "rollout_prometheus_queries": after["queries"] - before["queries"],
            "rollout_decisions": {k: v for k, v in decisions.items() if v},
            "rollout_reconcile_errors": {k: v for k, v in fig.delta(after["errors"], before["errors"]).items() if v},
            "route_status_patches": self.writer.patches,
            "rollout_api_requests_per_deployment": fig.per_deployment(
                fig.delta(after["resources"], before["resources"]),
                fig.delta(after["own_by_resource"], before["own_by_resource"]), self.n),
        })
        self.say(f"all Stable on {NEW} in {fig.fmt(self.figures['rollout_s'])} s" if complete
                 else f"only {len(at)}/{self.n} Stable on {NEW}, {len(result['failed'])} rolled back")

    def profile_apiserver(self) -> threading.Thread:
        """kube-apiserver's CPU profile from now on, written as apiserver-cpu.pprof beside the figures, with its
        top functions as apiserver-cpu.txt when a Go toolchain is on PATH."""
        assert self.out is not None

        def take() -> None:
            profile = self.out / "apiserver-cpu.pprof"
            try:
                profile.write_bytes(self.kube.cpu_profile(self.profile_seconds))
            except (ApiError, OSError) as error:
                self.say(f"no kube-apiserver profile: {error}")
                return
            go = shutil.which("go")
            if go is None:
                return
            for order, flags in (("flat", []), ("cumulative", ["-cum"])):
                top = subprocess.run([go, "tool", "pprof", "-top", "-nodecount=40", *flags,
                                      str(self.plane.bin / "kube-apiserver"), str(profile)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
                with (self.out / "apiserver-cpu.txt").open("a") as text:
                    text.write(f"# kube-apiserver CPU over the rollout's first {self.profile_seconds} s, "
                               f"{order}\n{top.stdout}\n")

        thread = threading.Thread(target=take, name="apiserver-profile", daemon=True)
        thread.start()
        return thread

    def result(self) -> dict[str, Any]:
        self.series["operator"] = self.sampler.timeline()
        return {
            "benchmark": "modelops", "format": 1, "deployments": self.n,
            "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "cpus": os.cpu_count(),
            "settings": {"backend": "gatewayAPI", "steps": list(STEPS), "pause": PAUSE, "interval": INTERVAL,
                         "checks": [c["name"] for c in checks()], "idle_seconds": self.idle_seconds,
                         "scrape_interval": SCRAPE_INTERVAL, "leader_election": True,
                         "operator_args": self.operator_args},
            "figures": self.figures, "counts": self.counts,
            "durations_s": {k: round(v, 2) for k, v in self.durations.items()},
            "notes": {"api_requests": API_NOTE,
                      "status_patches_per_step": "modelops_status_patches_total increase in the rollout over its "
                                                 "traffic steps (StepAdvanced and Promoted decisions: 3 per rollout here)",
                      "analysis_lag": "from an analysis falling due to it being started, over the rollout; "
                                      "interpolated within the histogram's buckets like histogram_quantile"},
            "series": self.series,
        }


def run(deployments: int, out: Path, idle_seconds: float, gateway_crd: Path,
        previous: dict[str, Any] | None = None, rollout: bool = True,
        operator_args: Sequence[str] = (), profile_seconds: int = 0) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        bench = Bench(deployments, idle_seconds, Path(tmp), gateway_crd, operator_args, profile_seconds, out)
        try:
            bench.start()
            bench.create()
            bench.idle()
            if rollout:
                bench.rollout()
        finally:
            bench.stop()
            bench.durations["total"] = time.monotonic() - bench.began
    result = bench.result()
    if previous is not None:
        result["compared_with"] = {"when": previous.get("when"), "deployments": previous.get("deployments"),
                                   "change": fig.comparison(result["figures"], previous.get("figures") or {})}
    (out / "figures.json").write_text(json.dumps(result, indent=1) + "\n")
    from .plot import plot

    plot(result, out / "bench.png")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", "-n", type=int, default=1000, help="ModelDeployments to create (default 1000)")
    parser.add_argument("--out", type=Path, default=Path("bench-output"), help="where figures.json and bench.png go")
    parser.add_argument("--compare", type=Path, help="a previous run's figures.json: print the change per figure")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle period measured (default 60)")
    parser.add_argument("--no-rollout", dest="rollout", action="store_false",
                        help="creation and the idle period only: memory and idle load at a size whose rollout is long")
    parser.add_argument("--operator-args", default="", metavar="ARGS",
                        help="more arguments for `modelops run`, e.g. \"--lease-duration 60 --renew-deadline 45\"")
    parser.add_argument("--profile-apiserver", type=int, default=0, metavar="SECONDS",
                        help="kube-apiserver's CPU profile over the rollout's first SECONDS (pprof file and top "
                             "functions beside the figures)")
    args = parser.parse_args(argv)
    if args.profile_apiserver < 0:
        parser.error("--profile-apiserver must not be negative")
    if args.deployments < 1:
        parser.error("--deployments must be at least 1")
    previous = None
    if args.compare is not None:
        try:
            previous = json.loads(args.compare.read_text())
        except (OSError, ValueError) as error:
            parser.error(f"--compare {args.compare}: {error}")
    try:
        gateway_crd = upstream_crds([GATEWAY_HTTPROUTES]) / GATEWAY_HTTPROUTES  # before anything slow starts
    except UpstreamCRDsUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    try:
        result = run(args.deployments, args.out, args.idle_seconds, gateway_crd, previous, args.rollout,
                     shlex.split(args.operator_args), args.profile_apiserver)
    except (ApiError, TimeoutError, RuntimeError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print()
    print(f"{result['deployments']} ModelDeployments, gatewayAPI, steps {'/'.join(map(str, STEPS))} %, pause {PAUSE}, "
          f"interval {INTERVAL}{''.join(' ' + a for a in result['settings']['operator_args'])}; "
          f"took {result['durations_s']['total']:.0f} s")
    print(fig.table(result["figures"], previous.get("figures") if previous else None))
    print(f"\nAPI requests: {API_NOTE}.")
    print(f"\nfigures: {args.out / 'figures.json'}\nplot: {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
