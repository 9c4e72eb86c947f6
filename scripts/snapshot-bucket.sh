#!/usr/bin/env bash
# Take a snapshot of a mounted image workspace, or list its snapshots.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'HELP'
Usage: snapshot-bucket.sh [--name NAME] [--note TEXT] [--durable] [--list] BUCKET

Takes a snapshot of BUCKET's mounted workspace exactly as `POST /mounts/BUCKET/snapshots` does
(the same code: `manage.py snapshot`) and prints it as JSON: the workspace's ext4 is frozen
(writers wait tens of milliseconds), its image cloned in JuiceFS (metadata only, kept in the
bucket's volume, so in S3) and thawed; the bucket's retention policy applies. Only the `image`
layout has snapshots (a `files` workspace is refused: snapshots_unavailable). Restores and
forks go through the API (docs/snapshots.md).

  --name NAME   the snapshot's name (default: none)
  --note TEXT   a note kept with it
  --durable     also make it durable in S3 before answering (the zero-RPO sync of
                mount-bucket.sh --sync); otherwise it reaches S3 with the volume's next uploads
  --list        take none: print the bucket's snapshots, oldest first
  -h, --help    show this help

Environment: WELDR_HOME, WELDR_PYTHON and the agent's settings, as for mount-bucket.sh.
Exit status: 0 on success, 2 for a bad argument, 1 when it failed (one line on stderr).
HELP
}

die() { printf 'snapshot-bucket.sh: %s\n' "$1" >&2; exit "${2:-1}"; }

options=()
bucket=""
while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --name|--note)
      (($#)) || die "$arg needs a value (see --help)" 2
      options+=("$arg=$1")
      shift ;;
    --durable|--list) options+=("$arg") ;;
    -*) die "unknown option: $arg (see --help)" 2 ;;
    *) [[ -z "$bucket" ]] || die "one bucket at a time (see --help)" 2; bucket="$arg" ;;
  esac
done
[[ -n "$bucket" ]] || die "missing BUCKET (see --help)" 2
check_bucket "$bucket"

output="$(manage snapshot "${options[@]}" "$bucket")"
printf '%s\n' "$output" | tail -n 1
