#!/usr/bin/env bash
# Back a branch directory up to S3 so that a restore only ever sees a complete state.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/branch-common.sh"

usage() {
  cat <<'HELP'
Usage: sync-to-s3.sh [--bucket NAME] <branch_id> <project_id>

Mirrors $WELDR_BRANCHES_DIR/<project_id>/<branch_id> to s3://<bucket>/branches/<branch_id>/tree/
with `rclone sync` (deleted files are deleted in S3 too), then records the new generation:
manifest-<N>.md5 (md5 and path of every object) and COMPLETE (generation, files, bytes,
tree_md5, completed_at), written last. Files replaced or deleted by a sync are first moved to
backup/<N>-<attempt>/ and those backups are removed only once COMPLETE names generation N, so
an interrupted sync never loses the previous complete state: sync-from-s3.sh rebuilds it, and
the next sync-to-s3.sh completes the job. Exit status 0 only when COMPLETE was written.

  --bucket NAME  the bucket holding the branch (default: $WELDR_BRANCH_BUCKET, else branch_id)
  -h, --help     show this help

Environment: S3_ENDPOINT, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_REGION (keys are always
explicit; rclone is configured by environment only), WELDR_ENV_VOL, WELDR_BRANCHES_DIR.
Log: $WELDR_ENV_VOL/branches.log
HELP
}

parse_branch_args "$@"
[[ -d "$BRANCH_DIR" ]] || die "no branch directory $BRANCH_DIR"
rclone_init

state_init
lock_shared "$STATE_DIR/$INUSE_FILE"
exec {SYNC_FD}>>"$STATE_DIR/$SYNCLOCK_FILE"
flock -x -w "$LOCK_TIMEOUT" "$SYNC_FD" || die "timed out waiting for another sync of $BRANCH_DIR"
# Uploading a half-restored directory would replace the good state in S3 with a partial one.
[[ ! -e "$STATE_DIR/$RESTORING_FILE" ]] \
  || die "$BRANCH_DIR is being restored (or its restore was interrupted); run sync-from-s3.sh"

printf '%s\n' "$BUCKET" >"$STATE_DIR/$BUCKET_FILE"
TMP="$(mktemp -d)"
trap 'rm -rf -- "$TMP"' EXIT
[[ -e "$STATE_DIR/$SYNCED_FILE" ]] || touch -d @0 -- "$STATE_DIR/$SYNCED_FILE"
started="$(date +%s.%N)"

generation=0
read_complete "$TMP/complete"
if [[ -s "$TMP/complete" ]]; then
  generation="$(sed -n 's/^generation=//p' "$TMP/complete")"
  [[ "$generation" =~ ^[0-9]+$ ]] || die "$REMOTE/COMPLETE is malformed"
fi
next=$((10#$generation + 1))
attempt="$(printf '%010d' "$next")-$(date -u +%Y%m%dT%H%M%S%N)"
log "sync $BRANCH_DIR -> $REMOTE/tree (generation $next, attempt $attempt)"

rclone_confined --ro sync "${RCLONE_FLAGS[@]}" --backup-dir "$REMOTE/backup/$attempt" \
  -- /w "$REMOTE/tree" \
  || die "rclone sync to $REMOTE/tree failed; S3 still holds generation $generation (see log)"

# The manifest is what S3 now holds (not the local tree, which may have changed meanwhile).
# One listing gives md5, size and path ("md5  size  path"); the manifest is "md5  path".
"$RCLONE" lsf -R --files-only --fast-list --hash MD5 --format hsp --separator '  ' \
  -- "$REMOTE/tree" >"$TMP/listing"
sed -E 's/^([0-9a-f]*)  [0-9]+  /\1  /' "$TMP/listing" | LC_ALL=C sort -k2 >"$TMP/manifest"
files="$(wc -l <"$TMP/manifest")"
bytes="$(awk -F'  ' '{ total += $2 } END { printf "%d", total }' "$TMP/listing")"
tree_md5="$(md5sum <"$TMP/manifest" | cut -d' ' -f1)"
"$RCLONE" copyto "$TMP/manifest" "$REMOTE/manifest-$next.md5"
printf 'generation=%s\nfiles=%s\nbytes=%s\ntree_md5=%s\ncompleted_at=%s\n' \
  "$next" "$files" "${bytes:-0}" "$tree_md5" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$TMP/complete"
# One PUT: the atomic switch to the new generation.
"$RCLONE" copyto "$TMP/complete" "$REMOTE/COMPLETE"
# Changes made while this sync ran are newer than its start, so they count as not yet synced.
touch -d "@$started" -- "$STATE_DIR/$SYNCED_FILE"

# Housekeeping: backups of generations <= next and older manifests are no longer needed.
while IFS= read -r name; do
  name="${name%/}"
  if [[ "$name" =~ ^([0-9]{10})- ]] && ((10#${BASH_REMATCH[1]} <= next)); then
    "$RCLONE" purge "$REMOTE/backup/$name" 2>/dev/null || log "could not purge backup/$name"
  fi
done < <("$RCLONE" lsf --dirs-only "$REMOTE/backup" 2>/dev/null || true)
if ((next > 1)); then
  "$RCLONE" deletefile "$REMOTE/manifest-$generation.md5" 2>/dev/null || true
fi
log "sync complete: generation $next, $files files, ${bytes:-0} bytes"
printf 'generation=%s files=%s bytes=%s\n' "$next" "$files" "${bytes:-0}"
