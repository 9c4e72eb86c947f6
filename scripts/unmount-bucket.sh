#!/usr/bin/env bash
# Unmount a bucket safely: every write made durable in S3 first.
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: unmount-bucket.sh [--force] BUCKET

Unmounts BUCKET exactly as `POST /mounts/unmount` does (the same code: `manage.py unmount`):
refuses while a preview runs on it (unless --force, which stops the preview first), uploads
every staged block, forces and confirms a final Litestream sync, stops litestream, unmounts
(lazily when the FUSE mount is dead), and frees the slot.

  --force     stop a preview running on the bucket instead of refusing
  -h, --help  show this help

Environment: WELDR_HOME, WELDR_PYTHON and the agent's settings, as for mount-bucket.sh.
Exit status: 0 on success, 2 for a bad argument, 1 when unmounting failed (one line on stderr).
HELP
}

die() { printf 'unmount-bucket.sh: %s\n' "$1" >&2; exit "${2:-1}"; }

force=()
bucket=""
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --force) force=(--force) ;;
    -*) die "unknown option: $arg (see --help)" 2 ;;
    *) [[ -z "$bucket" ]] || die "one bucket at a time (see --help)" 2; bucket="$arg" ;;
  esac
done
[[ -n "$bucket" ]] || die "missing BUCKET (see --help)" 2
if [[ ! "$bucket" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ || "$bucket" == *..* \
      || "$bucket" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  die "invalid bucket name: $bucket" 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
default_home=/app
[[ -f "$here/../manage.py" ]] && default_home="$(cd "$here/.." && pwd)"
home="${WELDR_HOME:-$default_home}"
python="${WELDR_PYTHON:-$home/.venv/bin/python}"
[[ -x "$python" ]] || die "no Python at $python (set WELDR_PYTHON)"

export LOG_LEVEL="${LOG_LEVEL:-WARNING}"
if ! output="$("$python" "$home/manage.py" unmount "${force[@]}" "$bucket" 2>&1)"; then
  die "$(printf '%s\n' "$output" | grep -E 'CommandError|Error' | tail -n 1)"
fi
printf '%s\n' "$output" | tail -n 1
