#!/usr/bin/env bash
# Build the image: `make image` (IMAGE=... to name it, IMAGE_VARIANT=cuda for the CUDA build, BUILDER=podman
# or docker to choose; default: podman if installed, else docker). Uses the Dockerfile's pinned base when the
# registry can be reached; without a registry (an air-gapped builder) it builds the same Debian bookworm +
# Python 3.11 base from Debian packages with mmdebstrap and says so. Torch comes from TORCH_INDEX (default:
# PyTorch's CPU index, or its CUDA 12.8 index for IMAGE_VARIANT=cuda) or, when WHEELS names a folder, from the
# wheels in it (an air-gapped builder cannot reach download.pytorch.org: put the torch wheel there).
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${IMAGE_VARIANT:-cpu}
case "$VARIANT" in
  cpu) IMAGE=${IMAGE:-ghcr.io/fora-pipelines/fora:0.1.0}; TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu} ;;
  cuda) IMAGE=${IMAGE:-ghcr.io/fora-pipelines/fora-cuda:0.1.0}; TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128} ;;
  *) echo "build_image: invalid value for IMAGE_VARIANT: '$VARIANT' (allowed: cpu, cuda)" >&2; exit 2 ;;
esac
BUILDER=${BUILDER:-$(command -v podman >/dev/null && echo podman || (command -v docker >/dev/null && echo docker) || true)}
if [[ -z "$BUILDER" ]] || ! command -v "$BUILDER" >/dev/null; then
  echo "build_image: no image builder: neither podman nor docker is installed${BUILDER:+ ($BUILDER not found)}" \
       "(apt-get install podman, or Docker Engine; then make image)" >&2
  exit 2
fi
echo "build_image: $VARIANT image $IMAGE with $BUILDER, torch from ${WHEELS:-$TORCH_INDEX}"
WHEELS=${WHEELS:-}
CA=${CA:-/etc/ssl/certs/ca-certificates.crt}
base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
args=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
mounts=()
if [[ "$BUILDER" == docker && -n "$WHEELS" ]]; then
  echo "build_image: WHEELS=$WHEELS needs podman (podman build mounts the folder into the build; docker build" \
       "cannot): install podman, or give docker a reachable TORCH_INDEX" >&2
  exit 2
fi
[[ "$BUILDER" == podman && -f "$CA" ]] && mounts+=(-v "$CA:/etc/ssl/certs/ca-certificates.crt:ro")
if [[ -n "$WHEELS" ]]; then
  mounts+=(-v "$WHEELS:/wheels:ro")
  args+=(--build-arg TORCH_INDEX= --build-arg PIP_FIND_LINKS=/wheels)
fi
if timeout 60 "$BUILDER" pull -q "$base" >/dev/null 2>&1; then
  echo "build_image: base $base"
else
  offline=localhost/fora-base:python3.11-bookworm
  echo "build_image: cannot pull $base; building an offline base ($offline) from Debian bookworm packages"
  if ! "$BUILDER" image inspect "$offline" >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' bookworm "$tmp/rootfs.tar"
    "$BUILDER" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tmp/rootfs.tar" "$offline" >/dev/null
  fi
  args+=(--build-arg "BASE_IMAGE=$offline")
fi
start=$(date +%s)
"$BUILDER" build "${mounts[@]}" "${args[@]}" -t "$IMAGE" .
echo "build_image: built $IMAGE in $(( $(date +%s) - start )) s"
"$BUILDER" image ls "$IMAGE"
