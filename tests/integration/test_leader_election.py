"""High availability: replicas of the operator elect one leader on a Lease, on a real API server,
as the user `modelops-operator` with only the RBAC the project ships.

Each test uses a Lease of its own (not the session operator's `modelops-operator`) and
short timings: a 3 s lease, a 2 s renew deadline, renewals every 0.5 s, each Lease call given up after 1 s.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

from playground.operator import OperatorProcess, lease, lease_holder

LEASE_DURATION = 3
TIMINGS = ["--lease-duration", str(LEASE_DURATION), "--renew-deadline", "2", "--retry-period", "0.5",
           "--lease-request-timeout", "1"]
STEADY_TIMINGS = ["--lease-duration", "15", "--renew-deadline", "10", "--retry-period", "2",
                  "--lease-request-timeout", "5"]
"""For tests of one leader per Lease, not of failover: the production defaults' proportions. A leader that lost its
Lease on a starved machine stops, as it must, and nobody here restarts it as Kubernetes would the pod."""


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        time.sleep(interval)


def replicas(operator_kubeconfig, work_dir, namespace: str, lease_name: str, *identities: str) -> list[OperatorProcess]:
    # Each watches only the test's own (empty) namespace, so that a leader never touches other tests' objects.
    args = ["-n", namespace, "--lease-name", lease_name, *TIMINGS]
    return [OperatorProcess(operator_kubeconfig, work_dir, identity=identity, args=args) for identity in identities]


def test_one_leader_a_killed_leader_is_replaced_and_a_stopped_one_releases(control_plane, operator_kubeconfig,
                                                                            namespace, tmp_path):
    name = "modelops-operator-ha-test"
    a, b = replicas(operator_kubeconfig, tmp_path, namespace, name, "replica-a", "replica-b")
    try:
        a.start()
        b.start()  # both serve /metrics, leader or not (start() waits for it)

        def one_leader():
            holder = lease_holder(control_plane, name)
            leaders = [p for p in (a, b) if p.is_leader()]
            return holder if holder and [p.identity for p in leaders] == [holder] else None

        holder = wait_for(one_leader, 15, "single leader")
        leader, standby = (a, b) if holder == a.identity else (b, a)
        for _ in range(3 * LEASE_DURATION * 2):  # three lease durations: still one leader, the same
            assert one_leader() == holder
            time.sleep(0.5)
        assert standby.metric("modelops_leader") == 0
        # Both alive and ready: the standby reads the Lease, the leader holds it.
        assert [p.probe(path) for p in (leader, standby) for path in ("/healthz", "/readyz")] == [200] * 4
        assert "standing by" in standby.process.log.read_text()

        leader.kill()  # SIGKILL: no release, the standby must wait the lease out
        killed = time.monotonic()
        wait_for(lambda: lease_holder(control_plane, name) == standby.identity and standby.is_leader(),
                 LEASE_DURATION + 5, "takeover by the standby")
        takeover = time.monotonic() - killed
        print(f"\ntakeover after SIGKILL of the leader: {takeover:.2f} s (lease duration {LEASE_DURATION} s)")
        assert LEASE_DURATION - 1 <= takeover <= LEASE_DURATION + 3
        assert not leader.is_leader() and lease_holder(control_plane, name) == standby.identity
        spec = lease(control_plane, name)["spec"]
        assert spec["leaseTransitions"] == 1 and spec["leaseDurationSeconds"] == LEASE_DURATION

        terminated = time.monotonic()
        standby.stop()  # SIGTERM: kopf stops, then the lease is released
        assert standby.process.proc.returncode == 0, standby.process.tail()
        released = lease(control_plane, name)["spec"]
        print(f"lease {time.monotonic() - terminated:.2f} s after SIGTERM of the leader: {json.dumps(released)}")
        assert not released.get("holderIdentity")
        assert "Released lease" in standby.process.log.read_text()
    finally:
        a.stop()
        b.stop()


def test_a_leader_that_sees_another_holder_exits_at_once(control_plane, operator_kubeconfig, namespace, tmp_path):
    name = "modelops-operator-intruded"
    (replica,) = replicas(operator_kubeconfig, tmp_path, namespace, name, "replica-c")
    try:
        replica.start()
        wait_for(replica.is_leader, 15, "leadership")
        control_plane.kubectl("patch", "lease", name, "-n", "modelops-system", "--type", "merge",
                              "-p", json.dumps({"spec": {"holderIdentity": "intruder"}}))
        patched = time.monotonic()
        code = replica.wait_exit(5)
        print(f"\nexit {code} {time.monotonic() - patched:.2f} s after another holder appeared")
        assert code == 1
        assert time.monotonic() - patched < 1.5  # at its next renewal (0.5 s), not at the renew deadline (2 s)
        log = replica.process.log.read_text()
        assert "Leadership lost" in log and "intruder" in log
        assert lease_holder(control_plane, name) == "intruder"  # not released: it was not ours
    finally:
        replica.stop()


def test_a_standby_starts_no_handler_until_it_holds_the_lease(control_plane, operator_kubeconfig, namespace,
                                                              tmp_path):
    name = "modelops-operator-standby"
    # A holder that is not running; for the first LEASE_DURATION seconds the standby must believe it alive.
    ghost = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name, "namespace": "modelops-system"},
             "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 30}}
    control_plane.apply(ghost)
    (replica,) = replicas(operator_kubeconfig, tmp_path, namespace, name, "replica-d")
    try:
        replica.start()
        wait_for(lambda: "held by ghost" in replica.process.log.read_text(), 10, "standing by")
        time.sleep(2)
        assert replica.metric("modelops_leader") == 0
        log = replica.process.log.read_text()
        assert "Starting Kopf" not in log and "Activity 'configure'" not in log, log  # no kopf, no handler
        control_plane.kubectl("patch", "lease", name, "-n", "modelops-system", "--type", "merge",
                              "-p", json.dumps({"spec": {"holderIdentity": ""}}))
        freed = time.monotonic()
        wait_for(replica.is_leader, 5, "leadership once the lease is free")
        print(f"\nacquired {time.monotonic() - freed:.2f} s after the lease was freed")
        wait_for(lambda: "Activity 'configure' succeeded" in replica.process.log.read_text(), 10,
                 "kopf's startup handler")
    finally:
        replica.stop()


def test_without_election_the_process_leads_alone(control_plane, operator_kubeconfig, namespace, tmp_path):
    name = "modelops-operator-no-election"
    (replica,) = replicas(operator_kubeconfig, tmp_path, namespace, name, "replica-e")
    replica.args.append("--no-leader-election")
    try:
        replica.start()
        wait_for(lambda: "Activity 'configure' succeeded" in replica.process.log.read_text(), 10,
                 "kopf's startup handler")
        assert replica.is_leader()
        assert lease(control_plane, name) is None  # no Lease read or written
    finally:
        replica.stop()


def test_lease_renewals_go_ahead_of_the_operators_other_requests(control_plane, operator_kubeconfig):
    """deploy/rbac.yaml's FlowSchema puts the operator's Lease requests, and only those, in the API server's
    `leader-election` priority level: a flood of its own writes cannot queue a renewal past the renew deadline.
    The API server names each request's priority level in a response header (`operator_kubeconfig` applied
    deploy/rbac.yaml)."""
    identity = control_plane.ca.issue("apf-probe", "modelops-operator")
    context = ssl.create_default_context(cafile=str(control_plane.ca.cert_path))
    context.load_cert_chain(str(identity.cert), str(identity.key))

    def priority_level(path: str) -> str:
        try:
            response = urllib.request.urlopen(control_plane.url + path, context=context, timeout=10)
        except urllib.error.HTTPError as error:  # a 403 or 404 is classified all the same
            response = error
        return response.headers["X-Kubernetes-PF-PriorityLevel-UID"]

    uids = {name: control_plane.kubectl("get", "prioritylevelconfiguration", name,
                                        "-o", "jsonpath={.metadata.uid}").stdout
            for name in ("leader-election", "global-default")}
    lease = "/apis/coordination.k8s.io/v1/namespaces/modelops-system/leases/modelops-operator"
    # The API server takes up a new FlowSchema a moment after it is created.
    wait_for(lambda: priority_level(lease) == uids["leader-election"], 10, "the Lease in leader-election", 0.2)
    assert priority_level("/apis/modelops.io/v1alpha1/modeldeployments") == uids["global-default"]
    assert priority_level("/apis/coordination.k8s.io/v1/namespaces/default/leases/x") == uids["global-default"]
