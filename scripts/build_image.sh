#!/usr/bin/env bash
# Build the image with podman: `make image` (IMAGE=... to name it). Uses the Dockerfile's pinned base when
# the registry can be reached; without a registry (an air-gapped builder) it builds the same Debian
# bookworm + Python 3.11 base from Debian packages with mmdebstrap and says so. Torch comes from
# TORCH_INDEX (default: the Dockerfile's CPU index) or, when WHEELS names a folder, from the wheels in it.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-ghcr.io/fora-pipelines/fora:0.1.0}
WHEELS=${WHEELS:-}
CA=${CA:-/etc/ssl/certs/ca-certificates.crt}
base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
args=()
mounts=()
[[ -f "$CA" ]] && mounts+=(-v "$CA:/etc/ssl/certs/ca-certificates.crt:ro")
if [[ -n "$WHEELS" ]]; then
  mounts+=(-v "$WHEELS:/wheels:ro")
  args+=(--build-arg TORCH_INDEX= --build-arg PIP_FIND_LINKS=/wheels)
fi
if timeout 60 podman pull -q "$base" >/dev/null 2>&1; then
  echo "build_image: base $base"
else
  offline=localhost/fora-base:python3.11-bookworm
  echo "build_image: cannot pull $base; building an offline base ($offline) from Debian bookworm packages"
  if ! podman image exists "$offline"; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' bookworm "$tmp/rootfs.tar"
    podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tmp/rootfs.tar" "$offline" >/dev/null
  fi
  args+=(--build-arg "BASE_IMAGE=$offline")
fi
start=$(date +%s)
podman build "${mounts[@]}" "${args[@]}" -t "$IMAGE" .
echo "build_image: built $IMAGE in $(( $(date +%s) - start )) s"
podman image ls "$IMAGE"
