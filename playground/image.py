"""The operator's container image, built from the Dockerfile with podman (tools/image/build.sh),
for the tiers that run it: as a podman container (tests/deploy) or as the chart's pods on the
single-node cluster (tests/cluster)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time

from .controlplane import REPO

BUILD = REPO / "tools" / "image" / "build.sh"
BASE_IMAGE = "localhost/modelops-base:bookworm"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "tools" / "image" / "containers.conf")}
# A tag per checkout: test runs of several checkouts on one machine share podman's image store, and
# one must not run (or import into its node) the image another just built under the same name.
IMAGE = f"localhost/modelops:test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def build() -> tuple[str, float]:
    """The image's name and the seconds its build took."""
    started = time.monotonic()
    result = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "IMAGE": IMAGE})
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD.name} failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result.stdout.strip().splitlines()[-1], time.monotonic() - started


def operator_image() -> str:
    """Built (a second build, all from the layer cache, is timed too); prints sizes and times."""
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: `make system-deps` installs it (with runc and debootstrap)")
    base_existed = podman("image", "exists", BASE_IMAGE, check=False).returncode == 0
    name, first = build()
    _, warm = build()  # nothing changed: every layer from the cache
    size = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())
    what = "with the base reused" if base_existed else "cold: base made, then the image"
    print(f"\nimage {name}: {size / 1e6:.1f} MB; build {what}: {first:.1f} s; warm rebuild: {warm:.1f} s")
    return name
