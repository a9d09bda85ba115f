"""Helm 3 and Helm 4 clients, built from Go modules, to install charts/modelops for real.

Both majors are in use by the people who install the operator, and they differ (Helm 4
installs with server-side apply by default, Helm 3 with client-side), so the chart is
checked with each.
No binary can be downloaded here, so tools/helm/build.sh builds them once into a cache,
as tools/controlplane/build.sh does for the control plane.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "tools" / "helm" / "build.sh"


def helm_binaries() -> dict[str, Path]:
    """The paths of helm3 and helm4 (keys "helm3", "helm4"); builds them on first use."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    folder = Path(out.stdout.strip().splitlines()[-1])
    return {name: folder / name for name in ("helm3", "helm4")}
