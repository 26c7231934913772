import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect, applyMergePatch, matchTopic } from '../statecast.js';
import { startHub, makeDataDir, removeDir, waitFor, rest } from '../test-support/hub.mjs';

let hub;
let dataDir;
const clients = [];

function client(opts = {}) {
  const sent = [];
  class RecordingWebSocket extends WebSocket {
    send(data, ...rest) {
      sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  }
  const c = connect(hub.base, { WebSocket: RecordingWebSocket, ...opts });
  c.sent = sent;
  clients.push(c);
  return c;
}

before(async () => {
  dataDir = await makeDataDir();
  hub = await startHub({ dataDir });
});

after(async () => {
  for (const c of clients) c.close();
  if (hub) await hub.stop();
  await removeDir(dataDir);
});

test('applyMergePatch follows RFC 7396', () => {
  const cases = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, expected] of cases) {
    const copy = JSON.parse(JSON.stringify(target));
    assert.deepEqual(applyMergePatch(target, patch), expected);
    assert.deepEqual(target, copy, 'target is not modified');
  }
});

test('matchTopic handles + and #', () => {
  assert.ok(matchTopic('micboard/+/battery', 'micboard/SHURE001/battery'));
  assert.ok(!matchTopic('micboard/+/battery', 'micboard/SHURE001/x/battery'));
  assert.ok(matchTopic('micboard/#', 'micboard'));
  assert.ok(matchTopic('micboard/#', 'micboard/a/b'));
  assert.ok(!matchTopic('micboard/#', 'micboardx'));
  assert.ok(matchTopic('#', 'a/b/c'));
  assert.ok(matchTopic('a/b', 'a/b'));
  assert.ok(!matchTopic('a/b', 'a/b/c'));
  assert.ok(!matchTopic('a/+', 'a'));
});

test('URLs: http base and ws URL derive from each other', () => {
  const a = connect('http://127.0.0.1:1/', { WebSocket: class { constructor() { throw new Error('x'); } } });
  a.close();
  assert.deepEqual(a._urls, { wsUrl: 'ws://127.0.0.1:1/ws', httpBase: 'http://127.0.0.1:1' });
  const b = connect('wss://example.invalid/hub/ws', { WebSocket: class { constructor() { throw new Error('x'); } } });
  b.close();
  assert.deepEqual(b._urls, { wsUrl: 'wss://example.invalid/hub/ws', httpBase: 'https://example.invalid/hub' });
});

test('1. initial state arrives as a snapshot', async () => {
  await rest(hub.base, 'PUT', '/api/state/init/dev1', { temp: 21, on: true });
  const c = client();
  const seen = [];
  c.subscribe('init/#', (topic, state, change) => seen.push({ topic, state, change }));
  await waitFor(() => seen.length === 1, { what: 'snapshot' });
  assert.equal(seen[0].topic, 'init/dev1');
  assert.equal(seen[0].change.type, 'snapshot');
  assert.equal(seen[0].change.rev, 1);
  assert.deepEqual(seen[0].state, { temp: 21, on: true });
  assert.deepEqual(c.state('init/dev1'), { temp: 21, on: true });
  await waitFor(() => c.status === 'open', { what: 'open' });

  // a second callback on an overlapping pattern gets the mirrored state locally
  const second = [];
  const off = c.subscribe('init/+', (topic, state, change) => second.push({ topic, state, change }));
  await waitFor(() => second.length === 1, { what: 'local snapshot' });
  assert.deepEqual(second[0].state, { temp: 21, on: true });
  off();
  assert.ok(c.sent.some((m) => m.type === 'unsubscribe' && m.patterns[0] === 'init/+'));
  assert.deepEqual(c.state('init/dev1'), { temp: 21, on: true }, 'still mirrored through init/#');
});

test('2. writes by another client arrive as patches', async () => {
  const c = client();
  const seen = [];
  c.subscribe('p/+', (topic, state, change) => seen.push({ topic, state, change }));
  await waitFor(() => c.status === 'open', { what: 'open' });
  await rest(hub.base, 'PUT', '/api/state/p/x', { a: 1, b: { c: 2 } });
  await waitFor(() => seen.length === 1, { what: 'creation snapshot' });
  assert.equal(seen[0].change.type, 'snapshot');
  await rest(hub.base, 'PATCH', '/api/state/p/x', { b: { c: 3, d: 4 } });
  await rest(hub.base, 'PUT', '/api/state/p/x', { a: 2, b: { c: 3, d: 4 } });
  await rest(hub.base, 'PATCH', '/api/state/p/x', { a: null });
  const final = await rest(hub.base, 'GET', '/api/state/p/x');
  await waitFor(() => c.rev('p/x') === final.body.rev, { what: 'final rev' });
  assert.deepEqual(c.state('p/x'), final.body.state);
  assert.deepEqual(c.state('p/x'), { b: { c: 3, d: 4 } });
  const patches = seen.filter((s) => s.change.type === 'patch');
  assert.ok(patches.length >= 2, `patches seen: ${JSON.stringify(seen)}`);
  assert.deepEqual(patches[0].change.patch, { b: { c: 3, d: 4 } });
  assert.deepEqual(seen.map((s) => s.change.rev), [1, 2, 3, 4]);

  // removal
  await rest(hub.base, 'DELETE', '/api/state/p/x');
  await waitFor(() => seen.length === 5, { what: 'removed' });
  assert.equal(seen[4].change.type, 'removed');
  assert.equal(seen[4].state, undefined);
  assert.equal(c.state('p/x'), undefined);
});

test('3. a gap makes the client send get and resync', async () => {
  const c = client();
  const statuses = [];
  c.on('status', (s) => statuses.push(s));
  const seen = [];
  c.subscribe('gap/#', (topic, state, change) => seen.push({ topic, state, change }));
  await rest(hub.base, 'PUT', '/api/state/gap/t', { v: 1 });
  await waitFor(() => c.rev('gap/t') === 1, { what: 'snapshot' });
  await waitFor(() => c.status === 'open', { what: 'open' });

  // a patch that skips revs 2..4
  c._handle({ type: 'patch', topic: 'gap/t', rev: 5, patch: { bogus: true } });
  assert.equal(c.status, 'resyncing');
  assert.ok(c.sent.some((m) => m.type === 'get' && m.patterns.length === 1 && m.patterns[0] === 'gap/t'));
  // patches for a resyncing topic are ignored
  c._handle({ type: 'patch', topic: 'gap/t', rev: 2, patch: { bogus2: true } });
  assert.equal(c.state('gap/t').bogus2, undefined);
  await waitFor(() => c.status === 'open', { what: 'open after resync' });
  const hubState = await rest(hub.base, 'GET', '/api/state/gap/t');
  assert.deepEqual(c.state('gap/t'), hubState.body.state);
  assert.equal(c.rev('gap/t'), hubState.body.rev);
  assert.ok(statuses.includes('resyncing'));

  // a patch for a topic the client does not know is a gap too
  await rest(hub.base, 'PUT', '/api/state/gap/u', { w: 1 });
  await waitFor(() => c.rev('gap/u') === 1, { what: 'gap/u' });
  await rest(hub.base, 'PATCH', '/api/state/gap/u', { w: 2 });
  await waitFor(() => c.rev('gap/u') === 2, { what: 'gap/u rev 2' });
  c._handle({ type: 'patch', topic: 'gap/unknown', rev: 3, patch: { z: 1 } });
  assert.ok(c.sent.some((m) => m.type === 'get' && m.patterns[0] === 'gap/unknown'));
  await waitFor(() => c.status === 'open', { what: 'open after unknown-topic resync' });
  assert.equal(c.state('gap/unknown'), undefined);

  // duplicates are ignored
  const before = seen.length;
  c._handle({ type: 'patch', topic: 'gap/u', rev: 2, patch: { w: 99 } });
  assert.equal(seen.length, before);
  assert.deepEqual(c.state('gap/u'), { w: 2 });
});

test('6. writes resolve with results, errors reject with codes', async () => {
  const c = client();
  const events = [];
  c.subscribe('w/#', (topic, state, change) => { if (change.type === 'event') events.push({ topic, change }); });
  await waitFor(() => c.status === 'open', { what: 'open' });

  const r1 = await c.set('w/a', { x: 1 });
  assert.equal(r1.type, 'result');
  assert.equal(r1.ok, true);
  assert.equal(r1.rev, 1);
  assert.equal(r1.changed, true);
  const r2 = await c.patch('w/a', { y: 2 });
  assert.equal(r2.rev, 2);
  assert.equal(r2.changed, true);
  const r2b = await c.patch('w/a', { y: 2 });
  assert.equal(r2b.changed, false);
  await waitFor(() => c.rev('w/a') === 2, { what: 'mirror of own write' });
  assert.deepEqual(c.state('w/a'), { x: 1, y: 2 });
  const r3 = await c.delete('w/a');
  assert.equal(r3.rev, 3);
  const r4 = await c.event('w/ev', { pressed: true });
  assert.equal(r4.ok, true);
  await waitFor(() => events.length === 1, { what: 'event' });
  assert.deepEqual(events[0].change.data, { pressed: true });

  await assert.rejects(c.command('dev/1', 'reboot', { now: true }), (err) => err.code === 'no_route' && typeof err.message === 'string');
  await assert.rejects(c.set('a//b', { x: 1 }), (err) => err.code === 'invalid_topic');
  await assert.rejects(c.set('w/null', null), (err) => typeof err.code === 'string');
});

test('6b. writes use REST while the socket is not open', async () => {
  const c = client();
  assert.equal(c.status, 'connecting');
  const r1 = await c.set('rest/a', { x: 1 }); // sent before the socket opened
  assert.equal(r1.ok, true);
  assert.equal(r1.rev, 1);
  c.close();
  assert.equal(c.status, 'closed');
  await assert.rejects(c.set('rest/a', { x: 2 }), (err) => err.code === 'closed');

  const d = connect(hub.base.replace('http', 'ws') + '/ws', { WebSocket: class { constructor() { throw new Error('no sockets here'); } }, backoffMin: 60000 });
  d.on('error', () => {});
  clients.push(d);
  const r2 = await d.patch('rest/a', { y: 2 });
  assert.equal(r2.rev, 2);
  assert.equal((await d.event('rest/ev', 1)).ok, true);
  await assert.rejects(d.command('dev/1', 'reboot', {}), (err) => err.code === 'no_route');
  await assert.rejects(d.set('a//b', {}), (err) => err.code === 'invalid_topic' || err.code === 'not_found');
  const r3 = await d.delete('rest/a');
  assert.equal(r3.rev, 3);
  await assert.rejects(d.delete('rest/a'), (err) => err.code === 'not_found');
});
