#!/usr/bin/env bash
# Set everything up and run the example workflow on the local machine, with live progress.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/scripthut run examples/pipeline.json "$@"
