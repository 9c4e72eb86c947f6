#!/usr/bin/env bash
# Remove least recently used branch directories, never one in use, until enough space is free.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/branch-common.sh"

usage() {
  cat <<'HELP'
Usage: cleanup-lru.sh [--min-free-mb N] [--keep PROJECT/BRANCH]...

Removes branch directories under $WELDR_BRANCHES_DIR, least recently used first (the mtime of
<state>/lastused), until the disk has N MB free (default $WELDR_BRANCH_MIN_FREE_MB, 2048).
<state> is $WELDR_BRANCHES_DIR/.meta/<project>/<branch>: a branch directory's markers live
beside it (root-only), never inside the workspace.
Prints each removed directory on stdout.

Never removed:
  - a directory in use: the agent (previews, commands, workflow runs, mounted workspaces) and
    the sync scripts hold a shared flock on <state>/inuse while they use it; this script
    removes a directory only while holding that lock exclusively (flock -n -x);
  - a directory with changes not yet in S3: it is backed up first with sync-to-s3.sh (bucket
    from <state>/bucket) and skipped when that fails;
  - the directories named with --keep.

  --min-free-mb N         free space to reach
  --keep PROJECT/BRANCH   never remove this one (repeatable)
  -h, --help              show this help

Exit status 1 when the space could not be freed. Log: $WELDR_ENV_VOL/branches.log
HELP
}

MIN_FREE_MB="${WELDR_BRANCH_MIN_FREE_MB:-2048}"
declare -A KEEP=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --min-free-mb) (($# >= 2)) || die "--min-free-mb needs a value" 2; MIN_FREE_MB="$2"; shift 2 ;;
    --keep)
      (($# >= 2)) || die "--keep needs PROJECT/BRANCH" 2
      [[ "$2" == */* ]] || die "--keep needs PROJECT/BRANCH; got $(printf '%q' "$2")" 2
      valid_id project_id "${2%%/*}"; valid_id branch_id "${2#*/}"
      KEEP["$2"]=1; shift 2 ;;
    *) die "unknown argument $(printf '%q' "$1") (see --help)" 2 ;;
  esac
done
[[ "$MIN_FREE_MB" =~ ^[0-9]+$ ]] || die "--min-free-mb must be a whole number" 2
[[ -d "$BRANCHES_DIR" ]] || { log "no $BRANCHES_DIR: nothing to clean"; exit 0; }

# Left-overs of an earlier run that stopped between rename and delete.
find "$BRANCHES_DIR" -mindepth 1 -maxdepth 1 -name '.trash-*' -exec rm -rf -- {} +

# remove_one DIR PROJECT BRANCH: back up if needed, then remove if nobody uses it.
# rm -rf never follows a symlink inside the tree (it unlinks the link), and the directory is
# first renamed into a root-only .trash-* directory beside it.
remove_one() {
  local dir="$1" project="$2" branch="$3" bucket="" fd trash state
  state="$(state_dir "$project" "$branch")"
  if is_dirty "$dir" "$state"; then
    [[ -r "$state/$BUCKET_FILE" ]] && bucket="$(<"$state/$BUCKET_FILE")"
    if [[ -z "$bucket" ]] || ! valid_bucket_quiet "$bucket"; then
      log "skip $dir: changes not backed up and no bucket recorded to back them up to"
      return 1
    fi
    if ! "$(dirname "${BASH_SOURCE[0]}")/sync-to-s3.sh" --bucket "$bucket" "$branch" "$project" \
         >/dev/null; then
      log "skip $dir: backing up its changes failed"
      return 1
    fi
  fi
  state_init "$state"
  exec {fd}>>"$state/$INUSE_FILE"
  if ! flock -n -x "$fd"; then
    exec {fd}>&-
    log "skip $dir: in use"
    return 1
  fi
  if is_dirty "$dir" "$state"; then
    exec {fd}>&-
    log "skip $dir: changed while being backed up"
    return 1
  fi
  trash="$(mktemp -d "$BRANCHES_DIR/.trash-XXXXXX")"
  mv -- "$dir" "$trash/"
  # Its markers go with it, while the lock is held: a user that opens the lock file after this
  # finds it gone or new (another inode) and re-creates the directory.
  mv -- "$state" "$trash/state"
  exec {fd}>&-
  rm -rf -- "$trash"
  log "removed $dir"
  printf '%s\n' "$dir"
}

# Candidates, least recently used first: "mtime<TAB>project/branch".
candidates=()
while IFS= read -r -d '' dir; do
  rel="${dir#"$BRANCHES_DIR"/}"
  [[ "${rel%%/*}" =~ $ID_PATTERN && "${rel#*/}" =~ $ID_PATTERN ]] || continue
  stamp="$(stat -c %Y -- "$(state_dir "${rel%%/*}" "${rel#*/}")/$LASTUSED_FILE" 2>/dev/null \
           || stat -c %Y -- "$dir")"
  candidates+=("$stamp"$'\t'"$rel")
done < <(find "$BRANCHES_DIR" -mindepth 2 -maxdepth 2 -type d -print0)

removed=0
free="$(free_mb "$BRANCHES_DIR")"
if ((${#candidates[@]})); then
  while IFS=$'\t' read -r _stamp rel; do
    ((free < MIN_FREE_MB)) || break
    [[ -z "${KEEP[$rel]:-}" ]] || continue
    if remove_one "$BRANCHES_DIR/$rel" "${rel%%/*}" "${rel#*/}"; then
      removed=$((removed + 1))
      free="$(free_mb "$BRANCHES_DIR")"
    fi
  done < <(printf '%s\n' "${candidates[@]}" | LC_ALL=C sort -n)
fi
if ((free < MIN_FREE_MB)); then
  die "only ${free} MB free after removing ${removed} branch directories (want ${MIN_FREE_MB} MB)"
fi
log "${free} MB free (removed ${removed} branch directories)"
