# shellcheck shell=bash
# Shared by scripts/*.sh: log() and die(), nothing else. Source it after `set -euo pipefail`.
#
# log MESSAGE   appends "UTC-time script: MESSAGE" to $WELDR_LOG_FILE (stderr when it is unset
#               or cannot be written).
# die MESSAGE [CODE]   logs, prints one "script: error: MESSAGE" line on stderr, exits CODE (1).

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
