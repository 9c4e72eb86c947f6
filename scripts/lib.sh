# shellcheck shell=bash
# Shared by scripts/*.sh. Source it after `set -euo pipefail`.
#
# log MESSAGE   appends "UTC-time script: MESSAGE" to $WELDR_LOG_FILE (stderr when it is unset
#               or cannot be written).
# die MESSAGE [CODE]   logs, prints one "script: error: MESSAGE" line on stderr, exits CODE (1).
#               A script may define its own die after sourcing; the functions below use it.
# check_bucket NAME   dies (2) unless NAME is a valid S3 bucket name.
# manage ARGS...   runs the agent's `manage.py ARGS` (WELDR_HOME, WELDR_PYTHON; LOG_LEVEL
#               WARNING unless set); on failure dies with its last error line.

WELDR_SCRIPT="$(basename "$0")"

log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) ${WELDR_SCRIPT}: $*"
  if [[ -n "${WELDR_LOG_FILE:-}" ]] && { printf '%s\n' "$line" >>"$WELDR_LOG_FILE"; } 2>/dev/null
  then
    return 0
  fi
  printf '%s\n' "$line" >&2
}

die() {
  local code="${2:-1}"
  if [[ -n "${WELDR_LOG_FILE:-}" ]]; then
    { printf '%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ) ${WELDR_SCRIPT}: error: $1" \
        >>"$WELDR_LOG_FILE"; } 2>/dev/null || true
  fi
  printf '%s: error: %s\n' "$WELDR_SCRIPT" "$1" >&2
  exit "$code"
}

check_bucket() {
  # S3's rules; the name ends up in paths and argv, so nothing else gets through.
  if [[ ! "$1" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ || "$1" == *..* \
        || "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    die "invalid bucket name: $1" 2
  fi
}

manage() {
  local here default_home=/app home python output
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  [[ -f "$here/../manage.py" ]] && default_home="$(cd "$here/.." && pwd)"
  home="${WELDR_HOME:-$default_home}"
  python="${WELDR_PYTHON:-$home/.venv/bin/python}"
  [[ -x "$python" ]] || die "no Python at $python (set WELDR_PYTHON)"
  if ! output="$(LOG_LEVEL="${LOG_LEVEL:-WARNING}" "$python" "$home/manage.py" "$@" 2>&1)"; then
    die "$(printf '%s\n' "$output" | grep -E 'CommandError|Error' | tail -n 1)"
  fi
  printf '%s\n' "$output"
}
