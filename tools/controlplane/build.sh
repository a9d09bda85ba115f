#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl once into a cache folder outside the repo.
# The folder's name carries a hash of go.mod, go.sum and the wrappers, so a change of
# pinned version builds anew and an unchanged pin reuses the binaries.
# Prints the folder holding the binaries on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")"
source versions.env
cache_root="${MODELOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops}"
key=$(cat go.mod go.sum cmd/*/main.go | sha256sum | cut -c1-12)
out="$cache_root/controlplane-$KUBERNETES_VERSION-$key"
bins=(etcd kube-apiserver kubectl)

complete=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$out"; exit 0; fi

mkdir -p "$out"
start=$(date +%s)
echo "building control plane $KUBERNETES_VERSION into $out (first time only)" >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
for b in "${bins[@]}"; do
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$b.partial" "./cmd/$b"
  mv "$out/$b.partial" "$out/$b"
  echo "  built $b after $(( $(date +%s) - start ))s" >&2
done
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$out"
