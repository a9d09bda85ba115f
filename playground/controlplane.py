"""A real Kubernetes control plane on loopback: etcd and kube-apiserver built from Go modules.

The binaries come from tools/controlplane/build.sh (built once into a cache). Clients
authenticate with certificates from a throwaway CA; authorization is RBAC, as in a
production cluster, so the operator's own ClusterRole is exercised for real.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from .pki import CertificateAuthority, service_account_key
from .processes import Process, free_port

ADMIN_USER = "modelops-test-admin"  # the tests' kubectl user (system:masters)
REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "tools" / "controlplane" / "build.sh"
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/24")
# The `kubernetes` Service's ClusterIP (the range's first address): what pods dial with in-cluster config.
KUBERNETES_SERVICE_IP = str(next(SERVICE_RANGE.hosts()))


def control_plane_binaries(node: bool = False) -> Path:
    """The folder holding etcd, kube-apiserver and kubectl (`node`: also kube-controller-manager,
    kube-scheduler and kubelet); builds them on first use."""
    out = subprocess.run([str(BUILD_SCRIPT), *(["node"] if node else [])], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


class ControlPlane:
    def __init__(self, work_dir: Path, bin_dir: Path | None = None, profiling: bool = False):
        """`profiling`: kube-apiserver serves /debug/pprof (the benchmark's CPU profile)."""
        self.dir = work_dir
        self.profiling = profiling
        self.bin = bin_dir or control_plane_binaries()
        self.processes: list[Process] = []
        self.kubeconfig = work_dir / "kubeconfig"
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60) -> ControlPlane:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(self.dir)
        etcd_url = self._start_etcd(timeout)
        self._start_apiserver(etcd_url, timeout)
        self.admin = self.ca.issue("admin", ADMIN_USER, organizations=("system:masters",))
        self.write_kubeconfig(self.kubeconfig, self.admin.cert, self.admin.key)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def _start_etcd(self, timeout: float) -> str:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        etcd = Process("etcd", [
            str(self.bin / "etcd"), "--name", "test", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # test data: durability across power loss is not the point
            "--log-level", "warn",
        ], self.dir)
        self.processes.append(etcd)
        etcd.wait_until(lambda: json.load(urllib.request.urlopen(f"{url}/health", timeout=1))["health"] == "true",
                        timeout, "healthy etcd")
        return url

    def _start_apiserver(self, etcd_url: str, timeout: float) -> None:
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        serving = self.ca.issue("apiserver", "kube-apiserver", server_ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
                                server_names=("localhost", "kubernetes.default.svc"))
        sa_key = service_account_key(self.dir / "service-account.key")
        apiserver = Process("kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(port),
            "--tls-cert-file", str(serving.cert), "--tls-private-key-file", str(serving.key),
            "--client-ca-file", str(self.ca.cert_path),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(sa_key), "--service-account-signing-key-file", str(sa_key),
            "--api-audiences", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", str(SERVICE_RANGE),
            # The `kubernetes` Service gets no endpoint from the API server: it would publish its
            # advertise address, 127.0.0.1, which Endpoints and EndpointSlices refuse (loopback). A
            # node with a Service proxy publishes one of its own (node.py).
            "--endpoint-reconciler-type", "none",
            # A node by its address, never its name: a name would be looked up in this machine's DNS (no test
            # traffic leaves loopback and the node's bridge).
            "--kubelet-preferred-address-types", "InternalIP",
            "--cert-dir", str(self.dir / "apiserver-certs"),
            f"--profiling={'true' if self.profiling else 'false'}",
            "-v", "1",
        ], self.dir)
        self.processes.append(apiserver)
        admin = self.ca.issue("readyz-probe", ADMIN_USER, organizations=("system:masters",))
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        apiserver.wait_until(
            lambda: urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=2).status == 200,
            timeout, "ready kube-apiserver")

    # --- faults (the chaos tier): the API server alone goes away and comes back ----------

    def _apiserver(self) -> Process:
        return next(p for p in reversed(self.processes) if p.name == "kube-apiserver")

    def apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        try:
            return urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=2).status == 200
        except OSError:
            return False

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver; etcd keeps running with everything in it."""
        self._apiserver().kill()

    def restart_apiserver(self, timeout: float = 60) -> float:
        """kube-apiserver again, with the same command line (same port, certificates and etcd), so every
        kubeconfig still works; returns the seconds until it was ready."""
        started = time.monotonic()
        old = self._apiserver()
        if old.alive():
            raise RuntimeError("kube-apiserver is still running")
        apiserver = Process("kube-apiserver", list(old.proc.args), self.dir)
        self.processes[self.processes.index(old)] = apiserver
        apiserver.wait_until(self.apiserver_ready, timeout, "ready kube-apiserver after a restart")
        return time.monotonic() - started

    # --- clients -----------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, cert: Path, key: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca.cert_path)}}],
            "users": [{"name": "user", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user", "namespace": "default"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig of a non-admin identity, whose rights are only what RBAC grants it."""
        issued = self.ca.issue(f"user-{user}", user, organizations=groups)
        return self.write_kubeconfig(self.dir / f"kubeconfig-{user}", issued.cert, issued.key)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            # Discovery cached per control plane: another one may have served on the same port before.
            [str(self.bin / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig),
             "--cache-dir", str(self.dir / "kubectl-cache"), *args],
            input=input, text=True, capture_output=True, timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, manifest: dict | str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", *extra, input=text, check=check)

    def install_crds(self, *paths: Path) -> None:
        """Created, not applied: the full KServe CRD is too big for client-side apply's annotation,
        and on a fresh API server create is several times faster than server-side apply."""
        documents = [fill_untyped_array_items(d) for p in paths for d in yaml.load_all(p.read_text(), Loader=yaml.CSafeLoader) if d]
        self.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
        names = {d["metadata"]["name"] for d in documents}
        deadline = time.monotonic() + 60
        while names - self._established_crds():
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not established: {sorted(names - self._established_crds())}")
            time.sleep(0.2)

    def _established_crds(self) -> set[str]:
        crds = json.loads(self.kubectl("get", "crd", "-o", "json").stdout)["items"]
        return {c["metadata"]["name"] for c in crds
                if any(k["type"] == "Established" and k["status"] == "True" for k in (c.get("status") or {}).get("conditions") or [])}


def fill_untyped_array_items(node):
    """Seldon v1's CRD declares the recursive `graph.children` as `items: {}`, which current API
    servers reject as non-structural; Seldon's own charts declare those items as free-form objects,
    and so do we. Nothing else in an upstream CRD is changed."""
    if isinstance(node, dict):
        out = {k: fill_untyped_array_items(v) for k, v in node.items()}
        if out.get("type") == "array" and out.get("items") == {}:
            out["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return out
    if isinstance(node, list):
        return [fill_untyped_array_items(v) for v in node]
    return node
