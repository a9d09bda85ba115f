#!/usr/bin/env bash
# Builds argocd-lua (main.go: Argo CD's Lua customizations run as Argo CD runs them, on gopher-lua)
# once into a cache folder outside the repo. The folder's name carries a hash of the module, the
# source and this script, so a change builds anew and an unchanged tree reuses the binary.
# Prints the folder holding the binary on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")"
cache_root="${MODELOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops}"
key=$(cat go.mod go.sum ./*.go build.sh | sha256sum | cut -c1-12)
out="$cache_root/argocd-lua-$key"

if [ -x "$out/argocd-lua" ]; then echo "$out"; exit 0; fi

mkdir -p "$out"
start=$(date +%s)
echo "building argocd-lua into $out (first time only)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/argocd-lua.partial" .
mv "$out/argocd-lua.partial" "$out/argocd-lua"
echo "argocd-lua built in $(( $(date +%s) - start ))s" >&2
echo "$out"
