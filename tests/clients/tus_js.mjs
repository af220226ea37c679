// Drives tus-js-client 4.3.1 (node) against tinydrop; run by tests/tus_clients.rs.
//
//   node tests/clients/tus_js.mjs --endpoint URL --file PATH [--name NAME]
//        [--chunk BYTES] [--retry-delays 0,200,500] [--store URL_STORAGE_FILE]
//
// With --store, URLs are kept in a FileUrlStorage and a previous upload of the
// same file is resumed (findPreviousUploads + resumeFromPreviousUpload), as a
// new process of a real application would.
//
// Prints one line per event on stdout, for the test to read:
//   PREVIOUS n | URL url | POST | HEAD | PATCH offset=N | DELETE
//   RESPONSE METHOD STATUS offset=N | SAVED_AS name | STATUS saved|duplicate
//   SHA256 hex | DONE | ERROR message (exit code 1)

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url);
const tus = require('tus-js-client');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const a = parseArgs(process.argv.slice(2));
if (!a.endpoint || !a.file) {
  console.error('usage: tus_js.mjs --endpoint URL --file PATH [--name NAME] [--chunk N] [--retry-delays LIST] [--store PATH]');
  process.exit(2);
}
const say = (line) => process.stdout.write(line + '\n');
const size = fs.statSync(a.file).size;

const options = {
  endpoint: a.endpoint,
  uploadSize: size,
  chunkSize: a.chunk ? Number(a.chunk) : Infinity,
  retryDelays: a['retry-delays'] ? a['retry-delays'].split(',').map(Number) : null,
  metadata: { filename: a.name || path.basename(a.file), filetype: 'application/octet-stream' },
  onBeforeRequest(req) {
    const method = req.getMethod();
    say(method === 'PATCH' ? `PATCH offset=${req.getHeader('Upload-Offset')}` : method);
  },
  onAfterResponse(req, res) {
    say(`RESPONSE ${req.getMethod()} ${res.getStatus()} offset=${res.getHeader('Upload-Offset') ?? ''}`);
    const saved = res.getHeader('Tinydrop-Saved-As');
    if (saved) {
      say(`SAVED_AS ${decodeURIComponent(saved)}`);
      say(`STATUS ${res.getHeader('Tinydrop-Status')}`);
      say(`SHA256 ${res.getHeader('Tinydrop-Sha256')}`);
    }
  },
  onUploadUrlAvailable() {
    say(`URL ${upload.url}`);
  },
  onSuccess() {
    say('DONE');
  },
  onError(err) {
    say(`ERROR ${String(err).replace(/\s+/g, ' ')}`);
    process.exitCode = 1;
  },
};
if (a.store) {
  options.urlStorage = new tus.FileUrlStorage(a.store);
}

const upload = new tus.Upload(fs.createReadStream(a.file), options);
if (a.store) {
  const previous = await upload.findPreviousUploads();
  say(`PREVIOUS ${previous.length}`);
  if (previous.length > 0) {
    upload.resumeFromPreviousUpload(previous[0]);
  }
}
upload.start();
