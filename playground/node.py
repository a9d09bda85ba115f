"""A real single-node cluster around the test control plane: pods run in containers, for real.

What runs, next to a `ControlPlane` (etcd + kube-apiserver):
- kube-controller-manager and kube-scheduler, built from the same pinned k8s.io/kubernetes module as
  kube-apiserver (tools/controlplane/build.sh node); the real EndpointSlice, ReplicaSet and node
  lifecycle controllers, with the same RBAC identities as in a kubeadm cluster.
- a kubelet of that version, on the CRI of a containerd of this run (Debian's containerd 1.6: its
  own config, socket, root and state on a tmpfs of this run; never the system one), with runc and
  Debian's CNI plugins (bridge, host-local, loopback, portmap).
- pod images built locally with podman from the debootstrap base (tools/image/base.sh) and
  imported into containerd; the sandbox ("pause") image is one of them, so nothing is pulled.
  `import_image` adds others of this machine's podman store: the operator's and the demo's KServe
  model server's (playground/image.py; several hundred MB unpacked, which the tmpfs holds).

Settings, and why:
- cgroup v1 (hybrid) hosts: kubelet >= 1.35 refuses cgroup v1 unless `failCgroupV1: false`. There
  is no systemd, so the cgroup driver is cgroupfs (kubelet and runc agree on it; containerd 1.6 does
  not answer the CRI RuntimeConfig call, so kubelet takes the driver from its own config). Pods go
  under a cgroup root of their own per run, made before and removed after.
- `failSwapOn: false`: whether the host has swap is no concern of a test.
- containerd's `restrict_oom_score_adj`: where root lacks CAP_SYS_RESOURCE (a sandboxed VM), runc
  cannot give a sandbox the OOM score -998 kubelet asks for and the pod never starts ("can't get
  final child's PID from pipe"); the score is capped at containerd's own instead.
- Pod addresses: a /24 in 10.213.0.0/16 that no route or address of this machine covers, on a CNI
  bridge of this run. The host reaches pods through the bridge (the gateway address); pods have no
  default route, and without the Service proxy (below) there is no NAT and no forwarding: pod
  addresses exist only in network namespaces this run creates.
- The node's address is the bridge's (the pods' gateway): kubelet refuses a loopback one. kubelet
  serves on it, on free ports, so several nodes (of several test runs) can coexist. kube-apiserver
  has no client certificate for kubelet, so `kubectl logs/exec` do not work: the containers' logs
  are files in the node's work folder (`pod-logs/`), kept after it stops.
- No iptables chains of kubelet's (`makeIPTablesUtilChains: false`): they are there for kube-proxy
  (which backend iptables uses; a guard for route_localnet, off here) and would outlive the node.

Service ClusterIPs (`Node(..., service_proxy=True)`; off by default, which starts faster): kube-proxy
of the same version, iptables mode, in the host's network namespace, with everything that would
reach beyond this run turned off:
- `iptables.localhostNodePorts: false`: otherwise it sets net.ipv4.conf.all.route_localnet.
- `conntrack.maxPerCore: 0`, `min: 0` and the TCP timeouts 0: the host's conntrack sysctls stay.
- `clusterCIDR`: the node's pod /24, so traffic from elsewhere counts as external.
- `masqueradeAll: true`: a pod reaching a ClusterIP whose endpoint is a pod on the same bridge must
  see the reply come back through the host; SNAT to the bridge address makes it so, whether or not
  the host passes bridged traffic through iptables (br_netfilter).
- `nodePortAddresses`: the node's address only; metrics and healthz on free ports of 127.0.0.1;
  `oomScoreAdj: 0`: a test's proxy asks for no protection from the OOM killer.
- Its chains (KUBE-SERVICES, ...) have machine-wide names: a node with a proxy holds an exclusive
  lock (a file in the temp folder) from start to stop, so a second test run's proxied node waits,
  and at stop `kube-proxy --cleanup` removes every chain and rule it made.
The networking rule holds: pods get a route to the Service range (10.96.0.0/24) via the host and no
other beyond their subnet; the host's proxy rules translate ClusterIPs to pod addresses of this
run's bridge or to the node's address, and a policy rule of the bridge refuses the rest of the
range (nothing is routed off the machine).

Pods reach the API server on the `kubernetes` Service (10.96.0.1:443, in the serving certificate's
names). kube-apiserver listens on 127.0.0.1 only and would publish that as the Service's endpoint,
which the API refuses (Endpoints and EndpointSlices may not hold loopback addresses), so
`--endpoint-reconciler-type=none` there. Rather than make the API server listen beyond loopback, or
DNAT to 127.0.0.1 (route_localnet), the node runs a userspace TCP relay (relay.py) on its bridge
address in front of the API server and publishes that address and port as the Service's
EndpointSlice: no sysctl changes, and TLS passes through unchanged.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from .controlplane import REPO, SERVICE_RANGE, ControlPlane, control_plane_binaries
from .processes import Process, free_port

POD_NETWORKS = ipaddress.ip_network("10.213.0.0/16")  # each run takes a free /24 of it
IMAGE_TOOLS = REPO / "tools" / "image"
STATE_SIZE = "4g"  # the node's tmpfs: images, containers' writable layers, logs; a bound, not a reservation
PYTHON_IMAGE = "localhost/modelops-base:bookworm"  # what tools/image/base.sh makes: Debian with python3
# The pod sandbox holds the pod's namespaces: python3 waiting for SIGTERM, on the same base.
PAUSE_IMAGE = "localhost/modelops-pause:bookworm"
# Held while a node with kube-proxy runs: its iptables chains are named machine-wide.
PROXY_LOCK = Path(tempfile.gettempdir()) / "modelops-node-kube-proxy.lock"
PAUSE_COMMAND = '["python3", "-c", "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"]'


def free_pod_subnet(routes: list[dict], addresses: list[dict]) -> ipaddress.IPv4Network:
    """The first /24 of POD_NETWORKS that no route (`ip -j route`) or interface address
    (`ip -j addr`) of this machine overlaps."""
    taken = [ipaddress.ip_network(r["dst"]) for r in routes if r.get("dst", "default") != "default"]
    taken += [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
              for link in addresses for a in link.get("addr_info", []) if a.get("family") == "inet"]
    for subnet in POD_NETWORKS.subnets(new_prefix=24):
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise RuntimeError(f"no free /24 in {POD_NETWORKS} on this machine")


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: every v1 controller's, and the v2 one."""
    mounts = [m.split() for m in Path("/proc/self/mounts").read_text().splitlines()]
    return [Path(m[1]) for m in mounts if m[2] in ("cgroup", "cgroup2")]


def _ip_json(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout)


def pod_images_archive(out: Path) -> Path:
    """The base image (made once by tools/image/base.sh) and the sandbox image on it (podman's layer
    cache makes it once), saved into one archive for `ctr images import`."""
    env = {**os.environ, "CONTAINERS_CONF": str(IMAGE_TOOLS / "containers.conf")}
    subprocess.run([str(IMAGE_TOOLS / "base.sh"), PYTHON_IMAGE], check=True, capture_output=True, env=env)
    subprocess.run(["podman", "build", "-q", "-t", PAUSE_IMAGE, "-f", "-", str(out.parent)], check=True,
                   input=f"FROM {PYTHON_IMAGE}\nCMD {PAUSE_COMMAND}\n", capture_output=True, text=True, env=env)
    subprocess.run(["podman", "save", "-q", "-m", "-o", str(out), PYTHON_IMAGE, PAUSE_IMAGE], check=True,
                   capture_output=True, env=env)
    return out


class Node:
    """kube-controller-manager, kube-scheduler, containerd and a kubelet registered as `name`.
    Needs root (containers, network namespaces, cgroups)."""

    def __init__(self, control_plane: ControlPlane, work_dir: Path, name: str = "modelops-node",
                 service_proxy: bool = False):
        """`service_proxy`: kube-proxy and the `kubernetes` Service's endpoint, so ClusterIPs work."""
        self.cp = control_plane
        self.service_proxy = service_proxy
        self._proxy_lock = None  # the open lock file while kube-proxy may have chains
        self.dir = work_dir  # logs and configuration
        self.name = name
        self.bin = control_plane_binaries(node=True)
        self.processes: list[Process] = []
        # Sockets live here: a unix socket path must stay under 108 bytes, which a test's folder may not.
        # A tmpfs in start(): unpacking the images and deleting thousands of files at the end take
        # seconds on a busy disk and nothing in memory.
        self.state = Path(tempfile.mkdtemp(prefix="modelops-node-"))
        self.socket = self.state / "containerd.sock"
        self.bridge = f"mo{self.state.name[-8:]}"  # unique per run, under the 15 bytes of an interface name
        self.cgroup_root = f"/{self.state.name}"
        self.subnet: ipaddress.IPv4Network | None = None  # chosen with the bridge, in start()
        self.ip: ipaddress.IPv4Address | None = None  # the bridge's: the pods' gateway and the node's address

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120) -> Node:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_SIZE},mode=0700", "modelops-node", str(self.state)],
                       check=True, capture_output=True)
        self._make_bridge()
        self._start_containerd(timeout)
        self._import_images()
        self._start_controllers()
        self._start_kubelet(timeout)
        if self.service_proxy:
            self._start_service_proxy(timeout)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Everything this node made goes away: processes, containers, mounts, bridge, cgroups, files."""
        for process in reversed(self.processes):
            if process.name == "containerd" and process.alive():
                self._remove_containers()
            process.stop()
        if self._proxy_lock is not None:
            subprocess.run([str(self.bin / "kube-proxy"), "--cleanup"], check=False, capture_output=True, timeout=60)
            subprocess.run(["ip", "rule", "del", *self._unallocated_rule()], check=False, capture_output=True)
            self._proxy_lock.close()  # releases the lock
            self._proxy_lock = None
        for mount in sorted(self._mounts(), key=len, reverse=True):  # the tmpfs itself last
            subprocess.run(["umount", mount], check=False, capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            for cgroup, _, _ in sorted(os.walk(root), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(cgroup)
                except OSError:
                    pass  # a process still in it: left for inspection rather than killed blindly
        if not self._mounts():  # never delete through a mount that is still there
            shutil.rmtree(self.state, ignore_errors=True)

    def _mounts(self) -> list[str]:
        """Mount points of the node's folder: its tmpfs, and in it containers' root filesystems,
        network namespaces and kubelet's volumes."""
        mounts = [m.split()[1] for m in Path("/proc/self/mounts").read_text().splitlines()]
        return [m for m in mounts if m == str(self.state) or m.startswith(f"{self.state}/")]

    def _remove_containers(self) -> None:
        """Every container of the node's runtime, killed and deleted; their shims exit with them."""
        for container in self.ctr("containers", "list", "--quiet").split():
            self.ctr("tasks", "delete", "--force", container, check=False)  # a container without a task fails here
            self.ctr("containers", "delete", container, check=False)

    def ctr(self, *args: str, check: bool = True) -> str:
        """containerd's own client, on the namespace the CRI keeps the node's images and containers in."""
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              check=check, capture_output=True, text=True, timeout=120).stdout

    def _make_bridge(self) -> None:
        """The pods' bridge on a free /24, made before the first pod so the node has its address from
        the start (kubelet refuses a loopback node address); the CNI bridge plugin takes it over as it
        is. Nodes of concurrent test runs choose one at a time, each seeing the others' bridges."""
        with open(Path(tempfile.gettempdir()) / "modelops-node-subnets.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = free_pod_subnet(_ip_json("route"), _ip_json("addr"))
            self.ip = next(self.subnet.hosts())
            for command in (["link", "add", self.bridge, "type", "bridge"],
                            ["addr", "add", f"{self.ip}/{self.subnet.prefixlen}", "dev", self.bridge],
                            ["link", "set", self.bridge, "up"]):
                subprocess.run(["ip", *command], check=True, capture_output=True)

    def _start_containerd(self, timeout: float) -> None:
        cni_conf = self.state / "cni"
        cni_conf.mkdir()
        (cni_conf / "10-pods.conflist").write_text(json.dumps(self._cni_config(), indent=1))
        config = self.dir / "containerd.toml"
        config.write_text(self._containerd_config(cni_conf))
        containerd = Process("containerd", ["containerd", "--config", str(config)], self.dir)
        self.processes.append(containerd)
        containerd.wait_until(lambda: self.socket.exists() and bool(self.ctr("version")), timeout, "serving containerd")

    def _cni_config(self) -> dict:
        # No default route in pods: their subnet, and with the proxy the Service range (via the host).
        routes = [{"dst": str(SERVICE_RANGE)}] if self.service_proxy else []
        return {"cniVersion": "1.0.0", "name": "modelops-pods", "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(self.state / "ipam"), "routes": routes,
                      "ranges": [[{"subnet": str(self.subnet), "gateway": str(self.ip)}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ]}

    def _containerd_config(self, cni_conf: Path) -> str:
        unused = ["aufs", "btrfs", "zfs", "devmapper"]
        return f"""version = 2
root = "{self.state}/root"
state = "{self.state}/run"
disabled_plugins = [{", ".join(f'"io.containerd.snapshotter.v1.{p}"' for p in unused)}]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.state}/containerd-ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (as in a sandboxed VM) runc cannot lower a container's OOM score below
  # containerd's own (kubelet asks -998 for sandboxes): cap it there instead of failing the pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{self.state}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""

    def _import_images(self) -> None:
        archive = pod_images_archive(self.state / "images.tar")
        self.ctr("images", "import", str(archive))
        archive.unlink()

    def import_image(self, name: str) -> None:
        """A podman image of this machine (the operator's, say) into the node's containerd."""
        archive = self.state / "image.tar"
        subprocess.run(["podman", "save", "-q", "-o", str(archive), name], check=True, capture_output=True,
                       env={**os.environ, "CONTAINERS_CONF": str(IMAGE_TOOLS / "containers.conf")})
        self.ctr("images", "import", str(archive))
        archive.unlink()

    def _start_controllers(self) -> None:
        controller_manager = self._kubeconfig("kube-controller-manager", "system:kube-controller-manager")
        scheduler = self._kubeconfig("kube-scheduler", "system:kube-scheduler")
        # Each controller with its own service account, as kubeadm runs it: the bootstrap RBAC roles
        # of kube-controller-manager's identity assume that.
        self.processes.append(Process("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"), "--kubeconfig", str(controller_manager),
            "--use-service-account-credentials", "--service-account-private-key-file",
            str(self.cp.dir / "service-account.key"), "--root-ca-file", str(self.cp.ca.cert_path),
            "--leader-elect=false", "--secure-port=0", "-v", "1",
        ], self.dir))
        self.processes.append(Process("kube-scheduler", [
            str(self.bin / "kube-scheduler"), "--kubeconfig", str(scheduler),
            "--leader-elect=false", "--secure-port=0", "-v", "1",
        ], self.dir))

    def _kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        issued = self.cp.ca.issue(name, user, organizations=groups)
        return self.cp.write_kubeconfig(self.dir / f"{name}.kubeconfig", issued.cert, issued.key)

    def _start_kubelet(self, timeout: float) -> None:
        user = f"system:node:{self.name}"
        kubeconfig = self._kubeconfig("kubelet", user, ("system:nodes",))
        # Only RBAC authorizes requests here (no Node authorizer): the node's role, bound to this node.
        self.cp.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                       "metadata": {"name": f"node-{self.name}"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                       "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
        serving = self.cp.ca.issue("kubelet-serving", self.name, server_ips=(str(self.ip),))
        for hierarchy in cgroup_hierarchies():
            (hierarchy / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)
        config = self.dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "failSwapOn": False,
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": str(self.ip), "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "tlsCertFile": str(serving.cert), "tlsPrivateKeyFile": str(serving.key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.cp.ca.cert_path)}},
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.dir / "pod-logs"),  # kept after stop, with the node's own logs
            # A shared test machine's disk is not this node's to guard: evict only when it is truly full.
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "makeIPTablesUtilChains": False,
        }))
        kubelet = Process("kubelet", [
            str(self.bin / "kubelet"), "--config", str(config), "--kubeconfig", str(kubeconfig),
            "--root-dir", str(self.state / "kubelet"), "--hostname-override", self.name,
            "--node-ip", str(self.ip), "-v", "1",
        ], self.dir)
        self.processes.append(kubelet)
        kubelet.wait_until(self.ready, timeout, f"Ready node {self.name}")

    def ready(self) -> bool:
        result = self.cp.kubectl("get", "node", self.name, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        node = json.loads(result.stdout)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))

    # --- Service ClusterIPs -------------------------------------------------------------

    def _start_service_proxy(self, timeout: float) -> None:
        self._proxy_lock = open(PROXY_LOCK, "w")
        fcntl.flock(self._proxy_lock, fcntl.LOCK_EX)  # a proxied node of another run: wait for its stop
        subprocess.run(["ip", "rule", "add", *self._unallocated_rule()], check=True, capture_output=True)
        self._publish_apiserver()
        config = self.dir / "kube-proxy.yaml"
        healthz = free_port()
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._kubeconfig("kube-proxy", "system:kube-proxy"))},
            "hostnameOverride": self.name, "bindAddress": str(self.ip),
            "mode": "iptables",
            "iptables": {"localhostNodePorts": False, "masqueradeAll": True},
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "clusterCIDR": str(self.subnet), "detectLocalMode": "ClusterCIDR",
            "nodePortAddresses": [f"{self.ip}/32"],
            "metricsBindAddress": f"127.0.0.1:{free_port()}", "healthzBindAddress": f"127.0.0.1:{healthz}",
            "oomScoreAdj": 0,
        }))
        proxy = Process("kube-proxy", [str(self.bin / "kube-proxy"), "--config", str(config), "-v", "1"], self.dir)
        self.processes.append(proxy)
        # healthz answers 200 once the rules of the Services it has seen are written.
        proxy.wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{healthz}/healthz", timeout=2).status == 200,
                         timeout, "kube-proxy's rules written")

    def _unallocated_rule(self) -> list[str]:
        """A policy rule refusing what pods send to the Service range and no proxy rule translated
        (a ClusterIP nobody has): the host would otherwise route it off the machine. Only packets
        coming in on this node's bridge match; the host's own packets to ClusterIPs do not."""
        return ["iif", self.bridge, "to", str(SERVICE_RANGE), "prohibit"]

    def _publish_apiserver(self) -> None:
        """The relay on the bridge address, and the `kubernetes` Service's endpoint naming it. The
        bootstrap policy already binds the proxy's identity (system:kube-proxy) to its role."""
        apiserver = urllib.parse.urlsplit(self.cp.url)
        port = free_port()
        relay = Process("apiserver-relay", [sys.executable, "-m", "playground.relay", str(self.ip), str(port),
                                            apiserver.hostname, str(apiserver.port)],
                        self.dir, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.processes.append(relay)
        relay.wait_until(lambda: _connects(str(self.ip), port), 30, "relay listening")
        self.cp.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
                           "kubernetes.io/service-name": "kubernetes",
                           "endpointslice.kubernetes.io/managed-by": "modelops-node"}},
                       "addressType": "IPv4",
                       "endpoints": [{"addresses": [str(self.ip)], "conditions": {"ready": True}}],
                       "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})


def _connects(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0
