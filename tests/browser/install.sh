#!/usr/bin/env bash
# Install Debian's chromium for the browser tests when it is missing (Playwright drives it
# through executable_path; `playwright install` cannot download browsers here).
# Idempotent: returns at once when /usr/bin/chromium exists. Needs root (or sudo) to install.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "chromium is missing and apt-get is not available: install Chromium by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then
    SUDO="sudo"
  else
    echo "chromium is missing: run this script as root to install it" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends chromium fonts-dejavu-core >/dev/null
test -x /usr/bin/chromium
echo "installed $(/usr/lib/chromium/chromium --version 2>/dev/null || echo chromium)"
