#!/usr/bin/env bash
# Debian's chromium for the dashboard's browser tests (tests/browser/), which drive it through
# Playwright's Python package (never `playwright install`: no browser downloads).
# Idempotent and quiet when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/browser.sh: $CHROMIUM is missing and apt-get is not available; install Chromium so that $CHROMIUM exists" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "scripts/browser.sh: installing chromium needs root: run 'apt-get install -y chromium' as root" >&2
        exit 1
    fi
fi

echo "Installing Debian's chromium for the browser tests..."
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq chromium >/dev/null

if [[ ! -x "$CHROMIUM" ]]; then
    echo "scripts/browser.sh: chromium was installed but $CHROMIUM is missing" >&2
    exit 1
fi
