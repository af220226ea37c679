#!/usr/bin/env bash
# Installs the real tus clients the tests drive, only what is missing:
#   node_modules/tus-js-client (4.3.1, from package.json) and .venv with tuspy 1.1.0.
# Idempotent; run from anywhere. Needs node/npm and python3 (with venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

want_js=4.3.1
have_js=$(node -p "require('./node_modules/tus-js-client/package.json').version" 2>/dev/null || true)
if [ "$have_js" != "$want_js" ]; then
    echo "setup: installing tus-js-client@$want_js"
    # From package.json, so the browser tests' packages stay installed too.
    npm install --no-audit --no-fund
else
    echo "setup: tus-js-client $have_js already there"
fi

want_py=1.1.0
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('tuspy') != '$want_py')" 2>/dev/null; then
    echo "setup: installing tuspy==$want_py into .venv"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "tuspy==$want_py"
else
    echo "setup: tuspy $want_py already in .venv"
fi
