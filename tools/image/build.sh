#!/usr/bin/env bash
# Builds an image from one of the repository's Dockerfiles with podman, no Docker engine, on a base
# image made locally (base.sh) unless BASE_IMAGE names another one; the build context is the
# repository's root. Prints the image's name as its last line; everything else goes to stderr.
# Env: DOCKERFILE (relative to the root; default Dockerfile, the operator's; demo/Dockerfile is the
# demo's model server), IMAGE (default localhost/modelops:dev), BASE_IMAGE, NO_CACHE=1 for a build
# without layer cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
image="${IMAGE:-localhost/modelops:dev}"
dockerfile="$repo/${DOCKERFILE:-Dockerfile}"

started=$SECONDS
base="${BASE_IMAGE:-$("$here/base.sh")}"
base_seconds=$((SECONDS - started))

# pip in the builder reaches the package index through this host's network and trusts what this
# host trusts: its CA bundle and a pip.conf naming it are mounted into every RUN step (never
# copied into a layer). The Dockerfile itself needs none of this on an ordinary network.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/modelops-build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
mounts=()
ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
if [[ -f "$ca" ]]; then
  cp "$ca" "$scratch/ca.crt"
  {
    echo "[global]"
    echo "cert = /run/modelops-build/ca.crt"
    [[ -n "${PIP_INDEX_URL:-}" ]] && echo "index-url = $PIP_INDEX_URL"
    [[ -n "${PIP_EXTRA_INDEX_URL:-}" ]] && echo "extra-index-url = $PIP_EXTRA_INDEX_URL"
    true
  } >"$scratch/pip.conf"
  mounts=(-v "$scratch:/run/modelops-build:ro" -v "$scratch/pip.conf:/etc/pip.conf:ro")
fi

started=$SECONDS
podman build --network=host ${NO_CACHE:+--no-cache} "${mounts[@]}" \
  --build-arg "BASE_IMAGE=$base" -t "$image" -f "$dockerfile" "$repo" >&2
echo "base image $base: ${base_seconds}s; image $image: $((SECONDS - started))s" >&2
echo "$image"
