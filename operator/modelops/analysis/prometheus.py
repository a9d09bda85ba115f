"""The Prometheus metric provider, on prometheus-api-client.

The client is synchronous (requests), so every call runs in a worker thread: kopf's
event loop never blocks on a slow Prometheus. Every call has a timeout and no retries,
so one analysis costs at most (queries x timeout) and a dead server is reported at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import tempfile
from datetime import datetime
from pathlib import Path

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from ..api.modeldeployment import PrometheusConfig
from ..api.types import duration_seconds
from ..kube import Secrets
from .provider import ProviderError


class PrometheusProvider:
    def __init__(self, address: str, *, timeout: float = 5.0, bearer_token: str | None = None,
                 ca_file: str | None = None, insecure_skip_verify: bool = False):
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        session = requests.Session()
        session.verify = False if insecure_skip_verify else (ca_file or True)
        self.address = address
        self._client = PrometheusConnect(url=address, headers=headers, disable_ssl=insecure_skip_verify,
                                         retry=Retry(total=0), session=session, timeout=timeout)

    async def query(self, promql: str, at: datetime) -> float | None:
        return await asyncio.to_thread(self._query, promql, at)

    def _query(self, promql: str, at: datetime) -> float | None:
        try:
            result = self._client.custom_query(promql, params={"time": f"{at.timestamp():.3f}"})
        except (requests.RequestException, PrometheusApiClientException, ValueError) as e:
            raise ProviderError(f"Prometheus at {self.address}: {_short(e)}") from e
        if not result:
            return None
        if len(result) > 1:
            labels = [series.get("metric", {}) for series in result[:3]]
            raise ProviderError(f"query returned {len(result)} series, one expected (e.g. {labels}); aggregate it")
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."


async def provider_for(config: PrometheusConfig, namespace: str, secrets: Secrets) -> PrometheusProvider:
    """A provider for one ModelDeployment's analysis.prometheus, credentials read from its namespace."""
    token = ca_file = None
    if config.bearer_token_secret is not None:
        token = (await secrets.value(namespace, config.bearer_token_secret.name, config.bearer_token_secret.key)).strip()
    if config.ca_secret is not None:
        pem = await secrets.value(namespace, config.ca_secret.name, config.ca_secret.key)
        ca_file = _ca_file(pem)
    return PrometheusProvider(config.address, timeout=duration_seconds(config.timeout), bearer_token=token,
                              ca_file=ca_file, insecure_skip_verify=config.insecure_skip_verify)


def _ca_file(pem: str) -> str:
    """requests verifies against a file: one per distinct CA bundle, written once."""
    path = Path(tempfile.gettempdir()) / f"modelops-ca-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
    if not path.exists():
        path.write_text(pem)
    return str(path)
