"""argocd-lua: Argo CD's Lua customizations (deploy/argocd/) run as an Argo CD server runs them.

Argo CD's own Go package cannot be built here, so tools/argocd-lua/main.go rebuilds its way of
running a script on gopher-lua, the VM Argo CD embeds (same libraries, globals and JSON encoding,
and the merge patch its server sends for an action). tools/argocd-lua/build.sh builds it once into
a cache, as tools/controlplane/build.sh does for the control plane.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "tools" / "argocd-lua" / "build.sh"
CUSTOMIZATIONS = REPO / "deploy" / "argocd" / "resource_customizations" / "modelops.io"
TEST_CLOCK = 1767225600
"""2026-01-01T00:00:00Z: os.time() in `argocd-lua test` (main.go's TestClock), so that the expected
output of an action that stamps the time is one file."""


def argocd_lua_binary() -> Path:
    """The path of argocd-lua; builds it on first use."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1]) / "argocd-lua"


class ArgoCDLua:
    """One kind's customization (`ModelDeployment`, `ModelVersion`) run on objects given as dicts."""

    def __init__(self, kind: str, root: Path = CUSTOMIZATIONS, binary: Path | None = None):
        self.folder = root / kind
        self.binary = binary or argocd_lua_binary()

    def run(self, command: str, script: Path, obj: dict[str, Any], *extra: str) -> Any:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(obj, f)
            f.flush()
            done = subprocess.run([str(self.binary), command, "-script", str(script), "-obj", f.name, *extra],
                                  capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"argocd-lua {command} {script.name} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def health(self, obj: dict[str, Any]) -> dict[str, str]:
        return self.run("health", self.folder / "health.lua", obj)

    def discovery(self, obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Action name -> what discovery.lua says of it (disabled, displayName, iconClass, params)."""
        return {a["name"]: a for a in self.run("discovery", self.folder / "actions" / "discovery.lua", obj)}

    def action(self, name: str, obj: dict[str, Any], params: dict[str, str] | None = None,
               now: int | None = None) -> dict[str, Any]:
        """{"operation": "patch", "object": the action's result, "mergePatch": what Argo CD would send}."""
        extra = [f"-param={k}={v}" for k, v in (params or {}).items()]
        if now is not None:
            extra.append(f"-now={now}")
        impacted = self.run("action", self.folder / "actions" / name / "action.lua", obj, *extra)
        assert len(impacted) == 1, impacted
        return impacted[0]


def run_tests(*folders: Path) -> subprocess.CompletedProcess:
    """argocd-lua test: every health_test.yaml and action_test.yaml under the folders."""
    return subprocess.run([str(argocd_lua_binary()), "test", *map(str, folders)], capture_output=True, text=True,
                          timeout=300)
