#!/usr/bin/env bash
# Installs what `make test` needs and is missing; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in tests/browser/setup.sh tests/clients/setup.sh; do
  if [ -f "$script" ]; then bash "$script"; fi
done
