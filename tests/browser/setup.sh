#!/bin/sh
# Installs what the browser tests need, only what is missing (idempotent).
# Run from anywhere; works in the repository's top directory.
set -eu
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
if [ ! -d node_modules/playwright-core ]; then
  npm install --no-audit --no-fund
fi
