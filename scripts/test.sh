#!/usr/bin/env bash
# Set everything up and run the whole test suite: ruff, mypy, the strict docs site build, pytest
# (Slurm/SSH and Grid Engine rigs, real JupyterLab in headless Chromium) and the notebooks under
# nbval.
# Under CI=true a rig that cannot be started fails the run instead of skipping tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ "$(id -u)" = 0 ]; then
  if ! bash tests/rig/slurm.sh up; then
    echo "the Slurm/SSH test rig did not start" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
  if ! bash tests/rig/sge.sh up; then
    echo "the Grid Engine test rig did not start" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
  if ! bash tests/rig/hub.sh install; then
    echo "the JupyterHub test rig could not be installed" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
  if ! bash tests/browser/install.sh; then
    echo "Chromium for the browser tests could not be installed" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
else
  echo "not root: the Slurm/SSH rig and Chromium cannot be installed here; their tests will skip" >&2
fi

.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/cfn-lint cloudformation/*.yaml
# The documentation site (mkdocs.yml), built strict: a broken link or anchor, or a page under
# docs/ missing from the nav, fails the run. Built outside the tree; NO_MKDOCS_2_WARNING is
# mkdocs-material's own switch for the notice it prints about its end of life.
docs_site=$(mktemp -d)
trap 'rm -rf "$docs_site"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$docs_site"
# The browser suites run in a session of their own: Playwright's sync API leaves an event
# loop set on the main thread, which asyncio.run() in later tests refuses.
.venv/bin/python -m pytest -q --ignore=tests/browser --ignore=tests/lab --ignore=tests/hub "$@"
.venv/bin/python -m pytest -q tests/browser tests/lab "$@"
.venv/bin/python -m pytest -q tests/hub "$@"  # a real JupyterHub (~2 min); its own browser
.venv/bin/python -m pytest -q --nbval --nbval-current-env notebooks/
