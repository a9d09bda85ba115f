"""The container images of the repository's Dockerfiles, built with podman (tools/image/build.sh) on the
locally made base: the operator's (Dockerfile), for the tiers that run it as a podman container
(tests/deploy) or as the chart's pods on the single-node cluster (tests/cluster); the demo's model
server (demo/Dockerfile: KServe's Python ModelServer and the demo's scikit-learn models), run as
pods there."""

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
TAG = f"test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
IMAGE = f"localhost/modelops:{TAG}"
MODEL_SERVER_IMAGE = f"localhost/modelops-model-server:{TAG}"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def build(dockerfile: str, image: str) -> tuple[str, float]:
    """The image's name and the seconds its build from `dockerfile` (relative to the repository) took."""
    started = time.monotonic()
    result = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "DOCKERFILE": dockerfile, "IMAGE": image})
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD.name} failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result.stdout.strip().splitlines()[-1], time.monotonic() - started


def built(dockerfile: str, image: str) -> str:
    """`image` built from `dockerfile` (a second build, all from the layer cache, is timed too); prints its size
    and both times."""
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: `make system-deps` installs it (with runc and debootstrap)")
    base_existed = podman("image", "exists", BASE_IMAGE, check=False).returncode == 0
    name, first = build(dockerfile, image)
    _, warm = build(dockerfile, image)  # nothing changed: every layer from the cache
    size = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())
    what = "with the base reused" if base_existed else "cold: base made, then the image"
    print(f"\nimage {name}: {size / 1e6:.1f} MB; build {what}: {first:.1f} s; warm rebuild: {warm:.1f} s")
    return name


def operator_image() -> str:
    """The operator's image (Dockerfile), built; prints its size and build times."""
    return built("Dockerfile", IMAGE)


def model_server_image() -> str:
    """The demo's model server's image (demo/Dockerfile), built; prints its size and build times."""
    return built("demo/Dockerfile", MODEL_SERVER_IMAGE)
