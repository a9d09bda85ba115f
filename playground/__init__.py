"""The local playground: everything modelops needs around it to run for real on one machine.

A Kubernetes control plane (etcd and kube-apiserver built from Go modules), Debian's
Prometheus, the operator as a process, stand-ins for the serving controllers that cannot
run here (KServe, Seldon v1 and v2, a Gateway API implementation), each serving unit a real
model-server process, and a traffic generator. `make demo` and the integration, chaos and
end-to-end tests all use it; it is not part of the operator's package or image.

For the cluster tier: a real node that runs pods (node.py), KServe's real controller
(kserve_controller.py), and the images those pods run (image.py): the operator's, and the
demo's KServe ModelServer with its scikit-learn models, which the Gateway API tier runs as
its model-server pods.
"""
