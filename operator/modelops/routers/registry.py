"""Backend name -> router. Adding a backend is one module plus one line here."""

from __future__ import annotations

from ..api.modeldeployment import Backend
from ..kube import Kube
from .base import Router
from .kserve import KServeRouter

ROUTERS = {
    Backend.kserve: KServeRouter,
}


def routers_for(kube: Kube) -> dict[Backend, Router]:
    return {backend: router(kube) for backend, router in ROUTERS.items()}
