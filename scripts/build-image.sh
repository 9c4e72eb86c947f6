#!/usr/bin/env bash
# Build the agent's image from ./Dockerfile with buildah; no Docker engine, no registry.
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: scripts/build-image.sh [--tag NAME] [--rebuild-base] [--base-only]

Builds the project's Dockerfile into containers-storage (podman/buildah, as root), idempotently:
  1. the base image named by the Dockerfile's FROM (debian:bookworm-slim): production pulls it
     from Docker Hub; here, when it is not stored yet, it is made from Debian's packages with
     mmdebstrap (minbase bookworm, documentation excluded like the official slim image) and
     imported under that name;
  2. `buildah bud --layers` of ./Dockerfile: an unchanged requirements.lock and scripts/setup.sh
     reuse the dependency layer, so a rebuild after a code change takes seconds.
Prints the image's name and size on the last line.

  --tag NAME       the image's name (default: localhost/weldr-agent:latest)
  --rebuild-base   make the base again even if it is stored
  --base-only      only make (or keep) the base image
  -h, --help       show this help

Needs buildah, podman and mmdebstrap (scripts/setup.sh --test installs them). Containers run
with runc (crun cannot start one on a cgroup v1 hybrid host). Behind a TLS-inspecting proxy,
the build gets this machine's certificate bundle as a build secret (never stored in the image).
Run the result: see README.md, "Image".
HELP
}

TAG="localhost/weldr-agent:latest"
REBUILD_BASE=0
BASE_ONLY=0
while (( $# )); do
  case "$1" in
    --tag)
      [[ $# -ge 2 && "$2" =~ ^[a-z0-9][a-z0-9._/:-]*$ ]] \
        || { echo "build-image.sh: --tag needs a lowercase image name" >&2; exit 2; }
      TAG="$2"; shift ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    --base-only) BASE_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image.sh: %s\n' "$*" >&2; exit 1; }

for tool in buildah podman mmdebstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing; run scripts/setup.sh --test"
done
[[ "$(id -u)" == 0 ]] || die "run as root (the image is stored in root's containers-storage)"

# The name the Dockerfile's FROM resolves to, fully qualified so that no registry is asked.
FROM_NAME="$(sed -n 's/^FROM[[:space:]]\+\(--platform=[^[:space:]]\+[[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
  "$ROOT/Dockerfile" | head -n 1)"
[[ "$FROM_NAME" == "debian:bookworm-slim" ]] \
  || die "the Dockerfile's FROM is '$FROM_NAME'; this script makes debian:bookworm-slim only"
BASE="docker.io/library/debian:bookworm-slim"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

make_base() {
  local work
  work="$(mktemp -d /var/tmp/weldr-base.XXXXXX)"
  # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
  trap "rm -rf -- '$work'" RETURN
  log "making $BASE with mmdebstrap (minbase bookworm)"
  mmdebstrap --quiet --variant=minbase --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    bookworm "$work/base.tar" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY_MIRROR bookworm-security main"
  podman import --quiet --change 'CMD ["bash"]' \
    --message "debian bookworm minbase, made by scripts/build-image.sh with mmdebstrap" \
    "$work/base.tar" "$BASE" >/dev/null
}

if [[ "$REBUILD_BASE" == 1 ]] || ! podman image exists "$BASE"; then
  make_base
else
  log "base $BASE is stored already"
fi
[[ "$BASE_ONLY" == 1 ]] && exit 0

build_args=(--layers --pull=never --runtime runc --network host --tag "$TAG" --file "$ROOT/Dockerfile")
# The machine's bundle includes a TLS-inspecting proxy's certificate where there is one.
for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [[ -n "$bundle" && -s "$bundle" ]]; then build_args+=(--secret "id=build_ca,src=$bundle"); break; fi
done
log "building $TAG from $ROOT/Dockerfile"
buildah bud --quiet "${build_args[@]}" "$ROOT" >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$TAG")"
printf '%s %s bytes (%s MB)\n' "$TAG" "$size" "$(( size / 1000000 ))"
