#!/usr/bin/env bash
# Builds helm3 and helm4 once into a cache folder outside the repo, from the Go modules
# in v3/ and v4/ (each requires upstream helm as a `tool`; two modules because the two
# majors pin different Kubernetes libraries). The folder's name carries a hash of the
# pins and of this script (it holds the ldflags), so a changed pin builds anew.
# Prints the folder holding the binaries on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")"
source versions.env
cache_root="${MODELOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops}"
key=$(cat versions.env build.sh v3/go.mod v3/go.sum v4/go.mod v4/go.sum | sha256sum | cut -c1-12)
out="$cache_root/helm-$key"

if [ -x "$out/helm3" ] && [ -x "$out/helm4" ]; then echo "$out"; exit 0; fi

mkdir -p "$out"
start=$(date +%s)
echo "building helm $HELM3_VERSION and $HELM4_VERSION into $out (first time only)" >&2
for major in 3 4; do
  version_var="HELM${major}_VERSION"
  pkg="helm.sh/helm/v$major"
  # The version is stamped from versions.env, so it must be the one go.mod really builds.
  pinned=$(cd "v$major" && go list -m -f '{{.Version}}' "$pkg")
  if [ "$pinned" != "${!version_var}" ]; then
    echo "v$major/go.mod pins $pkg $pinned but versions.env says ${!version_var};" \
      "run: go get -tool $pkg/cmd/helm@${!version_var} in tools/helm/v$major" >&2
    exit 1
  fi
  ldflags="-s -w -X $pkg/internal/version.version=${!version_var}"
  if [ "$major" = 3 ]; then
    # Helm 3's own Makefile stamps the default .Capabilities.KubeVersion from its
    # client-go (v0.Y.Z -> 1.Y); unstamped it would be v1.20. Helm 4 reads build info.
    minor=$(cd v3 && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
    for v in "$pkg/pkg/lint/rules" "$pkg/pkg/chartutil"; do
      ldflags="$ldflags -X $v.k8sVersionMajor=1 -X $v.k8sVersionMinor=$minor"
    done
  fi
  (cd "v$major" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/helm$major.partial" "$pkg/cmd/helm")
  mv "$out/helm$major.partial" "$out/helm$major"
  echo "  built helm$major after $(( $(date +%s) - start ))s" >&2
done
echo "helm built in $(( $(date +%s) - start ))s" >&2
echo "$out"
