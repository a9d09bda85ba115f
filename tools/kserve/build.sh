#!/usr/bin/env bash
# Builds KServe's controller (its `manager`) once into a cache folder outside the repo, from a
# copy of KServe's Go source (go.mod, go.sum, cmd/, pkg/ of a release tag): KServe's go.mod has
# replace directives, so `go install github.com/kserve/kserve/cmd/manager@<tag>` cannot work.
# The source is $MODELOPS_KSERVE_SOURCE, else ../shared/kserve-v0.20.0 beside the repository.
# The folder's name carries a hash of every source file and of this script, so another source
# builds anew and the same source reuses the binary. Takes ~9 minutes on two cores the first time.
# Prints the folder holding the binary on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${MODELOPS_KSERVE_SOURCE:-$here/../../../shared/kserve-v0.20.0}"
if [ ! -f "$src/go.mod" ] || [ ! -d "$src/cmd/manager" ]; then
  echo "no KServe source at $src (needs go.mod and cmd/manager): set MODELOPS_KSERVE_SOURCE to a folder" \
    "holding go.mod, go.sum, cmd/ and pkg/ of a KServe release tag" >&2
  exit 1
fi
src="$(cd "$src" && pwd)"
cache_root="${MODELOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops}"
key=$( { cat "$here/build.sh"; cd "$src" && find go.mod go.sum cmd pkg -type f | LC_ALL=C sort | xargs sha256sum; } \
  | sha256sum | cut -c1-12)
out="$cache_root/kserve-$key"

if [ -x "$out/manager" ]; then echo "$out"; exit 0; fi

mkdir -p "$out"
start=$(date +%s)
echo "building KServe's manager from $src into $out (first time only, ~9 min)" >&2
# The source folder may be read-only: the build writes only to the output and Go's caches.
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/manager.partial" ./cmd/manager)
mv "$out/manager.partial" "$out/manager"
echo "manager built in $(( $(date +%s) - start ))s" >&2
echo "$out"
