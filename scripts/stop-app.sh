#!/usr/bin/env bash
# Stop a preview app's container: SIGTERM, a grace period, SIGKILL, then remove it.
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: scripts/stop-app.sh --name NAME [--grace SECONDS] [--runtime PATH] [--root DIR]

Sends SIGTERM to the container NAME, waits up to SECONDS (default 5) for it to stop, kills it
with SIGKILL if it did not, and deletes it (state and cgroup). Stopping a container that is
already gone succeeds (idempotent). The agent notices the exit, removes the app's network
namespace and releases its port.

  --name NAME       the container id (required)
  --grace SECONDS   seconds between SIGTERM and SIGKILL (default 5)
  --runtime PATH    runc or crun (default: runc from PATH)
  --root DIR        the runtime's state directory (default: /run/weldr/<runtime>)
  -h, --help        show this help
HELP
}

die() { printf 'stop-app.sh: %s\n' "$*" >&2; exit 2; }

name="" grace=5 runtime="" root=""
while (( $# )); do
  case "$1" in
    --name) name="${2:-}"; shift 2 || die "--name needs a value" ;;
    --grace) grace="${2:-}"; shift 2 || die "--grace needs a value" ;;
    --runtime) runtime="${2:-}"; shift 2 || die "--runtime needs a value" ;;
    --root) root="${2:-}"; shift 2 || die "--root needs a value" ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] || die "invalid container name: '$name'"
[[ "$grace" =~ ^[0-9]{1,4}$ ]] || die "--grace must be a whole number of seconds: '$grace'"
runtime="${runtime:-$(command -v runc || true)}"
[[ -x "$runtime" ]] || die "OCI runtime not found: '${runtime}' (install runc)"
root="${root:-/run/weldr/$(basename "$runtime")}"
rt=("$runtime" --root "$root")

state() { "${rt[@]}" state "$name" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }

if [[ "$(state)" == "running" ]]; then
  "${rt[@]}" kill "$name" TERM 2>/dev/null || true
  deadline=$(( SECONDS + grace ))
  while [[ "$(state)" == "running" ]] && (( SECONDS < deadline )); do sleep 0.1; done
  if [[ "$(state)" == "running" ]]; then
    "${rt[@]}" kill "$name" KILL 2>/dev/null || true
  fi
fi
# --force also kills whatever is left and removes the cgroup; a missing container is fine.
if ! out="$("${rt[@]}" delete --force "$name" 2>&1)" && [[ "$out" != *"does not exist"* && "$out" != *"not exist"* ]]; then
  printf 'stop-app.sh: could not delete container %s: %s\n' "$name" "$out" >&2
  exit 1
fi
