"""modelops: versioned ML models, metric-gated canary rollout and automatic rollback on Kubernetes."""

GROUP = "modelops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
