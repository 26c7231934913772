// A refused origin against the real hub, from Node: a WebSocket and fetch that send the
// `Origin` a browser page would. The client must say `origin_refused` (status and one
// error) and not poll; a hub that is down must still read as down (`polling`).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect } from '../statecast.js';
import { startHub, makeDataDir, removeDir, waitFor, freePort } from '../test-support/hub.mjs';

const ORIGIN = 'http://elsewhere.example:3000';
const clients = [];
let hub;
let dataDir;

after(async () => {
  for (const c of clients) c.close();
  if (hub) await hub.stop();
  await removeDir(dataDir);
});

/** What a page on ORIGIN sends: the socket and every request carry its Origin. */
let attempts = 0;
class PageWebSocket extends WebSocket {
  constructor(url) {
    super(url, { origin: ORIGIN });
    attempts++;
  }
}
const pageFetch = (url, init = {}) => fetch(url, { ...init, headers: { ...init.headers, Origin: ORIGIN } });

function pageClient(base) {
  const errors = [];
  const statuses = [];
  const c = connect(base, { WebSocket: PageWebSocket, fetch: pageFetch, backoffMin: 20, backoffMax: 100, pollAfterFailures: 1 });
  c.on('error', (e) => errors.push(e));
  c.on('status', (s) => statuses.push(s));
  clients.push(c);
  return { c, errors, statuses };
}

test('GET /api/origin gives the verdict on the asking origin, readable by any page', async () => {
  dataDir = await makeDataDir();
  hub = await startHub({ dataDir });
  const refused = await fetch(`${hub.base}/api/origin`, { headers: { Origin: ORIGIN } });
  assert.equal(refused.status, 200);
  assert.equal(refused.headers.get('access-control-allow-origin'), '*');
  const body = await refused.json();
  assert.equal(body.allowed, false);
  assert.equal(body.origin, ORIGIN);
  assert.match(body.message, /allowed_origins/);
  const own = await (await fetch(`${hub.base}/api/origin`, { headers: { Origin: hub.base } })).json();
  assert.deepEqual(own, { origin: hub.base, allowed: true });
  const none = await (await fetch(`${hub.base}/api/origin`)).json();
  assert.deepEqual(none, { origin: null, allowed: true });
});

test('a refused origin is origin_refused, reported once, and not polled', async () => {
  const { c, errors, statuses } = pageClient(hub.base);
  await waitFor(() => c.status === 'origin_refused', { what: 'status origin_refused' });
  // Several more refused attempts (backoff ≤ 100 ms): still one error, never polling.
  const seen = attempts;
  await waitFor(() => attempts >= seen + 4, { what: 'four more attempts' });
  assert.equal(c.status, 'origin_refused');
  assert.ok(!statuses.includes('polling'), JSON.stringify(statuses));
  const refusals = errors.filter((e) => e.code === 'origin_refused');
  assert.equal(refusals.length, 1, errors.map((e) => e.message).join('; '));
  assert.match(refusals[0].message, new RegExp(`add "${ORIGIN}" to allowed_origins`));
});

test('a hub that is down still reads as down, not as a refused origin', async () => {
  const port = await freePort();
  const { c, errors } = pageClient(`http://127.0.0.1:${port}`);
  await waitFor(() => c.status === 'polling', { what: 'status polling' });
  assert.ok(!errors.some((e) => e.code === 'origin_refused'));
  await assert.rejects(c.patch('x/y', { a: 1 }), (e) => e.code === 'unreachable');
});
