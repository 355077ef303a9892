#!/usr/bin/env bash
# `make image-offline`: build chunkvault:latest with no image registry and no network in
# the build. For CI and air-gapped sites (our machines reach Debian's and Python's package
# registries, never an image registry):
#   1. install docker.io and debootstrap if missing, start dockerd if no engine answers
#      (--bridge=none --iptables=false: nothing on private address ranges);
#   2. a base image: debootstrap (the host's own Debian suite and mirror) + docker import;
#   3. a wheelhouse: `pip wheel` of this checkout and its dependencies, made outside the image;
#   4. docker build --network none --build-arg PYTHON_IMAGE=<base>, from that wheelhouse.
# Each step is skipped when its result is already there (base image tag, wheel set).
# Set CHUNKVAULT_BASE_IMAGE to use an existing image with Python 3.11+ instead of step 2.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-chunkvault:latest}
BASE=${CHUNKVAULT_BASE_IMAGE:-chunkvault-base:bookworm}
WORK=${CHUNKVAULT_BUILD_DIR:-build/container}
PYTHON=${PYTHON:-python3}
say() { printf '==> %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $1 needs root (run as root, or install it yourself and re-run)" >&2
        exit 1
    fi
}

# 1. The engine.
missing=()
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || missing+=(docker.io)
if [ -z "${CHUNKVAULT_BASE_IMAGE:-}" ]; then command -v debootstrap >/dev/null || missing+=(debootstrap); fi
if [ ${#missing[@]} -gt 0 ]; then
    need_root "installing ${missing[*]}"
    say "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
container/engine.sh up

# 2. The base image.
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    [ -z "${CHUNKVAULT_BASE_IMAGE:-}" ] || { echo "error: base image $BASE not found" >&2; exit 1; }
    need_root "debootstrap"
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
    # The host's own mirror, so the build uses the registry this machine is configured for.
    mirror=$({ grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
        || true; } | grep -v security | head -n 1 | awk '{ print ($1 == "deb") ? ($2 ~ /^\[/ ? $3 : $2) : $2 }')
    [ -n "$mirror" ] || { echo "error: no Debian mirror found in /etc/apt" >&2; exit 1; }
    root="$WORK/rootfs"
    rm -rf "$root"
    mkdir -p "$WORK"
    say "debootstrap $suite (python3, python3-venv, ca-certificates)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$root" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
    # Package lists and caches are not needed at run time; keep the base small.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    say "docker import -> $BASE"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$root"
fi

# 3. The wheelhouse, in the build context (the Dockerfile installs from it, offline).
say "pip wheel -> wheels/"
rm -rf wheels
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir wheels .

# 4. The image.
say "docker build --network none -> $IMAGE"
docker build --network none --build-arg "PYTHON_IMAGE=$BASE" -t "$IMAGE" .
docker image prune --force --filter label=org.chunkvault.stage=build >/dev/null
say "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
