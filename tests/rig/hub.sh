#!/usr/bin/env bash
# ScriptHut test rig: what a real JupyterHub on 127.0.0.1 needs (the hub itself is started
# per test session by tests/hub/conftest.py, with its own config and ports).
#
#   usage: tests/rig/hub.sh install|status|env
#
# install: the system users alice and bob, a venv made with /usr/bin/python3 (one the
# users can execute) holding jupyterhub 6.1.1, JupyterLab, the idle culler, batchspawner
# and this checkout of ScriptHut, and configurable-http-proxy from npm. Idempotent; the
# checkout is reinstalled when its sources changed. Needs root.
set -euo pipefail
export LC_ALL=C

readonly HUB_DIR=${SCRIPTHUT_HUB_DIR:-/var/lib/scripthut-hub}
readonly VENV=$HUB_DIR/venv
readonly NODE_DIR=$HUB_DIR/node
readonly CHECKOUT=$(cd "$(dirname "$0")/../.." && pwd)
readonly JUPYTERHUB=jupyterhub==6.1.1
readonly CHP=configurable-http-proxy@5.3.0
readonly PIP_PKGS=("$JUPYTERHUB" "jupyterlab>=4.4,<5" jupyterhub-idle-culler==2.0.0 requests
                   batchspawner==1.3.0)
readonly USERS=(alice bob carol dave)

pip_q() { "$VENV/bin/pip" "$@" 2> >(grep -v 'is ignored' >&2); }  # no index-location noise
say() { printf '[hub-rig] %s\n' "$*"; }
die() { printf '[hub-rig] ERROR: %s\n' "$*" >&2; exit 1; }

sources_stamp() { # a digest of what the installed package is built from
  (cd "$CHECKOUT" && find src pyproject.toml -type f \( -name '*.py' -o -name '*.toml' \
     -o -name '*.json' -o -name '*.js' \) -print0 | sort -z | xargs -0 sha1sum) \
    | sha1sum | cut -c1-16
}

install() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  for user in "${USERS[@]}"; do
    id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
  done
  mkdir -p "$HUB_DIR"; chmod 0755 "$HUB_DIR"
  if [ ! -x "$VENV/bin/jupyterhub" ]; then
    say "venv for the hub and its users (/usr/bin/python3: pyenv's python is not theirs to run)"
    /usr/bin/python3 -m venv "$VENV"
    pip_q install -q "${PIP_PKGS[@]}"
  fi
  if [ ! -x "$NODE_DIR/node_modules/.bin/configurable-http-proxy" ]; then
    say "configurable-http-proxy from npm"
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && npm install -s --no-audit --no-fund "$CHP" >/dev/null 2>&1)
  fi
  local stamp; stamp=$(sources_stamp)
  if [ "$(cat "$HUB_DIR/scripthut.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "ScriptHut from $CHECKOUT into the hub's venv"
    pip_q install -q --force-reinstall --no-deps "$CHECKOUT"
    pip_q install -q "$CHECKOUT"
    echo "$stamp" > "$HUB_DIR/scripthut.stamp"
  fi
  chmod -R a+rX "$HUB_DIR"
  say "ready: $HUB_DIR"
}

status() {
  [ -x "$VENV/bin/jupyterhub" ] && [ -x "$NODE_DIR/node_modules/.bin/configurable-http-proxy" ] \
    && "$VENV/bin/python" -c 'import scripthut' 2>/dev/null \
    && for u in "${USERS[@]}"; do id "$u" >/dev/null 2>&1 || return 1; done
}

case "${1:-}" in
  install) install ;;
  status) if status; then say "installed in $HUB_DIR"; else say "not installed"; exit 1; fi ;;
  env) printf 'SCRIPTHUT_HUB_DIR=%s\n' "$HUB_DIR" ;;
  *) echo "usage: $0 install|status|env" >&2; exit 2 ;;
esac
