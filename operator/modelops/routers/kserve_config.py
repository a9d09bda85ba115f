"""Whether KServe keeps the operator's bookkeeping annotations (inference_service.BOOKKEEPING) off what it makes.

KServe facts (v0.20.0):
- Its controller copies every annotation of an InferenceService into each predictor's pod template (Standard
  mode) or Knative revision template (serverless), except the keys, compared whole, of its
  serviceAnnotationDisallowedList (pkg/controller/v1beta1/inferenceservice/components/predictor.go,
  buildPredictorResources). So a changed annotation restarts every predictor's pods (Standard) or makes a new
  revision (serverless), whose readiness the kserve router would record in another annotation: a new revision
  again, and so on.
- The list is KServe's own few keys (pkg/constants/constants.go, ServiceAnnotationDisallowedList) followed by the
  `serviceAnnotationDisallowedList` of the JSON object under the key `inferenceService` of the ConfigMap
  `inferenceservice-config` in KServe's namespace, the manager's POD_NAMESPACE, `kserve` by default
  (pkg/apis/serving/v1beta1/configmap.go, NewInferenceServicesConfig and GetInferenceServiceConfigMap).
- The controller reads that ConfigMap on every reconcile (pkg/controller/v1beta1/inferenceservice/controller.go,
  Reconcile), so what it says now is what KServe does with the next write.

Where the ConfigMap does not list every bookkeeping key, or cannot be read, no rollout, Retry or drill starts on the
kserve backend (BackendState.holds_rollouts) and the status says what to add. A rollout in flight goes on and can
always be rolled back. Meanwhile bookkeeping changes only in a write that changes the predictor's model too (a new
revision or new pods anyway): serverless weight writes carry the record as it is and bookkeeping-only writes are
left out (kserve.config_for), which ends the chain of revisions.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from kubernetes_asyncio.client.exceptions import ApiException

from ..kube import CONFIG_MAP_TTL_SECONDS
from .inference_service import BOOKKEEPING

CONFIG_MAP = "inferenceservice-config"
KEY = "inferenceService"
LIST = "serviceAnnotationDisallowedList"
DEFAULT_NAMESPACE = "kserve"


class ConfigMapReader(Protocol):
    async def data(self, namespace: str, name: str) -> dict[str, str] | None: ...


def _entry(config: Any) -> Any:
    """The list as Go's encoding/json decodes it into KServe's struct: the field's name matched case-insensitively
    (more than one such key: undecidable here, so treated as not listed)."""
    if not isinstance(config, dict):
        raise ValueError("not a JSON object")
    keys = [key for key in config if key.lower() == LIST.lower()]
    if len(keys) > 1:
        raise ValueError(f"{len(keys)} keys spell {LIST}")
    return config[keys[0]] if keys else []


def unlisted_words(data: dict[str, str] | None, where: str) -> str | None:
    """Why KServe would copy the bookkeeping annotations into pods and revisions, read from the ConfigMap's data
    (None: it does not exist); None when it keeps them all off (pure)."""
    fix = (f"add {', '.join(BOOKKEEPING)} to {LIST} in the {KEY} entry of ConfigMap {where}, beside what it holds "
           "(KServe reads it on every reconcile)")
    if data is None:
        return (f"ConfigMap {where} is not found (KServe fails every reconcile without it, if it runs there): {fix}, "
                "or name KServe's namespace with --kserve-namespace")
    listed: Any = []
    if KEY in data:
        try:
            listed = _entry(json.loads(data[KEY]))
        except (ValueError, RecursionError) as e:
            return f"the {KEY} entry of ConfigMap {where} cannot be read ({e}): {fix}"
    missing = [key for key in BOOKKEEPING if not isinstance(listed, list) or key not in listed]
    if not missing:
        return None
    return (f"KServe copies an InferenceService's annotations into its pods and revisions except those of {LIST}, "
            f"and ConfigMap {where} does not list {', '.join(missing)}: each write of the operator would restart "
            f"pods or make a revision, so no rollout starts; {fix}")


class KServeSettings:
    """KServe's ConfigMap as the kserve router needs it: read through a shared, briefly cached reader; a failed read
    is an answer too, kept as long (a refused read asked again by every round would be thousands of GETs)."""

    def __init__(self, config_maps: ConfigMapReader, namespace: str = DEFAULT_NAMESPACE, *,
                 ttl: float = CONFIG_MAP_TTL_SECONDS, clock: Any = time.monotonic):
        self.config_maps, self.namespace = config_maps, namespace
        self._ttl, self._clock = ttl, clock
        self._failed: tuple[float, str] | None = None

    async def copies_bookkeeping(self) -> str | None:
        """Why no rollout may start (see the module docstring); None: KServe keeps the bookkeeping off. Never
        raises but for cancellation: a read that fails is a reason not to start, never a reason to stop a round."""
        where = f"{self.namespace}/{CONFIG_MAP}"
        if self._failed is not None and self._clock() - self._failed[0] < self._ttl:
            return self._failed[1]
        try:
            data = await self.config_maps.data(self.namespace, CONFIG_MAP)
        except Exception as e:  # noqa: BLE001 - any failure only keeps rollouts from starting
            words = (f"the operator may not read ConfigMap {where} ({e.status} {e.reason}), where it checks that "
                     "KServe keeps its bookkeeping annotations off pods and revisions: grant it get on that ConfigMap"
                     if isinstance(e, ApiException) and e.status in (401, 403) else
                     f"ConfigMap {where}, where the operator checks that KServe keeps its bookkeeping annotations off "
                     f"pods and revisions, could not be read ({type(e).__name__}: {e})")
            self._failed = (self._clock(), words[:1000])
            return self._failed[1]
        self._failed = None
        return unlisted_words(data, where)
