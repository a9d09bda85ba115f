#!/usr/bin/env bash
# A Debian bookworm base image with python3 made locally (debootstrap from Debian's
# packages, then `podman import`), for machines that cannot pull one from a registry.
# Usage: tools/image/base.sh [IMAGE]   (default localhost/modelops-base:bookworm)
# Env: DEBIAN_MIRROR (default: debootstrap's own), FORCE=1 to rebuild an existing image.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
image="${1:-localhost/modelops-base:bookworm}"

if [[ "${FORCE:-0}" != 1 ]] && podman image exists "$image"; then
  echo "$image"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "base.sh: debootstrap needs root" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/modelops-base.XXXXXX")"
root="$work/root"
# --one-file-system: never into a /proc or /sys that a failed debootstrap left mounted.
trap 'rm -rf --one-file-system "$work"' EXIT
echo "debootstrap bookworm (minbase, python3) into $root" >&2
# shellcheck disable=SC2086
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" ${DEBIAN_MIRROR:-} >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}
# What an image does not need: package caches, documentation, man pages.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . | podman import \
  --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap bookworm minbase + python3, python3-venv, ca-certificates" \
  --quiet - "$image" >/dev/null
echo "$image"
