// Test helpers: start/stop the real statecast hub binary, wait for conditions.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..', '..');
export const BIN = process.env.STATECAST_BIN || path.join(REPO, 'target', 'debug', 'statecast');

/** A free TCP port on 127.0.0.1 (listen on port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once `cond()` returns a truthy value (checked every `interval` ms). */
export async function waitFor(cond, { timeout = 10000, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

export async function makeDataDir() {
  return mkdtemp(path.join(os.tmpdir(), 'statecast-js-'));
}

export async function removeDir(dir) {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/**
 * Starts `statecast serve` on `port` with `dataDir` and waits until /api/health answers.
 * Returns { child, port, base, stop() }.
 */
export async function startHub({ port, dataDir, args = [] }) {
  port = port || (await freePort());
  const base = `http://127.0.0.1:${port}`;
  let lastErr;
  for (let tryNo = 0; tryNo < 5; tryNo++) {
    const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
      if (stderr.length > 20000) stderr = stderr.slice(-10000);
    });
    let exited = false;
    const exit = new Promise((resolve) => child.once('exit', (code, signal) => { exited = true; resolve({ code, signal }); }));
    child.once('error', (err) => { lastErr = err; });
    try {
      await waitFor(async () => {
        if (exited) throw new Error(`hub exited early: ${stderr.slice(-2000)}`);
        const res = await fetch(`${base}/api/health`);
        return res.ok;
      }, { timeout: 15000, what: 'hub health', interval: 25 });
    } catch (err) {
      lastErr = err;
      if (!exited) { child.kill('SIGKILL'); await exit; }
      continue; // e.g. the port is still held by the previous process
    }
    const hub = {
      child,
      port,
      base,
      exit,
      get stderr() { return stderr; },
      /** SIGTERM (then SIGKILL after 10 s) and wait for the exit. */
      async stop(signal = 'SIGTERM') {
        if (exited) return exit;
        child.kill(signal);
        const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 10000);
        const r = await exit;
        clearTimeout(timer);
        return r;
      },
    };
    return hub;
  }
  throw lastErr || new Error('could not start the hub');
}

/** JSON REST helper against a hub base URL. Returns { status, headers, body }. */
export async function rest(base, method, p, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + p, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}
