#!/usr/bin/env bash
# Start a preview app's container (an OCI bundle the agent wrote) detached, logging to stdout.
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: scripts/start-app.sh --bundle DIR --name NAME [--runtime PATH] [--root DIR] [--pid-file FILE]

Starts the OCI container NAME from the bundle DIR (config.json, as written by the agent under
$WELDR_RUNTIME_DIR/bundles/NAME) detached, with runc or crun. The container inherits this
script's stdout and stderr: redirect them to the app's log, e.g.

  scripts/start-app.sh --bundle /run/weldr/bundles/weldr-abc123-preview-site \
      --name weldr-abc123-preview-site >>"$WELDR_ENV_VOL/apps/site/app.log" 2>&1

  --bundle DIR      the OCI bundle (required)
  --name NAME       the container id (required; letters, digits, '.', '_', '-')
  --runtime PATH    runc or crun (default: runc from PATH)
  --root DIR        the runtime's state directory (default: /run/weldr/<runtime>)
  --pid-file FILE   where the runtime writes the container's pid (default: DIR/pid)
  -h, --help        show this help

Exits with the runtime's status; stop the app with scripts/stop-app.sh.
HELP
}

die() { printf 'start-app.sh: %s\n' "$*" >&2; exit 2; }

bundle="" name="" runtime="" root="" pid_file=""
while (( $# )); do
  case "$1" in
    --bundle) bundle="${2:-}"; shift 2 || die "--bundle needs a value" ;;
    --name) name="${2:-}"; shift 2 || die "--name needs a value" ;;
    --runtime) runtime="${2:-}"; shift 2 || die "--runtime needs a value" ;;
    --root) root="${2:-}"; shift 2 || die "--root needs a value" ;;
    --pid-file) pid_file="${2:-}"; shift 2 || die "--pid-file needs a value" ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ -n "$bundle" ]] || die "--bundle is required (see --help)"
[[ -f "$bundle/config.json" ]] || die "no OCI bundle at $bundle (config.json missing)"
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] || die "invalid container name: '$name'"
runtime="${runtime:-$(command -v runc || true)}"
[[ -x "$runtime" ]] || die "OCI runtime not found: '${runtime}' (install runc)"
root="${root:-/run/weldr/$(basename "$runtime")}"
pid_file="${pid_file:-$bundle/pid}"

# exec: the runtime hands this process's stdio (the app's log) to the container.
exec "$runtime" --root "$root" run --detach --pid-file "$pid_file" --bundle "$bundle" "$name"
