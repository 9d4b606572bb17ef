#!/usr/bin/env bash
# Create .venv and install ScriptHut with its development and documentation tools into it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "ScriptHut needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv .venv
    else
      echo "python3 -m venv failed: install your distribution's python3-venv package" >&2
      exit 1
    fi
  fi
fi
# The package build bundles the notebook widgets and the JupyterLab panel (js/): it needs Node.js.
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "Node.js and npm are needed to build the front end: install your distribution's nodejs and npm" >&2
    exit 1
  fi
fi
# The versions the test suite proved (scripts/constraints.txt, written by scripts/lock.sh);
# SCRIPTHUT_DEPS=newest takes the newest versions pyproject.toml allows instead.
if [ "${SCRIPTHUT_DEPS:-locked}" = newest ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev,docs]'
else
  .venv/bin/python -m pip install -q "$(grep '^pip==' scripts/constraints.txt)"
  .venv/bin/python -m pip install -q -c scripts/constraints.txt -e '.[dev,docs]'
fi
