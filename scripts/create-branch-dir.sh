#!/usr/bin/env bash
# Create or reuse a branch directory; free space first (LRU) when the disk runs short.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/branch-common.sh"

usage() {
  cat <<'HELP'
Usage: create-branch-dir.sh [--restore] [--bucket NAME] <branch_id> <project_id>

Creates (or reuses) the branch directory $WELDR_BRANCHES_DIR/<project_id>/<branch_id> and prints
its path on stdout. When free space on that disk is below $WELDR_BRANCH_MIN_FREE_MB (default
2048), cleanup-lru.sh runs first (never removing this branch or one in use).

  --restore      when the directory is new (or a restore was interrupted), restore the branch's
                 last complete state from S3 with sync-from-s3.sh
  --bucket NAME  the S3 bucket holding the branch (default: the branch id; see sync-to-s3.sh)
  -h, --help     show this help

branch_id and project_id: 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit.
Environment: WELDR_ENV_VOL, WELDR_BRANCHES_DIR, WELDR_BRANCH_MIN_FREE_MB, S3_* (with --restore).
Log: $WELDR_ENV_VOL/branches.log
HELP
}

RESTORE=0
args=()
for arg in "$@"; do
  if [[ "$arg" == "--restore" ]]; then RESTORE=1; else args+=("$arg"); fi
done
parse_branch_args "${args[@]}"
MIN_FREE_MB="${WELDR_BRANCH_MIN_FREE_MB:-2048}"
[[ "$MIN_FREE_MB" =~ ^[0-9]+$ ]] || die "WELDR_BRANCH_MIN_FREE_MB must be a whole number" 2

mkdir -p -- "$BRANCHES_DIR/$PROJECT_ID"
free="$(free_mb "$BRANCHES_DIR")"
if ((free < MIN_FREE_MB)); then
  log "free space ${free} MB < ${MIN_FREE_MB} MB: running cleanup-lru.sh"
  "$(dirname "${BASH_SOURCE[0]}")/cleanup-lru.sh" --keep "$PROJECT_ID/$BRANCH_ID" >/dev/null \
    || log "cleanup-lru.sh failed; continuing with ${free} MB free"
fi

state_init
if [[ -d "$BRANCH_DIR" && ! -e "$STATE_DIR/$RESTORING_FILE" ]]; then
  log "reusing $BRANCH_DIR"
  legacy_markers_remove "$BRANCH_DIR"
  touch -- "$STATE_DIR/$LASTUSED_FILE"
  printf '%s\n' "$BUCKET" >"$STATE_DIR/$BUCKET_FILE"
else
  fresh=0
  [[ -d "$BRANCH_DIR" ]] || fresh=1
  # A new directory: no earlier sync of a directory of this name speaks for it.
  ((fresh == 0)) || rm -f -- "$STATE_DIR/$SYNCED_FILE"
  mkdir -p -- "$BRANCH_DIR"
  touch -- "$STATE_DIR/$LASTUSED_FILE"
  # cleanup-lru.sh backs unsynced changes up to this bucket before removing the directory.
  printf '%s\n' "$BUCKET" >"$STATE_DIR/$BUCKET_FILE"
  if ((RESTORE)); then
    log "restoring $BRANCH_DIR from S3"
    "$(dirname "${BASH_SOURCE[0]}")/sync-from-s3.sh" --bucket "$BUCKET" "$BRANCH_ID" "$PROJECT_ID" >/dev/null
  elif ((fresh)); then
    log "created $BRANCH_DIR"
  fi
fi
printf '%s\n' "$BRANCH_DIR"
