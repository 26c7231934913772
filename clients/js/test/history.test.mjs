// The history API through the client, against the real hub: `history` (changes oldest
// first, removals, projected fields, times as Date / ms / string, the hub's pages followed,
// `limit` and its `next`), `series` (points per step) and `stateAt` (the state as it was),
// and the errors: bad times and pointers, a time older than the history kept, a topic the
// token may not read.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import WebSocket from 'ws';
import { connect } from '../statecast.js';
import { startHub, makeDataDir, removeDir, rest } from '../test-support/hub.mjs';

let hub;
let authHub;
let dataDir;
let c;

before(async () => {
  dataDir = await makeDataDir();
  hub = await startHub({ dataDir: path.join(dataDir, 'data') });
  const config = path.join(dataDir, 'auth.toml');
  await writeFile(config, '[[auth.keys]]\nname = "js-history"\nkey = "s3cret"\nread = ["a/#"]\nwrite = ["a/#", "b/#"]\n');
  authHub = await startHub({ dataDir: path.join(dataDir, 'auth-data'), args: ['--config', config] });
  c = connect(hub.base, { WebSocket });
});

after(async () => {
  if (c) c.close();
  if (hub) await hub.stop();
  if (authHub) await authHub.stop();
  await removeDir(dataDir);
});

async function write(base, method, topic, body, headers) {
  const res = await rest(base, method, `/api/state/${topic}`, body, headers);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const ms = (time) => Date.parse(time);

test('history lists every change oldest first, removals too, and the projected fields', async () => {
  const topic = 'hist/mic';
  await write(hub.base, 'PUT', topic, { battery: 80, rf: -60, name: 'SHURE001' });
  await write(hub.base, 'PATCH', topic, { battery: 79 });
  await write(hub.base, 'DELETE', topic);
  await write(hub.base, 'PUT', topic, { battery: 90 });

  const changes = await c.history(topic);
  assert.deepEqual(
    changes.map(({ time, ...rest }) => rest),
    [
      { rev: 1, state: { battery: 80, rf: -60, name: 'SHURE001' } },
      { rev: 2, state: { battery: 79, rf: -60, name: 'SHURE001' } },
      { rev: 3, removed: true },
      { rev: 4, state: { battery: 90 } },
    ],
  );
  for (const change of changes) assert.match(change.time, RFC3339_MS);
  for (let i = 1; i < changes.length; i++) assert.ok(ms(changes[i].time) >= ms(changes[i - 1].time));
  assert.equal(changes.next, undefined, 'every change is in');

  const projected = await c.history(topic, { fields: ['/battery', '/rf'] });
  assert.deepEqual(
    projected.map(({ time, ...rest }) => rest),
    [
      { rev: 1, state: { '/battery': 80, '/rf': -60 } },
      { rev: 2, state: { '/battery': 79, '/rf': -60 } },
      { rev: 3, removed: true },
      { rev: 4, state: { '/battery': 90 } },
    ],
  );
  assert.deepEqual(await c.history(topic, { fields: '/battery,/rf' }), projected);

  // A duration before now, as the hub reads it.
  assert.deepEqual((await c.history(topic, { from: '-1h' })).map((x) => x.rev), [1, 2, 3, 4]);
});

test('from and to take a Date, Unix ms or RFC 3339, and bound the changes', async () => {
  const topic = 'hist/bounds';
  for (let i = 1; i <= 5; i++) await write(hub.base, 'PUT', topic, { n: i });
  const all = await c.history(topic);
  assert.equal(all.length, 5);
  const t = ms(all[2].time); // the third change's time
  const byDate = await c.history(topic, { from: new Date(t) });
  // `from` is inclusive: every change at that time or later is in, none before it.
  assert.deepEqual(byDate, all.filter((x) => ms(x.time) >= t));
  assert.ok(byDate.some((y) => y.rev === 3));
  assert.deepEqual(await c.history(topic, { from: all[2].time }), byDate, 'the same as RFC 3339');
  assert.deepEqual(await c.history(topic, { from: t }), byDate, 'the same as Unix ms');

  // `to`: none after it, every one before it (whether one at that very time is in, the
  // contract does not say).
  const upTo = await c.history(topic, { to: t });
  assert.ok(upTo.every((x) => ms(x.time) <= t), JSON.stringify(upTo));
  for (const x of all.filter((x) => ms(x.time) < t)) assert.ok(upTo.some((y) => y.rev === x.rev), `rev ${x.rev}`);
});

test('a long history is read page after page; limit stops it and says where the rest begins', async () => {
  const topic = 'hist/many';
  const n = 1005; // more than the hub's default page of 1000
  for (let i = 1; i <= n; i++) await write(hub.base, 'PUT', topic, { n: i });
  const all = await c.history(topic);
  assert.equal(all.length, n);
  assert.deepEqual(all.map((x) => x.rev), Array.from({ length: n }, (_, i) => i + 1));
  assert.deepEqual(all.at(-1).state, { n });
  assert.equal(all.next, undefined);

  const first = await c.history(topic, { limit: 3 });
  assert.deepEqual(first.map((x) => x.rev), [1, 2, 3]);
  assert.equal(typeof first.next, 'string', 'a limit before the end gives a next');
  const rest = await c.history(topic, { from: first.next });
  assert.deepEqual(rest.map((x) => x.rev), Array.from({ length: n - 3 }, (_, i) => i + 4));
  const many = await c.history(topic, { limit: 1002 });
  assert.equal(many.length, 1002);
  assert.equal(typeof many.next, 'string');
});

test('series gives the points of a numeric field per step', async () => {
  const topic = 'hist/series';
  for (const battery of [80, 70, 90]) await write(hub.base, 'PUT', topic, { battery, name: 'x' });
  const changes = await c.history(topic);
  const from = ms(changes[0].time);
  const to = ms(changes.at(-1).time) + 1;
  const points = await c.series(topic, '/battery', { from, to, step: '1h' });
  assert.ok(points.length >= 1, JSON.stringify(points));
  for (const p of points) {
    assert.equal(typeof p.t, 'number');
    assert.deepEqual(Object.keys(p).sort(), ['avg', 'changes', 'last', 'max', 'min', 't']);
  }
  assert.equal(points.reduce((sum, p) => sum + p.changes, 0), 3);
  const held = points.filter((p) => p.min !== null);
  assert.equal(Math.min(...held.map((p) => p.min)), 70);
  assert.equal(Math.max(...held.map((p) => p.max)), 90);
  assert.equal(points.at(-1).last, 90);
  const avg = points.at(-1).avg;
  assert.ok(avg >= 70 && avg <= 90, `avg ${avg}`);
  // The step as a number of ms, the times as Dates and RFC 3339: the same points.
  assert.deepEqual(await c.series(topic, '/battery', { from: new Date(from), to: new Date(to), step: 3600000 }), points);
  assert.deepEqual(
    await c.series(topic, '/battery', { from: changes[0].time, to: new Date(to).toISOString(), step: '60m' }),
    points,
  );
});

test('stateAt gives the state as it was, not_found before the topic, gone before the history', async () => {
  const topic = 'hist/at';
  await write(hub.base, 'PUT', topic, { v: 1 });
  await write(hub.base, 'PUT', topic, { v: 2 });
  await write(hub.base, 'DELETE', topic);
  await write(hub.base, 'PUT', topic, { v: 4 });
  const changes = await c.history(topic);
  for (const change of changes) {
    // The state at a change's time is that of the last change at or before it.
    const last = changes.filter((x) => ms(x.time) <= ms(change.time)).at(-1);
    const asked = [change.time, ms(change.time), new Date(ms(change.time))];
    for (const at of asked) {
      if (last.removed) {
        await assert.rejects(c.stateAt(topic, at), (err) => err.code === 'not_found', `at ${at}`);
        continue;
      }
      const then = await c.stateAt(topic, at);
      assert.deepEqual({ ...then, time: undefined }, { topic, rev: last.rev, state: last.state, time: undefined });
      assert.equal(then.time, last.time);
    }
  }
  assert.deepEqual((await c.stateAt(topic, new Date())).state, { v: 4 });
  await assert.rejects(c.stateAt(topic, ms(changes[0].time) - 1), (err) => err.code === 'not_found');
  await assert.rejects(c.stateAt(topic, '-7d'), (err) => err.code === 'gone', 'older than the 24h kept');
});

test('bad times, pointers and steps are bad_request; a topic the token may not read is forbidden', async () => {
  await write(hub.base, 'PUT', 'hist/bad', { battery: 1 });
  const badRequest = (err) => err.code === 'bad_request' && typeof err.message === 'string';
  await assert.rejects(c.history('hist/bad', { from: 'yesterday' }), badRequest);
  await assert.rejects(c.history('hist/bad', { fields: ['battery'] }), badRequest);
  await assert.rejects(c.series('hist/bad', '/battery', { step: 'often' }), badRequest);
  await assert.rejects(c.stateAt('hist/bad', 'then'), badRequest);
  // What the client itself refuses, before asking.
  await assert.rejects(c.history('hist/bad', { limit: 0 }), TypeError);
  await assert.rejects(c.history('hist/bad', { from: new Date('nope') }), TypeError);
  await assert.rejects(c.series('hist/bad', '/battery', { step: 1.5 }), TypeError);
  await assert.rejects(c.stateAt('hist/bad'), TypeError);

  const auth = { Authorization: 'Bearer s3cret' };
  await write(authHub.base, 'PUT', 'a/seen', { x: 1 }, auth);
  await write(authHub.base, 'PUT', 'b/hidden', { x: 2 }, auth); // may write, may not read
  const withToken = connect(authHub.base, { WebSocket, token: 's3cret' });
  const without = connect(authHub.base, { WebSocket });
  try {
    assert.deepEqual((await withToken.history('a/seen')).map((x) => x.state), [{ x: 1 }]);
    assert.deepEqual((await withToken.stateAt('a/seen', new Date())).state, { x: 1 });
    await assert.rejects(withToken.history('b/hidden'), (err) => err.code === 'forbidden');
    await assert.rejects(withToken.series('b/hidden', '/x', { step: '1m' }), (err) => err.code === 'forbidden');
    await assert.rejects(withToken.stateAt('b/hidden', new Date()), (err) => err.code === 'forbidden');
    await assert.rejects(without.history('a/seen'), (err) => err.code === 'unauthorized');
  } finally {
    withToken.close();
    without.close();
  }
});
