#!/usr/bin/env node
// Runs the browser tests with node's own test runner (TAP, so the summary has
// `# pass N` / `# fail N`). Builds nothing: the binary comes from TINYDROP_BIN
// (default target/debug/tinydrop). Extra arguments go to `node --test`, e.g.
//   node tests/browser/run.js --test-name-pattern=keyboard
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const root = path.resolve(__dirname, '..', '..');
const args = ['--test', '--test-reporter=tap', ...process.argv.slice(2), path.join(__dirname, 'page.test.js')];
const t0 = Date.now();
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
console.log(`# browser suite took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(r.status === null ? 1 : r.status);
