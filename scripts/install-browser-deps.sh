#!/usr/bin/env bash
# Installs what the browser tests need, idempotently: Debian's Chromium and playwright-core
# and axe-core (npm, no browser download). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/axe-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
