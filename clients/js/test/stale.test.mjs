// Staleness through the client, against the real hub with a `stale_after` of 300 ms: a
// silent topic turns stale (flag, time, a `stale` change), an unchanged write makes it
// fresh again, a change freshens it before its patch, a late subscriber's snapshot says it
// is stale, and a client that only polls sees the same turns.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import WebSocket from 'ws';
import { connect } from '../statecast.js';
import { startHub, makeDataDir, removeDir, waitFor, rest } from '../test-support/hub.mjs';

let hub;
let dataDir;
const clients = [];

before(async () => {
  dataDir = await makeDataDir();
  const config = path.join(dataDir, 'statecast.toml');
  // The polled topic's second is time for several polls (every 50 ms) while it is fresh.
  await writeFile(
    config,
    '[[topics]]\nmatch = "dev/+"\nstale_after = "300ms"\n\n[[topics]]\nmatch = "polled/+"\nstale_after = "1s"\n',
  );
  hub = await startHub({ dataDir: path.join(dataDir, 'data'), args: ['--config', config] });
});

after(async () => {
  for (const c of clients) c.close();
  if (hub) await hub.stop();
  await removeDir(dataDir);
});

/** A client subscribed to `pattern`, recording every change it is given. */
function watching(pattern, opts = {}) {
  const c = connect(hub.base, { WebSocket, ...opts });
  clients.push(c);
  c.seen = [];
  c.subscribe(pattern, (topic, state, change) => c.seen.push({ topic, state, ...change }));
  return c;
}

const turns = (c, topic) => c.seen.filter((s) => s.topic === topic && s.type === 'stale');

test('a silent topic turns stale and fresh again, with the time of its last write', async () => {
  const c = watching('dev/#');
  await waitFor(() => c.status === 'open', { what: 'open' });
  const topic = 'dev/esp32-01';
  assert.equal((await rest(hub.base, 'PUT', `/api/state/${topic}`, { uptime: 1 })).status, 200);
  const { time } = (await rest(hub.base, 'GET', `/api/state/${topic}`)).body;

  await waitFor(() => turns(c, topic).length === 1, { what: 'the turn to stale' });
  const [stale] = turns(c, topic);
  assert.deepEqual(stale, { topic, state: { uptime: 1 }, type: 'stale', rev: 1, stale: true, since: time });
  assert.equal(c.isStale(topic), true);
  assert.equal(c.staleSince(topic), time);
  assert.deepEqual(c.state(topic), { uptime: 1 });

  // A late subscriber's snapshot says it is stale; since when, only a `stale` message says.
  const late = watching(topic);
  await waitFor(() => late.seen.length === 1, { what: 'the late snapshot' });
  assert.deepEqual(late.seen[0], { topic, state: { uptime: 1 }, type: 'snapshot', rev: 1, stale: true });
  assert.equal(late.isStale(topic), true);
  assert.equal(late.staleSince(topic), undefined);

  // The device repeats its state: fresh again, no new rev.
  const same = await c.set(topic, { uptime: 1 });
  assert.equal(same.changed, false);
  await waitFor(() => turns(c, topic).length >= 2, { what: 'the turn to fresh' });
  const fresh = turns(c, topic)[1];
  assert.equal(fresh.stale, false);
  assert.equal(fresh.rev, 1);
  assert.ok(fresh.since > time, `${fresh.since} is the unchanged write's time`);
  assert.equal(c.isStale(topic), false);
  assert.equal(c.staleSince(topic), undefined);
  await waitFor(() => turns(late, topic).some((t) => t.stale === false), { what: 'the late client to see it fresh' });

  // Silent again, then a change: fresh first, then the patch.
  await waitFor(() => turns(c, topic).length >= 3, { what: 'stale again' });
  const before = c.seen.length;
  await c.patch(topic, { uptime: 2 });
  await waitFor(() => c.seen.length >= before + 2, { what: 'fresh and the patch' });
  const [first, second] = c.seen.slice(before);
  assert.deepEqual([first.type, first.stale], ['stale', false]);
  assert.deepEqual([second.type, second.rev, second.state], ['patch', 2, { uptime: 2 }]);

  // A topic no policy matches never turns stale.
  await rest(hub.base, 'PUT', '/api/state/dev/x/y', 1);
  await waitFor(() => turns(c, topic).length >= 5, { what: 'the policy topic stale a third time' });
  assert.equal(c.isStale('dev/x/y'), false);
  assert.equal(turns(c, 'dev/x/y').length, 0);
});

test('a client that only polls sees a topic turn stale and fresh', async () => {
  const topic = 'polled/plug';
  // A WebSocket that never connects: the client falls back to polling the REST state.
  class Refused {
    constructor() {
      setTimeout(() => this.onclose?.({}), 0);
    }
    send() {}
    close() {}
  }
  const c = watching('polled/+', { WebSocket: Refused, pollAfterFailures: 1, pollInterval: 50, backoffMin: 1000 });
  await waitFor(() => c.status === 'polling', { what: 'polling' });
  await rest(hub.base, 'PUT', `/api/state/${topic}`, { on: true });
  await waitFor(() => c.state(topic), { what: 'the first poll' });
  await waitFor(() => c.isStale(topic) === true, { what: 'the poll to see it stale' });
  // The device repeats its state: the same rev, fresh again, then stale again.
  await rest(hub.base, 'PUT', `/api/state/${topic}`, { on: true });
  await waitFor(() => c.isStale(topic) === false, { what: 'the poll to see it fresh' });
  await waitFor(() => c.isStale(topic) === true, { what: 'the poll to see it stale again' });
  assert.deepEqual(turns(c, topic).slice(-2), [
    { topic, state: { on: true }, type: 'stale', rev: 1, stale: false },
    { topic, state: { on: true }, type: 'stale', rev: 1, stale: true },
  ]);
  assert.equal(c.staleSince(topic), undefined, 'a poll does not say since when');
});
