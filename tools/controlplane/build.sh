#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl once into a cache folder outside the repo;
# `build.sh node` also builds kube-controller-manager, kube-scheduler, kubelet and kube-proxy
# (the single-node cluster of playground/node.py), which most tiers do not need.
# The folder's name carries a hash of go.mod, go.sum and the wrappers, so a change of
# pinned version builds anew and an unchanged pin reuses the binaries; a binary already
# in the folder is not built again.
# Prints the folder holding the binaries on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")"
source versions.env
cache_root="${MODELOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops}"
key=$(cat go.mod go.sum cmd/*/main.go | sha256sum | cut -c1-12)
out="$cache_root/controlplane-$KUBERNETES_VERSION-$key"
bins=(etcd kube-apiserver kubectl)
if [ "${1:-}" = node ]; then bins+=(kube-controller-manager kube-scheduler kubelet kube-proxy); fi

missing=()
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
if [ "${#missing[@]}" = 0 ]; then echo "$out"; exit 0; fi

mkdir -p "$out"
start=$(date +%s)
echo "building ${missing[*]} $KUBERNETES_VERSION into $out (first time only)" >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
for b in "${missing[@]}"; do
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$b.partial" "./cmd/$b"
  mv "$out/$b.partial" "$out/$b"
  echo "  built $b after $(( $(date +%s) - start ))s" >&2
done
echo "${missing[*]} built in $(( $(date +%s) - start ))s" >&2
echo "$out"
