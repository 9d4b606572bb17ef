#!/usr/bin/env bash
# Record the Python package versions the test suite proved into scripts/constraints.txt.
# scripts/setup.sh installs exactly these; `SCRIPTHUT_DEPS=newest bash scripts/setup.sh`
# installs the newest versions pyproject.toml allows instead (to try them before locking).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Versions proved by scripts/test.sh; written by scripts/lock.sh, used by scripts/setup.sh."
  echo "pip==$(.venv/bin/python -m pip --version | cut -d' ' -f2)"
  .venv/bin/python -m pip freeze --exclude-editable --all | grep -v -E '^(pip|scripthut)[=@ ]' | LC_ALL=C sort -f
} > scripts/constraints.txt
echo "wrote scripts/constraints.txt ($(grep -c '==' scripts/constraints.txt) packages)"
