#!/bin/sh
# Installs what the browser tests need, only what is missing (idempotent):
# Debian's Chromium at /usr/bin/chromium, and playwright-core 1.65.1 (from
# package.json; it never downloads a browser). Run from anywhere.
set -eu
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
want=1.65.1
have=$(node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "setup: installing playwright-core $want"
  npm install --no-audit --no-fund
else
  echo "setup: playwright-core $have already there"
fi
