"""The serving systems' real CRDs (KServe, Seldon Core v1 and v2, Gateway API, prometheus-operator).

The integration tier and the demo install these, unchanged, into the local control plane. Each file
is pinned below to the tagged upstream address it comes from and to its sha256. `upstream_crds()`
returns a folder holding the requested files, from the first of these that has them:

1. `$MODELOPS_UPSTREAM_CRDS`, if set: a folder that must hold every requested file (used as is,
   so that a deliberately different copy can be tried);
2. `../shared/upstream-crds` beside the repository (used as is; a unit test checks it against
   the pins);
3. the cache, `${MODELOPS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/modelops}/upstream-crds/`, where
   a file is used only if its sha256 is the pinned one (a file that is not is fetched again);
4. a download of each missing file from its pinned address into that cache: written under a
   temporary name, checked against the pinned sha256, and only then renamed into place.

`$MODELOPS_UPSTREAM_CRDS_MIRROR`, if set, is a base address that replaces every pinned address:
file NAME is fetched from `$MODELOPS_UPSTREAM_CRDS_MIRROR/NAME` (any HTTP server over a folder of
these files will do). The sha256 check is the same.

When none of these works, `UpstreamCRDsUnavailable` says in a few lines what was tried and what to
do; a download whose bytes are not the pinned ones raises `UpstreamCRDMismatch` (a subclass),
naming the file, the expected and the actual digest.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_FOLDER = "MODELOPS_UPSTREAM_CRDS"
ENV_MIRROR = "MODELOPS_UPSTREAM_CRDS_MIRROR"
DOWNLOAD_TIMEOUT = 30.0  # seconds, per connection and per read
RAW = "https://raw.githubusercontent.com"

KSERVE = "kserve-inferenceservices-full.yaml"  # 1.9 MB: too big for client-side apply's annotation
KSERVE_MINIMAL = "kserve-inferenceservices-minimal.yaml"
KSERVE_INFERENCEGRAPHS = "kserve-v0.20.0-inferencegraphs.yaml"
SELDON_V1 = "seldon-v1-seldondeployments.yaml"
SELDON_V2_MODELS = "seldon-v2-models.yaml"
SELDON_V2_EXPERIMENTS = "seldon-v2-experiments.yaml"
SELDON_V2_PIPELINES = "seldon-v2-pipelines.yaml"
GATEWAY_HTTPROUTES = "gateway-api-v1.6.1-httproutes.yaml"
GATEWAY_STANDARD = "gateway-api-v1.6.1-standard.yaml"
PROMETHEUS_OPERATOR = "prometheus-operator-v0.85.0-monitoring.yaml"


@dataclass(frozen=True)
class Pin:
    """One file: its name here, its sha256, and where upstream publishes exactly those bytes.

    `sources` holds one address, or several when the file is upstream files joined together:
    then it is each source's bytes, in order, each preceded by a line `---`."""

    name: str
    sha256: str
    sources: tuple[str, ...]

    def assemble(self, parts: list[bytes]) -> bytes:
        return parts[0] if len(self.sources) == 1 else b"".join(b"---\n" + p for p in parts)


def _gateway_api(kind: str) -> str:
    return f"{RAW}/kubernetes-sigs/gateway-api/v1.6.1/config/crd/standard/gateway.networking.k8s.io_{kind}.yaml"


def _prometheus_operator(kind: str) -> str:
    return f"{RAW}/prometheus-operator/prometheus-operator/v0.85.0/example/prometheus-operator-crd/monitoring.coreos.com_{kind}.yaml"


PINS: dict[str, Pin] = {pin.name: pin for pin in [
    # KServe v0.20.0; the same bytes as charts/kserve-crd/templates/ of that tag.
    Pin(KSERVE, "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
        (f"{RAW}/kserve/kserve/v0.20.0/config/crd/full/serving.kserve.io_inferenceservices.yaml",)),
    # KServe's schemaless CRD (spec and status preserve unknown fields); unchanged since v0.17.0.
    Pin(KSERVE_MINIMAL, "9612b7c49f5b678329bdb721c6ffb9e21678fafdb3757966db74a0d37819f4a1",
        (f"{RAW}/kserve/kserve/v0.20.0/config/crd/minimal/serving.kserve.io_inferenceservices.yaml",)),
    Pin(KSERVE_INFERENCEGRAPHS, "b2e246d7a055937ea56de13850d0f4f993f1825b078a4c901944b99bba1800ca",
        (f"{RAW}/kserve/kserve/v0.20.0/config/crd/full/serving.kserve.io_inferencegraphs.yaml",)),
    # Seldon Core v1.18.2 (the last v1 release; the same bytes since v1.18.0).
    Pin(SELDON_V1, "fffbb9fa8f5caac94f464060f15cf10e1c1289af6f86c9427749129b0b9da5de",
        (f"{RAW}/SeldonIO/seldon-core/v1.18.2/operator/config/crd_v1_small/bases/machinelearning.seldon.io_seldondeployments.yaml",)),
    # Seldon Core 2, v2.10.2.
    Pin(SELDON_V2_MODELS, "14722aa36434dc005a2f4c331e9f443560a2acc91bad29dda377e2b6b886f653",
        (f"{RAW}/SeldonIO/seldon-core/v2.10.2/operator/config/crd/bases/mlops.seldon.io_models.yaml",)),
    Pin(SELDON_V2_EXPERIMENTS, "07e19b06453d857701ad76677cf01723e5d97514b5e60c56d7b359026e7c5597",
        (f"{RAW}/SeldonIO/seldon-core/v2.10.2/operator/config/crd/bases/mlops.seldon.io_experiments.yaml",)),
    Pin(SELDON_V2_PIPELINES, "347b261a964c20768f77d672382b9b1a2e81cdcdc5d6fac4193b4ac48cb4d333",
        (f"{RAW}/SeldonIO/seldon-core/v2.10.2/operator/config/crd/bases/mlops.seldon.io_pipelines.yaml",)),
    # Gateway API v1.6.1, standard channel.
    Pin(GATEWAY_HTTPROUTES, "a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852",
        (_gateway_api("httproutes"),)),
    # Not the release's standard-install.yaml (which adds a licence header, TCPRoute, UDPRoute and a
    # ValidatingAdmissionPolicy): eight of the standard channel's CRD files of v1.6.1, joined.
    Pin(GATEWAY_STANDARD, "8d6164e7cd929445d6f62d837fb1a3a5af934c7745d3bc24522a9cf18c2eee5b",
        tuple(_gateway_api(kind) for kind in ("gatewayclasses", "gateways", "httproutes", "grpcroutes",
                                              "referencegrants", "backendtlspolicies", "listenersets",
                                              "tlsroutes"))),
    # Not a file prometheus-operator publishes: three of v0.85.0's CRD files, joined (each of them
    # already starts with its own `---` line).
    Pin(PROMETHEUS_OPERATOR, "1bb15c3a496f084a7027734d881f6c8fc11a9103c03aef7599121f6104cc99dd",
        tuple(_prometheus_operator(kind) for kind in ("servicemonitors", "podmonitors", "prometheusrules"))),
]}


class UpstreamCRDsUnavailable(RuntimeError):
    """No folder holds the requested upstream CRDs and they could not be fetched. The message says
    what was tried and what to do."""


class UpstreamCRDMismatch(UpstreamCRDsUnavailable):
    """Fetched bytes whose sha256 is not the pinned one (they were not kept)."""


def shared_folder() -> Path:
    return REPO.parent / "shared" / "upstream-crds"


def cache_folder() -> Path:
    root = os.environ.get("MODELOPS_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelops"
    return Path(root) / "upstream-crds"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upstream_crds(names: Iterable[str] = tuple(PINS), *, shared: Path | None = None, cache: Path | None = None,
                  mirror: str | None = None, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """The folder holding every file of `names` (pinned names), found or fetched as the module says.

    `shared`, `cache` and `mirror` default to `shared_folder()`, `cache_folder()` and
    `$MODELOPS_UPSTREAM_CRDS_MIRROR`; `$MODELOPS_UPSTREAM_CRDS` always comes first."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in PINS]
    if unknown:
        raise ValueError(f"not pinned upstream CRDs: {unknown} (pinned: {sorted(PINS)})")
    listed = ", ".join(names)

    override = os.environ.get(ENV_FOLDER)
    if override:
        missing = [n for n in names if not (Path(override) / n).is_file()]
        if not missing:
            return Path(override)
        raise UpstreamCRDsUnavailable(
            f"{ENV_FOLDER}={override} does not hold the upstream CRDs {', '.join(missing)}.\n"
            f"Set {ENV_FOLDER}=/path/to/a/folder holding {listed}, "
            f"or unset it to fetch them from {_hosts(names, _mirror(mirror))}.")

    shared = shared_folder() if shared is None else shared
    if all((shared / n).is_file() for n in names):
        return shared

    cache = cache_folder() if cache is None else cache
    mirror = _mirror(mirror)
    for name in names:
        cached = (cache / name).is_file()
        if not cached or sha256_of(cache / name) != PINS[name].sha256:
            try:
                _download(PINS[name], cache, mirror, timeout)
            except _FetchFailed as failure:
                raise UpstreamCRDsUnavailable(
                    f"The upstream CRDs {listed} are not available.\n"
                    f"Tried: {ENV_FOLDER} (not set), {shared} ({'incomplete' if shared.is_dir() else 'absent'}), "
                    f"the cache {cache} ({'a damaged' if cached else 'no'} {name}), {failure}.\n"
                    f"Set {ENV_FOLDER}=/path/to/a/folder holding {listed}, "
                    f"or allow access to {_hosts(names, mirror)}.") from failure.__cause__
    return cache


class _FetchFailed(Exception):
    pass


def _mirror(mirror: str | None) -> str | None:
    return (mirror if mirror is not None else os.environ.get(ENV_MIRROR)) or None


def _addresses(pin: Pin, mirror: str | None) -> tuple[str, ...]:
    return (f"{mirror.rstrip('/')}/{pin.name}",) if mirror else pin.sources


def _hosts(names: list[str], mirror: str | None) -> str:
    hosts = {urllib.parse.urlsplit(a).netloc for n in names for a in _addresses(PINS[n], mirror)}
    return " and ".join(sorted(hosts))


def _download(pin: Pin, cache: Path, mirror: str | None, timeout: float) -> Path:
    """Fetch `pin` into `cache`: written under a temporary name, renamed only once its sha256 is the pinned one."""
    addresses = _addresses(pin, mirror)
    parts = []
    for address in addresses:
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response:
                parts.append(response.read())
        except urllib.error.URLError as exc:  # HTTPError included
            raise _FetchFailed(f"{address}: {getattr(exc, 'reason', exc)}") from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, truncated bodies
            raise _FetchFailed(f"{address}: {exc or type(exc).__name__}") from exc
    content = parts[0] if mirror else pin.assemble(parts)
    actual = hashlib.sha256(content).hexdigest()
    if actual != pin.sha256:
        raise UpstreamCRDMismatch(
            f"The upstream CRD {pin.name} fetched from {' + '.join(addresses)} is not the pinned file:\n"
            f"sha256 expected {pin.sha256}, actual {actual}; it was not kept.\n"
            f"Set {ENV_FOLDER}=/path/to/a/folder holding {pin.name}, or fetch it from an address serving the pinned bytes.")
    cache.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{pin.name}.", suffix=".part", dir=cache)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        if sha256_of(Path(temporary)) != pin.sha256:  # what landed on disk, not only what arrived
            raise UpstreamCRDMismatch(f"The upstream CRD {pin.name} changed while it was written to {cache}; it was not kept.")
        os.replace(temporary, cache / pin.name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return cache / pin.name


def main(argv: list[str]) -> int:
    """`python3 -m playground.upstream_crds [NAME...]`: the folder holding them (default: every pinned
    file), or the one clear message and exit status 2. Standard library only: runs before any setup."""
    try:
        print(upstream_crds(argv or tuple(PINS)))
    except UpstreamCRDsUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
