"""Backend name -> router. Adding a backend is one module plus one line here."""

from __future__ import annotations

from ..api.modeldeployment import Backend
from ..kube import Kube
from .base import Router
from .gateway_api import GatewayAPIRouter
from .kserve import KServeRouter
from .kserve_config import KServeSettings
from .seldon import SeldonRouter
from .seldon_v2 import SeldonV2Router

ROUTERS = {
    Backend.kserve: KServeRouter,
    Backend.seldon: SeldonRouter,
    Backend.seldonV2: SeldonV2Router,
    Backend.gatewayAPI: GatewayAPIRouter,
}


def routers_for(kube: Kube, kserve: KServeSettings) -> dict[Backend, Router]:
    """One router per backend; the kserve router also reads KServe's settings."""
    return {backend: KServeRouter(kube, kserve) if router is KServeRouter else router(kube)
            for backend, router in ROUTERS.items()}
