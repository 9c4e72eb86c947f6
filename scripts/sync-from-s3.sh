#!/usr/bin/env bash
# Restore a branch directory to the last complete state backed up in S3.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/branch-common.sh"

usage() {
  cat <<'HELP'
Usage: sync-from-s3.sh [--bucket NAME] <branch_id> <project_id>

Makes $WELDR_BRANCHES_DIR/<project_id>/<branch_id> exactly the last complete generation that
sync-to-s3.sh recorded in s3://<bucket>/branches/<branch_id>/ (COMPLETE + manifest-<N>.md5):
downloads tree/, puts back from backup/ the files an interrupted later sync had already
replaced or deleted, removes files that sync had added, then verifies every file's md5
against the manifest. Local changes not yet backed up are overwritten. With nothing in S3 the
directory is left as it is. Exit status 0 only when the directory matches the manifest.

  --bucket NAME  the bucket holding the branch (default: $WELDR_BRANCH_BUCKET, else branch_id)
  -h, --help     show this help

Environment: S3_ENDPOINT, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_REGION, WELDR_ENV_VOL,
WELDR_BRANCHES_DIR. Log: $WELDR_ENV_VOL/branches.log
HELP
}

parse_branch_args "$@"
rclone_init
mkdir -p -- "$BRANCH_DIR"
state_init
lock_shared "$STATE_DIR/$INUSE_FILE"
exec {SYNC_FD}>>"$STATE_DIR/$SYNCLOCK_FILE"
flock -x -w "$LOCK_TIMEOUT" "$SYNC_FD" || die "timed out waiting for another sync of $BRANCH_DIR"

printf '%s\n' "$BUCKET" >"$STATE_DIR/$BUCKET_FILE"
TMP="$(mktemp -d)"
trap 'rm -rf -- "$TMP"' EXIT
# Until the end, the directory is known to be incomplete: sync-to-s3.sh refuses to upload it
# and create-branch-dir.sh --restore restores it again.
touch -- "$STATE_DIR/$RESTORING_FILE"
[[ -e "$STATE_DIR/$SYNCED_FILE" ]] || touch -d @0 -- "$STATE_DIR/$SYNCED_FILE"

read_complete "$TMP/complete"
if [[ ! -s "$TMP/complete" ]]; then
  # Nothing was ever completely backed up: the last complete state is the empty tree.
  log "nothing backed up in $REMOTE yet: $BRANCH_DIR is left as it is"
  rm -f -- "$STATE_DIR/$RESTORING_FILE"
  printf 'generation=0 files=0\n'
  exit 0
fi
generation="$(sed -n 's/^generation=//p' "$TMP/complete")"
expected_files="$(sed -n 's/^files=//p' "$TMP/complete")"
expected_md5="$(sed -n 's/^tree_md5=//p' "$TMP/complete")"
[[ "$generation" =~ ^[0-9]+$ ]] || die "$REMOTE/COMPLETE is malformed"
"$RCLONE" copyto "$REMOTE/manifest-$generation.md5" "$TMP/manifest" \
  || die "manifest-$generation.md5 is missing in $REMOTE"
[[ "$(md5sum <"$TMP/manifest" | cut -d' ' -f1)" == "$expected_md5" ]] \
  || die "manifest-$generation.md5 does not match COMPLETE's tree_md5"
log "restore $REMOTE generation $generation ($expected_files files) -> $BRANCH_DIR"

rclone_confined sync "${RCLONE_FLAGS[@]}" -- "$REMOTE/tree" /w \
  || die "rclone sync from $REMOTE/tree failed"

# Backups of attempts after generation N hold generation N's versions of what they replaced or
# deleted. Newest first, so that the oldest attempt's copy (generation N's) is written last.
while IFS= read -r name; do
  log "putting back files from interrupted sync backup/$name"
  rclone_confined copy "${RCLONE_FLAGS[@]}" --ignore-times -- "$REMOTE/backup/$name" /w \
    || die "rclone copy from $REMOTE/backup/$name failed"
done < <("$RCLONE" lsf --dirs-only "$REMOTE/backup" 2>/dev/null | sed 's:/$::' \
         | awk -v g="$generation" -F- '$1 + 0 > g + 0' | LC_ALL=C sort -r)

check() {  # check: compare the directory with the manifest; "- path" lines are extra files
  rclone_confined checksum md5 --links --log-level ERROR \
    --combined /t/combined -- /t/manifest /w 2>/dev/null || true
}
check
sed -n 's/^- //p' "$TMP/combined" >"$TMP/extra"
if [[ -s "$TMP/extra" ]]; then
  log "removing $(wc -l <"$TMP/extra") files added by an interrupted sync"
  rclone_confined delete --files-from-raw /t/extra -- /w \
    || die "could not remove files added by an interrupted sync"
  check
fi
if grep -qv '^= ' "$TMP/combined"; then
  die "restored tree does not match manifest-$generation.md5: $(grep -v '^= ' "$TMP/combined" | head -n 3 | tr '\n' ' ')"
fi
[[ "$(grep -c '^= ' "$TMP/combined" || true)" == "$expected_files" ]] \
  || die "restored tree has the wrong number of files"

rm -f -- "$STATE_DIR/$RESTORING_FILE"
# Restored content equals S3: nothing to upload until something changes.
touch -- "$STATE_DIR/$SYNCED_FILE" "$STATE_DIR/$LASTUSED_FILE"
log "restore complete: generation $generation, $expected_files files"
printf 'generation=%s files=%s\n' "$generation" "$expected_files"
