# shellcheck shell=bash
# Shared by the branch-directory scripts (create-branch-dir, sync-from-s3, sync-to-s3,
# cleanup-lru): configuration, argument validation, locks and rclone set-up.
# Layout and protocol: docs/local-mode.md.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WELDR_ENV_VOL="${WELDR_ENV_VOL:-/dev/weldr_env_vol}"
BRANCHES_DIR="${WELDR_BRANCHES_DIR:-$WELDR_ENV_VOL/branches}"
WELDR_LOG_FILE="${WELDR_LOG_FILE:-$WELDR_ENV_VOL/branches.log}"
# A branch directory's markers live BESIDE it, in STATE_ROOT/<project>/<branch>/ (root-only,
# 0700), never in it: the directory is a sandbox's workspace, where uid 1000 could replace any
# marker with a symlink to a host file that these scripts, as root, would then write,
# truncate, flock or read (the bucket marker decides where LRU uploads a directory to).
# STATE_ROOT's name starts with a dot, which no project id does: it is never a project.
STATE_ROOT="$BRANCHES_DIR/.meta"
INUSE_FILE="inuse"          # flock: shared by every user of the directory, exclusive by LRU
LASTUSED_FILE="lastused"    # its mtime is the last use (LRU order)
SYNCED_FILE="synced"        # its mtime is the last complete sync; ctime-newer files = dirty
RESTORING_FILE="restoring"  # present while a restore is incomplete
SYNCLOCK_FILE="sync.lock"   # flock: one sync at a time per directory
BUCKET_FILE="bucket"        # the bucket LRU backs the directory up to before removing it
# Where older versions kept the markers: in the workspace. Now ordinary names (see
# legacy_markers_remove).
LEGACY_MARKERS=(.weldr-inuse .weldr-lastused .weldr-synced .weldr-restoring .weldr-sync.lock
                .weldr-bucket)
LOCK_TIMEOUT="${WELDR_BRANCH_LOCK_TIMEOUT:-600}"

ID_PATTERN='^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'

# valid_id LABEL VALUE: a branch or project id is one safe path component.
valid_id() {
  [[ "$2" =~ $ID_PATTERN ]] \
    || die "$1 must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit; got $(printf '%q' "$2")" 2
}

# valid_bucket VALUE: S3's bucket naming rules (3-63 of a-z 0-9 . -, no "..", not an IP).
valid_bucket() {
  if [[ ! "$1" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ || "$1" == *..* \
        || "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    die "bucket must be a valid S3 bucket name (3-63 of a-z 0-9 . -); got $(printf '%q' "$1")" 2
  fi
}

# valid_bucket_quiet VALUE: the same rules, as a test (for values read back from a file).
valid_bucket_quiet() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ && "$1" != *..* \
     && ! "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]
}

# parse_branch_args "$@": <branch_id> <project_id> [--bucket NAME]; calls usage() for --help.
parse_branch_args() {
  BRANCH_ID="" PROJECT_ID="" BUCKET="${WELDR_BRANCH_BUCKET:-}"
  local positional=()
  while (($#)); do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --bucket) (($# >= 2)) || die "--bucket needs a value" 2; BUCKET="$2"; shift 2 ;;
      --bucket=*) BUCKET="${1#--bucket=}"; shift ;;
      --) shift; positional+=("$@"); break ;;
      -*) die "unknown option $(printf '%q' "$1") (see --help)" 2 ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  ((${#positional[@]} == 2)) || die "expected <branch_id> <project_id> (see --help)" 2
  BRANCH_ID="${positional[0]}" PROJECT_ID="${positional[1]}"
  valid_id branch_id "$BRANCH_ID"
  valid_id project_id "$PROJECT_ID"
  # Default: the branch's own bucket is named like the branch (the service passes --bucket).
  BUCKET="${BUCKET:-$BRANCH_ID}"
  valid_bucket "$BUCKET"
  BRANCH_DIR="$BRANCHES_DIR/$PROJECT_ID/$BRANCH_ID"
  STATE_DIR="$(state_dir "$PROJECT_ID" "$BRANCH_ID")"
}

# state_dir PROJECT BRANCH: the markers' directory of a branch directory.
state_dir() {
  printf '%s\n' "$STATE_ROOT/$1/$2"
}

# state_init [DIR]: create a state directory (default STATE_DIR) under a root-only STATE_ROOT.
# Nothing under STATE_ROOT is ever bind-mounted into a sandbox.
state_init() {
  mkdir -p -- "${1:-$STATE_DIR}"
  chmod 0700 -- "$STATE_ROOT"
}

# legacy_markers_remove DIR: unlink the markers older versions kept in the workspace (rm never
# follows a symlink: a planted link is removed, its target untouched). From then on a
# `.weldr-*` name in a workspace is an ordinary user file: synced, listed, restored.
legacy_markers_remove() {
  local name
  for name in "${LEGACY_MARKERS[@]}"; do rm -f -- "${1:?}/$name"; done
}

# rclone_init: the venv's rclone, configured only by environment with explicit keys.
rclone_init() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  RCLONE="${WELDR_RCLONE:-}"
  if [[ -z "$RCLONE" ]]; then
    if [[ -x "$here/.venv/bin/rclone" ]]; then RCLONE="$here/.venv/bin/rclone"
    else RCLONE="$(command -v rclone)" || die "rclone is not installed (run scripts/setup.sh)"
    fi
  fi
  [[ -n "${S3_ENDPOINT:-}" ]] || die "S3_ENDPOINT is not set"
  [[ -n "${S3_ACCESS_KEY_ID:-}" && -n "${S3_SECRET_ACCESS_KEY:-}" ]] \
    || die "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set"
  # No config file; never the AWS credential chain or the instance metadata service.
  export RCLONE_CONFIG=/dev/null
  export RCLONE_CONFIG_WELDRS3_TYPE=s3
  export RCLONE_CONFIG_WELDRS3_PROVIDER=Other
  export RCLONE_CONFIG_WELDRS3_ENV_AUTH=false
  export RCLONE_CONFIG_WELDRS3_ENDPOINT="$S3_ENDPOINT"
  export RCLONE_CONFIG_WELDRS3_ACCESS_KEY_ID="$S3_ACCESS_KEY_ID"
  export RCLONE_CONFIG_WELDRS3_SECRET_ACCESS_KEY="$S3_SECRET_ACCESS_KEY"
  export RCLONE_CONFIG_WELDRS3_REGION="${S3_REGION:-auto}"
  export RCLONE_CONFIG_WELDRS3_FORCE_PATH_STYLE=true
  export AWS_EC2_METADATA_DISABLED=true
  # Fail in about a minute when S3 is unreachable instead of backing off for many minutes.
  export RCLONE_RETRIES="${WELDR_RCLONE_RETRIES:-3}"
  export RCLONE_LOW_LEVEL_RETRIES="${WELDR_RCLONE_LOW_LEVEL_RETRIES:-3}"
  export RCLONE_CONTIMEOUT="${RCLONE_CONTIMEOUT:-15s}"
  export RCLONE_TIMEOUT="${RCLONE_TIMEOUT:-5m}"
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE
  REMOTE="weldrs3:$BUCKET/branches/$BRANCH_ID"
  # Flags of the transfers between S3 and the branch directory (rclone_confined): --links
  # stores a symlink as a link (`.rclonelink`), never following it.
  RCLONE_FLAGS=(--links --metadata --checksum --fast-list
                --transfers "${WELDR_RCLONE_TRANSFERS:-8}" --log-level NOTICE)
  RCLONE_LOG=""
  if [[ -n "${WELDR_LOG_FILE:-}" && -w "$(dirname "$WELDR_LOG_FILE")" ]]; then
    RCLONE_LOG="$WELDR_LOG_FILE"
    RCLONE_FLAGS+=(--log-file /log/rclone.log)
  fi
}

# rclone_confined [--ro] ARGS...: rclone ARGS, run chrooted (in a private mount namespace) into
# an empty root where the branch directory is /w, $TMP (when set) is /t and the log is
# /log/rclone.log; nothing else of the host is there but rclone, /dev/null and what name
# resolution and TLS read (/etc/ssl, resolv.conf, hosts). Why: rclone opens the workspace's
# files by path, as root, while the sandbox may be changing them. A directory swapped for a
# link to /proc/self or /etc between rclone's listing and its open would otherwise have it
# read a host file (and upload it to the bucket, whence a restore hands it to the sandbox);
# in this root every path, absolute links included, resolves inside it. --ro: /w is read-only.
rclone_confined() {
  local access=rw root
  if [[ "$1" == --ro ]]; then access=ro; shift; fi
  root="$(mktemp -d)"
  mkdir -p -- "$root/w" "$root/t" "$root/bin" "$root/dev" "$root/log" "$root/etc/ssl"
  touch -- "$root/bin/rclone" "$root/dev/null" "$root/log/rclone.log" "$root/etc/resolv.conf" \
    "$root/etc/hosts"
  [[ -z "$RCLONE_LOG" ]] || touch -- "$RCLONE_LOG"
  local code=0
  unshare --mount --propagation private -- bash -euc '
    root="$1" dir="$2" access="$3" rclone="$4" tmp="$5" log="$6"; shift 6
    mount --bind -o "$access,nosuid,nodev" -- "$dir" "$root/w"
    [[ -z "$tmp" ]] || mount --bind -o nosuid,nodev -- "$tmp" "$root/t"
    [[ -z "$log" ]] || mount --bind -- "$log" "$root/log/rclone.log"
    mount --bind -o ro -- "$rclone" "$root/bin/rclone"
    mount --bind -- /dev/null "$root/dev/null"
    [[ ! -d /etc/ssl ]] || mount --rbind -o ro -- /etc/ssl "$root/etc/ssl"
    for name in resolv.conf hosts; do
      [[ ! -e "/etc/$name" ]] || mount --bind -o ro -- "/etc/$name" "$root/etc/$name"
    done
    exec chroot -- "$root" /bin/rclone "$@"
  ' rclone-confined "$root" "$BRANCH_DIR" "$access" "$RCLONE" "${TMP:-}" "$RCLONE_LOG" "$@" \
    || code=$?
  # The mounts went with the namespace: what is left is empty files and directories. Removed
  # one by one, never recursively: were a mount still there, this fails instead of descending.
  rm -f -- "$root/bin/rclone" "$root/dev/null" "$root/log/rclone.log" "$root/etc/resolv.conf" \
    "$root/etc/hosts" \
    && rmdir -- "$root/w" "$root/t" "$root/bin" "$root/dev" "$root/log" "$root/etc/ssl" \
      "$root/etc" "$root" \
    || log "could not remove $root"
  return "$code"
}

# read_complete FILE: fetch $REMOTE/COMPLETE into FILE (empty when nothing was ever backed up).
# `rclone cat` exits 0 with no output for a missing object and 3 for a missing bucket; any
# other failure (S3 unreachable, bad keys) must not be mistaken for "nothing in S3".
read_complete() {
  local code=0
  "$RCLONE" cat --retries 1 -- "$REMOTE/COMPLETE" >"$1" 2>"$1.err" || code=$?
  if ((code == 3)); then : >"$1"; elif ((code != 0)); then
    die "cannot read $REMOTE/COMPLETE: $(tail -n 1 "$1.err")"
  fi
}

# lock_fd FILE MODE(-s|-x) [-n]: open FILE on a new fd, flock it, print the fd.
# Callers keep the fd open for as long as they hold the lock (closing releases it).
lock_shared() {  # lock_shared FILE -> sets LOCK_FD
  exec {LOCK_FD}>>"$1"
  flock -s -w "$LOCK_TIMEOUT" "$LOCK_FD" || die "timed out waiting for the lock $1"
}

# is_dirty DIR STATE: true when something under DIR changed (ctime) after the last complete
# sync (STATE/synced). find never follows a symlink without -L/-H: it only lstat()s.
is_dirty() {
  [[ -e "$2/$SYNCED_FILE" ]] || return 0
  [[ -n "$(find "$1" -cnewer "$2/$SYNCED_FILE" -print -quit)" ]]
}

free_mb() {  # free_mb DIR: available megabytes on DIR's filesystem
  df -Pk -- "$1" | awk 'NR == 2 { print int($4 / 1024) }'
}
