// Helpers for the browser tests: the real binary on --port 0, Debian's
// Chromium through playwright-core, seeded test data streamed to disk.
'use strict';
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.resolve(ROOT, process.env.TINYDROP_BIN || 'target/debug/tinydrop');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'target', 'screenshots');
const MiB = 1024 * 1024;

// ---- the server ------------------------------------------------------------

/** Starts tinydrop on DIR; resolves once its first stdout line names the port. */
function startServer(dir, { port = 0, args = [] } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['--port', String(port), '--bind', '127.0.0.1', ...args, dir],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('server did not start in 10 s: ' + stderr)); }, 10000);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited (${code}) before listening: ${stderr}`)); });
    const rl = readline.createInterface({ input: child.stdout });
    rl.once('line', (line) => {
      clearTimeout(timer);
      const m = /^listening on (http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(line);
      if (!m) { child.kill('SIGKILL'); reject(new Error('unexpected first line: ' + line)); return; }
      child.removeAllListeners('exit');
      rl.on('line', () => {}); // keep draining stdout
      resolve({ child, pid: child.pid, port: Number(m[2]), origin: m[1].replace(/\/$/, ''), dir,
                stderr: () => stderr });
    });
  });
}

/** Kills the server by its PID and waits for it to be gone. */
function killServer(srv, signal = 'SIGKILL') {
  return new Promise((resolve) => {
    if (!srv || srv.child.exitCode !== null || srv.child.signalCode !== null) { resolve(); return; }
    srv.child.once('exit', () => resolve());
    try { process.kill(srv.pid, signal); } catch (_) { resolve(); }
  });
}

/** Restarts on the same port (after a kill). Retries a few times while the port is released. */
async function restartServer(srv) {
  let last;
  for (let i = 0; i < 20; i++) {
    try { return await startServer(srv.dir, { port: srv.port }); } catch (e) { last = e; await sleep(250); }
  }
  throw last;
}

// ---- the browser ------------------------------------------------------------

async function launch() {
  const { chromium } = require('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM, timeout: 60000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
}

/**
 * A fresh context and page on the server's page. Every request the page makes
 * is recorded in `requests`; `foreign()` lists those that left the origin.
 */
async function openPage(browser, srv, opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 }, ...opts });
  const page = await ctx.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  // Console errors count, except the browser's own line for each failed request
  // (expected while a test has the server killed, or answers an error status).
  page.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(new Error(m.text()));
  });
  await page.goto(srv.origin + '/');
  return {
    ctx, page, requests, errors,
    foreign: () => requests.map((r) => r.url()).filter((u) => !u.startsWith(srv.origin + '/')),
  };
}

/** Upload throughput limit for a page, in bytes per second (CDP). */
async function throttle(page, bytesPerSecond) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: bytesPerSecond,
  });
  return cdp;
}

/** A real drop of files and folders from disk on the drop zone (CDP Input.dispatchDragEvent). */
async function dropPaths(page, paths) {
  const box = await page.locator('#drop-zone').boundingBox();
  const x = box.x + box.width / 2, y = box.y + box.height / 2;
  const cdp = await page.context().newCDPSession(page);
  const data = { items: [], files: paths, dragOperationsMask: 1 };
  for (const type of ['dragEnter', 'dragOver', 'drop']) {
    await cdp.send('Input.dispatchDragEvent', { type, x, y, data });
  }
  await cdp.detach();
}

/** Waits until every queued row has a final status; returns {name: status}. */
async function waitAllFinal(page, count, timeout = 50000) {
  await page.waitForFunction((n) => {
    const rows = document.querySelectorAll('[data-name]');
    if (rows.length !== n) return false;
    for (const r of rows) if (!['saved', 'duplicate', 'error'].includes(r.dataset.status)) return false;
    return true;
  }, count, { timeout, polling: 200 });
  return page.evaluate(() => {
    const o = {};
    for (const r of document.querySelectorAll('[data-name]')) o[r.dataset.name] = r.dataset.status;
    return o;
  });
}

async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// ---- data ------------------------------------------------------------------

function tempDir(tag, { memory = false } = {}) {
  // Many small files: in memory (tmpfs) where there is one; unlinking 10,000
  // files on a busy disk took 30 s here.
  const base = memory && fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  return fs.mkdtempSync(path.join(base, 'tinydrop-browser-' + tag + '-'));
}
function rmrf(p) { fs.rmSync(p, { recursive: true, force: true }); }

/** Seeded xorshift128+ bytes, streamed to `file` in 1 MiB writes; resolves to its sha256. */
async function writeSeeded(file, size, seed = 1) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  let s0 = BigInt(seed) * 0x9E3779B97F4A7C15n & 0xFFFFFFFFFFFFFFFFn | 1n;
  let s1 = (BigInt(seed) + 0x632BE59BD9B4E019n) & 0xFFFFFFFFFFFFFFFFn;
  // BigInt is slow: draw one 64-bit seed per 4 KiB block and fill the block with a fast 32-bit xorshift.
  const buf = Buffer.allocUnsafe(MiB);
  try {
    let left = size;
    while (left > 0) {
      const n = Math.min(left, MiB);
      for (let off = 0; off < n; off += 4096) {
        let x1 = s1; const y = s0; s0 = x1; x1 ^= (x1 << 23n) & 0xFFFFFFFFFFFFFFFFn;
        s1 = x1 ^ y ^ (x1 >> 17n) ^ (y >> 26n);
        let x = Number(s1 & 0xFFFFFFFFn) | 1;
        const end = Math.min(n, off + 4096);
        let i = off;
        for (; i + 4 <= end; i += 4) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; buf.writeInt32LE(x | 0, i); }
        for (; i < end; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; buf[i] = x & 0xff; }
      }
      const chunk = buf.subarray(0, n);
      hash.update(chunk);
      fs.writeSync(fd, chunk);
      left -= n;
    }
  } finally { fs.closeSync(fd); }
  return hash.digest('hex');
}

function writeText(file, text) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return crypto.createHash('sha256').update(text).digest('hex');
}

function sha256File(file) {
  return new Promise((resolve, reject) => {
    const h = crypto.createHash('sha256');
    fs.createReadStream(file).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
  });
}

/** {relative path: sha256} of every file under dir, skipping `.tinydrop/` at the top. */
async function hashTree(dir) {
  const out = {};
  async function walk(d, rel) {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? rel + '/' + e.name : e.name;
      if (!rel && e.name === '.tinydrop') continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p, r);
      else if (e.isFile()) out[r] = await sha256File(p);
    }
  }
  await walk(dir, '');
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A TCP proxy in front of the server that, once, stops forwarding a request
 * body after `afterBytes` bytes of one connection (the connection stays open:
 * a stall, as Safari sometimes produces). When the client gives up and closes
 * its side, the proxy closes the server side too, as a real cut would.
 */
function stallProxy(target, afterBytes) {
  const net = require('node:net');
  const state = { stalled: false, conns: new Set(), held: null };
  const server = net.createServer((client) => {
    // The page gave up on the stalled request and came back: cut the held
    // pair, as the browser's abort would have (a paused socket may not notice).
    if (state.held) { for (const c of state.held) c.destroy(); state.held = null; }
    const upstream = net.connect(target, '127.0.0.1');
    state.conns.add(client); state.conns.add(upstream);
    let sent = 0;
    client.on('data', (d) => {
      if (!state.stalled && sent + d.length > afterBytes) {
        // Stop reading: TCP back-pressure stops the browser's sending, so no
        // progress events and no error, until the watchdog acts.
        state.stalled = true;
        state.held = [client, upstream];
        upstream.write(d.subarray(0, Math.max(0, afterBytes - sent)));
        client.pause();
        return;
      }
      sent += d.length;
      upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on('close', close); upstream.on('close', close);
    client.on('error', close); upstream.on('error', close);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ port: server.address().port, origin: `http://127.0.0.1:${server.address().port}`, state,
      close: () => new Promise((r) => { for (const c of state.conns) c.destroy(); server.close(() => r()); }) });
  }));
}

module.exports = {
  ROOT, BIN, SHOTS, MiB, startServer, killServer, restartServer, launch, openPage, throttle,
  dropPaths, waitAllFinal, screenshot, tempDir, rmrf, writeSeeded, writeText, sha256File,
  hashTree, sleep, stallProxy,
};
