#!/usr/bin/env bash
# A kind cluster with KServe (serverless), prometheus-operator with a Prometheus, and the
# modelops chart built from this checkout, then a sample ModelVersion pair and ModelDeployment.
# Needs Docker, kind, kubectl, helm and internet access; nothing here runs without them.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/kind/versions.env
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "make kind-up needs $tool on PATH" >&2; exit 2; }
done
gh=https://github.com
step() { echo "==> $*" >&2; }

if ! kind get clusters | grep -qx modelops; then
  step "kind cluster modelops ($KIND_NODE_IMAGE)"
  kind create cluster --config kind-config.yaml --image "$KIND_NODE_IMAGE"
fi
kubectl config use-context kind-modelops

step "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "$gh/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s

step "Knative Serving $KNATIVE_VERSION with Kourier"
kubectl apply -f "$gh/knative/serving/releases/download/$KNATIVE_VERSION/serving-crds.yaml"
kubectl apply -f "$gh/knative/serving/releases/download/$KNATIVE_VERSION/serving-core.yaml"
kubectl apply -f "$gh/knative-extensions/net-kourier/releases/download/$KNATIVE_VERSION/kourier.yaml"
kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
kubectl patch service/kourier -n kourier-system --type merge \
  -p '{"spec":{"type":"NodePort","ports":[{"name":"http2","port":80,"targetPort":8080,"nodePort":31080}]}}'
kubectl -n knative-serving wait --for=condition=Available deployment --all --timeout=300s

step "KServe $KSERVE_VERSION (serverless)"
kubectl apply --server-side -f "$gh/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-crds.yaml"
kubectl apply --server-side -f "$gh/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
kubectl -n kserve wait --for=condition=Available deployment --all --timeout=300s
kubectl apply --server-side -f "$gh/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
# KServe copies InferenceService annotations into revisions unless listed here (docs/backends/kserve.md); the
# operator starts no rollout until the ConfigMap lists its bookkeeping. Added to what is there.
current=$(kubectl -n kserve get configmap inferenceservice-config -o 'jsonpath={.data.inferenceService}')
kubectl -n kserve patch configmap inferenceservice-config --type merge -p "$(CURRENT="$current" python3 -c '
import json, os
config = json.loads(os.environ["CURRENT"] or "{}")
listed = config.setdefault("serviceAnnotationDisallowedList", [])
listed += [key for key in ("modelops.io/applied-canary-traffic-percent", "modelops.io/artifact-generation",
                           "modelops.io/revision-versions", "modelops.io/version-models") if key not in listed]
print(json.dumps({"data": {"inferenceService": json.dumps(config)}}))')"

step "prometheus-operator $PROMETHEUS_OPERATOR_VERSION and a Prometheus"
kubectl apply --server-side -f "$gh/prometheus-operator/prometheus-operator/releases/download/$PROMETHEUS_OPERATOR_VERSION/bundle.yaml"
kubectl -n default wait --for=condition=Available deployment/prometheus-operator --timeout=300s
kubectl apply -f tools/kind/prometheus.yaml

step "modelops image and chart"
docker build -t modelops:dev .
kind load docker-image modelops:dev --name modelops
helm upgrade --install modelops charts/modelops --namespace modelops-system --create-namespace \
  -f tools/kind/values.yaml --wait --timeout 5m

step "a sample model"
kubectl create namespace iris --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace iris modelops.io/tenant=iris --overwrite
kubectl apply -n iris -f examples/kind-sample.yaml
cat >&2 <<'DONE'
Done. Watch it:   kubectl -n iris get modeldeployments,isvc -w
Roll out 1.1.0:   kubectl -n iris patch modeldeployment iris --type merge -p '{"spec":{"version":"1.1.0"}}'
DONE
