#!/usr/bin/env bash
# Mount an S3 bucket as a JuiceFS workspace with Litestream-replicated metadata.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'HELP'
Usage: mount-bucket.sh [--sync] [--layout files|image] BUCKET

Mounts BUCKET at $WORKSPACE_BASE/BUCKET exactly as `POST /mounts` does (the same code:
`manage.py mount`), and prints the mount as JSON:
  - creates the bucket when it is missing (S3_ENDPOINT, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY);
  - restores the JuiceFS metadata from its Litestream replica when the local copy is gone,
    to a point whose blocks are all in S3, and advances the block-ID counter;
  - formats a new volume only when there is neither a replica nor data;
  - starts one litestream process and one juicefs process for the bucket.

Files: $WELDR_ENV_VOL/meta/BUCKET.db, cache/BUCKET/, juicefs-BUCKET.log,
litestream-BUCKET.yml, litestream-BUCKET.log.

  --sync      do not mount: make an existing mount durable in S3 now (uploads staged blocks,
              forces and confirms a Litestream sync)
  --layout L  workspace layout of a NEW volume: files (the JuiceFS mount) or image (an ext4
              image inside the volume, loop-mounted); default $WORKSPACE_LAYOUT. An existing
              volume keeps its own: asking for the other one fails (layout_mismatch)
  -h, --help  show this help

Environment: WELDR_HOME (the agent's directory; default: this script's repository, else /app),
WELDR_PYTHON (default: $WELDR_HOME/.venv/bin/python), and every variable of the agent's settings.
Exit status: 0 on success, 2 for a bad argument, 1 when mounting failed (one line on stderr).
HELP
}

die() { printf 'mount-bucket.sh: %s\n' "$1" >&2; exit "${2:-1}"; }

sync_only=()
layout=()
bucket=""
while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --sync) sync_only=(--sync) ;;
    --layout)
      (($#)) || die "--layout needs a value: files or image" 2
      [[ "$1" == files || "$1" == image ]] || die "invalid layout: $1 (files or image)" 2
      layout=(--layout "$1")
      shift ;;
    -*) die "unknown option: $arg (see --help)" 2 ;;
    *) [[ -z "$bucket" ]] || die "one bucket at a time (see --help)" 2; bucket="$arg" ;;
  esac
done
[[ -n "$bucket" ]] || die "missing BUCKET (see --help)" 2
check_bucket "$bucket"

output="$(manage mount "${sync_only[@]}" "${layout[@]}" "$bucket")"
printf '%s\n' "$output" | tail -n 1
