#!/usr/bin/env bash
# The environment a user's app and scripts see: built from nothing, never the agent's own.
#
# Sourced (`source weldr-user-env.sh [options]`) it exports the variables into the current
# shell; run, it prints them as `export NAME='value'` lines (what the agent's sandbox uses).

_weldr_user_env_usage() {
  cat <<'HELP'
Usage: weldr-user-env.sh [--port N] [--workspace DIR] [--node-env ENV]
       source weldr-user-env.sh [same options]

Prints (or, when sourced, exports) the environment of a user's app and scripts:
  PORT          the app's port (--port; default $PORT when it is a preview port 3000-3019,
                else 3000)
  HOST          0.0.0.0 (listen on every address of the sandbox)
  NODE_ENV      --node-env, else $WELDR_USER_NODE_ENV, else development
  PATH          <workspace>/node_modules/.bin, then the system's bin directories
  HOME          /tmp/home (writable inside the sandbox)
  LANG, LC_ALL  C.UTF-8
  TERM          dumb
  CI            1 (package managers do not prompt)
  WELDR_WORKSPACE  the workspace (--workspace; default /workspace)

Nothing else: none of the agent's variables (S3 keys, database and Redis URLs, LLM API keys,
BETTER_AUTH_SECRET) ever reaches a user's process.

  --port N          1-65535
  --workspace DIR   absolute path of the workspace as the app sees it
  --node-env ENV    development, production or test
  -h, --help        show this help
HELP
}

_weldr_user_env() {
  local port="" workspace="/workspace" node_env="${WELDR_USER_NODE_ENV:-development}"
  while (($#)); do
    case "$1" in
      -h|--help) _weldr_user_env_usage; return 10 ;;
      --port) port="${2:-}"; shift 2 || return 2 ;;
      --workspace) workspace="${2:-}"; shift 2 || return 2 ;;
      --node-env) node_env="${2:-}"; shift 2 || return 2 ;;
      *) printf 'weldr-user-env.sh: error: unknown argument %q (see --help)\n' "$1" >&2
         return 2 ;;
    esac
  done
  if [[ -z "$port" ]]; then
    port=3000
    if [[ "${PORT:-}" =~ ^[0-9]+$ ]] && ((PORT >= 3000 && PORT <= 3019)); then port="$PORT"; fi
  fi
  if [[ ! "$port" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
    printf 'weldr-user-env.sh: error: --port must be 1-65535; got %q\n' "$port" >&2; return 2
  fi
  if [[ ! "$workspace" =~ ^/[A-Za-z0-9._/-]*$ || "$workspace" == *..* ]]; then
    printf 'weldr-user-env.sh: error: --workspace must be an absolute path of A-Z a-z 0-9 . _ - /; got %q\n' \
      "$workspace" >&2; return 2
  fi
  case "$node_env" in development|production|test) ;; *)
    printf 'weldr-user-env.sh: error: --node-env must be development, production or test; got %q\n' \
      "$node_env" >&2; return 2 ;;
  esac
  WELDR_USER_ENV=(
    "PORT=$port"
    "HOST=0.0.0.0"
    "NODE_ENV=$node_env"
    "PATH=${workspace%/}/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "HOME=/tmp/home"
    "LANG=C.UTF-8"
    "LC_ALL=C.UTF-8"
    "TERM=dumb"
    "CI=1"
    "WELDR_WORKSPACE=$workspace"
  )
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: export into the caller's shell (its own variables are left alone).
  _weldr_user_env "$@" && for _weldr_pair in "${WELDR_USER_ENV[@]}"; do
    export "${_weldr_pair%%=*}=${_weldr_pair#*=}"
  done
  unset _weldr_pair
else
  set -euo pipefail
  code=0
  _weldr_user_env "$@" || code=$?
  if ((code == 10)); then exit 0; elif ((code != 0)); then exit "$code"; fi
  for pair in "${WELDR_USER_ENV[@]}"; do
    printf 'export %s=%q\n' "${pair%%=*}" "${pair#*=}"
  done
fi
