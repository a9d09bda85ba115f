"""Whether KServe keeps the operator's bookkeeping annotations (inference_service.BOOKKEEPING) off what it makes.

KServe facts (v0.20.0):
- Its controller copies every annotation of an InferenceService into each predictor's pod template (Standard
  mode) or Knative revision template (serverless), except the keys, compared whole, of its
  serviceAnnotationDisallowedList (pkg/controller/v1beta1/inferenceservice/components/predictor.go,
  buildPredictorResources). So a changed annotation restarts every predictor's pods (Standard) or makes a new
  revision (serverless), whose readiness the kserve router then records in another annotation: a new revision
  again, without end.
- The list is KServe's own few keys (pkg/constants/constants.go, ServiceAnnotationDisallowedList) followed by the
  `serviceAnnotationDisallowedList` of the JSON object under the key `inferenceService` of the ConfigMap
  `inferenceservice-config` in KServe's namespace, the manager's POD_NAMESPACE, `kserve` by default
  (pkg/apis/serving/v1beta1/configmap.go, NewInferenceServicesConfig and GetInferenceServiceConfigMap).
- The controller reads that ConfigMap on every reconcile (pkg/controller/v1beta1/inferenceservice/controller.go,
  Reconcile), so what it says now is what KServe does with the next write.

Where the ConfigMap does not list every bookkeeping key, or cannot be read, the kserve router drives nothing
toward a candidate (each such write would restart pods or make revisions) and says why; taking traffic back to
stable still goes ahead, since one restart is a smaller harm than a candidate left in traffic.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from kubernetes_asyncio.client.exceptions import ApiException

from .inference_service import BOOKKEEPING

CONFIG_MAP = "inferenceservice-config"
KEY = "inferenceService"
LIST = "serviceAnnotationDisallowedList"
DEFAULT_NAMESPACE = "kserve"


class ConfigMapReader(Protocol):
    async def data(self, namespace: str, name: str) -> dict[str, str] | None: ...


def unlisted_words(data: dict[str, str] | None, where: str) -> str | None:
    """Why KServe would copy the bookkeeping annotations into pods and revisions, read from the ConfigMap's data
    (None: it does not exist); None when it keeps them all off (pure)."""
    fix = (f"add {', '.join(BOOKKEEPING)} to {LIST} in the {KEY} entry of ConfigMap {where} (KServe reads it on "
           "every reconcile)")
    if data is None:
        return (f"ConfigMap {where} is not found, so KServe (if it runs there) copies the operator's bookkeeping "
                f"annotations into pods and revisions: {fix}, or name KServe's namespace with --kserve-namespace")
    listed: Any = []
    if KEY in data:
        try:
            listed = (json.loads(data[KEY]) or {}).get(LIST) or []
        except (ValueError, AttributeError):
            return f"the {KEY} entry of ConfigMap {where} is not a JSON object (KServe cannot read it either): {fix}"
    missing = [key for key in BOOKKEEPING if not isinstance(listed, list) or key not in listed]
    if not missing:
        return None
    return (f"KServe copies an InferenceService's annotations into its pods and revisions except those of {LIST}, "
            f"and ConfigMap {where} does not list {', '.join(missing)}: each write would restart pods or make a "
            f"revision, so nothing moves toward a candidate; {fix}")


class KServeSettings:
    """KServe's ConfigMap as the kserve router needs it, read through a shared, briefly cached reader."""

    def __init__(self, config_maps: ConfigMapReader, namespace: str = DEFAULT_NAMESPACE):
        self.config_maps, self.namespace = config_maps, namespace

    async def refusal(self) -> str | None:
        """Why nothing may move toward a candidate (see the module docstring); None: KServe keeps the bookkeeping
        off. Errors other than a refused read (a timeout, a 5xx) propagate: the round backs off and asks again."""
        where = f"{self.namespace}/{CONFIG_MAP}"
        try:
            data = await self.config_maps.data(self.namespace, CONFIG_MAP)
        except ApiException as e:
            if e.status not in (401, 403):
                raise
            return (f"the operator may not read ConfigMap {where} ({e.status} {e.reason}), where it checks that KServe "
                    "keeps the operator's bookkeeping annotations off pods and revisions: grant it get on that "
                    "ConfigMap (the chart's kserve.namespace does)")
        return unlisted_words(data, where)
