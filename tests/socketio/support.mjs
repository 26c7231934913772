// Helpers for the Socket.IO tests: the real hub with a config file, the stock
// socket.io-client, an event recorder with bounded waits, and a tiny device HTTP server.
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { io } from 'socket.io-client';
import { makeDataDir, removeDir, startHub } from '../../clients/js/test-support/hub.mjs';

export { rest, waitFor } from '../../clients/js/test-support/hub.mjs';

/** Starts the hub with `config` (TOML text) in a fresh data dir; `stop()` also removes it. */
export async function hubWith(config = '', { port, dir } = {}) {
  dir = dir || (await makeDataDir());
  const file = path.join(dir, 'statecast.toml');
  await writeFile(file, config);
  const hub = await startHub({ port, dataDir: path.join(dir, 'data'), args: ['--config', file] });
  return {
    ...hub,
    dir,
    stop: (signal) => hub.stop(signal),
    async close() {
      await hub.stop();
      await removeDir(dir);
    },
  };
}

/**
 * A stock socket.io-client socket that records every event it gets, in order.
 * `opts` go to `io()` unchanged (transports, auth, extraHeaders, ...).
 */
export function connect(base, opts = {}) {
  const socket = io(base, { reconnectionDelay: 100, reconnectionDelayMax: 500, ...opts });
  const events = [];
  const waiters = new Set();
  const note = (name, args) => {
    events.push({ name, args });
    for (const w of waiters) w.check();
  };
  socket.onAny((name, ...args) => note(name, args));
  for (const name of ['connect', 'connect_error', 'disconnect']) {
    socket.on(name, (...args) => note(`:${name}`, args));
  }
  /**
   * Resolves with the first recorded event from index `from` named `name` whose first
   * argument passes `pred`; fails after `timeout` ms.
   */
  socket.next = (name, pred = () => true, { from = 0, timeout = 10000 } = {}) =>
    new Promise((resolve, reject) => {
      const w = {
        check() {
          const i = events.findIndex((e, at) => at >= from && e.name === name && pred(e.args[0]));
          if (i >= 0) {
            waiters.delete(w);
            clearTimeout(w.timer);
            resolve({ ...events[i], index: i });
          }
        },
      };
      w.timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`timed out after ${timeout} ms waiting for ${name}; got ${JSON.stringify(events.map((e) => e.name))}`));
      }, timeout);
      waiters.add(w);
      w.check();
    });
  socket.events = events;
  /** Emits `name` with `data` and resolves with the acknowledgement (bounded). */
  socket.ask = (name, ...data) => socket.timeout(10000).emitWithAck(name, ...data);
  return socket;
}

/** Resolves once `socket` is connected (bounded); rejects on a connect_error. */
export function connected(socket, timeout = 10000) {
  if (socket.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('not connected in time')), timeout);
    socket.once('connect', () => { clearTimeout(timer); resolve(); });
    socket.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
  });
}

/** Resolves with the `connect_error` the socket gets (bounded). */
export function refused(socket, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no connect_error in time')), timeout);
    socket.once('connect', () => { clearTimeout(timer); reject(new Error('connected, expected a refusal')); });
    socket.once('connect_error', (err) => { clearTimeout(timer); resolve(err); });
  });
}

/**
 * A device HTTP server on an ephemeral port: records each request `{method, url, body}`
 * and answers with `answer(request)` → `{status, body}` (default 200 `{"done": true}`).
 */
export async function device(answer = () => ({ status: 200, body: { done: true } })) {
  const requests = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (d) => { text += d; });
    req.on('end', () => {
      const request = { method: req.method, url: req.url, body: text ? JSON.parse(text) : undefined };
      requests.push(request);
      const { status, body } = answer(request);
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    requests,
    port: server.address().port,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}
