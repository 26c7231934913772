import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import { connect } from '../statecast.js';
import { startHub, makeDataDir, removeDir, waitFor, rest, freePort } from '../test-support/hub.mjs';

let hub;
let dataDir;
let client;
let fake;

after(async () => {
  if (client) client.close();
  if (fake) { fake.closeAllConnections(); fake.close(); }
  if (hub) await hub.stop();
  await removeDir(dataDir);
});

// A stand-in for the hub that only serves the REST state list and refuses WebSocket upgrades.
function startFake(port, topics) {
  const requests = [];
  const etag = '"fake-1"';
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    requests.push({ url: req.url, ifNoneMatch: req.headers['if-none-match'], auth: req.headers.authorization });
    if (req.method === 'GET' && url.pathname === '/api/state') {
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { ETag: etag });
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json', ETag: etag });
      res.end(JSON.stringify({ topics: topics.filter((t) => t.topic.startsWith(url.searchParams.get('match').replace('#', ''))) }));
      return;
    }
    res.writeHead(503, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'unavailable', message: 'fake hub' } }));
  });
  server.on('upgrade', (req, socket) => {
    requests.push({ url: req.url, upgrade: true });
    socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({ server, requests }));
  });
}

test('5. polling fallback while the WebSocket is refused, back to open afterwards', { timeout: 120000 }, async () => {
  dataDir = await makeDataDir();
  const port = await freePort();
  hub = await startHub({ port, dataDir });
  await rest(hub.base, 'PUT', '/api/state/poll/a', { v: 'real' });
  await rest(hub.base, 'PUT', '/api/state/poll/gone', { v: 'soon gone' });

  const fetchLog = [];
  const recordingFetch = (url, init) => {
    fetchLog.push({ url: String(url), at: Date.now() });
    return fetch(url, init);
  };
  client = connect(hub.base, {
    WebSocket,
    fetch: recordingFetch,
    pollAfterFailures: 1,
    pollInterval: 200,
    backoffMin: 5000,
    backoffMax: 10000, // bounds how long the return to `open` may take in this test
  });
  const statuses = [];
  client.on('status', (s) => statuses.push(s));
  client.on('error', () => {});
  const seen = [];
  client.subscribe('poll/#', (topic, state, change) => seen.push({ topic, state, change }));
  await waitFor(() => client.status === 'open' && client.rev('poll/a') === 1 && client.rev('poll/gone') === 1, { what: 'initial sync' });

  await hub.stop('SIGTERM');
  hub = null;
  await waitFor(() => client.status !== 'open', { what: 'client notices the drop' });
  const f = await startFake(port, [
    { topic: 'poll/a', rev: 7, state: { v: 'polled' } },
    { topic: 'poll/new', rev: 1, state: { fresh: true } },
  ]);
  fake = f.server;

  await waitFor(() => client.status === 'polling', { what: 'status polling', timeout: 15000 });
  await waitFor(() => client.state('poll/a')?.v === 'polled', { what: 'polled state applied', timeout: 15000 });
  assert.equal(client.rev('poll/a'), 7);
  assert.deepEqual(client.state('poll/new'), { fresh: true });
  assert.equal(client.state('poll/gone'), undefined, 'a topic missing from the list is removed');
  assert.ok(seen.some((s) => s.topic === 'poll/a' && s.change.type === 'snapshot' && s.change.rev === 7));
  assert.ok(seen.some((s) => s.topic === 'poll/gone' && s.change.type === 'removed'));
  const pollReq = f.requests.find((r) => r.url.startsWith('/api/state?'));
  assert.equal(pollReq.url, '/api/state?match=poll%2F%23');
  // the next poll sends the ETag back and gets 304 (nothing re-applied)
  await waitFor(() => f.requests.some((r) => r.ifNoneMatch === '"fake-1"'), { what: 'If-None-Match', timeout: 5000 });
  assert.equal(seen.filter((s) => s.topic === 'poll/a' && s.change.rev === 7).length, 1);

  // the real hub comes back on the same port: the socket opens, polling stops
  fake.closeAllConnections();
  await new Promise((r) => fake.close(r));
  fake = null;
  hub = await startHub({ port, dataDir });
  await waitFor(() => client.status === 'open', { what: 'open again', timeout: 40000 });
  assert.equal(client._polling, false);
  const polls = () => fetchLog.filter((r) => r.url.includes('/api/state?match=')).length;
  const pollsAtOpen = polls();
  // resuming with since: rev 7 is ahead of the hub (1) so it sends a snapshot; poll/new never
  // existed there so it is removed; poll/gone was removed in the mirror, the hub still has it
  await waitFor(() => client.state('poll/a')?.v === 'real' && client.rev('poll/a') === 1, { what: 'resync of poll/a' });
  await waitFor(() => client.state('poll/new') === undefined, { what: 'poll/new removed' });
  const r = await client.set('poll/a', { v: 'after' }); // a WebSocket round trip
  assert.equal(r.rev, 2);
  await waitFor(() => client.rev('poll/a') === 2, { what: 'own write mirrored' });
  assert.ok(polls() <= pollsAtOpen + 1, 'no polling once open');
  assert.ok(statuses.includes('polling'));
  assert.equal(statuses[statuses.length - 1], 'open');
});
