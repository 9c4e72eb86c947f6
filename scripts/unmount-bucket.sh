#!/usr/bin/env bash
# Unmount a bucket safely: every write made durable in S3 first.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
check_bucket "$bucket"

output="$(manage unmount "${force[@]}" "$bucket")"
printf '%s\n' "$output" | tail -n 1
